/**
 * The IOTLB gather: what an unmap collected for the flush that must follow it — the IOVA range
 * touched, the page size (arm-smmu-v3 uses it), the table pages that may only be freed after
 * the flush, and whether a deferred flush-all will complete it (DMA-FQ).
 *
 * The range is kept in 2 KiB units (the smallest granule of any format) as plain numbers, so
 * every u64 IOVA fits exactly and the hot unmap path never touches a bigint; `start` / `end`
 * give the kernel's byte view (start = ULONG_MAX, end = 0 when empty).
 *
 * Decision: the per-level hint bitmaps seen in a newer header (pt.leaf_levels_bitmap /
 * table_levels_bitmap, UNVERIFIED) are not modelled; no flush in this model depends on them.
 *
 * @see struct iommu_iotlb_gather
 */
import { WARN_ON } from "@x/kernel";

/** The unit of the gather's range: 2 KiB. */
export const GATHER_UNIT_LG2 = 11;
const GATHER_UNIT_LG2N = BigInt(GATHER_UNIT_LG2);
/** ULONG_MAX in gather units. */
const EMPTY_START = 2 ** (64 - GATHER_UNIT_LG2) - 1;
const ULONG_MAX = (1n << 64n) - 1n;

/** Whoever owns the tables on a freelist (a page table); it gets them back at sync. */
export interface FreelistOwner {
  releaseTables(ids: readonly number[]): void;
}

export class IotlbGather {
  /** First unit of the range, EMPTY_START when empty. */
  startUnit = EMPTY_START;
  /** Last unit of the range (inclusive), -1 when empty. */
  endUnit = -1;
  /** Page size of the gathered leaves (bytes), 0 if none; only arm-smmu-v3 style users read it. */
  pgsize = 0n;
  /** Table ids removed by unmap, to release after the flush. */
  readonly freelist: number[] = [];
  freelistOwner: FreelistOwner | undefined;
  /** True when a deferred flush-all completes this gather (DMA-FQ mode). */
  queued = false;

  /** Inclusive start in bytes (ULONG_MAX when empty). */
  get start(): bigint {
    return this.endUnit < 0 ? ULONG_MAX : BigInt(this.startUnit) << GATHER_UNIT_LG2N;
  }

  /** Inclusive end in bytes (0 when empty). */
  get end(): bigint {
    return this.endUnit < 0 ? 0n : ((BigInt(this.endUnit) + 1n) << GATHER_UNIT_LG2N) - 1n;
  }

  get empty(): boolean {
    return this.endUnit < 0;
  }

  /** @see iommu_iotlb_gather_init */
  init(): void {
    if (this.endUnit < 0 && this.freelistOwner === undefined && this.pgsize === 0n) return;
    this.startUnit = EMPTY_START;
    this.endUnit = -1;
    this.pgsize = 0n;
    if (this.freelist.length !== 0) this.freelist.length = 0;
    this.freelistOwner = undefined;
  }

  /** Grow the range over [unit, unit + units) (2 KiB units). */
  addUnits(unit: number, units: number): void {
    const last = unit + units - 1;
    if (unit < this.startUnit) this.startUnit = unit;
    if (last > this.endUnit) this.endUnit = last;
  }

  /** @see iommu_iotlb_gather_add_range */
  addRange(iova: bigint, size: bigint): void {
    if (size === 0n) return;
    const first = iova >> GATHER_UNIT_LG2N;
    const last = (iova + size - 1n) >> GATHER_UNIT_LG2N;
    this.addUnits(Number(first), Number(last - first) + 1);
  }

  /** True if the gather is non-empty and [unit, unit+units) neither overlaps nor touches it. */
  isDisjointUnits(unit: number, units: number): boolean {
    if (this.endUnit < 0) return false;
    return unit + units < this.startUnit || unit > this.endUnit + 1;
  }

  /** @see iommu_iotlb_gather_is_disjoint */
  isDisjoint(iova: bigint, size: bigint): boolean {
    const first = Number(iova >> GATHER_UNIT_LG2N);
    const last = Number((iova + size - 1n) >> GATHER_UNIT_LG2N);
    return this.isDisjointUnits(first, last - first + 1);
  }

  /**
   * Queue freed tables of `owner`; one gather serves one page table at a time. The owner is set
   * exactly while the freelist holds ids.
   */
  addFreed(owner: FreelistOwner, ids: readonly number[]): void {
    if (ids.length === 0) return;
    const other = this.freelistOwner !== undefined && this.freelistOwner !== owner;
    WARN_ON(other, "iotlb gather: freelist mixes two page tables");
    this.freelistOwner = owner;
    for (const id of ids) this.freelist.push(id);
  }

  /** Give the freelist back to its owner (after the IOTLB was flushed). */
  releaseFreelist(): void {
    const owner = this.freelistOwner;
    if (owner === undefined) return;
    owner.releaseTables(this.freelist);
    this.freelist.length = 0;
    this.freelistOwner = undefined;
  }
}
