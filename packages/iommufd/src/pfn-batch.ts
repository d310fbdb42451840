/**
 * pfn_batch: a bounded run-length list of PFNs used to move PFNs between the storage tiers
 * (source, xarray, domain) with one operation per run.
 *
 * Capacity comes from the temporary memory the kernel managed to obtain: 12 bytes per run
 * (u64 pfn + u32 count), capped at the temp memory limit (64 KiB, settable per machine like
 * the selftests' IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, whose tiny values give one-run batches).
 * Paths that must not fail (unfill, revoke) pass a backup buffer and cannot fail.
 *
 * Every batch has one kind (P5): CPU_MEMORY or MMIO. Adding a run of the other kind to a
 * non-empty batch is refused like a full batch, so one prot is always right for the whole batch.
 */
import {
  ENOMEM,
  type Kernel,
  KernelWarning,
  PAGE_SIZE,
  WARN_ON,
  type XArray,
  fail,
} from "@x/kernel";
import type { IoptArea } from "./io-pagetable-area.js";
import { iommufdOptions } from "./main.js";
import type { IoptPages } from "./pages.js";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  type IoptDomain,
  domainIovaToPhys,
  domainMap,
  domainReadRange,
  iommuUnmapNofail,
  pageRange,
} from "./iommu-domain.js";

/** PAGE_SIZE for IOVA / byte arithmetic. */
export const BPAGE_SIZE = BigInt(PAGE_SIZE);

/** Longest run one entry can hold (npfns is a u32). */
export const MAX_NPFNS = 0xffffffff;

export const BATCH_CPU_MEMORY = 0;
export const BATCH_MMIO = 1;
export type BatchKind = typeof BATCH_CPU_MEMORY | typeof BATCH_MMIO;

/** Bytes per run: sizeof(u64) + sizeof(u32). */
const RUN_BYTES = 12;
/** BATCH_BACKUP_SIZE u64s on the stack of no-fail paths. */
const BATCH_BACKUP_BYTES = 32 * 8;

/**
 * temp_kmalloc(): how many bytes of temporary memory a request of `bytes` gets. Without a
 * backup this is an injectable allocation (ENOMEM); with one it cannot fail.
 */
export function tempAlloc(kernel: Kernel, bytes: number, withBackup: boolean): number {
  WARN_ON(bytes === 0, "temp_kmalloc of 0 bytes");
  if (withBackup && bytes < BATCH_BACKUP_BYTES) return bytes;
  if (!withBackup && kernel.shouldFail("iommufd:temp_kmalloc")) fail(ENOMEM, "temp memory");
  return Math.min(bytes, iommufdOptions(kernel).tempMemoryLimit);
}

export class PfnBatch {
  readonly pfns: Float64Array;
  readonly npfns: Uint32Array;
  /** Runs in use. */
  end = 0;
  totalPfns = 0;
  kind: BatchKind = BATCH_CPU_MEMORY;

  /** Capacity in runs; batch_from_domain_continue shrinks it for a while. */
  arraySize: number;

  private constructor(arraySize: number) {
    this.arraySize = arraySize;
    this.pfns = new Float64Array(arraySize);
    this.npfns = new Uint32Array(arraySize);
  }

  /**
   * batch_init / batch_init_backup for up to `maxPages` pages. With `backup` the batch cannot
   * fail to allocate (the no-fail unmap paths).
   * @see __batch_init
   */
  static create(kernel: Kernel, maxPages: number, backup = false): PfnBatch {
    const size = tempAlloc(kernel, maxPages * RUN_BYTES, backup);
    // A CONFIG_IOMMUFD_TEST WARN in the kernel; the selftest refuses limits below one entry.
    WARN_ON(size < RUN_BYTES, "temp memory below one batch entry");
    return new PfnBatch(Math.floor(size / RUN_BYTES));
  }

  /** batch_clear. Decision: the kind is kept (as in the series); the kind rule makes it moot. */
  clear(): void {
    this.end = 0;
    this.totalPfns = 0;
  }

  /** batch_clear_carry: keep only the last `keep` PFNs of the last run as the first run. */
  clearCarry(keep: number): void {
    if (keep === 0) {
      this.clear();
      return;
    }
    const last = this.end - 1;
    if (last < 0 || (this.npfns[last] as number) < keep) throw new KernelWarning("bad batch carry");
    this.pfns[0] = (this.pfns[last] as number) + ((this.npfns[last] as number) - keep);
    this.npfns[0] = keep;
    this.end = 1;
    this.totalPfns = keep;
  }

  /** batch_skip_carry: drop the first `skip` PFNs of the carried run. */
  skipCarry(skip: number): void {
    if (this.totalPfns === 0) return;
    if (this.totalPfns !== this.npfns[0]) throw new KernelWarning("carry is not a single run");
    const n = Math.min(this.totalPfns, skip);
    this.pfns[0] = (this.pfns[0] as number) + n;
    this.npfns[0] = (this.npfns[0] as number) - n;
    this.totalPfns -= n;
  }

  /**
   * batch_add_pfn_num: false means "full" (no room, a run would overflow u32, or a kind change
   * on a non-empty batch), never an error.
   */
  add(pfn: number, n: number, kind: BatchKind = BATCH_CPU_MEMORY): boolean {
    if (this.kind !== kind) {
      if (this.end !== 0) return false;
      this.kind = kind;
    }
    const end = this.end;
    const lastN = end ? (this.npfns[end - 1] as number) : 0;
    if (end && pfn === (this.pfns[end - 1] as number) + lastN && n <= MAX_NPFNS - lastN) {
      this.npfns[end - 1] = lastN + n;
    } else if (end < this.arraySize) {
      this.pfns[end] = pfn;
      this.npfns[end] = n;
      this.end = end + 1;
    } else {
      return false;
    }
    this.totalPfns += n;
    return true;
  }

  /**
   * Add as much of a run as fits, with the entries page-by-page adds would give (the kernel's
   * batch_from_domain adds one PFN at a time): a run continuing the last entry fills it up to
   * MAX_NPFNS before a new entry starts. Returns the PFNs added.
   */
  addRun(pfn: number, n: number, kind: BatchKind = BATCH_CPU_MEMORY): number {
    let added = 0;
    let take = Math.min(n, this.roomInLastRun(pfn) || MAX_NPFNS);
    while (added < n && this.add(pfn + added, take, kind)) {
      added += take;
      take = Math.min(n - added, MAX_NPFNS);
    }
    return added;
  }

  /**
   * How many PFNs from `pfn` on may still join the last entry; 0 when `pfn` does not continue
   * it (the kind is add()'s to check).
   */
  private roomInLastRun(pfn: number): number {
    const end = this.end;
    if (!end) return 0;
    const lastN = this.npfns[end - 1] as number;
    return pfn === (this.pfns[end - 1] as number) + lastN ? MAX_NPFNS - lastN : 0;
  }

  /** Visit runs in order, clipped to PFNs [skip, skip + count) of the batch. */
  forEachRun(skip: number, count: number, fn: (pfn: number, n: number) => void): void {
    for (let i = 0; i < this.end && count > 0; i++) {
      const n = this.npfns[i] as number;
      if (skip >= n) {
        skip -= n;
        continue;
      }
      const take = Math.min(n - skip, count);
      fn((this.pfns[i] as number) + skip, take);
      count -= take;
      skip = 0;
    }
  }
}

/**
 * Map every run of the batch into `domain` at the IOVAs of pages [startIndex, ...) of `area`.
 * MMIO batches drop IOMMU_CACHE and add IOMMU_MMIO (P5). The first index of the area is a
 * partial page: its run starts `pageOffset` bytes in. On failure what this call mapped is
 * unmapped again and the error rethrown.
 * @see batch_to_domain
 */
export function batchToDomain(
  batch: PfnBatch,
  domain: IoptDomain,
  area: IoptArea,
  startIndex: number,
): void {
  const disableLargePages = area.iopt!.largePagesDisabled;
  const lastIova = area.lastIova;
  let prot = area.iommuProt;
  if (batch.kind === BATCH_MMIO) prot = (prot & ~IOMMU_CACHE) | IOMMU_MMIO;
  let pageOffset = startIndex === area.index ? BigInt(area.pageOffset) : 0n;
  const startIova = area.indexToIova(startIndex);
  let iova = startIova;
  try {
    for (let cur = 0; cur < batch.end; cur++) {
      const runEnd = iova + BigInt(batch.npfns[cur] as number) * BPAGE_SIZE - pageOffset;
      const nextIova = runEnd < lastIova + 1n ? runEnd : lastIova + 1n;
      const paddr = BigInt(batch.pfns[cur] as number) * BPAGE_SIZE + pageOffset;
      if (disableLargePages) iommuMapSmall(domain, iova, paddr, nextIova - iova, prot);
      else domainMap(domain, iova, paddr, nextIova - iova, prot);
      iova = nextIova;
      pageOffset = 0n;
    }
  } catch (e) {
    if (iova !== startIova) iommuUnmapNofail(domain, startIova, iova - startIova);
    throw e;
  }
}

/**
 * Map PAGE_SIZE at a time so any page can later be unmapped alone (type1 compat).
 * @see batch_iommu_map_small
 */
function iommuMapSmall(
  domain: IoptDomain,
  iova: bigint,
  paddr: bigint,
  size: bigint,
  prot: number,
): void {
  // A CONFIG_IOMMUFD_TEST WARN in the kernel: large pages are off only with PAGE_SIZE IOVA
  // alignment (iopt_calculate_iova_alignment), so an area never starts inside a page here.
  WARN_ON(
    ((iova | paddr | size) & (BPAGE_SIZE - 1n)) !== 0n,
    "batch_iommu_map_small: not page aligned",
  );
  let mapped = 0; // pages this call has mapped, unmapped again on failure
  try {
    if (pageRange(iova, paddr, size)) {
      // Page numbers below PFN_LIMIT (the usual case): no bigint per page.
      const iovaPfn = Number(iova >> 12n);
      const pfn = Number(paddr >> 12n);
      const n = Number(size >> 12n);
      for (; mapped < n; mapped++) domain.mapPfns(iovaPfn + mapped, pfn + mapped, 1, prot);
    } else {
      // The last pages of the 64-bit space, past what the PFN-level calls take.
      for (let off = 0n; off < size; off += BPAGE_SIZE, mapped++) {
        domainMap(domain, iova + off, paddr + off, BPAGE_SIZE, prot);
      }
    }
  } catch (e) {
    if (mapped) iommuUnmapNofail(domain, iova, BigInt(mapped) * BPAGE_SIZE);
    throw e;
  }
}

/**
 * Read back the PFNs of pages [startIndex, lastIndex] of `area` from `domain` until the batch
 * is full. Kind is CPU_MEMORY: the IOPTE does not say what it points at (see the Decision in
 * pfn-reader.ts for DMABUF areas).
 * @see batch_from_domain
 */
export function batchFromDomain(
  batch: PfnBatch,
  domain: IoptDomain,
  area: IoptArea,
  startIndex: number,
  lastIndex: number,
  kind: BatchKind = BATCH_CPU_MEMORY,
): void {
  let index = startIndex;
  let iova = area.indexToIova(index);
  // A partial first page is read at its IOVA and moved back to its page start.
  if (index === area.index && area.pageOffset) {
    const off = BigInt(area.pageOffset);
    const phys = domainIovaToPhys(domain, iova) - off;
    if (!batch.add(Number(phys >> 12n), 1, kind)) return;
    iova += BPAGE_SIZE - off;
    index++;
  }
  if (index <= lastIndex) {
    domainReadRange(
      domain,
      iova,
      lastIndex - index + 1,
      (pfn, n) => batch.addRun(pfn, n, kind) === n,
    );
  }
}

/**
 * Keep reading while the PFNs continue the last run: the batch's capacity is held at the runs
 * in use so only a contiguous continuation fits. Finds where an unmap may cut.
 * @see batch_from_domain_continue
 */
export function batchFromDomainContinue(
  batch: PfnBatch,
  domain: IoptDomain,
  area: IoptArea,
  startIndex: number,
  lastIndex: number,
): void {
  const size = batch.arraySize;
  batch.arraySize = batch.end;
  try {
    batchFromDomain(batch, domain, area, startIndex, lastIndex, batch.kind);
  } finally {
    batch.arraySize = size;
  }
}

/** Copy PFNs of indexes [start, last] from the xarray tier until the batch is full. */
export function batchFromXarray(batch: PfnBatch, xa: XArray, start: number, last: number): void {
  for (let i = start; i <= last; i++) {
    const pfn = xa.load(i);
    if (pfn < 0) throw new KernelWarning(`pinned_pfns has no entry at ${i}`);
    if (!batch.add(pfn, 1)) return;
  }
}

/** Unpin `npages` batch PFNs starting `first` PFNs in. @see batch_unpin */
export function batchUnpin(pages: IoptPages, batch: PfnBatch, first: number, npages: number): void {
  const mem = pages.kernel.mem;
  batch.forEachRun(first, npages, (pfn, n) => mem.unpinPages(pfn, n));
  pages.subNpinned(npages);
}
