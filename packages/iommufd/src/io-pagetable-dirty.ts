/**
 * Dirty tracking of one domain of an io_pagetable: turning the hardware's dirty bits on (after
 * wiping stale ones) and harvesting them into a user bitmap.
 *
 * Both take iova_rwsem for read only: the areas must not change under the walk, the domain
 * list is not touched (the HWPT holds its domain). A harvest walks the user bitmap one pinned
 * window at a time (iova-bitmap.ts) and, inside a window, the areas covering it without a gap;
 * each piece is handed to the domain's read_and_clear_dirty. Decision, as
 * iommu_read_and_clear_dirty: whatever the window walk ends with (an unpinnable bitmap, a hole
 * in the IOVA range, an error of the driver's walk) is dropped and the ioctl succeeds with the
 * bits recorded so far; only a failed iova_bitmap_alloc (-ENOMEM) reaches the caller.
 *
 * @see drivers/iommu/iommufd/io_pagetable.c (iopt_set_dirty_tracking,
 *      iopt_read_and_clear_dirty_data, iommufd_check_iova_range, iopt_clear_dirty_data)
 */
import { EINVAL, EOPNOTSUPP, EOVERFLOW, U64_MAX, fail, isKernelError } from "@x/kernel";
import {
  IOMMU_DIRTY_NO_CLEAR,
  IotlbGather,
  iommuIotlbSync,
  iommuReadAndClearDirty,
} from "@x/iommu-pgtable";
import type { IoPagetable } from "./io-pagetable.js";
import { ioptForEachContigArea } from "./io-pagetable-area.js";
import type { IoptDomain } from "./iommu-domain.js";
import { IovaBitmap } from "./iova-bitmap.js";

/** The range and bitmap of IOMMU_HWPT_GET_DIRTY_BITMAP (u64 fields as the uAPI has them). */
export interface IoptDirtyBitmapRequest {
  readonly iova: bigint;
  readonly length: bigint;
  readonly page_size: bigint;
  readonly data: bigint;
}

/**
 * Whether the domain can report dirty IOVA: the driver's own read_and_clear_dirty, or an
 * iommupt table whose format keeps dirty bits. @see iommu_have_read_and_clear
 */
function haveReadAndClear(domain: IoptDomain): boolean {
  if (domain.dirtyOps?.readAndClearDirty) return true;
  return domain.isIommupt && domain.pt?.format.dirtyTracking === true;
}

/**
 * The checks of a harvest range, in the kernel's order: overflow of iova + length - 1, then
 * alignment to the IOAS's iova_alignment, then a page_size of 0, then alignment to page_size.
 * A length of 0 wraps like the kernel's unsigned arithmetic. @see iommufd_check_iova_range
 */
function iommufdCheckIovaRange(iopt: IoPagetable, req: IoptDirtyBitmapRequest): void {
  const mask = iopt.iovaAlignment - 1n;
  const lastIova = req.iova + ((req.length - 1n) & U64_MAX);
  if (lastIova > U64_MAX) fail(EOVERFLOW, "iova + length - 1");
  const end = (lastIova + 1n) & U64_MAX;
  if (req.iova & mask || end & mask) fail(EINVAL, "range not aligned to iova_alignment");
  if (req.page_size === 0n) fail(EINVAL, "page_size 0");
  const pmask = req.page_size - 1n;
  if (req.iova & pmask || end & pmask) fail(EINVAL, "range not aligned to page_size");
}

/** IOMMU_HWPT_GET_DIRTY_BITMAP's work. @see iopt_read_and_clear_dirty_data */
export function ioptReadAndClearDirtyData(
  iopt: IoPagetable,
  domain: IoptDomain,
  flags: number,
  req: IoptDirtyBitmapRequest,
): void {
  iommufdCheckIovaRange(iopt, req);
  iopt.iovaRwsem.withRead(() => readAndClearDirty(iopt, domain, flags, req));
}

/** @see iommu_read_and_clear_dirty (io_pagetable.c) */
function readAndClearDirty(
  iopt: IoPagetable,
  domain: IoptDomain,
  flags: number,
  req: IoptDirtyBitmapRequest,
): void {
  if (!haveReadAndClear(domain)) fail(EOPNOTSUPP, "domain cannot read dirty bits");
  const bitmap = IovaBitmap.alloc(iopt.kernel, req.iova, req.length, req.page_size, req.data);
  const gather = new IotlbGather();
  const dirty = { bitmap, gather };
  try {
    try {
      bitmap.forEach((_b, iova, length) => {
        const last = iova + length - 1n;
        const done = ioptForEachContigArea(iopt, iova, last, (_area, cur, areaLast) =>
          iommuReadAndClearDirty(domain, cur, areaLast - cur + 1n, flags, dirty),
        );
        if (!done) fail(EINVAL, "hole in the dirty range");
      });
    } catch (e) {
      // iova_bitmap_for_each's result is not looked at: the bits set so far stand.
      if (!isKernelError(e)) throw e;
    }
    if (!(flags & IOMMU_DIRTY_NO_CLEAR)) iommuIotlbSync(domain, gather);
  } finally {
    bitmap.free();
  }
}

/**
 * Clear the dirty bits of every mapped area, so that tracking starts from a clean snapshot.
 * The first error stops the walk; what was cleared is flushed either way.
 * @see iopt_clear_dirty_data
 */
function ioptClearDirtyData(iopt: IoPagetable, domain: IoptDomain): void {
  iopt.iovaRwsem.assertHeld();
  const gather = new IotlbGather();
  try {
    for (const area of iopt.areas()) {
      if (!area.pages) continue;
      iommuReadAndClearDirty(domain, area.iova, area.length, 0, { gather });
    }
  } finally {
    iommuIotlbSync(domain, gather);
  }
}

/** IOMMU_HWPT_SET_DIRTY_TRACKING's work. @see iopt_set_dirty_tracking */
export function ioptSetDirtyTracking(iopt: IoPagetable, domain: IoptDomain, enable: boolean): void {
  const ops = domain.dirtyOps;
  if (!ops) fail(EOPNOTSUPP, "domain has no dirty ops");
  iopt.iovaRwsem.withRead(() => {
    if (enable) ioptClearDirtyData(iopt, domain);
    ops.setDirtyTracking(domain, enable);
  });
}
