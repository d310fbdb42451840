import { describe, expect, it } from "vitest";
import {
  EACCES,
  EBADF,
  EEXIST,
  EFAULT,
  EINVAL,
  ENODEV,
  ENOMEM,
  Libc,
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_HUGE_2MB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_HUGETLB,
  MFD_HUGE_2MB,
  MMAP_BASE,
  O_RDONLY,
  O_RDWR,
  PROT_READ,
  VM_HUGETLB,
  VM_PFNMAP,
} from "../src/index.js";
import { barDevice, vmaEventDevice } from "./bar-device.js";
import { ANON, expectErrno, machine, memState, MiB, RW } from "./helpers.js";

describe("anonymous private memory", () => {
  it("maps top-down below MMAP_BASE, reads zero, keeps writes, and faults after munmap", () => {
    const { k, libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 3n * 4096n, RW, ANON, -1, 0);
    expect(va).toBe(MMAP_BASE - 3n * 4096n);
    expect([...libc.peek(va + 10n, 2)]).toEqual([0, 0]);
    libc.poke(va + 4094n, new Uint8Array([5, 6, 7, 8]));
    expect([...libc.peek(va + 4094n, 4)]).toEqual([5, 6, 7, 8]);
    expect(k.mem.allocatedPages()).toBe(2);
    expect(libc.munmap(va, 3n * 4096n)).toBe(0);
    expect(k.mem.allocatedPages()).toBe(0);
    expectErrno(() => libc.peek(va, 1), EFAULT);
  });

  it("splits a VMA on a partial munmap and freeing only the unmapped pages", () => {
    const { k, libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 4n * 4096n, RW, ANON | MAP_POPULATE, -1, 0);
    expect(k.mem.allocatedPages()).toBe(4);
    expect(libc.munmap(va + 4096n, 8192n)).toBe(0);
    const vmas = libc.process.mm.vmaList();
    expect(vmas.map((v) => [v.startAddr - va, v.endAddr - va])).toEqual([
      [0n, 4096n],
      [12288n, 16384n],
    ]);
    expect(k.mem.allocatedPages()).toBe(2);
    expect(libc.munmap(va + 4096n, 8192n)).toBe(0); // nothing there: still success
  });

  it("MAP_FIXED replaces what was mapped, MAP_FIXED_NOREPLACE refuses with EEXIST", () => {
    const { k, libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 8192n, RW, ANON, -1, 0);
    libc.poke(va, new Uint8Array([1]));
    expect(libc.mmap(va, 4096n, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EEXIST);
    expect(libc.peek(va, 1)[0]).toBe(1);
    expect(libc.mmap(va, 4096n, RW, ANON | MAP_FIXED, -1, 0)).toBe(va);
    expect(libc.peek(va, 1)[0]).toBe(0);
    expect(k.mem.allocatedPages()).toBe(1); // the old page went, the read faulted a new one
  });

  it("honours a free hint address", () => {
    const { libc } = machine(4n << 30n);
    expect(libc.mmap(0x10000000n, 4096n, RW, ANON, -1, 0)).toBe(0x10000000n);
    expect(libc.mmap(0x10000000n, 4096n, RW, ANON, -1, 0)).not.toBe(0x10000000n);
  });

  it("enforces protections: write to read-only and read of PROT_NONE are EFAULT", () => {
    const { libc } = machine(4n << 30n);
    const ro = libc.mmap(0n, 4096n, PROT_READ, ANON, -1, 0);
    expectErrno(() => libc.poke(ro, new Uint8Array(1)), EFAULT);
    const none = libc.mmap(0n, 4096n, 0, ANON, -1, 0);
    expectErrno(() => libc.peek(none, 1), EFAULT);
  });
});

describe("mmap argument checks (errno and no state change)", () => {
  const cases: Array<[string, (l: Libc, memfd: number) => bigint, number]> = [
    ["unaligned offset before a bad fd", (l) => l.mmap(0n, 4096n, RW, MAP_SHARED, 99, 1), EINVAL],
    ["bad fd", (l) => l.mmap(0n, 4096n, RW, MAP_SHARED, 99, 0), EBADF],
    ["zero length", (l) => l.mmap(0n, 0n, RW, ANON, -1, 0), EINVAL],
    ["no map type", (l) => l.mmap(0n, 4096n, RW, MAP_ANONYMOUS, -1, 0), EINVAL],
    ["no map type on a file", (l, fd) => l.mmap(0n, 4096n, RW, 0, fd, 0), EINVAL],
    ["fixed unaligned", (l) => l.mmap(0x10001n, 4096n, RW, ANON | MAP_FIXED, -1, 0), EINVAL],
    [
      "fixed beyond TASK_SIZE",
      (l) => l.mmap(1n << 47n, 4096n, RW, ANON | MAP_FIXED, -1, 0),
      ENOMEM,
    ],
    ["length beyond the address space", (l) => l.mmap(0n, 1n << 48n, RW, ANON, -1, 0), ENOMEM],
    [
      "unsupported hugetlb size",
      (l) => l.mmap(0n, 4096n, RW, ANON | MAP_HUGETLB | (16 << 26), -1, 0),
      ENODEV,
    ],
  ];
  for (const [name, call, errno] of cases) {
    it(name, () => {
      const { k, libc } = machine(4n << 30n);
      const fd = libc.memfdCreate("m", 0);
      libc.ftruncate(fd, 8192);
      const file = libc.process.files.lookup(fd);
      const before = { ...memState(k), vmas: libc.process.mm.mapCount, refs: file.refcount };
      expect(call(libc, fd)).toBe(MAP_FAILED);
      expect(libc.errno).toBe(errno);
      expect({ ...memState(k), vmas: libc.process.mm.mapCount, refs: file.refcount }).toEqual(
        before,
      );
    });
  }

  it("ENODEV for a file without mmap, EACCES for a shared writable map of a read-only open", () => {
    const { k, libc } = machine(4n << 30n);
    barDevice(k, "none");
    const fd = libc.open("/dev/bar", O_RDWR);
    expect(libc.mmap(0n, 4096n, RW, MAP_SHARED, fd, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(ENODEV);
    const k2 = machine(4n << 30n).k;
    barDevice(k2, "remap");
    const l2 = new Libc(k2);
    const ro = l2.open("/dev/bar", O_RDONLY);
    expect(l2.mmap(0n, 4096n, RW, MAP_SHARED, ro, 0)).toBe(MAP_FAILED);
    expect(l2.errno).toBe(EACCES);
    expect(l2.process.files.lookup(ro).refcount).toBe(1);
    expect(l2.mmap(0n, 4096n, PROT_READ, MAP_SHARED, ro, 0)).not.toBe(MAP_FAILED);
  });

  it("a driver's mmap refusal leaves no VMA and no file reference", () => {
    const { k, libc } = machine(4n << 30n);
    barDevice(k, "remap");
    const fd = libc.open("/dev/bar", O_RDWR);
    expect(libc.mmap(0n, 2n * MiB, RW, MAP_SHARED, fd, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.process.mm.mapCount).toBe(0);
    expect(libc.process.files.lookup(fd).refcount).toBe(1);
  });

  it("munmap checks: unaligned and zero length are EINVAL", () => {
    const { libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    expect(libc.munmap(va + 1n, 4096n)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.munmap(va, 0n)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.process.mm.mapCount).toBe(1);
  });
});

describe("shared and file mappings", () => {
  it("shared anonymous memory stays shared across fork", () => {
    const { libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 4096n, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    const child = libc.fork();
    child.poke(va, new Uint8Array([42]));
    expect(libc.peek(va, 1)[0]).toBe(42);
  });

  it("a private file mapping reads the file and copies on write", () => {
    const { k, libc } = machine(4n << 30n);
    const fd = libc.memfdCreate("f", 0);
    libc.ftruncate(fd, 8192);
    const shared = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 0);
    const priv = libc.mmap(0n, 8192n, RW, MAP_PRIVATE, fd, 0);
    libc.poke(shared, new Uint8Array([1]));
    expect(libc.peek(priv, 1)[0]).toBe(1);
    libc.poke(priv, new Uint8Array([2]));
    expect(libc.peek(shared, 1)[0]).toBe(1);
    expect(libc.peek(priv, 1)[0]).toBe(2);
    libc.poke(shared, new Uint8Array([3]));
    expect(libc.peek(priv, 1)[0]).toBe(2); // the private copy shadows the file now
    expect(libc.process.mm.residentPrivatePages).toBe(1);
    libc.exit();
    expect(k.mem.allocatedPages()).toBe(0);
  });

  it("access beyond EOF of a shared file mapping is EFAULT (SIGBUS), and truncation zeroes the tail", () => {
    const { libc } = machine(4n << 30n);
    const fd = libc.memfdCreate("f", 0);
    libc.ftruncate(fd, 8192);
    const va = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 0);
    libc.poke(va + 4096n, new Uint8Array([9, 9]));
    libc.poke(va + 100n, new Uint8Array([7, 7]));
    libc.ftruncate(fd, 101);
    expectErrno(() => libc.peek(va + 4096n, 1), EFAULT);
    expect([...libc.peek(va + 100n, 2)]).toEqual([7, 0]);
    libc.ftruncate(fd, 8192);
    expect(libc.peek(va + 4096n, 1)[0]).toBe(0);
  });

  it("hugetlb: mmap needs aligned offsets, munmap aligned cuts; MAP_HUGETLB anon works", () => {
    const { libc } = machine(4n << 30n);
    const fd = libc.memfdCreate("h", MFD_HUGETLB | MFD_HUGE_2MB);
    expect(libc.ftruncate(fd, 4n * MiB)).toBe(0);
    expect(libc.mmap(0n, 2n * MiB, RW, MAP_SHARED, fd, 4096)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EINVAL);
    const va = libc.mmap(0n, 3n * MiB, RW, MAP_SHARED, fd, 0);
    expect(va % (2n * MiB)).toBe(0n);
    expect(libc.process.mm.vmaAt(va)!.npages).toBe(1024);
    expect(libc.process.mm.vmaAt(va)!.flags & VM_HUGETLB).toBeTruthy();
    expect(libc.munmap(va + 4096n, 4096n)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.munmap(va + 2n * MiB, 2n * MiB)).toBe(0);
    const anon = libc.mmap(0n, 2n * MiB, RW, ANON | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    libc.poke(anon + 12345n, new Uint8Array([1]));
    const mm = libc.process.mm;
    expect(libc.kernel.mem.folioOrder(mm.lookup(Number(anon >> 12n)))).toBe(9);
  });
});

describe("private hugetlb mappings", () => {
  it("anonymous MAP_HUGETLB private memory faults huge folios and copies them whole on COW", () => {
    const { k, libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 4n * MiB, RW, ANON | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    libc.poke(va + 4096n * 300n, new Uint8Array([1]));
    const mm = libc.process.mm;
    const vpn = Number(va >> 12n);
    const head = mm.lookup(vpn);
    expect(k.mem.folioOrder(head)).toBe(9);
    expect(mm.lookup(vpn + 300)).toBe(head + 300);
    expect(k.mem.allocatedPages()).toBe(512);
    const child = libc.fork();
    child.poke(va + 4096n * 300n + 1n, new Uint8Array([2]));
    const childHead = child.process.mm.lookup(vpn);
    expect(childHead).not.toBe(head);
    expect(k.mem.folioOrder(childHead)).toBe(9);
    expect([...child.peek(va + 4096n * 300n, 2)]).toEqual([1, 2]);
    expect([...libc.peek(va + 4096n * 300n, 2)]).toEqual([1, 0]);
    child.exit();
    libc.exit();
    expect(k.mem.allocatedPages()).toBe(0);
  });

  it("a private mapping of a hugetlb memfd copies the huge page on write, the file keeps its own", () => {
    const { k, libc } = machine(4n << 30n);
    const fd = libc.memfdCreate("h", MFD_HUGETLB | MFD_HUGE_2MB);
    libc.ftruncate(fd, 2n * MiB);
    const shared = libc.mmap(0n, 2n * MiB, RW, MAP_SHARED, fd, 0);
    const priv = libc.mmap(0n, 2n * MiB, RW, MAP_PRIVATE, fd, 0);
    libc.poke(shared + 8192n, new Uint8Array([5]));
    expect(libc.peek(priv + 8192n, 1)[0]).toBe(5);
    libc.poke(priv + 8193n, new Uint8Array([6]));
    expect([...libc.peek(priv + 8192n, 2)]).toEqual([5, 6]);
    expect([...libc.peek(shared + 8192n, 2)]).toEqual([5, 0]);
    expect(k.mem.allocatedPages()).toBe(1024);
  });
});

describe("VM_PFNMAP mappings of a BAR", () => {
  it("remap_pfn_range: CPU accesses reach the BAR by physical address", () => {
    const { k, libc } = machine(4n << 30n);
    const { bar } = barDevice(k, "remap");
    const fd = libc.open("/dev/bar", O_RDWR);
    const va = libc.mmap(0n, 8192n, RW, MAP_SHARED, fd, 4096);
    libc.poke(va + 4n, new Uint8Array([0xab]));
    const out = new Uint8Array(1);
    k.mem.readPhys(bar.base + 4096n + 4n, out);
    expect(out[0]).toBe(0xab);
    expect(libc.process.mm.lookup(Number(va >> 12n))).toBe(bar.basePfn + 1);
    expect(libc.process.mm.vmaAt(va)!.flags & VM_PFNMAP).toBeTruthy();
    expect(libc.process.mm.followPfn(va + 4096n + 7n, true)).toBe(bar.basePfn + 2);
    const anon = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    expectErrno(() => libc.process.mm.followPfn(anon, false), EFAULT);
    const ro = libc.mmap(0n, 4096n, PROT_READ, MAP_SHARED, fd, 0);
    expectErrno(() => libc.process.mm.followPfn(ro, true), EFAULT);
    expect(libc.process.mm.followPfn(ro, false)).toBe(bar.basePfn);
  });

  it("fault-handler mappings: a refused fault is EFAULT to the accessor", () => {
    const { k, libc } = machine(4n << 30n);
    const { live } = barDevice(k, "fault");
    const fd = libc.open("/dev/bar", O_RDWR);
    const va = libc.mmap(0n, 4096n, RW, MAP_SHARED, fd, 0);
    libc.poke(va, new Uint8Array([1]));
    live.on = false;
    expectErrno(() => libc.peek(va, 1), EFAULT);
    expectErrno(() => libc.process.mm.followPfn(va, false), EFAULT);
    live.on = true;
    expect(libc.peek(va, 1)[0]).toBe(1);
  });

  it("VMA open/close callbacks run on split and unmap, and the file reference follows", () => {
    const { k, libc } = machine(4n << 30n);
    const events = vmaEventDevice(k);
    const fd = libc.open("/dev/x", O_RDWR);
    const va = libc.mmap(0n, 3n * 4096n, RW, MAP_SHARED, fd, 0);
    const file = libc.process.files.lookup(fd);
    expect(file.refcount).toBe(2);
    libc.munmap(va + 4096n, 4096n);
    expect(events).toEqual(["open", "open", "close"]);
    expect(file.refcount).toBe(3);
    libc.close(fd);
    libc.munmap(va, 3n * 4096n);
    expect(file.released).toBe(true);
  });
});

describe("fork and copy-on-write", () => {
  it("shares private pages until one side writes", () => {
    const { k, libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    libc.poke(va, new Uint8Array([1]));
    const pfn = libc.process.mm.lookup(Number(va >> 12n));
    const child = libc.fork();
    expect(k.mem.refCount(pfn)).toBe(2);
    expect(child.process.mm.lookup(Number(va >> 12n))).toBe(pfn);
    expect(libc.process.mm.isExclusive(Number(va >> 12n))).toBe(false);
    child.poke(va, new Uint8Array([2]));
    expect(libc.peek(va, 1)[0]).toBe(1);
    expect(child.peek(va, 1)[0]).toBe(2);
    expect(k.mem.refCount(pfn)).toBe(1);
    // the parent is the only user left: its write reuses the page
    libc.poke(va, new Uint8Array([3]));
    expect(libc.process.mm.lookup(Number(va >> 12n))).toBe(pfn);
    child.exit();
    libc.exit();
    expect(k.mem.allocatedPages()).toBe(0);
  });

  it("a fork that fails leaves no child and no leaked page", () => {
    const { k, libc } = machine(4n << 30n);
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    libc.poke(va, new Uint8Array([1]));
    const fd = libc.memfdCreate("x", 0);
    const file = libc.process.files.lookup(fd);
    const before = memState(k);
    k.current.fault.arm(1);
    expectErrno(() => libc.fork(), ENOMEM);
    k.current.fault.disarm();
    expect(libc.errno).toBe(ENOMEM);
    expect(memState(k)).toEqual(before);
    expect(file.refcount).toBe(1);
  });

  it("exit closes descriptors and unmaps; a memfd lives while mapped", () => {
    const { k, libc } = machine(4n << 30n);
    const fd = libc.memfdCreate("x", 0);
    libc.ftruncate(fd, 4096);
    const va = libc.mmap(0n, 4096n, RW, MAP_SHARED, fd, 0);
    libc.poke(va, new Uint8Array([1]));
    libc.close(fd);
    expect(libc.peek(va, 1)[0]).toBe(1);
    expect(k.mem.allocatedPages()).toBe(1);
    libc.exit();
    expect(k.mem.allocatedPages()).toBe(0);
    expect(libc.process.exited).toBe(true);
    expect(() => libc.exit()).toThrow();
  });
});
