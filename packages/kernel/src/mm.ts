import { EACCES, EEXIST, EFAULT, EINVAL, ENODEV, ENOMEM, EOVERFLOW } from "./errno.js";
import { KernelWarning, fail, isKernelError } from "./error.js";
import { FMODE_READ, FMODE_WRITE, type File } from "./file.js";
import { type ShmemInode, hugetlbOrder, shmemFileSetup, shmemInode } from "./memfd.js";
import { PAGE_SHIFT, PAGE_SIZE, type PhysMem } from "./physmem.js";
import { RwSem, type Lockdep } from "./lockdep.js";
import type { TraceBus } from "./trace.js";
import { XA_STOP, XArray } from "./xarray.js";
import {
  VM_READ,
  VM_WRITE,
  VM_EXEC,
  VM_SHARED,
  VM_MAYREAD,
  VM_MAYWRITE,
  VM_MAYEXEC,
  VM_MAYSHARE,
  VM_PFNMAP,
  VM_IO,
  VM_DONTEXPAND,
  VM_HUGETLB,
  VM_DONTDUMP,
} from "./mm-flags.js";

/**
 * An address space (struct mm_struct): VMAs sorted by address, one sparse page table for the
 * private (copy-on-write) pages, and the pin/lock counters the DMA stack charges.
 *
 * What a VMA maps, by kind:
 * - shared file or shared anonymous (a shmem file made at mmap): the file's page cache, read
 *   on each access; no PTEs are kept, so truncation and eviction are seen at once.
 * - private anonymous: PTEs to anonymous folios, allocated on first touch.
 * - private file: the file's pages for reads; a write (or an unsharing pin) copies the page
 *   into an anonymous folio recorded in a PTE, which then shadows the file page.
 * - VM_PFNMAP (a driver's BAR mmap): a pfn from `remapPfnRange` or the driver's fault
 *   handler; no struct page, so GUP refuses it.
 *
 * A PTE is `pfn * 2 + exclusive`, exclusive playing PageAnonExclusive: set on a freshly
 * allocated or copied page, cleared on both sides by fork. A write fault on a non-exclusive
 * page reuses it when this PTE holds the only reference, and copies it otherwise. A private
 * hugetlb VMA (anonymous MAP_HUGETLB, or a private map of a hugetlb file) has one PTE per huge
 * page and copies whole huge folios.
 *
 * Decisions: anonymous memory outside hugetlb uses order-0 folios only (no THP); a read fault
 * allocates a zeroed page rather than mapping a shared zero page; VMAs are never merged.
 *
 * Locking: mmap, munmap, fork and exit take `mmapLock` (mmap_lock) for write; GUP and user
 * copies take it for read; `fault` expects it held. Lock order: iommufd's pages.mutex is taken
 * before mmap_lock (pinning and VFIO-compatible accounting run under it), and a driver's mmap
 * callback runs under mmap_lock.
 */
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
const PROT_EXEC = 0x4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
const MAP_SHARED_VALIDATE = 0x03;
const MAP_TYPE = 0x0f;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_POPULATE = 0x8000;
export const MAP_HUGETLB = 0x40000;
export const MAP_FIXED_NOREPLACE = 0x100000;
const MAP_HUGE_SHIFT = 26;
export const MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT;
export const MAP_HUGE_1GB = 30 << MAP_HUGE_SHIFT;

/** x86-64 TASK_SIZE_MAX with 4-level paging. */
export const TASK_SIZE = (1n << 47n) - BigInt(PAGE_SIZE);
/** Where top-down mmap placement starts. */
export const MMAP_BASE = 0x7f00_0000_0000n;
const MMAP_MIN_ADDR = 0x10000n;
const DEFAULT_MAX_MAP_COUNT = 65530;

const PAGE = BigInt(PAGE_SIZE);
const SHIFT = BigInt(PAGE_SHIFT);
const EXCL = 1;

declare module "./trace.js" {
  interface TraceEvents {
    "mm:mmap": { addr: bigint; len: bigint; prot: number; flags: number; file: string };
    "mm:munmap": { addr: bigint; len: bigint };
    "mm:fork": { vmas: number; sharedPages: number; copiedPages: number };
    "mm:exit": { vmas: number };
    "gup:pin": { addr: bigint; npages: number; pinned: number; gupFlags: number; runs: number };
    "gup:unpin": { npages: number; runs: number };
    "memfd:create": { name: string; order: number };
    "memfd:pin": { start: bigint; end: bigint; npages: number };
  }
}

/** MAX_LFS_FILESIZE on 64-bit: the largest offset of a regular file. */
const MAX_LFS_FILESIZE = (1n << 63n) - 1n;
/** What file_mmap_size_max allows other files (character devices, anonymous inodes). */
const ULONG_MAX = (1n << 64n) - 1n;

/**
 * Whether the mapped range of `file` ends within the largest offset the file allows; `len` is
 * at most TASK_SIZE here, far below either limit. @see file_mmap_ok
 */
function fileMmapOk(file: File, pgoff: bigint, len: bigint): boolean {
  const maxsize = shmemInode(file) ? MAX_LFS_FILESIZE : ULONG_MAX;
  return pgoff <= (maxsize - len) >> SHIFT;
}

/** The page number whose PTE maps `vpn`: itself, or the first page of its huge page. */
function pteKey(vma: Vma, vpn: number): number {
  if (vma.order === 0) return vpn;
  const size = 2 ** vma.order;
  return Math.floor(vpn / size) * size;
}

/** A driver's VMA callbacks (vm_operations_struct). */
export interface VmOperations {
  /** A pfn for page `pgoff` of the mapping, or throw (SIGBUS -> EFAULT for the accessor). */
  fault?(vma: Vma, pgoff: number): number;
  open?(vma: Vma): void;
  close?(vma: Vma): void;
}

/** struct vm_area_struct; `start`/`end` are page numbers, `pgoff` the file page at `start`. */
export class Vma {
  mapping: ShmemInode | undefined;
  ops: VmOperations | undefined;
  /** First pfn of a remap_pfn_range mapping, -1 otherwise. */
  pfnBase = -1;
  /** Driver data (vm_private_data). */
  priv: unknown;
  /** Page order of the mapping: 0, or the huge page order of a hugetlb VMA. */
  order = 0;

  constructor(
    readonly mm: MmStruct,
    public start: number,
    public end: number,
    public flags: number,
    public pgoff: number,
    readonly file: File | undefined,
  ) {}

  get startAddr(): bigint {
    return BigInt(this.start) << SHIFT;
  }

  get endAddr(): bigint {
    return BigInt(this.end) << SHIFT;
  }

  get npages(): number {
    return this.end - this.start;
  }

  /** remap_pfn_range over the whole VMA. */
  remapPfnRange(pfn: number): void {
    this.flags |= VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP;
    this.pfnBase = pfn;
  }

  /** Private (copy-on-write) mapping: is_cow_mapping. */
  get isCow(): boolean {
    return (this.flags & (VM_SHARED | VM_MAYWRITE)) === VM_MAYWRITE;
  }

  /** @internal a copy of this VMA for [start, end) in `mm`, sharing file and driver. */
  clone(mm: MmStruct, start = this.start, end = this.end): Vma {
    const v = new Vma(mm, start, end, this.flags, this.pgoff + (start - this.start), this.file);
    v.mapping = this.mapping;
    v.ops = this.ops;
    v.pfnBase = this.pfnBase < 0 ? -1 : this.pfnBase + (start - this.start);
    v.priv = this.priv;
    v.order = this.order;
    this.file?.get();
    v.ops?.open?.(v);
    return v;
  }
}

/** Context an mm needs from its machine. */
interface MmHost {
  readonly mem: PhysMem;
  readonly lockdep: Lockdep;
  readonly trace: TraceBus;
  shouldFail(site: string): boolean;
}

interface MmapRequest {
  readonly addr: bigint;
  readonly len: bigint;
  readonly prot: number;
  readonly flags: number;
  readonly file?: File | undefined;
  /** Byte offset into the file. */
  readonly offset?: bigint;
}

export class MmStruct {
  /** Pages pinned long-term by users of this mm (iommufd, vfio): VmPin. */
  pinnedVm = 0;
  /** Pages charged as locked (mlock, VFIO-compatible accounting): VmLck. */
  lockedVm = 0;
  /** mm_users: tasks using the address space; 0 after exit. */
  users = 1;
  readonly mmapLock: RwSem;
  private readonly vmas: Vma[] = [];
  /** private PTEs: page number -> pfn * 2 + exclusive */
  private readonly pt = new XArray();

  constructor(readonly host: MmHost) {
    this.mmapLock = new RwSem(host.lockdep, "mmap_lock");
  }

  get mapCount(): number {
    return this.vmas.length;
  }

  /** The VMAs in address order (a snapshot). */
  vmaList(): readonly Vma[] {
    return [...this.vmas];
  }

  /** Present private PTEs (anonymous and COW pages mapped). */
  get residentPrivatePages(): number {
    return this.pt.count;
  }

  /** The VMA containing page number `vpn` (find_vma + containment check). */
  findVma(vpn: number): Vma | undefined {
    let lo = 0;
    let hi = this.vmas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = this.vmas[mid]!;
      if (vpn < v.start) hi = mid - 1;
      else if (vpn >= v.end) lo = mid + 1;
      else return v;
    }
    return undefined;
  }

  vmaAt(addr: bigint): Vma | undefined {
    return addr < 0n || addr >= TASK_SIZE ? undefined : this.findVma(Number(addr >> SHIFT));
  }

  /**
   * do_mmap, with the checks of the mmap system call in the kernel's order. Returns the
   * address mapped. The caller has resolved the descriptor to `file`.
   */
  mmap(req: MmapRequest): bigint {
    const addr = this.mmapLock.withWrite(() => this.doMmap(req));
    if (this.host.trace.active)
      this.host.trace.emit("mm:mmap", {
        addr,
        len: req.len,
        prot: req.prot,
        flags: req.flags,
        file: req.file?.fops.name ?? "anon",
      });
    return addr;
  }

  /** @see do_mmap */
  private doMmap(req: MmapRequest): bigint {
    const { prot, flags, file } = req;
    const offset = req.offset ?? 0n;
    let len = req.len;
    if (offset & (PAGE - 1n)) fail(EINVAL, "offset not page aligned");
    let hugeOrder = (file && shmemInode(file)?.order) ?? 0;
    if (!file && flags & MAP_HUGETLB) hugeOrder = hugetlbOrder(flags, MAP_HUGE_SHIFT);
    const hugeBytes = PAGE << BigInt(hugeOrder);
    if (hugeOrder && len > 0n) len = ((len + hugeBytes - 1n) / hugeBytes) * hugeBytes;
    if (len <= 0n) fail(EINVAL, "zero length");
    len = (len + PAGE - 1n) & ~(PAGE - 1n);
    if (len > TASK_SIZE) fail(ENOMEM, "length beyond the address space");
    const pgoff = offset >> SHIFT;
    if (this.vmas.length >= DEFAULT_MAX_MAP_COUNT) fail(ENOMEM, "too many mappings");
    const npages = Number(len >> SHIFT);
    const align = 2 ** hugeOrder;
    const fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) !== 0;
    let start: number;
    if (fixed) {
      if (req.addr & (PAGE - 1n)) fail(EINVAL, "fixed address not page aligned");
      if (req.addr > TASK_SIZE - len || req.addr < MMAP_MIN_ADDR)
        fail(ENOMEM, "fixed range outside the address space");
      start = Number(req.addr >> SHIFT);
      if (start % align) fail(EINVAL, "hugetlb address not aligned");
      if (flags & MAP_FIXED_NOREPLACE && this.overlaps(start, start + npages))
        fail(EEXIST, "MAP_FIXED_NOREPLACE over an existing mapping");
    } else {
      start = this.unmappedArea(req.addr, npages, align);
    }
    if (file && !fileMmapOk(file, pgoff, len))
      fail(EOVERFLOW, "file range beyond its largest offset");
    let vmFlags =
      (prot & PROT_READ ? VM_READ : 0) |
      (prot & PROT_WRITE ? VM_WRITE : 0) |
      (prot & PROT_EXEC ? VM_EXEC : 0) |
      VM_MAYREAD |
      VM_MAYWRITE |
      VM_MAYEXEC;
    const type = flags & MAP_TYPE;
    if (file) {
      if (type === MAP_SHARED || type === MAP_SHARED_VALIDATE) {
        if (prot & PROT_WRITE && !(file.fMode & FMODE_WRITE))
          fail(EACCES, "shared writable mapping of a read-only file");
        vmFlags |= VM_SHARED | VM_MAYSHARE;
        if (!(file.fMode & FMODE_WRITE)) vmFlags &= ~(VM_MAYWRITE | VM_SHARED);
      } else if (type !== MAP_PRIVATE) fail(EINVAL, "bad map type");
      if (!(file.fMode & FMODE_READ)) fail(EACCES, "file not open for reading");
      if (!file.fops.mmap) fail(ENODEV, `${file.fops.name} cannot be mapped`);
    } else if (type === MAP_SHARED || type === MAP_SHARED_VALIDATE) {
      vmFlags |= VM_SHARED | VM_MAYSHARE;
    } else if (type !== MAP_PRIVATE) fail(EINVAL, "bad map type");

    // Shared anonymous memory is backed by an internal file (shmem_zero_setup /
    // hugetlb_file_setup), made before anything else changes.
    let backing = file;
    let ownRef = false;
    if (!file && vmFlags & VM_SHARED) {
      backing = shmemFileSetup(this.host, hugeOrder ? "anon_hugepage" : "dev/zero", len, hugeOrder);
      ownRef = true;
    }
    const vma = new Vma(this, start, start + npages, vmFlags, Number(pgoff), backing);
    vma.order = hugeOrder;
    if (hugeOrder) vma.flags |= VM_HUGETLB;
    try {
      if (backing) {
        if (!ownRef) backing.get();
        backing.fops.mmap!(backing, vma);
      }
    } catch (e) {
      backing?.put();
      throw e;
    }
    if (fixed) this.unmapRange(start, start + npages);
    this.insert(vma);
    if (flags & MAP_POPULATE && !(vma.flags & VM_PFNMAP)) this.populate(vma);
    return vma.startAddr;
  }

  /** Prefault every page; failures are left for the first access, as MAP_POPULATE does. */
  private populate(vma: Vma): void {
    const write = (vma.flags & (VM_WRITE | VM_SHARED)) === VM_WRITE;
    for (let vpn = vma.start; vpn < vma.end; vpn += 2 ** vma.order) {
      try {
        this.fault(vpn, write, false);
      } catch (e) {
        if (isKernelError(e)) return;
        throw e;
      }
    }
  }

  private overlaps(start: number, end: number): boolean {
    return this.vmas.some((v) => v.start < end && v.end > start);
  }

  /**
   * The hint when the range there is free, else a top-down search below MMAP_BASE for a gap of
   * `npages`, `align`-aligned. The hint is first rounded down to a page and raised to
   * mmap_min_addr (round_hint_to_min), then aligned up for hugetlb.
   * @see generic_get_unmapped_area_topdown
   */
  private unmappedArea(hint: bigint, npages: number, align: number): number {
    const minVpn = Number(MMAP_MIN_ADDR >> SHIFT);
    const hintVpn = hint >> SHIFT;
    if (hintVpn > 0n) {
      const h = Math.ceil(Math.max(minVpn, Number(hintVpn)) / align) * align;
      if (BigInt(h + npages) << SHIFT <= TASK_SIZE && !this.overlaps(h, h + npages)) return h;
    }
    let hi = Number(MMAP_BASE >> SHIFT);
    for (let i = this.vmas.length - 1; i >= 0; i--) {
      const v = this.vmas[i]!;
      if (v.start >= hi) continue;
      if (v.end < hi) {
        const cand = Math.floor((hi - npages) / align) * align;
        if (cand >= v.end) return cand;
      }
      hi = v.start;
    }
    const cand = Math.floor((hi - npages) / align) * align;
    if (cand < minVpn) fail(ENOMEM, "no room in the address space");
    return cand;
  }

  private insert(vma: Vma): void {
    let i = this.vmas.findIndex((v) => v.start > vma.start);
    if (i < 0) i = this.vmas.length;
    this.vmas.splice(i, 0, vma);
  }

  /** munmap: page-aligned address, non-zero length; unmapping nothing is not an error. */
  munmap(addr: bigint, len: bigint): void {
    this.mmapLock.withWrite(() => this.doMunmap(addr, len));
    this.host.trace.emit("mm:munmap", { addr, len });
  }

  /** @see do_munmap */
  private doMunmap(addr: bigint, len: bigint): void {
    if (addr & (PAGE - 1n) || addr < 0n) fail(EINVAL, "address not page aligned");
    if (len <= 0n) fail(EINVAL, "zero length");
    len = (len + PAGE - 1n) & ~(PAGE - 1n);
    if (addr > TASK_SIZE || len > TASK_SIZE - addr) fail(EINVAL, "range outside the address space");
    const start = Number(addr >> SHIFT);
    const end = start + Number(len >> SHIFT);
    // hugetlb VMAs can only be cut at huge page boundaries.
    for (const v of this.vmas) {
      if (!(v.flags & VM_HUGETLB) || v.end <= start || v.start >= end) continue;
      const align = 2 ** v.order;
      if ((start > v.start && start % align) || (end < v.end && end % align))
        fail(EINVAL, "hugetlb unmap not aligned to the huge page size");
    }
    this.unmapRange(start, end);
  }

  /** Remove [start, end) from every VMA, splitting partial overlaps. */
  private unmapRange(start: number, end: number): void {
    const keep: Vma[] = [];
    for (const v of this.vmas) {
      if (v.end <= start || v.start >= end) {
        keep.push(v);
        continue;
      }
      if (v.start < start) keep.push(v.clone(this, v.start, start));
      if (v.end > end) keep.push(v.clone(this, end, v.end));
      this.zap(v, Math.max(v.start, start), Math.min(v.end, end));
      this.closeVma(v);
    }
    // Still in address order: the pieces of a split VMA lie inside it, lower one first.
    this.vmas.length = 0;
    this.vmas.push(...keep);
  }

  private zap(vma: Vma, start: number, end: number): void {
    if (!vma.isCow) return;
    const mem = this.host.mem;
    this.pt.eraseRange(start, end, (_vpn, pte) => mem.folioPut(Math.floor(pte / 2)));
  }

  private closeVma(vma: Vma): void {
    vma.ops?.close?.(vma);
    vma.file?.put();
  }

  /**
   * handle_mm_fault for one page: the pfn now backing page `vpn`. `write` demands a writable
   * private copy; `unshare` demands an exclusive one for a pin (FAULT_FLAG_UNSHARE). EFAULT
   * outside a VMA, against its protection or past EOF; ENOMEM when a page cannot be had.
   */
  fault(vpn: number, write: boolean, unshare: boolean): number {
    const vma = this.findVma(vpn);
    if (!vma) fail(EFAULT, `no mapping at page ${vpn}`);
    if (write && !(vma.flags & VM_WRITE)) fail(EFAULT, "write to a read-only mapping");
    if (!write && !(vma.flags & VM_READ)) fail(EFAULT, "read of an unreadable mapping");
    return this.faultIn(vma, vpn, write, unshare);
  }

  /**
   * @internal the fault once the VMA and its permissions are checked. A private hugetlb VMA
   * keeps one PTE per huge page (at its first page number) and copies whole huge folios.
   */
  faultIn(vma: Vma, vpn: number, write: boolean, unshare: boolean): number {
    const pgoff = vma.pgoff + (vpn - vma.start);
    if (vma.flags & VM_PFNMAP) {
      if (vma.pfnBase >= 0) return vma.pfnBase + (vpn - vma.start);
      if (!vma.ops?.fault) fail(EFAULT, "PFNMAP without a fault handler");
      return vma.ops.fault(vma, pgoff);
    }
    if (!vma.isCow) return this.filePage(vma, pgoff);
    const mem = this.host.mem;
    const key = pteKey(vma, vpn);
    const sub = vpn - key;
    const pte = this.pt.load(key);
    if (pte >= 0) {
      const head = Math.floor(pte / 2);
      if ((!write && !unshare) || pte & EXCL) return head + sub;
      if (mem.refCount(head) === 1) {
        this.pt.store(key, pte | EXCL);
        return head + sub;
      }
      const copy = this.copyOf(vma, head, key);
      mem.folioPut(head);
      return copy + sub;
    }
    if (vma.mapping) {
      const src = this.filePage(vma, pgoff);
      if (!write && !unshare) return src;
      return this.copyOf(vma, src - sub, key) + sub;
    }
    const head = mem.allocFolio(vma.order, "do_anonymous_page");
    this.pt.store(key, head * 2 + EXCL);
    return head + sub;
  }

  /** A private exclusive copy of folio `head` installed at the PTE for its page. @see wp_page_copy */
  private copyOf(vma: Vma, head: number, key: number, site = "wp_page_copy"): number {
    const mem = this.host.mem;
    const copy = mem.allocFolio(vma.order, site);
    mem.copyFolio(copy, head);
    this.pt.store(key, copy * 2 + EXCL);
    return copy;
  }

  private filePage(vma: Vma, pgoff: number): number {
    const inode = vma.mapping;
    if (!inode) fail(EFAULT, "mapping without pages");
    if (BigInt(pgoff) << SHIFT >= inode.size) fail(EFAULT, "access beyond EOF (SIGBUS)");
    return inode.getFolio(pgoff, "shmem_fault") + (pgoff % 2 ** inode.order);
  }

  /**
   * Fault in consecutive private anonymous pages [vpn, vpn + n) of `vma` that are not yet
   * present, in one pass over the page table; the fast path for GUP on fresh memory. Returns
   * how many pages from `vpn` are now present and exclusive, stopping at the first that
   * needs the general path.
   * @internal
   */
  faultAnonRun(vpn: number, n: number, emit: (pfn: number, count: number) => void): number {
    const done = this.presentAnonRun(vpn, n, emit);
    if (done === n) return done;
    const mem = this.host.mem;
    let faulted = 0;
    this.pt.update(vpn + done, vpn + n, (_v, pte) => {
      if (pte < 0) {
        const pfn = mem.allocFolio(0, "do_anonymous_page");
        emit(pfn, 1);
        faulted++;
        return pfn * 2 + EXCL;
      }
      if (!(pte & EXCL)) return XA_STOP;
      emit(Math.floor(pte / 2), 1);
      faulted++;
      return pte;
    });
    return done + faulted;
  }

  /**
   * The pages from `vpn` (up to `n`) that are present and exclusive — the usual state of memory
   * pinned again — read from the page table in place and handed to `emit` as physically
   * contiguous runs. Returns how many; the caller faults from the first that is not.
   */
  private presentAnonRun(
    vpn: number,
    n: number,
    emit: (pfn: number, count: number) => void,
  ): number {
    // pfn * 2 + EXCL: the next page of a run is 2 more, with the same EXCL bit as the first.
    return this.pt.scanRuns(vpn, n, 2, (pte, count) => {
      if (!(pte & EXCL)) return false;
      emit(Math.floor(pte / 2), count);
      return true;
    });
  }

  /**
   * dup_mmap: the child's address space. Private pages are shared copy-on-write, except an
   * exclusive page that may be pinned, which the child gets a copy of at once so the pin
   * keeps seeing the parent's page (the fork-after-pin rule). ENOMEM leaves the parent as it
   * was apart from the write protection of its private pages, as in the kernel.
   */
  fork(): MmStruct {
    const stats = { sharedPages: 0, copiedPages: 0 };
    const child = new MmStruct(this.host);
    try {
      this.mmapLock.withWrite(() => this.dupMmap(child, stats));
    } catch (e) {
      // dup_mm: the partial copy goes with mmput, once dup_mmap has dropped mmap_lock.
      child.exit();
      throw e;
    }
    this.host.trace.emit("mm:fork", { vmas: child.vmas.length, ...stats });
    return child;
  }

  /** @see dup_mmap */
  private dupMmap(child: MmStruct, stats: { sharedPages: number; copiedPages: number }): void {
    const mem = this.host.mem;
    for (const v of this.vmas) {
      child.vmas.push(v.clone(child));
      if (!v.isCow) continue;
      this.pt.forEachInRange(v.start, v.end, (vpn, pte) => {
        const pfn = Math.floor(pte / 2);
        if (pte & EXCL && mem.pinCount(pfn) > 0) {
          child.copyOf(v, pfn, vpn, "copy_present_page");
          stats.copiedPages++;
          return;
        }
        stats.sharedPages++;
        mem.folioGet(pfn);
        this.pt.store(vpn, pfn * 2);
        child.pt.store(vpn, pfn * 2);
      });
    }
  }

  /** exit_mmap: unmap everything. The counters stay for whoever still holds the mm. */
  exit(): void {
    if (this.users === 0) throw new KernelWarning("mm exited twice");
    const vmas = this.vmas.length;
    this.mmapLock.withWrite(() => this.exitMmap());
    this.host.trace.emit("mm:exit", { vmas });
  }

  /** @see exit_mmap */
  private exitMmap(): void {
    this.users = 0;
    const all = [...this.vmas];
    this.vmas.length = 0;
    for (const v of all) {
      this.zap(v, v.start, v.end);
      this.closeVma(v);
    }
  }

  /**
   * The pfn behind a VM_IO / VM_PFNMAP page at `addr`, faulted in through the driver the way
   * VFIO type1 reaches BAR mappings GUP refuses; EFAULT for any other mapping or a missing
   * write permission. @see follow_fault_pfn
   */
  followPfn(addr: bigint, write: boolean): number {
    return this.mmapLock.withRead(() => {
      const vma = this.vmaAt(addr);
      if (!vma || !(vma.flags & (VM_IO | VM_PFNMAP))) fail(EFAULT, "not a PFNMAP mapping");
      if (write && !(vma.flags & VM_WRITE)) fail(EFAULT, "PFNMAP mapping is read-only");
      return this.faultIn(vma, Number(addr >> SHIFT), write, false);
    });
  }

  /** The private PTE covering `vpn` (-1 when none or not a private mapping). */
  private privatePte(vpn: number): { pte: number; sub: number } {
    const vma = this.findVma(vpn);
    if (!vma?.isCow || vma.flags & VM_PFNMAP) return { pte: -1, sub: 0 };
    const key = pteKey(vma, vpn);
    return { pte: this.pt.load(key), sub: vpn - key };
  }

  /** The pfn behind page `vpn` without faulting, or -1 (follow_page for tests and tools). */
  lookup(vpn: number): number {
    const vma = this.findVma(vpn);
    if (!vma) return -1;
    const pgoff = vma.pgoff + (vpn - vma.start);
    if (vma.flags & VM_PFNMAP) return vma.pfnBase >= 0 ? vma.pfnBase + (vpn - vma.start) : -1;
    const { pte, sub } = this.privatePte(vpn);
    if (pte >= 0) return Math.floor(pte / 2) + sub;
    const head = vma.mapping?.findFolio(pgoff) ?? -1;
    return head < 0 ? -1 : head + (pgoff % 2 ** vma.mapping!.order);
  }

  /**
   * The pfn an access to page `vpn` reaches without a fault — the PTE present and, for a write,
   * private and writable (exclusive) — or -1 when it needs `fault` (which may fail). Reads
   * only, so it needs no mmap_lock: the hardware walk behind copy_{from,to}_user.
   * @internal
   */
  presentPfn(vpn: number, write: boolean): number {
    const vma = this.findVma(vpn);
    if (!vma || !(vma.flags & (write ? VM_WRITE : VM_READ))) return -1;
    if (vma.flags & VM_PFNMAP) return vma.pfnBase >= 0 ? vma.pfnBase + (vpn - vma.start) : -1;
    if (vma.isCow) {
      const key = pteKey(vma, vpn);
      const pte = this.pt.load(key);
      if (pte >= 0) return !write || pte & EXCL ? Math.floor(pte / 2) + (vpn - key) : -1;
      if (write) return -1;
    }
    // A shared file page, or a read of a private file page not copied yet: the page cache.
    const inode = vma.mapping;
    const pgoff = vma.pgoff + (vpn - vma.start);
    if (!inode || BigInt(pgoff) << SHIFT >= inode.size) return -1;
    const head = inode.findFolio(pgoff);
    return head < 0 ? -1 : head + (pgoff % 2 ** inode.order);
  }

  /** Whether a private PTE (anonymous or COW copy) maps page `vpn`. */
  hasPrivatePte(vpn: number): boolean {
    return this.privatePte(vpn).pte >= 0;
  }

  /** Whether the private PTE at `vpn` is exclusive (PageAnonExclusive), for tests. */
  isExclusive(vpn: number): boolean {
    const { pte } = this.privatePte(vpn);
    return pte >= 0 && (pte & EXCL) !== 0;
  }
}
