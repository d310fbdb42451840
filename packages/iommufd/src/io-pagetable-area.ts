/**
 * struct iopt_area and its index / IOVA arithmetic (io_pagetable.h).
 *
 * An area is one contiguous IOVA range `[iova, lastIova]` backed by the byte slice
 * `[startByte, startByte + length)` of one iopt_pages. `node` lives in the owning io_pagetable's
 * area tree (iova_rwsem); `pagesNode` is the page-index range of that slice and lives in the
 * pages' domains tree exactly while the area is filled into at least one domain
 * (`storageDomain` set, both under pages.mutex).
 *
 * IOVA of a page index: the first index maps to the area's iova (which may start inside the
 * page, `pageOffset`); later indexes map to `iova - pageOffset + k * PAGE_SIZE`.
 */
import type { IoPagetable } from "./io-pagetable.js";
import type { IoptDomain } from "./iommu-domain.js";
import { IntervalNode } from "./interval-tree.js";
import { BPAGE_SIZE } from "./pfn-batch.js";
import type { IoptPages } from "./pages.js";

export class IoptArea {
  /** IOVA interval in iopt.areaItree. */
  readonly node = new IntervalNode<IoptArea>(this);
  /** Page-index interval in pages.domainsItree while filled. */
  readonly pagesNode = new IntervalNode<IoptArea>(this);
  iopt: IoPagetable | undefined;
  /** undefined while the area is being created or destroyed (domains_rwsem held). */
  pages: IoptPages | undefined;
  storageDomain: IoptDomain | undefined;
  pageOffset = 0;
  iommuProt = 0;
  preventAccess = false;
  numAccesses = 0;

  /** iopt_area_iova */
  get iova(): bigint {
    return this.node.start;
  }

  /** iopt_area_last_iova */
  get lastIova(): bigint {
    return this.node.last;
  }

  /** iopt_area_length */
  get length(): bigint {
    return this.node.last - this.node.start + 1n;
  }

  /** iopt_area_index: first page index inside the pages. */
  get index(): number {
    return Number(this.pagesNode.start);
  }

  /** iopt_area_last_index */
  get lastIndex(): number {
    return Number(this.pagesNode.last);
  }

  /** iopt_area_start_byte: byte offset inside the pages that `iova` maps. */
  startByte(iova: bigint): bigint {
    return iova - this.iova + BigInt(this.pageOffset) + this.pagesNode.start * BPAGE_SIZE;
  }

  /** iopt_area_index_to_iova */
  indexToIova(index: number): bigint {
    if (index === this.index) return this.iova;
    return this.iova - BigInt(this.pageOffset) + BigInt(index - this.index) * BPAGE_SIZE;
  }

  /** iopt_area_index_to_iova_last */
  indexToIovaLast(index: number): bigint {
    if (index === this.lastIndex) return this.lastIova;
    return this.iova - BigInt(this.pageOffset) + BigInt(index - this.index + 1) * BPAGE_SIZE - 1n;
  }
}

/**
 * Walk the areas covering [iova, last] without a gap: `fn` gets each area with the part of the
 * range in it; returns whether the walk reached `last` (false at a hole or an area still being
 * built). Caller holds iova_rwsem.
 * @see iopt_for_each_contig_area, iopt_area_contig_done
 */
export function ioptForEachContigArea(
  iopt: IoPagetable,
  iova: bigint,
  last: bigint,
  fn: (area: IoptArea, cur: bigint, areaLast: bigint, isLast: boolean) => void,
): boolean {
  let cur = iova;
  for (;;) {
    const area = iopt.areaItree.iterFirst(cur, cur)?.owner;
    if (!area?.pages) return false;
    const isLast = last <= area.lastIova;
    fn(area, cur, isLast ? last : area.lastIova, isLast);
    if (isLast) return true;
    cur = area.lastIova + 1n;
  }
}
