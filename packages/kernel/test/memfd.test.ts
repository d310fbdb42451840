import { describe, expect, it, vi } from "vitest";
import {
  EFBIG,
  EINVAL,
  ENODEV,
  ENOMEM,
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_WRITE,
  File,
  Kernel,
  Libc,
  MAP_FAILED,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  MFD_HUGE_2MB,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  isMemfd,
  memfdCreate,
  memfdPinFolios,
  unpinUserPageRuns,
  vfsTruncate,
} from "../src/index.js";
import { shmemInode } from "../src/memfd.js";
import { VM_MAYWRITE, VM_SHARED } from "../src/mm-flags.js";
import { expectErrno } from "./helpers.js";

const MAX_LFS_FILESIZE = (1n << 63n) - 1n;
const HUGE = 2n << 20n;

function setup(): { k: Kernel; libc: Libc } {
  const k = new Kernel({ ramBytes: 1n << 30n });
  return { k, libc: new Libc(k) };
}

/** Bytes 0, 1, 2, … (mod 251) over `n` bytes, so a misplaced chunk shows. */
function pattern(n: number, from = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (from + i) % 251);
}

function read(file: File, len: number, pos: bigint): Uint8Array {
  return file.fops.read!(file, len, pos);
}

describe("memfd_create flags and name (mm/memfd.c)", () => {
  it("rejects flags that are not an unsigned int, MFD_EXEC with MFD_NOEXEC_SEAL; a bit-31 huge size is ENODEV", () => {
    const { k } = setup();
    expectErrno(() => memfdCreate(k, "c", 1.5), EINVAL);
    // Below -2^31: the low 32 bits alone (MFD_HUGETLB) would be valid flags.
    expectErrno(() => memfdCreate(k, "c", MFD_HUGETLB - 2 ** 32), EINVAL);
    // MFD_EXEC (0x10) | MFD_NOEXEC_SEAL (0x8)
    expectErrno(() => memfdCreate(k, "c", 0x18), EINVAL);
    // log2 of 32 in MFD_HUGE_MASK << MFD_HUGE_SHIFT uses bit 31: valid flags, no such pool.
    expectErrno(() => memfdCreate(k, "c", MFD_HUGETLB | (32 << 26)), ENODEV);
  });

  it("names the file memfd:<name>; shmem files are writable, hugetlbfs files are not", () => {
    const { k, libc } = setup();
    const { result: f, records } = k.trace.record(() => memfdCreate(k, "a", 0));
    expect(shmemInode(f)!.name).toBe("memfd:a");
    expect(records.map((r) => [r.name, r.data])).toEqual([
      ["memfd:create", { name: "a", order: 0 }],
    ]);
    const fd = libc.memfdCreate("h", MFD_HUGETLB | MFD_HUGE_2MB);
    expect(libc.ftruncate(fd, HUGE)).toBe(0);
    expect(libc.pwrite(fd, Uint8Array.of(1), 0)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
  });

  it("isMemfd is false for any other file", () => {
    expect(isMemfd(new File({ name: "dev" }, {}))).toBe(false);
  });
});

describe("shmem_setattr (mm/shmem.c)", () => {
  it("sizes up to MAX_LFS_FILESIZE; beyond is EFBIG, negative EINVAL", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    expectErrno(() => vfsTruncate(f, -1n), EINVAL);
    expectErrno(() => vfsTruncate(f, MAX_LFS_FILESIZE + 1n), EFBIG);
    vfsTruncate(f, MAX_LFS_FILESIZE);
    expect(shmemInode(f)!.size).toBe(MAX_LFS_FILESIZE);
    vfsTruncate(f, 0n);
    expect(shmemInode(f)!.size).toBe(0n);
  });

  it("F_SEAL_GROW allows the same size and shrinking", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("g", MFD_ALLOW_SEALING);
    expect(libc.ftruncate(fd, 3 * PAGE_SIZE)).toBe(0);
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW)).toBe(0);
    expect(libc.ftruncate(fd, 3 * PAGE_SIZE)).toBe(0);
    expect(libc.ftruncate(fd, PAGE_SIZE)).toBe(0);
  });

  it("shrinking drops whole pages and zeroes the partial last page past EOF; a hole needs nothing", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    const inode = shmemInode(f)!;
    vfsTruncate(f, BigInt(3 * PAGE_SIZE));
    expect(f.fops.write!(f, new Uint8Array(2 * PAGE_SIZE).fill(0xaa), 0n)).toBe(2 * PAGE_SIZE);
    expect(inode.cachedPages).toBe(2);
    // Page 2 is a hole: shrinking into it leaves nothing to zero.
    vfsTruncate(f, BigInt(2 * PAGE_SIZE + 10));
    expect(inode.cachedPages).toBe(2);
    vfsTruncate(f, BigInt(PAGE_SIZE + 10));
    expect(inode.cachedPages).toBe(2);
    vfsTruncate(f, BigInt(2 * PAGE_SIZE));
    const page1 = read(f, PAGE_SIZE, BigInt(PAGE_SIZE));
    expect(page1.subarray(0, 10)).toEqual(new Uint8Array(10).fill(0xaa));
    expect(page1.subarray(10)).toEqual(new Uint8Array(PAGE_SIZE - 10));
    expect(read(f, 1, 0n)).toEqual(Uint8Array.of(0xaa));
    vfsTruncate(f, BigInt(PAGE_SIZE));
    expect(inode.cachedPages).toBe(1);
  });

  it("a cached folio is found again, allocating nothing; page 0's tail is zeroed too", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    const inode = shmemInode(f)!;
    vfsTruncate(f, BigInt(PAGE_SIZE));
    const head = inode.getFolio(0);
    expect(inode.getFolio(0)).toBe(head);
    expect(k.mem.allocatedPages()).toBe(1);
    f.fops.write!(f, new Uint8Array(PAGE_SIZE).fill(7), 0n);
    vfsTruncate(f, 10n);
    vfsTruncate(f, BigInt(PAGE_SIZE));
    expect(read(f, 12, 0n)).toEqual(Uint8Array.of(7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0));
  });

  it("records the smallest size a shrink left, never a grow", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    const inode = shmemInode(f)!;
    vfsTruncate(f, 4n * 4096n);
    vfsTruncate(f, 4n * 4096n);
    expect(inode.shrunkTo).toBeUndefined();
    vfsTruncate(f, 3n * 4096n);
    expect(inode.shrunkTo).toBe(3n * 4096n);
    vfsTruncate(f, 4096n);
    vfsTruncate(f, 4n * 4096n);
    vfsTruncate(f, 2n * 4096n);
    expect(inode.shrunkTo).toBe(4096n);
  });
});

describe("shmem page cache", () => {
  it("shmem_get_folio (SGP_CACHE) is EINVAL at or past EOF", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    vfsTruncate(f, BigInt(2 * PAGE_SIZE));
    const inode = shmemInode(f)!;
    expectErrno(() => inode.getFolio(2), EINVAL);
    k.current.fault.arm(1000);
    inode.getFolio(1);
    expect(k.current.fault.sitesHit).toEqual(["shmem_alloc_folio"]);
    k.current.fault.disarm();
  });

  it("cachesPfn / hasPinnedPages / cachedPages of a hugetlb file", () => {
    const { k } = setup();
    const f = memfdCreate(k, "h", MFD_HUGETLB | MFD_HUGE_2MB);
    vfsTruncate(f, 2n * HUGE);
    const inode = shmemInode(f)!;
    const runs = new PfnRuns();
    memfdPinFolios(k, f, 0n, 0n, runs, 1);
    const head = inode.findFolio(0);
    expect(inode.findFolio(511)).toBe(head);
    expect(inode.findFolio(512)).toBe(-1);
    expect(inode.cachedPages).toBe(512);
    expect(inode.hasPinnedPages()).toBe(true);
    expect([head - 1, head, head + 511, head + 512].map((p) => inode.cachesPfn(p))).toEqual([
      false,
      true,
      true,
      false,
    ]);
    unpinUserPageRuns(k, runs, false);
    expect(inode.hasPinnedPages()).toBe(false);
    vfsTruncate(f, 0n);
    expect(inode.cachesPfn(head)).toBe(false);
  });
});

describe("shmem_file_read_iter / shmem_file_write_iter (mm/shmem.c)", () => {
  it("reads up to EOF across pages, holes as zeroes; at or past EOF reads nothing", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    vfsTruncate(f, BigInt(4 * PAGE_SIZE));
    const data = pattern(PAGE_SIZE + 6, 7);
    expect(f.fops.write!(f, data, BigInt(PAGE_SIZE - 3))).toBe(data.length);
    expect(shmemInode(f)!.size).toBe(BigInt(4 * PAGE_SIZE));
    expect(read(f, PAGE_SIZE + 6, BigInt(PAGE_SIZE - 3))).toEqual(data);
    expect(read(f, 5, BigInt(PAGE_SIZE - 5))).toEqual(Uint8Array.of(0, 0, 7, 8, 9));
    // Page 3 is a hole.
    expect(read(f, 8, BigInt(3 * PAGE_SIZE))).toEqual(new Uint8Array(8));
    expect(read(f, 100, BigInt(4 * PAGE_SIZE - 2)).length).toBe(2);
    expect(read(f, 8, BigInt(4 * PAGE_SIZE)).length).toBe(0);
    expect(read(f, 8, BigInt(5 * PAGE_SIZE)).length).toBe(0);
  });

  it("reads a hugetlb file page by page inside its folio", () => {
    const { k } = setup();
    const f = memfdCreate(k, "h", MFD_HUGETLB | MFD_HUGE_2MB);
    vfsTruncate(f, HUGE);
    memfdPinFolios(k, f, 0n, 0n, new PfnRuns(), 1);
    const head = shmemInode(f)!.findFolio(0);
    k.mem.writePfn(head + 1, 0, Uint8Array.of(5, 6), 0, 2);
    expect(read(f, 2, BigInt(PAGE_SIZE))).toEqual(Uint8Array.of(5, 6));
  });

  it("a write of 0 bytes returns 0 even at MAX_LFS_FILESIZE; a byte there is EFBIG (generic_write_check_limits)", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("a", 0);
    expect(libc.pwrite(fd, new Uint8Array(0), MAX_LFS_FILESIZE)).toBe(0);
    expect(libc.pwrite(fd, Uint8Array.of(1), MAX_LFS_FILESIZE)).toBe(-1);
    expect(libc.errno).toBe(EFBIG);
  });

  it("an allocation failure leaves the size; after a written page the write is short (generic_perform_write)", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    const inode = shmemInode(f)!;
    k.current.fault.arm(1);
    expectErrno(() => f.fops.write!(f, Uint8Array.of(1), 0n), ENOMEM);
    expect(k.current.fault.sitesHit).toEqual(["shmem_write_begin"]);
    expect(inode.size).toBe(0n);
    k.current.fault.arm(2);
    expect(f.fops.write!(f, new Uint8Array(2 * PAGE_SIZE), 0n)).toBe(PAGE_SIZE);
    k.current.fault.disarm();
    expect(inode.size).toBe(BigInt(PAGE_SIZE));
  });
});

describe("shmem mmap (mm/memfd.c memfd_check_seals_mmap, fs/hugetlbfs/inode.c)", () => {
  it("a shared writable mapping counts in i_mmap_writable until munmap; a write seal clears VM_MAYWRITE of a read-only one", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("m", MFD_ALLOW_SEALING);
    expect(libc.ftruncate(fd, PAGE_SIZE)).toBe(0);
    const inode = shmemInode(libc.process.files.lookup(fd))!;
    const va = libc.mmap(0n, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    expect(inode.mmapWritable).toBe(1);
    expect(libc.munmap(va, PAGE_SIZE)).toBe(0);
    expect(inode.mmapWritable).toBe(0);
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)).toBe(0);
    const ro = libc.mmap(0n, PAGE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    const vma = libc.process.mm.vmaAt(ro)!;
    expect(vma.flags & VM_SHARED).toBe(VM_SHARED);
    expect(vma.flags & VM_MAYWRITE).toBe(0);
  });

  it("a hugetlb mapping's offset must be a multiple of the huge page size", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("h", MFD_HUGETLB | MFD_HUGE_2MB);
    expect(libc.ftruncate(fd, 2n * HUGE)).toBe(0);
    expect(libc.mmap(0n, HUGE, PROT_READ, MAP_SHARED, fd, 2 * PAGE_SIZE)).toBe(MAP_FAILED);
    expect(libc.errno).toBe(EINVAL);
  });
});

describe("memfd_pin_folios (mm/gup.c)", () => {
  it("starts inside a folio, stops at its end, and reports the pages from the first", () => {
    const { k } = setup();
    const f = memfdCreate(k, "h", MFD_HUGETLB | MFD_HUGE_2MB);
    vfsTruncate(f, 2n * HUGE);
    const runs = new PfnRuns();
    k.current.fault.arm(1000);
    const { result, records } = k.trace.record(() =>
      memfdPinFolios(k, f, BigInt(PAGE_SIZE) + 5n, 2n * HUGE - 1n, runs, 1 << 20),
    );
    expect(k.current.fault.sitesHit).toEqual(["memfd_alloc_folio", "memfd_alloc_folio"]);
    k.current.fault.disarm();
    expect(result).toEqual({ npages: 1023, offset: 5 });
    expect(records.map((r) => [r.name, r.data])).toEqual([
      ["memfd:pin", { start: BigInt(PAGE_SIZE) + 5n, end: 2n * HUGE - 1n, npages: 1023 }],
    ]);
    const inode = shmemInode(f)!;
    const a = inode.findFolio(0);
    const b = inode.findFolio(512);
    expect(runs.pfn(0)).toBe(a + 1);
    expect(k.mem.pinCount(a)).toBe(511);
    expect(k.mem.pinCount(b)).toBe(512);
    expect(runs.totalPages).toBe(1023);
  });

  it("a failure undoes only its own pins, also inside a run merged with the caller's", () => {
    const { k } = setup();
    const f = memfdCreate(k, "a", 0);
    vfsTruncate(f, BigInt(4 * PAGE_SIZE));
    const runs = new PfnRuns();
    memfdPinFolios(k, f, 0n, 0n, runs, 1);
    const p0 = runs.pfn(0);
    k.current.fault.arm(2);
    expectErrno(
      () => memfdPinFolios(k, f, BigInt(PAGE_SIZE), BigInt(4 * PAGE_SIZE - 1), runs, 8),
      ENOMEM,
    );
    k.current.fault.disarm();
    const p1 = shmemInode(f)!.findFolio(1);
    expect(p1).toBe(p0 + 1);
    expect(runs.totalPages).toBe(1);
    expect(k.mem.pinCount(p0)).toBe(1);
    expect(k.mem.pinCount(p1)).toBe(0);
    expect(k.mem.totalPinned()).toBe(1);
  });
});

describe("memfd, evaluated per test", () => {
  it("module constants: the name limit, MAX_LFS_FILESIZE, the fops names, i_mmap_writable ops", async () => {
    // Evaluated here: these are constants of the module.
    vi.resetModules();
    const kernel = await import("../src/index.js");
    const memfd = await import("../src/memfd.js");
    const k = new kernel.Kernel({ ramBytes: 1n << 30n });
    const libc = new kernel.Libc(k);
    // NAME_MAX (255) minus "memfd:"
    expect(libc.memfdCreate("x".repeat(249), 0)).toBeGreaterThanOrEqual(0);
    expect(libc.memfdCreate("x".repeat(250), 0)).toBe(-1);
    expect(libc.errno).toBe(kernel.EINVAL);
    const fd = libc.memfdCreate("a", kernel.MFD_ALLOW_SEALING);
    expect(libc.ftruncate(fd, MAX_LFS_FILESIZE + 1n)).toBe(-1);
    expect(libc.errno).toBe(kernel.EFBIG);
    expect(libc.ftruncate(fd, PAGE_SIZE)).toBe(0);
    const file = libc.process.files.lookup(fd);
    expect(file.fops.name).toBe("shmem");
    const h = memfd.memfdCreate(k, "h", kernel.MFD_HUGETLB);
    expect(h.fops.name).toBe("hugetlbfs");
    const va = libc.mmap(0n, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    expect(libc.munmap(va, PAGE_SIZE)).toBe(0);
    expect(memfd.shmemInode(file)!.mmapWritable).toBe(0);
  });
});
