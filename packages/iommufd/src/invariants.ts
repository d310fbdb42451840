/**
 * The invariant checker (I1–I11, described in the repository's docs/invariants.md), callable at any quiescent point (no iommufd
 * lock held, no operation in flight). It throws a KernelWarning naming the broken invariant.
 *
 * It inspects io_pagetables and every iopt_pages their areas reference, so pages shared by
 * IOAS_COPY are checked across all the IOASes passed in. Checks read IOPTEs at the first and
 * last page of each area (and every page for areas up to `fullCheckPages`), which keeps it
 * cheap enough to run after every step of a property test.
 */
import { KernelWarning } from "@x/kernel";
import { type IntervalTree, forEachSpan } from "./interval-tree.js";
import type { IoPagetable } from "./io-pagetable.js";
import type { IoptArea } from "./io-pagetable-area.js";
import { IOPT_PAGES_ACCOUNT_NONE } from "./accounting.js";
import { type IoptDomain, domainIovaToPhys } from "./iommu-domain.js";
import type { IoptPages } from "./pages.js";
import { BPAGE_SIZE } from "./pfn-batch.js";

export interface InvariantOptions {
  /** Areas with at most this many pages get every page's IOPTE compared. */
  readonly fullCheckPages?: number;
}

function broken(inv: string, msg: string): never {
  throw new KernelWarning(`invariant ${inv}: ${msg}`);
}

function usedSpans<T>(tree: IntervalTree<T>, last: bigint): Array<[bigint, bigint]> {
  const out: Array<[bigint, bigint]> = [];
  forEachSpan(tree, 0n, last, (s) => {
    if (s.used) out.push([s.start, s.last]);
    return false;
  });
  return out;
}

/** Indexes of [0, last] that `tree` covers: its spans are disjoint, so their lengths add up. */
function usedPages<T>(tree: IntervalTree<T>, last: bigint): number {
  if (tree.isEmpty) return 0;
  let n = 0;
  forEachSpan(tree, 0n, last, (s) => {
    if (s.used) n += Number(s.last - s.start + 1n);
    return false;
  });
  return n;
}

/** Indexes of [0, npages) covered by accesses, and also by filled areas when `withDomains`. */
function coveredPages(pages: IoptPages, withDomains: boolean): number {
  const last = BigInt(pages.npages - 1);
  if (!withDomains) return usedPages(pages.accessItree, last);
  if (pages.accessItree.isEmpty) return usedPages(pages.domainsItree, last);
  const spans = usedSpans(pages.accessItree, last);
  spans.push(...usedSpans(pages.domainsItree, last));
  // Each tree's spans come in order; the two lists are merged by start.
  spans.sort((a, b) => Number(a[0] - b[0]));
  let n = 0;
  let end = -1n;
  for (const [s, l] of spans) {
    const from = s > end ? s : end + 1n;
    if (l >= from) n += Number(l - from + 1n);
    if (l > end) end = l;
  }
  return n;
}

/**
 * The physical address the area's page `index` (at `iova`) should translate to (0n if not
 * knowable); `got` is what `domain` translates it to.
 */
function expectedPhys(
  area: IoptArea,
  pages: IoptPages,
  index: number,
  iova: bigint,
  domain: IoptDomain,
  got: bigint,
): bigint {
  const off = index === area.index ? BigInt(area.pageOffset) : 0n;
  if (pages.dmabuf) {
    return pages.dmabuf.phys.paddr + pages.dmabuf.start + BigInt(index) * BPAGE_SIZE + off;
  }
  // A page an access pinned has its PFN in the xarray, and every domain must map that frame;
  // for the others the storage domain is the record, as for pfn_reader reading PFNs back.
  const pinned = pages.pinnedPfns.load(index);
  if (pinned !== -1) return BigInt(pinned) * BPAGE_SIZE + off;
  const storage = area.storageDomain;
  if (!storage) return 0n;
  // The storage domain's answer is `got` when it is the domain being checked: one walk.
  return storage === domain ? got : domainIovaToPhys(storage, iova);
}

function checkAreaMapping(
  area: IoptArea,
  pages: IoptPages,
  domain: IoptDomain,
  revoked: boolean,
  fullCheckPages: number,
): void {
  // Every page of a small area, else its first and last (once for a one-page area).
  const lastIndex = area.lastIndex;
  const n = lastIndex - area.index + 1;
  const stride = n <= fullCheckPages || n === 1 ? 1 : n - 1;
  for (let index = area.index; index <= lastIndex; index += stride) {
    const iova = area.indexToIova(index);
    const got = domainIovaToPhys(domain, iova);
    if (revoked) {
      if (got !== 0n) broken("I1", `revoked area ${area.iova.toString(16)} still mapped`);
      continue;
    }
    const want = expectedPhys(area, pages, index, iova, domain, got);
    // iova_to_phys answers 0 for a hole, and no page of an area can be at physical 0 (pfn 0 is
    // reserved RAM, MMIO lies above RAM): a hole in a filled area is broken even when the
    // storage domain, which gives `want` for user and memfd pages, has the same hole.
    if (got === 0n || got !== want) {
      broken(
        pages.dmabuf ? "I2" : "I5",
        `area ${area.iova.toString(16)} page ${index}: domain has ${got.toString(16)}, want ${want.toString(16)}`,
      );
    }
  }
}

/** Check one io_pagetable's own invariants (its `areas`) and add the pages they use. */
function checkIopt(
  iopt: IoPagetable,
  areas: readonly IoptArea[],
  pagesSeen: Set<IoptPages>,
  opts: InvariantOptions,
): void {
  const align = iopt.iovaAlignment;
  const full = opts.fullCheckPages ?? 64;
  for (const area of areas) {
    const pages = area.pages;
    if (!pages) broken("I9", `area ${area.iova.toString(16)} without pages at a quiescent point`);
    if (area.iova % align || area.length % align || BigInt(area.pageOffset) % align) {
      broken("I11", `area ${area.iova.toString(16)} not aligned to ${align}`);
    }
    if (area.pagesNode.inTree !== (area.storageDomain !== undefined)) {
      broken("I7", `area ${area.iova.toString(16)}: domains_itree membership vs storage domain`);
    }
    if (area.storageDomain && !iopt.domainList.includes(area.storageDomain)) {
      broken("I7", `area ${area.iova.toString(16)}: storage domain not attached`);
    }
    if (iopt.domainList.length > 0 && !area.storageDomain) {
      broken("I7", `area ${area.iova.toString(16)} not filled though domains are attached`);
    }
    pagesSeen.add(pages);
    const revoked = pages.dmabuf !== undefined && pages.dmabuf.phys.len === 0n;
    for (const d of iopt.domainList) checkAreaMapping(area, pages, d, revoked, full);
    if (pages.dmabuf) {
      const mine = pages.dmabuf.tracker.filter((t) => t.area === area);
      if (mine.length !== iopt.domainList.length) {
        broken(
          "I2",
          `area ${area.iova.toString(16)}: ${mine.length} tracker entries, ${iopt.domainList.length} domains`,
        );
      }
      for (const d of iopt.domainList) {
        if (mine.filter((t) => t.domain === d).length !== 1) {
          broken("I2", `area ${area.iova.toString(16)}: domain not tracked exactly once`);
        }
      }
    }
  }
}

/** `areasSeen`: every area of the io_pagetables checked, given for DMABUF pages. */
function checkPages(pages: IoptPages, areasSeen: ReadonlySet<IoptArea> | undefined): void {
  if (pages.released) broken("I8", "an area references released pages");
  if (pages.npinned !== pages.lastNpinned) {
    broken("I6", `npinned ${pages.npinned} != last_npinned ${pages.lastNpinned}`);
  }
  if (pages.dmabuf) {
    if (pages.npinned !== 0) broken("I5", "DMABUF pages with pins");
    if (pages.accountMode !== IOPT_PAGES_ACCOUNT_NONE) broken("I6", "DMABUF pages are charged");
    if (!pages.accessItree.isEmpty) broken("I10", "DMABUF pages with an access");
    // Entries of the areas seen were counted per area and domain by checkIopt (so they are
    // filled and their domains attached); any other entry is left over.
    for (const t of pages.dmabuf.tracker) {
      if (!areasSeen!.has(t.area) || t.area.pages !== pages) {
        broken("I2", "tracker entry for an area that is not one of these pages' areas");
      }
    }
    return;
  }
  const covered = coveredPages(pages, true);
  if (pages.npinned !== covered) {
    broken("I5", `npinned ${pages.npinned}, pages covered by accesses or domains ${covered}`);
  }
  const inXa = coveredPages(pages, false);
  if (pages.pinnedPfns.count !== inXa) {
    broken("I5", `xarray holds ${pages.pinnedPfns.count} entries, accesses cover ${inXa}`);
  }
}

/**
 * Check I1–I11 over the given io_pagetables and the pages they use. Returns the pages seen
 * (so a caller can compare total pins with the machine's).
 */
export function checkInvariants(
  iopts: readonly IoPagetable[],
  opts: InvariantOptions = {},
): Set<IoptPages> {
  const pagesSeen = new Set<IoptPages>();
  const areaLists: IoptArea[][] = [];
  for (const iopt of iopts) {
    const areas = iopt.areas();
    areaLists.push(areas);
    checkIopt(iopt, areas, pagesSeen, opts);
  }
  // Only DMABUF pages look their tracker's areas up.
  let areasSeen: Set<IoptArea> | undefined;
  for (const pages of pagesSeen) {
    if (pages.dmabuf) areasSeen ??= new Set(areaLists.flat());
    checkPages(pages, areasSeen);
  }
  return pagesSeen;
}

/** Pins held by iommufd pages (sum of npinned) — compare with kernel.mem.totalPinned(). */
export function totalNpinned(pages: Iterable<IoptPages>): number {
  let n = 0;
  for (const p of pages) n += p.npinned;
  return n;
}
