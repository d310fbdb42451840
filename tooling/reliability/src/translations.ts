/**
 * What an IOPTE must translate to, derived from the mapping's source and not from any domain:
 * page `index` of an iopt_pages is the frame the in-kernel access pinned (the xarray), else
 * the page of the user's mm at `uptr`, the memfd's page-cache folio at `start`, or the
 * dma-buf's physical range plus the slice start (drivers/iommu/iommufd/pages.c: the pfn
 * reader's sources). The checker compares every IOPTE run with it in one walk per domain, and
 * counts pins per frame against the pages objects that hold them.
 */
import { IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE, type IoPagetable, type IoptPages } from "@x/iommufd";
import { PAGE_SHIFT as KERNEL_PAGE_SHIFT, shmemInode } from "@x/kernel";

const PAGE_SHIFT = BigInt(KERNEL_PAGE_SHIFT);
const PAGE = 1n << PAGE_SHIFT;

type IoptArea = ReturnType<IoPagetable["areas"]>[number];

/** The frame page `index` of `pages` stands for, or -1 when its source has none now. */
function sourcePfn(pages: IoptPages, index: number): number {
  const held = pages.pinnedPfns.load(index);
  if (held >= 0) return held;
  const d = pages.dmabuf;
  if (d) return Number((d.phys.paddr + d.start + BigInt(index) * PAGE) >> PAGE_SHIFT);
  if (pages.file) {
    const inode = shmemInode(pages.file);
    if (!inode) return -1;
    const pg = Number(pages.start >> PAGE_SHIFT) + index;
    const head = inode.findFolio(pg);
    return head < 0 ? -1 : head + (pg % 2 ** inode.order);
  }
  return pages.sourceMm.lookup(Number(pages.uptr >> PAGE_SHIFT) + index);
}

/**
 * A file page's IOPTE may outlive the page cache: a truncate drops the folio from the file while
 * the pages object's pin keeps it, and iommufd never re-reads the file (pfn_reader_fill_span
 * takes a filled index from the storage domain). Growing the file later puts a new folio at that
 * index, so the source then names another frame. Such an IOPTE is right when its page was cut
 * off by a shrink at some point, its frame is still pinned and the file no longer caches it; a
 * page no shrink ever reached, a frame the file still caches (at any index) or an unpinned one
 * is a wrong target.
 */
function truncatedAway(pages: IoptPages, index: number, pfn: number): boolean {
  if (!pages.file) return false;
  const inode = shmemInode(pages.file);
  if (!inode || inode.shrunkTo === undefined) return false;
  if (pages.start + BigInt(index) * PAGE < inode.shrunkTo) return false;
  return inode.mem.pinCount(pfn) > 0 && !inode.cachesPfn(pfn);
}

/**
 * Check one IOPTE run of a domain (frames [iovaPfn, iovaPfn + n) -> pfn.., `prot`) against
 * `areas`, the areas of its IOAS overlapping the run in IOVA order: each frame points where its
 * area's source says, with the area's read/write permission and MMIO exactly for dma-buf
 * areas. Returns the first problem, or undefined.
 */
export function ioptRunProblem(
  areas: readonly IoptArea[],
  iovaPfn: number,
  pfn: number,
  n: number,
  prot: number,
): string | undefined {
  const start = BigInt(iovaPfn) << PAGE_SHIFT;
  const last = (BigInt(iovaPfn + n) << PAGE_SHIFT) - 1n;
  for (const area of areas) {
    const pages = area.pages;
    if (!pages) continue;
    const rw = IOMMU_READ | IOMMU_WRITE;
    if ((prot & rw) !== (area.iommuProt & rw))
      return `IOPTE at 0x${start.toString(16)} has prot 0x${prot.toString(16)}, area 0x${area.iommuProt.toString(16)}`;
    if (!(prot & IOMMU_MMIO) !== !pages.dmabuf)
      return `IOPTE at 0x${start.toString(16)}: MMIO kind does not match a ${pages.dmabuf ? "dma-buf" : "memory"} area`;
    const from = area.iova > start ? Number(area.iova >> PAGE_SHIFT) : iovaPfn;
    const to = Number((area.lastIova < last ? area.lastIova : last) >> PAGE_SHIFT);
    // The area's first frame holds the page of its start; each later frame starts a page
    // further into the pages object (startByte grows by PAGE per frame), so its index is the
    // frame number plus the same difference as the second frame's.
    const firstFrame = Number(area.iova >> PAGE_SHIFT);
    const firstIndex = Number(area.startByte(area.iova) >> PAGE_SHIFT);
    const second = BigInt(firstFrame + 1) << PAGE_SHIFT;
    const laterDelta = Number(area.startByte(second) >> PAGE_SHIFT) - (firstFrame + 1);
    for (let f = from; f <= to; f++) {
      const index = f === firstFrame ? firstIndex : f + laterDelta;
      const want = sourcePfn(pages, index);
      const got = pfn + (f - iovaPfn);
      if (want >= 0 && want !== got && !truncatedAway(pages, index, got))
        return `IOVA 0x${(BigInt(f) << PAGE_SHIFT).toString(16)} -> pfn ${got}, its source is pfn ${want}`;
    }
  }
  return undefined;
}

/** The page indexes `pages` holds pinned: its `filled` areas and its accesses, merged. */
function pinnedIndexRuns(pages: IoptPages, filled: readonly IoptArea[]): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  for (const area of filled) spans.push([area.index, area.lastIndex]);
  for (const a of pages.accessItree.overlapping())
    spans.push([Number(a.node.start), Number(a.node.last)]);
  spans.sort((x, y) => x[0] - y[0]);
  const out: Array<[number, number]> = [];
  for (const [s, l] of spans) {
    const prev = out[out.length - 1];
    if (prev && s <= prev[1] + 1) prev[1] = Math.max(prev[1], l);
    else out.push([s, l]);
  }
  return out;
}

/**
 * The frame `pages` pins at each index it holds, in index order: the access xarray's entry,
 * else what the storage domain of a filled area covering the index maps there — the pin's own
 * record, not the source, which may have moved on (a truncated memfd drops its folio from the
 * page cache while the pin keeps it). @see pfn_reader_fill_span @see iopt_area_unpin_domain
 */
function forEachPinnedPfn(pages: IoptPages, fn: (index: number, pfn: number) => void): number {
  // overlapping() returns a fresh array: sorted in place.
  const filled = pages.domainsItree.overlapping().sort((x, y) => x.index - y.index);
  let next = 0;
  let cover: (typeof filled)[number] | undefined;
  let held = 0;
  for (const [s, l] of pinnedIndexRuns(pages, filled)) {
    held += l - s + 1;
    for (let i = s; i <= l; i++) {
      const pfn = pages.pinnedPfns.load(i);
      if (pfn >= 0) {
        fn(i, pfn);
        continue;
      }
      // Areas in index order: the one reaching furthest among those starting at or before i.
      for (; next < filled.length && filled[next]!.index <= i; next++) {
        if (!cover || filled[next]!.lastIndex > cover.lastIndex) cover = filled[next];
      }
      const domain = cover && cover.lastIndex >= i ? cover.storageDomain : undefined;
      fn(i, domain ? domain.iovaToPfn(Number(cover!.indexToIova(i) >> PAGE_SHIFT)) : -1);
    }
  }
  return held;
}

/**
 * Pins per frame: every pages object pins each index it holds exactly once (npinned is the
 * size of that set), so a frame's pin count is the number of pages objects holding it.
 * `mem` gives each frame's pin count. Returns the first problem, or undefined. DMABUF pages pin
 * nothing.
 */
export function pinProblem(
  all: Iterable<IoptPages>,
  mem: { pinCount(pfn: number): number },
): string | undefined {
  let holders: Map<number, number> | undefined;
  for (const pages of all) {
    if (pages.dmabuf) continue;
    // Neither a filled area nor an access: it holds no index, so it must pin nothing.
    if (pages.domainsItree.isEmpty && pages.accessItree.isEmpty) {
      if (pages.npinned !== 0) return `pages pin ${pages.npinned} frames for 0 held indexes`;
      continue;
    }
    const counts = (holders ??= new Map<number, number>());
    let unread = -1;
    const held = forEachPinnedPfn(pages, (i, pfn) => {
      if (pfn >= 0) counts.set(pfn, (counts.get(pfn) ?? 0) + 1);
      else if (unread < 0) unread = i;
    });
    if (unread >= 0) return `pages hold index ${unread} pinned with no frame to read it from`;
    if (held !== pages.npinned) return `pages pin ${pages.npinned} frames for ${held} held indexes`;
  }
  for (const [pfn, n] of holders ?? []) {
    const c = mem.pinCount(pfn);
    if (c !== n) return `pfn ${pfn} pinned ${c} times for ${n} pages objects`;
  }
  return undefined;
}
