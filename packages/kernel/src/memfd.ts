import { EFBIG, EINVAL, ENODEV, ENOMEM, EPERM } from "./errno.js";
import { fail } from "./error.js";
import {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_EXEC,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
} from "./fcntl.js";
import { File, type FileOperations, O_RDWR } from "./file.js";
import type { Kernel } from "./kernel.js";
import { VM_MAYWRITE, VM_SHARED, VM_WRITE } from "./mm-flags.js";
import type { VmOperations, Vma } from "./mm.js";
import { PAGE_SHIFT, PAGE_SIZE, PMD_ORDER, PUD_ORDER, type PhysMem } from "./physmem.js";
import type { PfnRuns } from "./pfn-runs.js";
import { XArray } from "./xarray.js";

/**
 * shmem and hugetlbfs files, and memfd_create on top of them. A file's page cache maps a
 * folio index (page offset >> folio order) to the head pfn of its folio and holds one
 * reference on it. Folios are allocated when first touched (fault, GUP or memfd_pin_folios);
 * truncation drops the page cache's reference, so a pinned folio outlives the truncate until
 * its last unpin. shmem uses order-0 folios; hugetlb files use 2 MiB or 1 GiB folios.
 *
 * Decision: hugetlb folios come from the same allocator on first touch (no pre-reserved pool,
 * no reservation at mmap); running out is ENOMEM at fault time.
 */
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;
export const MFD_HUGETLB = 0x4;
export const MFD_NOEXEC_SEAL = 0x8;
const MFD_EXEC = 0x10;
const MFD_HUGE_SHIFT = 26;
const MFD_HUGE_MASK = 0x3f;
export const MFD_HUGE_2MB = 21 << MFD_HUGE_SHIFT;
export const MFD_HUGE_1GB = 30 << MFD_HUGE_SHIFT;
const MFD_ALL_FLAGS = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC;
/** NAME_MAX minus the "memfd:" prefix. */
const MFD_NAME_MAX_LEN = 255 - 6;
/** MAX_LFS_FILESIZE on 64-bit. */
const MAX_LFS_FILESIZE = (1n << 63n) - 1n;

/** The inode of a shmem or hugetlbfs file: its size, page cache, mode and seals. */
export class ShmemInode {
  size = 0n;
  /** F_SEAL_* bits; a new inode refuses seals until memfd_create(MFD_ALLOW_SEALING). */
  seals = F_SEAL_SEAL;
  /** Permission bits (S_IRWXUGO at creation). */
  mode = 0o777;
  /** Shared mappings that may write (i_mmap_writable), counted by the VMAs' open/close. */
  mmapWritable = 0;
  /** folio index -> head pfn */
  private readonly cache = new XArray();

  constructor(
    readonly mem: PhysMem,
    readonly name: string,
    /** Folio order: 0 for shmem, 9 or 18 for hugetlb. */
    readonly order: number,
  ) {}

  get hugetlb(): boolean {
    return this.order !== 0;
  }

  /** Bytes per folio. */
  get folioBytes(): bigint {
    return BigInt(PAGE_SIZE) << BigInt(this.order);
  }

  /** Pages in the page cache (for tests and accounting displays). */
  get cachedPages(): number {
    return this.cache.count * 2 ** this.order;
  }

  /** Head pfn of the cached folio covering page `pgoff`, or -1. */
  findFolio(pgoff: number): number {
    return this.cache.load(Math.floor(pgoff / 2 ** this.order));
  }

  /**
   * shmem_get_folio (SGP_CACHE): the head pfn of the folio covering page `pgoff`, allocated
   * and added to the cache when missing. Past EOF is EINVAL; allocation failure ENOMEM.
   */
  getFolio(pgoff: number, site = "shmem_alloc_folio"): number {
    if (BigInt(pgoff) << BigInt(PAGE_SHIFT) >= this.size) fail(EINVAL, "page beyond EOF");
    const idx = Math.floor(pgoff / 2 ** this.order);
    let head = this.cache.load(idx);
    if (head < 0) {
      head = this.mem.allocFolio(this.order, site);
      this.cache.store(idx, head);
    }
    return head;
  }

  /**
   * The smallest size a shrink ever left (undefined: never shrunk). A page at or past it may
   * have been dropped from the cache and replaced by a new folio since; a page below it still
   * has the folio it first got. Kept for invariant checks.
   */
  shrunkTo: bigint | undefined;

  /**
   * Frame `pfn` is part of a folio in this file's page cache (the kernel's folio->mapping is
   * this file). A truncated folio has left the cache even while pins keep it allocated. One
   * pass over the cache: for invariant checks, not for hot paths.
   */
  cachesPfn(pfn: number): boolean {
    const span = 2 ** this.order;
    let found = false;
    this.cache.forEachInRange(0, Number.MAX_SAFE_INTEGER, (_i, head) => {
      if (pfn >= head && pfn < head + span) found = true;
    });
    return found;
  }

  /** A cached page is pinned: memfd_wait_for_pins would give up. */
  hasPinnedPages(): boolean {
    let pinned = false;
    this.cache.forEachInRange(0, Number.MAX_SAFE_INTEGER, (_i, head) => {
      if (this.mem.pinCount(head) > 0) pinned = true;
    });
    return pinned;
  }

  /**
   * Change the size (shmem_setattr / hugetlbfs_setattr): EFBIG past MAX_LFS_FILESIZE, EINVAL
   * for a hugetlbfs size that is not a multiple of the huge page size, EPERM against
   * F_SEAL_SHRINK / F_SEAL_GROW. Folios wholly past the new EOF leave the cache, and a partial
   * last page is zeroed beyond EOF.
   */
  setSize(size: bigint): void {
    if (size < 0n) fail(EINVAL, "negative size");
    if (size > MAX_LFS_FILESIZE) fail(EFBIG, "size beyond MAX_LFS_FILESIZE");
    if (this.hugetlb && size % this.folioBytes !== 0n)
      fail(EINVAL, "hugetlbfs size not a multiple of the huge page size");
    if (
      (size < this.size && this.seals & F_SEAL_SHRINK) ||
      (size > this.size && this.seals & F_SEAL_GROW)
    )
      fail(EPERM, "size change against a seal");
    if (size < this.size) {
      if (this.shrunkTo === undefined || size < this.shrunkTo) this.shrunkTo = size;
      const keep = Number((size + this.folioBytes - 1n) / this.folioBytes);
      const end = Number((this.size + this.folioBytes - 1n) / this.folioBytes);
      this.cache.eraseRange(keep, end, (_i, head) => this.mem.folioPut(head));
      const tail = Number(size & BigInt(PAGE_SIZE - 1));
      const pgoff = Number(size >> BigInt(PAGE_SHIFT));
      const head = this.findFolio(pgoff);
      if (tail !== 0 && head >= 0) {
        const zeroes = new Uint8Array(PAGE_SIZE - tail);
        this.mem.writePfn(head + (pgoff % 2 ** this.order), tail, zeroes, 0, zeroes.length);
      }
    }
    this.size = size;
  }

  /** Drop the whole page cache (last close of the file). */
  evictAll(): void {
    this.cache.eraseRange(0, Number.MAX_SAFE_INTEGER, (_i, head) => this.mem.folioPut(head));
  }
}

/** Keeps i_mmap_writable: a shared VMA that may write counts while it exists. */
const sharedWritableVmOps: VmOperations = {
  open(vma) {
    vma.mapping!.mmapWritable++;
  },
  close(vma) {
    vma.mapping!.mmapWritable--;
  },
};

/**
 * shmem_mmap / hugetlbfs_file_mmap after memfd_check_seals_mmap: a write seal refuses a new
 * shared writable mapping (EPERM) and takes VM_MAYWRITE from a shared read-only one.
 */
function memfdMmap(file: File, vma: Vma): void {
  const inode = shmemInode(file)!;
  if (inode.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) && vma.flags & VM_SHARED) {
    if (vma.flags & VM_WRITE) fail(EPERM, "shared writable mapping of a write-sealed memfd");
    vma.flags &= ~VM_MAYWRITE;
  }
  if (inode.hugetlb) {
    const mask = 2 ** inode.order - 1;
    // hugetlbfs_file_mmap: the offset must be huge-page aligned.
    if (vma.pgoff & mask) fail(EINVAL, "hugetlb mmap offset not aligned");
  }
  vma.mapping = inode;
  if (vma.flags & VM_SHARED && vma.flags & VM_MAYWRITE) {
    vma.ops = sharedWritableVmOps;
    inode.mmapWritable++;
  }
}

/** shmem_file_read_iter / hugetlbfs_read_iter: up to EOF; holes read as zeroes. */
function shmemRead(file: File, len: number, pos: bigint): Uint8Array {
  const inode = shmemInode(file)!;
  if (pos >= inode.size) return new Uint8Array(0);
  const avail = inode.size - pos;
  const n = BigInt(len) < avail ? len : Number(avail);
  const out = new Uint8Array(n);
  const folioPages = 2 ** inode.order;
  for (let done = 0; done < n; ) {
    const at = pos + BigInt(done);
    const pgoff = Number(at >> BigInt(PAGE_SHIFT));
    const off = Number(at & BigInt(PAGE_SIZE - 1));
    const chunk = Math.min(n - done, PAGE_SIZE - off);
    const head = inode.findFolio(pgoff);
    if (head >= 0) inode.mem.readPfn(head + (pgoff % folioPages), off, out, done, chunk);
    done += chunk;
  }
  return out;
}

/**
 * shmem_file_write_iter, one page at a time as generic_perform_write calls shmem_write_begin:
 * a write seal is EPERM, and F_SEAL_GROW stops the write at the page that would pass EOF.
 * Bytes written before a failure are returned; a failure on the first page is thrown.
 */
function shmemWrite(file: File, data: Uint8Array, pos: bigint): number {
  const inode = shmemInode(file)!;
  if (data.length === 0) return 0;
  if (pos >= MAX_LFS_FILESIZE) fail(EFBIG, "write at MAX_LFS_FILESIZE");
  let done = 0;
  try {
    while (done < data.length) {
      const at = pos + BigInt(done);
      const pgoff = Number(at >> BigInt(PAGE_SHIFT));
      const off = Number(at & BigInt(PAGE_SIZE - 1));
      const chunk = Math.min(data.length - done, PAGE_SIZE - off);
      const end = at + BigInt(chunk);
      if (inode.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) fail(EPERM, "memfd write-sealed");
      if (inode.seals & F_SEAL_GROW && end > inode.size) fail(EPERM, "write past EOF, F_SEAL_GROW");
      const oldSize = inode.size;
      if (end > oldSize) inode.size = end;
      let head: number;
      try {
        head = inode.getFolio(pgoff, "shmem_write_begin");
      } catch (e) {
        inode.size = oldSize;
        throw e;
      }
      inode.mem.writePfn(head, off, data, done, chunk);
      done += chunk;
    }
  } catch (e) {
    if (done > 0) return done;
    throw e;
  }
  return done;
}

const shmemFops: FileOperations = {
  name: "shmem",
  mmap: memfdMmap,
  read: shmemRead,
  write: shmemWrite,
  release(file) {
    shmemInode(file)!.evictAll();
  },
};

/** hugetlbfs files can be read but have no write method (EINVAL). */
const hugetlbFops: FileOperations = {
  name: "hugetlbfs",
  mmap: memfdMmap,
  read: shmemRead,
  release: shmemFops.release!,
};

/** The inode behind a shmem/hugetlbfs file, or undefined for any other file. */
export function shmemInode(file: File): ShmemInode | undefined {
  return file.fops === shmemFops || file.fops === hugetlbFops
    ? (file.priv as ShmemInode)
    : undefined;
}

/** shmem_file / is_file_hugepages: a file memfd_pin_folios accepts. */
export function isMemfd(file: File): boolean {
  return shmemInode(file) !== undefined;
}

/** Folio order for hugetlb flags (MFD_HUGE_* / MAP_HUGE_* share the encoding), or ENODEV. */
export function hugetlbOrder(flags: number, shift = MFD_HUGE_SHIFT): number {
  const log = (flags >>> shift) & MFD_HUGE_MASK;
  if (log === 0 || log === PAGE_SHIFT + PMD_ORDER) return PMD_ORDER;
  if (log === PAGE_SHIFT + PUD_ORDER) return PUD_ORDER;
  return fail(ENODEV, `no hugetlb pool of 2^${log} bytes`);
}

/** The memfd_create checks that come before a descriptor is reserved (EINVAL). */
export function memfdCheckArgs(name: string, flags: number): void {
  // flags is an unsigned int: MFD_HUGE_* values may use bit 31.
  const allowed =
    flags & MFD_HUGETLB ? MFD_ALL_FLAGS | (MFD_HUGE_MASK << MFD_HUGE_SHIFT) : MFD_ALL_FLAGS;
  if (
    !Number.isInteger(flags) ||
    flags < -(2 ** 31) ||
    flags >= 2 ** 32 ||
    (flags & ~allowed) !== 0
  )
    fail(EINVAL, "unknown memfd flags");
  if (flags & MFD_EXEC && flags & MFD_NOEXEC_SEAL) fail(EINVAL, "MFD_EXEC with MFD_NOEXEC_SEAL");
  if (name.length > MFD_NAME_MAX_LEN) fail(EINVAL, "memfd name too long");
}

/** An unnamed shmem or hugetlb file (shmem_file_setup / hugetlb_file_setup). */
export function shmemFileSetup(
  kernel: Pick<Kernel, "mem" | "shouldFail">,
  name: string,
  size: bigint,
  order: number,
): File {
  if (kernel.shouldFail("alloc_file")) fail(ENOMEM, "alloc_file: injected");
  const inode = new ShmemInode(kernel.mem, name, order);
  inode.setSize(size);
  return new File(order === 0 ? shmemFops : hugetlbFops, inode, O_RDWR);
}

/**
 * memfd_create without the descriptor: a shmem file, or with MFD_HUGETLB a hugetlbfs file
 * whose page size comes from MFD_HUGE_2MB / MFD_HUGE_1GB (default 2 MiB). MFD_NOEXEC_SEAL
 * drops the exec bits and seals F_SEAL_EXEC; MFD_ALLOW_SEALING lifts the initial F_SEAL_SEAL.
 *
 * Decision: vm.memfd_noexec is 0, so neither MFD_EXEC nor MFD_NOEXEC_SEAL means MFD_EXEC.
 */
export function memfdCreate(kernel: Kernel, name: string, flags: number): File {
  memfdCheckArgs(name, flags);
  const order = flags & MFD_HUGETLB ? hugetlbOrder(flags) : 0;
  const file = shmemFileSetup(kernel, `memfd:${name}`, 0n, order);
  const inode = shmemInode(file)!;
  if (flags & MFD_NOEXEC_SEAL) {
    inode.mode &= ~0o111;
    inode.seals |= F_SEAL_EXEC;
  }
  if (flags & MFD_ALLOW_SEALING) inode.seals &= ~F_SEAL_SEAL;
  kernel.trace.emit("memfd:create", { name, order });
  return file;
}

function inodeOrEinval(file: File): ShmemInode {
  const inode = shmemInode(file);
  if (!inode) fail(EINVAL, `${file.fops.name} is not a memfd`);
  return inode;
}

/** i_size_read */
export function fileSize(file: File): bigint {
  return inodeOrEinval(file).size;
}

/** vfs_truncate / do_truncate on a shmem or hugetlbfs file. */
export function vfsTruncate(file: File, size: bigint): void {
  inodeOrEinval(file).setSize(size);
}

/**
 * memfd_pin_folios followed by iommufd's per-page pin top-up: every page backing bytes
 * [start, end] (end inclusive) gets one FOLL_PIN | FOLL_LONGTERM pin, allocating missing
 * folios like a shmem fault, at most `maxPages` pages. Returns the pages pinned and the byte
 * offset of `start` in its page. EINVAL for a bad range, a non-memfd file or a range past
 * EOF; ENOMEM when an allocation fails. On failure nothing stays pinned.
 *
 * Decision: the kernel pins once per folio and iommufd adds the missing per-page pins right
 * after; both happen here so the caller sees per-page pins, like every other pin source.
 */
export function memfdPinFolios(
  kernel: Kernel,
  file: File,
  start: bigint,
  end: bigint,
  out: PfnRuns,
  maxPages: number,
): { npages: number; offset: number } {
  if (start < 0n || start > end || maxPages <= 0)
    fail(EINVAL, "bad memfd pin range", { start, end, maxPages });
  const inode = inodeOrEinval(file);
  if (end >= inode.size) fail(EINVAL, "memfd pin range past EOF", { end, size: inode.size });
  const mem = kernel.mem;
  const first = Number(start >> BigInt(PAGE_SHIFT));
  const last = Number(end >> BigInt(PAGE_SHIFT));
  const stop = Math.min(last + 1, first + maxPages);
  const folioPages = 2 ** inode.order;
  const before = out.totalPages;
  let pg = first;
  try {
    while (pg < stop) {
      const head = inode.getFolio(pg, "memfd_alloc_folio");
      const inFolio = pg % folioPages;
      const n = Math.min(stop - pg, folioPages - inFolio);
      mem.pinPages(head + inFolio, n);
      out.push(head + inFolio, n);
      pg += n;
    }
  } catch (e) {
    unpinTail(mem, out, before);
    throw e;
  }
  kernel.trace.emit("memfd:pin", { start, end, npages: stop - first });
  return { npages: stop - first, offset: Number(start & BigInt(PAGE_SIZE - 1)) };
}

/** Unpin and drop the pages appended to `out` after its first `keep` pages. */
function unpinTail(mem: PhysMem, out: PfnRuns, keep: number): void {
  let page = 0;
  out.forEach((pfn, n) => {
    const skip = Math.max(0, Math.min(n, keep - page));
    if (n > skip) mem.unpinPages(pfn + skip, n - skip);
    page += n;
  });
  out.truncatePages(keep);
}
