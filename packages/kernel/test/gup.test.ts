import { describe, expect, it, vi } from "vitest";
import {
  EFAULT,
  EINVAL,
  ENODEV,
  EOVERFLOW,
  ENOMEM,
  FOLL_GET,
  FOLL_LONGTERM,
  FOLL_PIN,
  FOLL_WRITE,
  File,
  LockdepError,
  Mutex,
  Kernel,
  KernelWarning,
  Libc,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_HUGETLB,
  MAP_HUGE_1GB,
  MAP_HUGE_2MB,
  MAP_SHARED,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  MFD_HUGE_1GB,
  MFD_HUGE_2MB,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  fileSize,
  isMemfd,
  memfdCreate,
  memfdPinFolios,
  pinUserPages,
  pinUserPagesFast,
  unpinUserPageRuns,
  vfsTruncate,
} from "../src/index.js";
import { expectErrno, memState } from "./helpers.js";

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
const LT = FOLL_LONGTERM | FOLL_WRITE;

function setup(ramBytes = 8n << 30n): { k: Kernel; libc: Libc } {
  const k = new Kernel({ ramBytes });
  return { k, libc: new Libc(k) };
}

describe("pin_user_pages", () => {
  it("uses the kernel's flag values", () => {
    expect([FOLL_WRITE, FOLL_GET, FOLL_LONGTERM, FOLL_PIN]).toEqual([1, 2, 256, 1 << 19]);
  });

  it("pins anonymous memory as contiguous runs and unpins it", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 64n * 4096n, RW, ANON, -1, 0);
    const runs = new PfnRuns();
    expect(pinUserPagesFast(k, va, 64, LT, runs)).toBe(64);
    expect(runs.totalPages).toBe(64);
    expect(runs.length).toBe(1);
    expect(k.mem.totalPinned()).toBe(64);
    expect(k.mem.pinCount(runs.pfn(0))).toBe(1);
    // the pinned page is the one the process sees
    libc.poke(va + 5n, new Uint8Array([77]));
    const out = new Uint8Array(1);
    k.mem.readPhys(BigInt(runs.pfn(0)) * 4096n + 5n, out);
    expect(out[0]).toBe(77);
    unpinUserPageRuns(k, runs, true);
    expect(k.mem.totalPinned()).toBe(0);
  });

  it("re-pins present pages as physical runs across page-table leaves, then faults from the first shared one", () => {
    const { k, libc } = setup();
    const n = 1100; // more than two 512-entry page-table leaves
    const va = libc.mmap(0n, BigInt(n) * 4096n, RW, ANON, -1, 0);
    // Odd pages first, then even: physically interleaved, so runs break at every page.
    for (const parity of [1, 0]) {
      for (let i = parity; i < n; i += 2)
        libc.poke(va + BigInt(i) * 4096n, new Uint8Array([i % 251]));
    }
    const child = libc.process.mm.fork();
    // The parent writes pages [0, 600) again: exclusive copies; [600, n) stay shared with the child.
    for (let i = 0; i < 600; i++) libc.poke(va + BigInt(i) * 4096n + 1n, new Uint8Array([1]));
    const runs = new PfnRuns();
    expect(pinUserPagesFast(k, va, n, LT, runs)).toBe(n);
    expect(runs.totalPages).toBe(n);
    expect(k.mem.totalPinned()).toBe(n);
    const seen = new Uint8Array(1);
    for (let i = 0; i < n; i++) {
      const pfn = runs.pfnAtPage(i);
      expect(k.mem.pinCount(pfn)).toBe(1);
      k.mem.readPhys(BigInt(pfn) * 4096n, seen);
      expect(seen[0]).toBe(i % 251);
      // the pinned page is the one the process sees, not the child's
      expect(libc.process.mm.presentPfn(Number(va >> 12n) + i, true)).toBe(pfn);
    }
    // Pinned again while present and exclusive: the same pages and runs, one more pin each.
    const again = new PfnRuns();
    expect(pinUserPagesFast(k, va, n, LT, again)).toBe(n);
    expect(again.length).toBe(runs.length);
    for (let i = 0; i < again.length; i++) {
      expect([again.pfn(i), again.npages(i)]).toEqual([runs.pfn(i), runs.npages(i)]);
    }
    expect(k.mem.pinCount(runs.pfn(0))).toBe(2);
    unpinUserPageRuns(k, again, true);
    unpinUserPageRuns(k, runs, true);
    expect(k.mem.totalPinned()).toBe(0);
    child.exit();
  });

  it("returns fewer pages when the range runs into a hole, EFAULT when the first page is one", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 8n * 4096n, RW, ANON, -1, 0);
    libc.munmap(va + 3n * 4096n, 4096n);
    const runs = new PfnRuns();
    expect(pinUserPages(k, libc.process.mm, va, 8, LT, runs)).toBe(3);
    const before = memState(k);
    const r2 = new PfnRuns();
    expectErrno(() => pinUserPages(k, libc.process.mm, va + 3n * 4096n, 2, LT, r2), EFAULT);
    expect(memState(k)).toEqual(before);
    expect(r2.totalPages).toBe(0);
  });

  it("EFAULT for FOLL_WRITE on read-only memory and for PROT_NONE, nothing pinned", () => {
    const { k, libc } = setup();
    const ro = libc.mmap(0n, 4096n, PROT_READ, ANON, -1, 0);
    const none = libc.mmap(0n, 4096n, 0, ANON, -1, 0);
    const runs = new PfnRuns();
    expectErrno(() => pinUserPages(k, libc.process.mm, ro, 1, LT, runs), EFAULT);
    expectErrno(() => pinUserPages(k, libc.process.mm, none, 1, FOLL_LONGTERM, runs), EFAULT);
    expect(pinUserPages(k, libc.process.mm, ro, 1, FOLL_LONGTERM, runs)).toBe(1);
    expect(k.mem.totalPinned()).toBe(1);
  });

  it("EFAULT on VM_PFNMAP", () => {
    const { k, libc } = setup();
    const bar = k.mem.addMmioRegion("bar", 1n << 16n);
    k.registerDevice(
      "/dev/bar",
      (_k, flags) =>
        new File({ name: "bar", mmap: (_f, vma) => vma.remapPfnRange(bar.basePfn) }, null, flags),
    );
    const fd = libc.open("/dev/bar", O_RDWR);
    const va = libc.mmap(0n, 4096n, RW, MAP_SHARED, fd, 0);
    expectErrno(
      () => pinUserPages(k, libc.process.mm, va, 1, FOLL_LONGTERM, new PfnRuns()),
      EFAULT,
    );
    expect(k.mem.totalPinned()).toBe(0);
  });

  it("EINVAL for FOLL_GET, 0 for no pages, EFAULT beyond TASK_SIZE", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    expectErrno(() => pinUserPages(k, mm, 0x10000n, 1, FOLL_GET, new PfnRuns()), EINVAL);
    expect(pinUserPages(k, mm, 0x10000n, 0, 0, new PfnRuns())).toBe(0);
    expectErrno(() => pinUserPages(k, mm, (1n << 47n) - 4096n, 2, 0, new PfnRuns()), EFAULT);
  });

  it("ENOMEM when the first page cannot be allocated; a later failure returns a partial count", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 4n * 4096n, RW, ANON, -1, 0);
    const mm = libc.process.mm;
    k.current.fault.arm(1);
    expectErrno(() => pinUserPages(k, mm, va, 4, LT, new PfnRuns()), ENOMEM);
    expect(memState(k)).toEqual({ allocated: 0, pinned: 0 });
    k.current.fault.arm(3);
    const runs = new PfnRuns();
    expect(pinUserPages(k, mm, va, 4, LT, runs)).toBe(2);
    k.current.fault.disarm();
    expect(k.mem.totalPinned()).toBe(2);
  });

  it("breaks COW before a write or long-term pin, so the child cannot see later writes", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    libc.poke(va, new Uint8Array([1]));
    const child = libc.fork();
    const vpn = Number(va >> 12n);
    const shared = libc.process.mm.lookup(vpn);
    const runs = new PfnRuns();
    pinUserPages(k, libc.process.mm, va, 1, FOLL_LONGTERM, runs);
    expect(runs.pfn(0)).not.toBe(shared);
    expect(libc.process.mm.lookup(vpn)).toBe(runs.pfn(0));
    expect(libc.process.mm.isExclusive(vpn)).toBe(true);
    k.mem.writePhys(BigInt(runs.pfn(0)) * 4096n, new Uint8Array([9])); // a device DMA
    expect(libc.peek(va, 1)[0]).toBe(9);
    expect(child.peek(va, 1)[0]).toBe(1);
  });

  it("fork after a pin copies the pinned page for the child at once", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    const runs = new PfnRuns();
    pinUserPages(k, libc.process.mm, va, 1, LT, runs);
    const child = libc.fork();
    const vpn = Number(va >> 12n);
    expect(libc.process.mm.lookup(vpn)).toBe(runs.pfn(0));
    expect(child.process.mm.lookup(vpn)).not.toBe(runs.pfn(0));
    k.mem.writePhys(BigInt(runs.pfn(0)) * 4096n, new Uint8Array([5]));
    expect(libc.peek(va, 1)[0]).toBe(5);
    expect(child.peek(va, 1)[0]).toBe(0);
    libc.poke(va, new Uint8Array([6])); // still exclusive: no copy
    expect(libc.process.mm.lookup(vpn)).toBe(runs.pfn(0));
  });

  it("a long-term pin of a private file mapping copies the page; a short read pin does not", () => {
    const { k, libc } = setup();
    const fd = libc.memfdCreate("f", 0);
    libc.ftruncate(fd, 8192);
    const va = libc.mmap(0n, 8192n, RW, MAP_PRIVATE, fd, 0);
    const filePfn = libc.process.mm.lookup(Number(va >> 12n));
    expect(filePfn).toBe(-1);
    const shortPin = new PfnRuns();
    pinUserPages(k, libc.process.mm, va, 1, 0, shortPin);
    const file = libc.process.files.lookup(fd);
    const m = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 0);
    expect(libc.process.mm.lookup(Number(m >> 12n))).toBe(shortPin.pfn(0));
    const longPin = new PfnRuns();
    pinUserPages(k, libc.process.mm, va, 1, FOLL_LONGTERM, longPin);
    expect(longPin.pfn(0)).not.toBe(shortPin.pfn(0));
    expect(isMemfd(file)).toBe(true);
  });

  it("pins a 1 GiB-folio memfd mapping as one run per folio", () => {
    const { k, libc } = setup(8n << 30n);
    const sections = k.mem.metadataSections();
    const fd = libc.memfdCreate("g", MFD_HUGETLB | MFD_HUGE_1GB);
    libc.ftruncate(fd, 2n << 30n);
    const va = libc.mmap(0n, 2n << 30n, RW, MAP_SHARED, fd, 0);
    const runs = new PfnRuns();
    expect(pinUserPages(k, libc.process.mm, va + 4096n, (1 << 19) - 1, LT, runs)).toBe(
      (1 << 19) - 1,
    );
    expect(runs.length).toBeLessThanOrEqual(2);
    expect(k.mem.pinCount(runs.pfn(0))).toBe((1 << 18) - 1);
    expect(k.mem.metadataSections() - sections).toBeLessThanOrEqual(1);
    unpinUserPageRuns(k, runs, false);
  });

  it("pins a 1 TiB memfd of 1 GiB folios with one metadata update per folio", () => {
    const { k, libc } = setup(2n << 40n);
    const sections = k.mem.metadataSections();
    const fd = libc.memfdCreate("ram", MFD_HUGETLB | MFD_HUGE_1GB);
    libc.ftruncate(fd, 1n << 40n);
    const va = libc.mmap(0n, 1n << 40n, RW, MAP_SHARED, fd, 0);
    const runs = new PfnRuns();
    expect(pinUserPages(k, libc.process.mm, va, 2 ** 28, LT, runs)).toBe(2 ** 28);
    expect(runs.length).toBe(1);
    expect(k.mem.totalPinned()).toBe(2 ** 28);
    expect(k.mem.metadataSections() - sections).toBeLessThanOrEqual(1);
    expect(k.mem.pinCount(runs.pfn(0) + 2 ** 28 - 1)).toBe(2 ** 18);
    unpinUserPageRuns(k, runs, false);
    libc.exit();
    expect(k.mem.allocatedPages()).toBe(0);
  });

  it("pins private 1 GiB hugetlb memory one huge page per step", () => {
    const { k, libc } = setup(8n << 30n);
    const va = libc.mmap(0n, 2n << 30n, RW, ANON | MAP_HUGETLB | MAP_HUGE_1GB, -1, 0);
    const runs = new PfnRuns();
    expect(pinUserPages(k, libc.process.mm, va, 1 << 19, LT, runs)).toBe(1 << 19);
    expect(runs.length).toBeLessThanOrEqual(2);
    expect(k.mem.allocatedPages()).toBe(1 << 19);
    unpinUserPageRuns(k, runs, false);
  });

  it("a pinned page outlives munmap and exit until its last unpin", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    libc.poke(va, new Uint8Array([7]));
    const runs = new PfnRuns();
    pinUserPages(k, libc.process.mm, va, 1, LT, runs);
    libc.munmap(va, 4096n);
    expect(k.mem.isAllocated(runs.pfn(0))).toBe(true);
    const out = new Uint8Array(1);
    k.mem.readPhys(BigInt(runs.pfn(0)) * 4096n, out);
    expect(out[0]).toBe(7); // the device still sees the data
    libc.exit();
    expect(k.mem.allocatedPages()).toBe(1);
    unpinUserPageRuns(k, runs, true);
    expect(k.mem.allocatedPages()).toBe(0);
  });

  it("pins beyond EOF of a shared memfd mapping are EFAULT", () => {
    const { k, libc } = setup();
    const fd = libc.memfdCreate("f", 0);
    libc.ftruncate(fd, 4096);
    const va = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 0);
    const runs = new PfnRuns();
    expect(pinUserPages(k, libc.process.mm, va, 2, LT, runs)).toBe(1);
    expectErrno(() => pinUserPages(k, libc.process.mm, va + 4096n, 1, LT, runs), EFAULT);
  });
});

describe("locking and tracing", () => {
  it("pins under mmap_lock for read: pages.mutex -> mmap_lock is recorded, the reverse caught", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    const mm = libc.process.mm;
    const pagesMutex = new Mutex(k.lockdep, "iopt_pages.mutex");
    pagesMutex.with(() => pinUserPages(k, mm, va, 1, LT, new PfnRuns()));
    expect(k.lockdep.orderRecorded("iopt_pages.mutex", "mmap_lock")).toBe(true);
    mm.mmapLock.downWrite();
    expect(() => pagesMutex.lock()).toThrow(LockdepError);
    mm.mmapLock.upWrite();
    // a caller already holding mmap_lock must not call pinUserPages (recursive)
    mm.mmapLock.downRead();
    expect(() => pinUserPages(k, mm, va, 1, LT, new PfnRuns())).toThrow(/recursive/);
    mm.mmapLock.upRead();
  });

  it("emits trace events for memfd creation, mapping, pinning and unpinning", () => {
    const { k, libc } = setup();
    const { records } = k.trace.record(() => {
      const fd = libc.memfdCreate("t", 0);
      libc.ftruncate(fd, 8192);
      const va = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 0);
      const runs = new PfnRuns();
      pinUserPages(k, libc.process.mm, va, 2, LT, runs);
      unpinUserPageRuns(k, runs, false);
      libc.munmap(va, 8192n);
    });
    expect(records.map((r) => r.name)).toEqual([
      "memfd:create",
      "mm:mmap",
      "gup:pin",
      "gup:unpin",
      "mm:munmap",
    ]);
    expect(records[2]!.data).toMatchObject({ npages: 2, pinned: 2 });
  });
});

describe("memfd", () => {
  it("creates shmem and hugetlb files; size via vfsTruncate/fileSize", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", MFD_CLOEXEC);
    expect(isMemfd(f)).toBe(true);
    expect(fileSize(f)).toBe(0n);
    vfsTruncate(f, 12345n);
    expect(fileSize(f)).toBe(12345n);
    const h = memfdCreate(k, "b", MFD_HUGETLB | MFD_HUGE_2MB);
    expectErrno(() => vfsTruncate(h, 4096n), EINVAL);
    expect(fileSize(h)).toBe(0n);
    expectErrno(() => memfdCreate(k, "c", MFD_HUGETLB | (16 << 26)), ENODEV);
    expectErrno(() => memfdCreate(k, "c", (MFD_HUGETLB | (63 << 26)) >>> 0), ENODEV);
    expectErrno(() => memfdCreate(k, "c", 2 ** 32), EINVAL);
    expectErrno(() => memfdCreate(k, "c", 0x100), EINVAL);
    expectErrno(() => memfdCreate(k, "c", MFD_HUGE_2MB), EINVAL);
    expectErrno(() => memfdCreate(k, "x".repeat(250), 0), EINVAL);
    const dev = new File({ name: "dev" }, null);
    expectErrno(() => fileSize(dev), EINVAL);
  });

  it("memfd_pin_folios pins every page of [start, end], allocating, with the first page's offset", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", MFD_HUGETLB | MFD_HUGE_2MB);
    vfsTruncate(f, 8n << 20n);
    const runs = new PfnRuns();
    const r = memfdPinFolios(k, f, 100n, (4n << 20n) + 10n, runs, 1 << 30);
    expect(r).toEqual({ npages: 1025, offset: 100 });
    expect(runs.totalPages).toBe(1025);
    expect(k.mem.pinCount(runs.pfn(0))).toBe(512);
    expect(k.mem.allocatedPages()).toBe(3 * 512);
    // maxPages limits the pin
    const few = new PfnRuns();
    expect(memfdPinFolios(k, f, 0n, (8n << 20n) - 1n, few, 10).npages).toBe(10);
    unpinUserPageRuns(k, runs, false);
    unpinUserPageRuns(k, few, false);
    expect(k.mem.totalPinned()).toBe(0);
    // truncating while pinned keeps the folio alive until the unpin
    const held = new PfnRuns();
    memfdPinFolios(k, f, 0n, 0n, held, 1);
    vfsTruncate(f, 0n);
    expect(k.mem.allocatedPages()).toBe(512);
    unpinUserPageRuns(k, held, false);
    expect(k.mem.allocatedPages()).toBe(0);
  });

  it("memfd_pin_folios: EINVAL for bad ranges, past EOF or a non-memfd; ENOMEM undoes its pins", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    vfsTruncate(f, 16384n);
    const runs = new PfnRuns();
    expectErrno(() => memfdPinFolios(k, f, 5n, 4n, runs, 10), EINVAL);
    expectErrno(() => memfdPinFolios(k, f, -1n, 4n, runs, 10), EINVAL);
    expectErrno(() => memfdPinFolios(k, f, 0n, 4n, runs, 0), EINVAL);
    expectErrno(() => memfdPinFolios(k, f, 0n, 16384n, runs, 10), EINVAL);
    expectErrno(() => memfdPinFolios(k, new File({ name: "dev" }, null), 0n, 1n, runs, 1), EINVAL);
    memfdPinFolios(k, f, 0n, 4095n, runs, 10);
    k.current.fault.arm(2);
    expectErrno(() => memfdPinFolios(k, f, 0n, 16383n, runs, 10), ENOMEM);
    k.current.fault.disarm();
    expect(runs.totalPages).toBe(1);
    expect(k.mem.totalPinned()).toBe(1);
  });

  it("last close of the file frees the page cache", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", MFD_HUGETLB | MFD_HUGE_1GB);
    vfsTruncate(f, 1n << 30n);
    const runs = new PfnRuns();
    memfdPinFolios(k, f, 0n, 1n, runs, 1);
    unpinUserPageRuns(k, runs, false);
    expect(k.mem.allocatedPages()).toBe(1 << 18);
    f.put();
    expect(k.mem.allocatedPages()).toBe(0);
  });
});

describe("pin_user_pages: ranges and runs (mm/gup.c)", () => {
  it("checks the range as gup_fast_fallback does: EOVERFLOW when start + len wraps, EFAULT past TASK_SIZE_MAX, a range ending at it pins", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    const lastPage = (1n << 47n) - 8192n;
    expect(libc.mmap(lastPage, 4096n, RW, ANON | MAP_FIXED, -1, 0)).toBe(lastPage);
    const runs = new PfnRuns();
    expect(pinUserPages(k, mm, lastPage, 1, LT, runs)).toBe(1);
    expectErrno(() => pinUserPages(k, mm, lastPage, 2, LT, new PfnRuns()), EFAULT);
    const top = (1n << 64n) - 4096n;
    expectErrno(() => pinUserPages(k, mm, top, 1, 0, new PfnRuns()), EFAULT);
    expectErrno(() => pinUserPages(k, mm, top, 2, 0, new PfnRuns()), EOVERFLOW);
    for (const bad of [-1, 1.5]) {
      expectErrno(() => pinUserPages(k, mm, lastPage, bad, 0, new PfnRuns()), EINVAL);
    }
    expect(k.mem.totalPinned()).toBe(1);
    unpinUserPageRuns(k, runs, false);
  });

  it("pins no pages without taking mmap_lock (gup_fast_fallback returns before any fallback)", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    mm.mmapLock.withWrite(() => {
      expect(pinUserPages(k, mm, 0x10000n, 0, LT, new PfnRuns())).toBe(0);
    });
  });

  it("keeps physically separate pages as separate runs, appends to the caller's list and stops at a hole with what it pinned", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    const va = libc.mmap(0n, 3n * 4096n, RW, ANON, -1, 0);
    libc.munmap(va + 2n * 4096n, 4096n);
    // Page 1 faulted first: page 0 is then not the physical predecessor of page 1.
    const runs = new PfnRuns();
    expect(pinUserPages(k, mm, va + 4096n, 1, LT, runs)).toBe(1);
    const p1 = runs.pfn(0);
    expect(pinUserPages(k, mm, va, 3, LT, runs)).toBe(2);
    const p0 = mm.lookup(Number(va >> 12n));
    expect(p0).not.toBe(p1 - 1);
    expect(runs.totalPages).toBe(3);
    expect([k.mem.pinCount(p0), k.mem.pinCount(p1), k.mem.totalPinned()]).toEqual([1, 2, 3]);
    const pages: number[] = [];
    for (let i = 0; i < 3; i++) pages.push(runs.pfnAtPage(i));
    expect(pages).toEqual([p1, p0, p1]);
    unpinUserPageRuns(k, runs, false);
    expect(k.mem.totalPinned()).toBe(0);
  });

  it("a FOLL_WRITE pin of a private file mapping copies the page, as a long-term one does", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    const fd = libc.memfdCreate("w", 0);
    libc.ftruncate(fd, 8192);
    const priv = libc.mmap(0n, 8192n, RW, MAP_PRIVATE, fd, 0);
    const shared = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 0);
    const cache = new PfnRuns();
    pinUserPages(k, mm, shared, 1, 0, cache);
    const written = new PfnRuns();
    pinUserPages(k, mm, priv, 1, FOLL_WRITE, written);
    expect(written.pfn(0)).not.toBe(cache.pfn(0));
    unpinUserPageRuns(k, written, true);
    unpinUserPageRuns(k, cache, false);
  });

  /** Two 2 MiB hugetlb folios of a memfd, mapped shared (nothing allocated yet). */
  function hugeMapping(libc: Libc): bigint {
    const fd = libc.memfdCreate("h", MFD_HUGETLB | MFD_HUGE_2MB);
    libc.ftruncate(fd, 4n << 20n);
    return libc.mmap(0n, 4n << 20n, RW, MAP_SHARED, fd, 0);
  }

  it("steps a huge mapping folio by folio from a start inside one", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    const va = hugeMapping(libc);
    // The second folio is allocated first, so the two are not in address order.
    const second = new PfnRuns();
    pinUserPages(k, mm, va + (2n << 20n), 1, 0, second);
    const runs = new PfnRuns();
    expect(pinUserPages(k, mm, va + 4096n, 1023, LT, runs)).toBe(1023);
    expect([runs.length, runs.npages(0), runs.npages(1), runs.pfn(1)]).toEqual([
      2,
      511,
      512,
      second.pfn(0),
    ]);
    unpinUserPageRuns(k, runs, false);
    unpinUserPageRuns(k, second, false);
  });

  it("pins a range ending inside a huge folio up to its end only; private hugetlb memory as huge folios", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    const va = hugeMapping(libc);
    const runs = new PfnRuns();
    expect(pinUserPages(k, mm, va + 4096n, 1000, LT, runs)).toBe(1000);
    expect([runs.totalPages, k.mem.totalPinned()]).toEqual([1000, 1000]);
    unpinUserPageRuns(k, runs, false);
    const pva = libc.mmap(0n, 4n << 20n, RW, ANON | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    const huge = new PfnRuns();
    expect(pinUserPages(k, mm, pva, 2, LT, huge)).toBe(2);
    expect(k.mem.folioOrder(huge.pfn(0))).toBe(9);
    unpinUserPageRuns(k, huge, false);
  });

  it("a WARN partway through a pin propagates instead of returning the pages pinned so far", () => {
    const { k, libc } = setup();
    const mm = libc.process.mm;
    const fd = libc.memfdCreate("warn", 0);
    libc.ftruncate(fd, 8192);
    const va = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 0);
    const faultIn = mm.faultIn.bind(mm);
    let calls = 0;
    vi.spyOn(mm, "faultIn").mockImplementation((...args) => {
      if (++calls === 2) throw new KernelWarning("faultIn");
      return faultIn(...args);
    });
    expect(() => pinUserPages(k, mm, va, 2, LT, new PfnRuns())).toThrow(KernelWarning);
  });

  it("records what it unpinned in the gup:unpin event", () => {
    const { k, libc } = setup();
    const va = libc.mmap(0n, 4n * 4096n, RW, ANON, -1, 0);
    const runs = new PfnRuns();
    pinUserPages(k, libc.process.mm, va, 4, LT, runs);
    const { records } = k.trace.record(() => unpinUserPageRuns(k, runs, false));
    expect(records.map((r) => [r.name, r.data])).toEqual([
      ["gup:unpin", { npages: 4, runs: runs.length }],
    ]);
  });
});
