import { describe, expect, it, vi } from "vitest";
import {
  EACCES,
  EEXIST,
  EFAULT,
  EINVAL,
  ENOMEM,
  EOVERFLOW,
  FOLL_LONGTERM,
  FOLL_WRITE,
  File,
  type FileOperations,
  type Kernel,
  type Libc,
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_HUGE_2MB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MMAP_BASE,
  O_RDONLY,
  O_WRONLY,
  PROT_READ,
  PfnRuns,
  VM_HUGETLB,
  pinUserPages,
} from "../src/index.js";
import {
  VM_DONTDUMP,
  VM_DONTEXPAND,
  VM_IO,
  VM_MAYEXEC,
  VM_MAYREAD,
  VM_MAYSHARE,
  VM_MAYWRITE,
  VM_PFNMAP,
  VM_READ,
  VM_SHARED,
  VM_WRITE,
} from "../src/mm-flags.js";
import { TASK_SIZE } from "../src/mm.js";
import { barDevice } from "./bar-device.js";
import { ANON, expectErrno, machine, MiB, PAGE, RW } from "./helpers.js";

// mm/mmap.c: do_mmap's checks and their order, get_unmapped_area's placement (the top-down
// search of generic_get_unmapped_area_topdown, hugetlb_get_unmapped_area), MAP_POPULATE.

/** MAP_SHARED_VALIDATE from include/uapi/linux/mman.h. */
const MAP_SHARED_VALIDATE = 0x03;
const MMAP_MIN_ADDR = 0x10000n;

/** A machine built from a fresh import, so module-level limits are evaluated in the test. */
async function freshSetup(): Promise<{ k: Kernel; libc: Libc }> {
  vi.resetModules();
  const fresh = await import("../src/index.js");
  const k = new fresh.Kernel({ ramBytes: 1n << 30n });
  return { k, libc: new fresh.Libc(k) };
}

function spans(libc: Libc): Array<[bigint, bigint]> {
  return libc.process.mm.vmaList().map((v) => [v.startAddr, v.endAddr]);
}

describe("the address space bound", () => {
  it("TASK_SIZE is x86-64's TASK_SIZE_MAX: the last page below 2^47 maps, 2^47 does not", async () => {
    // A module-level constant: import mm.ts afresh so the value is computed in this test.
    vi.resetModules();
    const mm = await import("../src/mm.js");
    expect(mm.TASK_SIZE).toBe(0x7fff_ffff_f000n);
    const { libc } = machine();
    expect(libc.mmap(TASK_SIZE - PAGE, PAGE, RW, ANON | MAP_FIXED, -1, 0)).toBe(TASK_SIZE - PAGE);
    expect(libc.mmap(TASK_SIZE, PAGE, RW, ANON | MAP_FIXED, -1, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(ENOMEM);
  });
});

describe("do_mmap argument checks", () => {
  it("EINVAL for an unaligned offset handed straight to do_mmap", () => {
    const { libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 8192);
    const file = libc.process.files.lookup(fd);
    const mm = libc.process.mm;
    expectErrno(
      () => mm.mmap({ addr: 0n, len: PAGE, prot: RW, flags: MAP_SHARED, file, offset: 1n }),
      EINVAL,
    );
    expect(mm.mapCount).toBe(0);
  });

  it("EOVERFLOW when the file range ends beyond the largest file offset (file_mmap_ok)", async () => {
    const { libc } = await freshSetup();
    const fd = libc.memfdCreate("m", 0);
    // MAX_LFS_FILESIZE is 2^63 - 1: the last whole page that fits starts at 2^63 - 2 pages
    const last = ((1n << 51n) - 2n) << 12n;
    expect(libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, last + PAGE)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EOVERFLOW);
    expect(libc.mmap(0n, 2n * PAGE, PROT_READ, MAP_SHARED, fd, last)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EOVERFLOW);
    expect(libc.process.mm.mapCount).toBe(0);
    expect(libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, last)).not.toBe(MAP_FAILED);
  });

  it("a length beyond TASK_SIZE is ENOMEM (get_unmapped_area) before file_mmap_ok's EOVERFLOW", () => {
    const { libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    const offset = ((1n << 52n) - 1n) << 12n;
    expect(libc.mmap(0n, 1n << 48n, PROT_READ, MAP_SHARED, fd, offset)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(ENOMEM);
    // a length the search cannot place, and MAP_FIXED_NOREPLACE over a mapping, come first too
    expect(libc.mmap(0n, TASK_SIZE, PROT_READ, MAP_SHARED, fd, offset)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(ENOMEM);
    const va = libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    const noreplace = MAP_SHARED | MAP_FIXED_NOREPLACE;
    expect(libc.mmap(va, PAGE, PROT_READ, noreplace, fd, offset)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EEXIST);
  });

  it("a device file may be mapped at any offset an unsigned long holds (file_mmap_size_max)", async () => {
    const { k, libc } = await freshSetup();
    const fops: FileOperations = { name: "wide", mmap: (_f, vma) => vma.remapPfnRange(0) };
    k.registerDevice("/dev/wide", (_k, flags) => new File(fops, null, flags));
    const fd = libc.open("/dev/wide", O_RDONLY);
    const last = ((1n << 52n) - 2n) << 12n;
    expect(libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, last)).not.toBe(MAP_FAILED);
    expect(libc.mmap(0n, 2n * PAGE, PROT_READ, MAP_SHARED, fd, last)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EOVERFLOW);
  });

  it("MAP_FIXED needs a page-aligned address: any low bit set is EINVAL", () => {
    const { libc } = machine();
    expect(libc.mmap(0x10800n, PAGE, RW, ANON | MAP_FIXED, -1, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.process.mm.mapCount).toBe(0);
  });

  it("MAP_FIXED maps at mmap_min_addr but not below it", () => {
    const { libc } = machine();
    expect(libc.mmap(MMAP_MIN_ADDR, PAGE, RW, ANON | MAP_FIXED, -1, 0)).toBe(MMAP_MIN_ADDR);
    expect(libc.mmap(MMAP_MIN_ADDR - PAGE, PAGE, RW, ANON | MAP_FIXED, -1, 0)).toBe(MAP_FAILED);
    expect(spans(libc)).toEqual([[MMAP_MIN_ADDR, MMAP_MIN_ADDR + PAGE]]);
  });

  it("MAP_FIXED hugetlb at an address that is not huge-page aligned is EINVAL", () => {
    const { libc } = machine();
    const flags = ANON | MAP_HUGETLB | MAP_HUGE_2MB | MAP_FIXED;
    expect(libc.mmap(0x4000_1000n, 2n * MiB, RW, flags, -1, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.mmap(0x4020_0000n, 2n * MiB, RW, flags, -1, 0)).toBe(0x4020_0000n);
  });

  it("a hugetlb length is rounded up to whole huge pages, an exact one is kept", () => {
    const { libc } = machine();
    const flags = ANON | MAP_HUGETLB | MAP_HUGE_2MB;
    const exact = libc.mmap(0n, 2n * MiB, RW, flags, -1, 0);
    expect(libc.process.mm.vmaAt(exact)!.npages).toBe(512);
    const rounded = libc.mmap(0n, 2n * MiB + 1n, RW, flags, -1, 0);
    expect(libc.process.mm.vmaAt(rounded)!.npages).toBe(1024);
  });

  it("EACCES for a mapping of a file not open for reading, even a shared writable one", () => {
    const { k, libc } = machine();
    barDevice(k, "remap");
    const fd = libc.open("/dev/bar", O_WRONLY);
    expect(libc.mmap(0n, PAGE, RW, MAP_SHARED, fd, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EACCES);
    expect(libc.process.files.lookup(fd).refcount).toBe(1);
  });

  it("MAP_SHARED_VALIDATE maps files and anonymous memory shared", () => {
    const { libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 4096);
    const a = libc.mmap(0n, PAGE, RW, MAP_SHARED_VALIDATE, fd, 0);
    const b = libc.mmap(0n, PAGE, RW, MAP_SHARED, fd, 0);
    libc.poke(a, new Uint8Array([7]));
    expect(libc.peek(b, 1)[0]).toBe(7);
    const anon = libc.mmap(0n, PAGE, RW, MAP_SHARED_VALIDATE | MAP_ANONYMOUS, -1, 0);
    const child = libc.fork();
    child.poke(anon, new Uint8Array([9]));
    expect(libc.peek(anon, 1)[0]).toBe(9);
  });
});

describe("VMA flags do_mmap computes", () => {
  it("a read-only open mapped MAP_SHARED loses VM_MAYWRITE and VM_SHARED, keeps VM_MAYSHARE", () => {
    const { k, libc } = machine();
    barDevice(k, "remap");
    const fd = libc.open("/dev/bar", O_RDONLY);
    const va = libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    expect(libc.process.mm.vmaAt(va)!.flags).toBe(
      VM_READ |
        VM_MAYREAD |
        VM_MAYEXEC |
        VM_MAYSHARE |
        VM_PFNMAP |
        VM_IO |
        VM_DONTEXPAND |
        VM_DONTDUMP,
    );
  });

  it("anonymous mappings: private ones carry no VM_SHARED or VM_HUGETLB, shared ones do share", () => {
    const { libc } = machine();
    const mm = libc.process.mm;
    const priv = libc.mmap(0n, PAGE, RW, ANON, -1, 0);
    expect(mm.vmaAt(priv)!.flags).toBe(VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC);
    const shared = libc.mmap(0n, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    expect(mm.vmaAt(shared)!.flags & (VM_SHARED | VM_MAYSHARE | VM_HUGETLB)).toBe(
      VM_SHARED | VM_MAYSHARE,
    );
  });

  it("shared anonymous memory is a shmem file named as /proc/PID/maps shows it", () => {
    const { libc } = machine();
    const mm = libc.process.mm;
    const zero = libc.mmap(0n, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    const huge = libc.mmap(0n, 2n * MiB, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    expect(mm.vmaAt(zero)!.mapping!.name).toBe("dev/zero");
    expect(mm.vmaAt(huge)!.mapping!.name).toBe("anon_hugepage");
  });

  it("shared anonymous memory is freed with its last mapping: the mapping holds the only file reference", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 2n * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    const file = libc.process.mm.vmaAt(va)!.file!;
    expect(file.refcount).toBe(1);
    libc.poke(va, new Uint8Array(8192).fill(1));
    expect(k.mem.allocatedPages()).toBe(2);
    libc.munmap(va, 2n * PAGE);
    expect(file.released).toBe(true);
    expect(k.mem.allocatedPages()).toBe(0);
  });
});

describe("placement (get_unmapped_area)", () => {
  it("a hint is rounded down to its page", () => {
    const { libc } = machine();
    expect(libc.mmap(0x1000_0800n, PAGE, RW, ANON, -1, 0)).toBe(0x1000_0000n);
  });

  it("a hint below mmap_min_addr asks for mmap_min_addr; one inside page 0 is no hint", () => {
    const { libc } = machine();
    expect(libc.mmap(0x1000n, PAGE, RW, ANON, -1, 0)).toBe(MMAP_MIN_ADDR);
    expect(libc.mmap(0x800n, PAGE, RW, ANON, -1, 0)).toBe(MMAP_BASE - PAGE);
  });

  it("a hugetlb hint is aligned up to the huge page size", () => {
    const { libc } = machine();
    const flags = ANON | MAP_HUGETLB | MAP_HUGE_2MB;
    expect(libc.mmap(0x1000_1000n, 2n * MiB, RW, flags, -1, 0)).toBe(0x1020_0000n);
  });

  it("a hint whose range ends exactly at TASK_SIZE is taken; one past it is not", () => {
    const { libc } = machine();
    expect(libc.mmap(TASK_SIZE - PAGE, PAGE, RW, ANON, -1, 0)).toBe(TASK_SIZE - PAGE);
    expect(libc.mmap(TASK_SIZE, PAGE, RW, ANON, -1, 0)).toBe(MMAP_BASE - PAGE);
    const huge = ANON | MAP_HUGETLB | MAP_HUGE_2MB;
    // aligned up to 2^47 - 2 MiB, whose end is past TASK_SIZE: the search places it instead
    expect(libc.mmap(TASK_SIZE - 2n * MiB, 2n * MiB, RW, huge, -1, 0)).toBe(MMAP_BASE - 4n * MiB);
  });

  it("a hint over a mapping falls back to the top-down search", () => {
    const { libc } = machine();
    const low = libc.mmap(0x1000_0000n, 4n * PAGE, RW, ANON, -1, 0);
    expect(libc.mmap(low + PAGE, PAGE, RW, ANON, -1, 0)).toBe(MMAP_BASE - PAGE);
  });

  it("the search ignores mappings above MMAP_BASE", () => {
    const { libc } = machine();
    const high = MMAP_BASE + 0x10_0000_0000n;
    expect(libc.mmap(high, PAGE, RW, ANON, -1, 0)).toBe(high);
    expect(libc.mmap(0n, PAGE, RW, ANON, -1, 0)).toBe(MMAP_BASE - PAGE);
  });

  it("the search takes the highest gap that fits, an exact fit included, and skips smaller ones", () => {
    const { libc } = machine();
    const top = libc.mmap(0n, 4n * PAGE, RW, ANON, -1, 0);
    expect(top).toBe(MMAP_BASE - 4n * PAGE);
    // a one-page hole at top + PAGE: too small for two pages, an exact fit for one
    libc.munmap(top + PAGE, PAGE);
    expect(libc.mmap(0n, 2n * PAGE, RW, ANON, -1, 0)).toBe(top - 2n * PAGE);
    expect(libc.mmap(0n, PAGE, RW, ANON, -1, 0)).toBe(top + PAGE);
    expect(libc.mmap(0n, PAGE, RW, ANON, -1, 0)).toBe(top - 3n * PAGE);
  });

  it("a hugetlb mapping goes in the highest huge-aligned gap between mappings", () => {
    const { libc } = machine();
    const low = libc.mmap(0x1000_0000n, PAGE, RW, ANON, -1, 0);
    const top = libc.mmap(0n, PAGE, RW, ANON, -1, 0);
    expect(top).toBe(MMAP_BASE - PAGE);
    const huge = libc.mmap(0n, 2n * MiB, RW, ANON | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    expect(huge).toBe(MMAP_BASE - 2n * MiB - 2n * MiB);
    expect(low).toBe(0x1000_0000n);
  });

  it("the lowest placement is mmap_min_addr; a length that fits nowhere is ENOMEM", () => {
    const { libc } = machine();
    const len = MMAP_BASE - MMAP_MIN_ADDR;
    expect(libc.mmap(0n, len, PROT_READ, ANON, -1, 0)).toBe(MMAP_MIN_ADDR);
    libc.munmap(MMAP_MIN_ADDR, len);
    expect(libc.mmap(0n, len + PAGE, PROT_READ, ANON, -1, 0)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(ENOMEM);
    expect(libc.process.mm.mapCount).toBe(0);
  });

  it("the VMA list stays in address order, found by address, whatever the order of mapping", () => {
    const { libc } = machine();
    const mid = libc.mmap(0x2000_0000n, PAGE, RW, ANON, -1, 0);
    const top = libc.mmap(0n, PAGE, RW, ANON, -1, 0);
    const low = libc.mmap(0x1000_0000n, PAGE, RW, ANON, -1, 0);
    const high = libc.mmap(0x3000_0000n, PAGE, RW, ANON, -1, 0);
    expect(spans(libc).map(([s]) => s)).toEqual([low, mid, high, top]);
    for (const [i, va] of [low, mid, high, top].entries()) {
      libc.poke(va, new Uint8Array([i + 1]));
      expect(libc.process.mm.vmaAt(va)!.startAddr).toBe(va);
    }
    expect([low, mid, high, top].map((va) => libc.peek(va, 1)[0])).toEqual([1, 2, 3, 4]);
  });
});

describe("MAP_FIXED_NOREPLACE", () => {
  it("fits a range that only touches mappings on both sides", () => {
    const { libc } = machine();
    const base = 0x1000_0000n;
    libc.mmap(base, PAGE, RW, ANON | MAP_FIXED, -1, 0);
    libc.mmap(base + 2n * PAGE, PAGE, RW, ANON | MAP_FIXED, -1, 0);
    expect(libc.mmap(base + PAGE, PAGE, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0)).toBe(base + PAGE);
    expect(libc.mmap(base + PAGE, 2n * PAGE, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0)).toBe(
      MAP_FAILED,
    );
    expect(libc.errno).toBe(EEXIST);
    expect(libc.process.mm.mapCount).toBe(3);
  });
});

describe("MAP_POPULATE (populate_vma_page_range)", () => {
  it("prefaults a private writable mapping for write: a private file mapping gets its copies", () => {
    const { libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 3n * PAGE);
    const va = libc.mmap(0n, 3n * PAGE, RW, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    const mm = libc.process.mm;
    expect(mm.residentPrivatePages).toBe(3);
    expect(mm.isExclusive(Number(va >> 12n) + 2)).toBe(true);
  });

  it("prefaults a read-only private file mapping for read: page cache, no private copy", () => {
    const { k, libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 2n * PAGE);
    libc.mmap(0n, 2n * PAGE, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    expect(libc.process.mm.residentPrivatePages).toBe(0);
    expect(k.mem.allocatedPages()).toBe(2);
  });

  it("prefaults a read-only anonymous mapping (a read fault per page)", () => {
    const { k, libc } = machine();
    libc.mmap(0n, 3n * PAGE, PROT_READ, ANON | MAP_POPULATE, -1, 0);
    expect(k.mem.allocatedPages()).toBe(3);
  });

  it("prefaults a shared writable file mapping through the page cache", () => {
    const { k, libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 2n * PAGE);
    libc.mmap(0n, 2n * PAGE, RW, MAP_SHARED | MAP_POPULATE, fd, 0);
    expect(k.mem.allocatedPages()).toBe(2);
    expect(libc.process.mm.residentPrivatePages).toBe(0);
  });

  it("stops at the first page that cannot be had; the mapping stands", () => {
    const { k, libc } = machine();
    const fault = k.current.fault;
    fault.arm(2);
    const va = libc.mmap(0n, 3n * PAGE, RW, ANON | MAP_POPULATE, -1, 0);
    expect(fault.failedSite).toBe("do_anonymous_page");
    fault.disarm();
    expect(va).not.toBe(MAP_FAILED);
    expect(k.mem.allocatedPages()).toBe(1);
    expect(libc.process.mm.hasPrivatePte(Number(va >> 12n) + 2)).toBe(false);
  });

  it("stops at the end of the VMA, leaving the next mapping alone", () => {
    const { k, libc } = machine();
    const base = 0x1000_0000n;
    libc.mmap(base + PAGE, PAGE, RW, ANON | MAP_FIXED, -1, 0);
    libc.mmap(base, PAGE, RW, ANON | MAP_FIXED | MAP_POPULATE, -1, 0);
    expect(k.mem.allocatedPages()).toBe(1);
    expect(libc.process.mm.hasPrivatePte(Number((base + PAGE) >> 12n))).toBe(false);
  });

  it("a page that cannot be faulted ends the prefault, the mapping stands", () => {
    const { k, libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, PAGE);
    const va = libc.mmap(0n, 2n * PAGE, RW, MAP_SHARED | MAP_POPULATE, fd, 0);
    expect(va).not.toBe(MAP_FAILED);
    expect(k.mem.allocatedPages()).toBe(1);
    expectErrno(() => libc.peek(va + PAGE, 1), EFAULT);
  });
});

describe("trace events", () => {
  it("mm:mmap, mm:munmap, mm:fork and mm:exit carry what happened", () => {
    const { k, libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, PAGE);
    const { records } = k.trace.record(() => {
      const va = libc.mmap(0n, 2n * PAGE, RW, ANON, -1, 0);
      libc.poke(va, new Uint8Array(8192).fill(1));
      pinUserPages(k, libc.process.mm, va, 1, FOLL_WRITE | FOLL_LONGTERM, new PfnRuns());
      const fva = libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, 0);
      const child = libc.fork();
      libc.munmap(fva, PAGE);
      child.exit();
    });
    const mm = records.filter((r) => r.name.startsWith("mm:")).map((r) => [r.name, r.data]);
    expect(mm).toEqual([
      [
        "mm:mmap",
        { addr: MMAP_BASE - 2n * PAGE, len: 2n * PAGE, prot: RW, flags: ANON, file: "anon" },
      ],
      [
        "mm:mmap",
        {
          addr: MMAP_BASE - 3n * PAGE,
          len: PAGE,
          prot: PROT_READ,
          flags: MAP_SHARED,
          file: "shmem",
        },
      ],
      // the pinned exclusive page is copied for the child at once, the other shared
      ["mm:fork", { vmas: 2, sharedPages: 1, copiedPages: 1 }],
      ["mm:munmap", { addr: MMAP_BASE - 3n * PAGE, len: PAGE }],
      ["mm:exit", { vmas: 2 }],
    ]);
  });
});
