/**
 * iopt_pages: a 0-based array of `npages` PFNs from one linear origin — a user VA range (USER),
 * a memfd slice (FILE) or one physical range of a revocable dma-buf (DMABUF) — shared by every
 * area that maps it (several IOASes after IOAS_COPY), so nothing is pinned or charged twice.
 *
 * Storage tiers: the xarray `pinnedPfns` (only for ranges an in-kernel access holds), a domain
 * (read back by IOVA through any area's storage domain), and the origin. A USER/FILE PFN is
 * pinned exactly once while its index is covered by accessItree ∪ domainsItree and unpinned
 * exactly once when that coverage ends, always after every IOPTE to it was unmapped. DMABUF
 * PFNs are MMIO: never pinned, never charged.
 *
 * Fill maps areas into domains through a pfn_reader; unfill unmaps, reading the PFNs back from
 * the domain so it can unpin what nothing else covers. An unmap never cuts a run that was
 * mapped as one (it may be one huge IOPTE): the unfill reads on to the next discontinuity and
 * carries the unmapped-but-still-needed tail into the next step. Unfill paths use backup
 * batches and cannot fail.
 *
 * DMABUF (P2–P6): `dmabuf.phys.len === 0` means revoked, for good. Every fill checks it (and
 * maps nothing, succeeding), every unfill checks it (and unmaps nothing), and the tracker of
 * (area, domain) pairs is changed in the same pages.mutex section as the map or unmap it
 * describes, which is what lets the revoke handler (dmabuf-import.ts) unmap without the
 * io_pagetable locks.
 *
 * Lock order: iopt.domains_rwsem → iopt.iova_rwsem → pages.mutex, and dma_resv → pages.mutex
 * for DMABUF pages, whose mutex has its own lockdep class ("iopt_pages.mutex/dmabuf") because
 * they never take mmap_lock under it.
 */
import {
  type DmaBufAttachment,
  type PhysVec,
  dmaBufDetach,
  dmaBufPut,
  dmaBufUnpin,
} from "@x/dmabuf";
import {
  CAP_IPC_LOCK,
  EINVAL,
  ENOMEM,
  EOVERFLOW,
  type File,
  type Kernel,
  KernelWarning,
  type MmStruct,
  Mutex,
  type Process,
  type UserStruct,
  WARN_ON,
  XArray,
  fail,
  U64_MAX,
} from "@x/kernel";
import {
  IOPT_PAGES_ACCOUNT_NONE,
  IOPT_PAGES_ACCOUNT_USER,
  type IoptPagesAccountMode,
  accountingShouldFail,
  updatePinnedAccounting,
} from "./accounting.js";
import { doubleSpanAt, IntervalNode, IntervalTree } from "./interval-tree.js";
import type { IoptArea } from "./io-pagetable-area.js";
import { type IoptDomain, iommuUnmapNofail } from "./iommu-domain.js";
import { iommufdOptions } from "./main.js";
import {
  BPAGE_SIZE,
  PfnBatch,
  batchFromDomain,
  batchUnpin,
  batchFromDomainContinue,
  batchToDomain,
} from "./pfn-batch.js";
import { PfnReader } from "./pfn-reader.js";

export const IOPT_ADDRESS_USER = 0;
export const IOPT_ADDRESS_FILE = 1;
export const IOPT_ADDRESS_DMABUF = 2;
export type IoptAddressType =
  | typeof IOPT_ADDRESS_USER
  | typeof IOPT_ADDRESS_FILE
  | typeof IOPT_ADDRESS_DMABUF;

/** One (area, domain) pair a DMABUF pages object is (or, revoked, would be) mapped into. */
interface IoptPagesDmabufTrack {
  readonly area: IoptArea;
  readonly domain: IoptDomain;
}

/** struct iopt_pages_dmabuf */
export interface IoptPagesDmabuf {
  /** Set once the private interconnect answered; release detaches it. */
  attach: DmaBufAttachment | undefined;
  /** The single physical range; `len === 0n` means revoked. */
  phys: PhysVec;
  /** Page-aligned offset into the dma-buf of the page holding the first mapped byte. */
  readonly start: bigint;
  readonly tracker: IoptPagesDmabufTrack[];
  /** dma_buf_pin was taken (the pinning-importer option). */
  pinned: boolean;
}

/** struct iopt_pages_access: an in-kernel pin range, refcounted per exact range. */
export class IoptPagesAccess {
  readonly node = new IntervalNode<IoptPagesAccess>(this);
  users = 1;

  constructor(start: number, last: number) {
    this.node.start = BigInt(start);
    this.node.last = BigInt(last);
  }
}

/** The lockdep class names of pages.mutex. */
const PAGES_MUTEX_CLASS = "iopt_pages.mutex";
export const PAGES_DMABUF_MUTEX_CLASS = "iopt_pages.mutex/dmabuf";

export class IoptPages {
  refs = 1;
  mutex: Mutex;
  readonly npages: number;
  npinned = 0;
  lastNpinned = 0;
  /** Who pays (changed only by IOAS_CHANGE_PROCESS, see `changeSource`). */
  sourceProcess: Process;
  sourceUser: UserStruct;
  sourceMm: MmStruct;
  type: IoptAddressType = IOPT_ADDRESS_USER;
  readonly writable: boolean;
  accountMode: IoptPagesAccountMode;
  /** USER: page-aligned user VA. */
  uptr = 0n;
  /** FILE: the file (a reference is held) and the page-aligned offset of page 0. */
  file: File | undefined;
  start = 0n;
  dmabuf: IoptPagesDmabuf | undefined;
  readonly pinnedPfns = new XArray();
  readonly accessItree = new IntervalTree<IoptPagesAccess>();
  readonly domainsItree = new IntervalTree<IoptArea>();
  released = false;

  /** @see iopt_alloc_pages */
  constructor(
    readonly kernel: Kernel,
    startByte: bigint,
    length: bigint,
    writable: boolean,
  ) {
    if (length === 0n || length > U64_MAX - BPAGE_SIZE)
      fail(EINVAL, length ? "pages length too large" : "pages length 0", { length });
    if (kernel.shouldFail("iommufd:alloc_pages")) fail(ENOMEM, "iopt_pages");
    this.mutex = new Mutex(kernel.lockdep, PAGES_MUTEX_CLASS);
    const process = kernel.current.process;
    this.sourceProcess = process;
    this.sourceUser = process.cred.user;
    this.sourceMm = process.mm;
    this.npages = Number((length + startByte + BPAGE_SIZE - 1n) / BPAGE_SIZE);
    this.writable = writable;
    this.accountMode = process.capable(CAP_IPC_LOCK)
      ? IOPT_PAGES_ACCOUNT_NONE
      : IOPT_PAGES_ACCOUNT_USER;
  }

  get isDmabuf(): boolean {
    return this.type === IOPT_ADDRESS_DMABUF;
  }

  /** iopt_dmabuf_revoked: only meaningful under the mutex; false for other types. */
  get revoked(): boolean {
    if (!this.dmabuf) return false;
    this.mutex.assertHeld();
    return this.dmabuf.phys.len === 0n;
  }

  /** Give DMABUF pages their own lockdep class (lockdep_set_class). */
  setDmabufClass(): void {
    this.mutex = new Mutex(this.kernel.lockdep, PAGES_DMABUF_MUTEX_CLASS);
  }

  /** kref_get */
  get(): this {
    if (this.refs === 0) throw new KernelWarning("iopt_pages get after release");
    this.refs++;
    return this;
  }

  /**
   * IOAS_CHANGE_PROCESS for FILE pages: re-homes the pages to `process`. With `uncharge` the
   * caller charged `npinned` to `process` (all pages first, so a refusal changes nothing) and
   * this returns the old charge; without, the charge already lands on `process`.
   * @see change_mm
   */
  changeSource(process: Process, uncharge: boolean): void {
    this.mutex.with(() => {
      if (uncharge && this.npinned) updatePinnedAccounting(this, this.npinned, false);
      this.sourceProcess = process;
      this.sourceUser = process.cred.user;
      this.sourceMm = process.mm;
    });
  }

  /** iopt_pages_sub_npinned */
  subNpinned(n: number): void {
    if (this.npinned < n) throw new KernelWarning("npinned underflow");
    this.npinned -= n;
  }

  /**
   * Reconcile the accounting with `npinned`: charging is an injectable failure and may hit
   * RLIMIT_MEMLOCK (ENOMEM, nothing changed).
   * @see pfn_reader_update_pinned
   */
  updatePinned(): void {
    this.mutex.assertHeld();
    if (this.npinned === this.lastNpinned) return;
    if (this.npinned < this.lastNpinned) {
      updatePinnedAccounting(this, this.lastNpinned - this.npinned, false);
    } else {
      if (accountingShouldFail(this.kernel)) fail(ENOMEM, "injected accounting failure");
      updatePinnedAccounting(this, this.npinned - this.lastNpinned, true);
    }
    this.lastNpinned = this.npinned;
  }

  /** Return what unpinning gave back. @see update_unpinned */
  updateUnpinned(): void {
    WARN_ON(this.npinned > this.lastNpinned, "update_unpinned with new pins");
    if (this.npinned === this.lastNpinned) return;
    updatePinnedAccounting(this, this.lastNpinned - this.npinned, false);
    this.lastNpinned = this.npinned;
  }
}

/** @see iopt_alloc_user_pages */
export function ioptAllocUserPages(
  kernel: Kernel,
  uptr: bigint,
  length: bigint,
  writable: boolean,
): IoptPages {
  if (uptr + length > U64_MAX) fail(EOVERFLOW, "uptr + length");
  const down = uptr & ~(BPAGE_SIZE - 1n);
  const pages = new IoptPages(kernel, uptr - down, length, writable);
  pages.uptr = down;
  pages.type = IOPT_ADDRESS_USER;
  return pages;
}

/** @see iopt_alloc_file_pages */
export function ioptAllocFilePages(
  kernel: Kernel,
  file: File,
  startByte: bigint,
  start: bigint,
  length: bigint,
  writable: boolean,
): IoptPages {
  const pages = new IoptPages(kernel, startByte, length, writable);
  pages.file = file.get();
  pages.start = start - startByte;
  pages.type = IOPT_ADDRESS_FILE;
  return pages;
}

/** Drop a reference; the last one releases. @see iopt_put_pages */
export function ioptPutPages(pages: IoptPages): void {
  if (pages.refs <= 0) throw new KernelWarning("iopt_pages put after release");
  if (--pages.refs === 0) ioptReleasePages(pages);
}

/** Release of DMABUF pages: unpin (option), detach, drop the dma-buf reference. */
function ioptReleaseDmabuf(pages: IoptPages): void {
  const state = pages.dmabuf;
  const attach = state?.attach;
  if (!state || !attach) return;
  WARN_ON(state.tracker.length !== 0, "release: DMABUF tracker not empty");
  const dmabuf = attach.dmabuf;
  if (state.pinned) dmabuf.resv.with(() => dmaBufUnpin(attach));
  dmaBufDetach(dmabuf, attach);
  state.attach = undefined;
  dmaBufPut(dmabuf);
}

/** @see iopt_release_pages */
function ioptReleasePages(pages: IoptPages): void {
  WARN_ON(!pages.accessItree.isEmpty, "release: accesses remain");
  WARN_ON(!pages.domainsItree.isEmpty, "release: areas still filled");
  WARN_ON(pages.npinned !== 0, "release: pages still pinned");
  WARN_ON(pages.pinnedPfns.count !== 0, "release: xarray not empty");
  pages.released = true;
  if (pages.dmabuf) {
    ioptReleaseDmabuf(pages);
  } else if (pages.file) {
    pages.file.put();
  }
}

/** @see iopt_dmabuf_track_domain */
function dmabufTrackDomain(pages: IoptPages, area: IoptArea, domain: IoptDomain): void {
  pages.mutex.assertHeld();
  WARN_ON(!pages.dmabuf, "track on non-DMABUF pages");
  const tracker = pages.dmabuf!.tracker;
  for (const t of tracker) {
    WARN_ON(t.area === area && t.domain === domain, "pair already tracked");
  }
  if (pages.kernel.shouldFail("iommufd:dmabuf_track")) fail(ENOMEM, "tracker entry");
  tracker.push({ area, domain });
}

/** @see iopt_dmabuf_track_all_domains */
function dmabufTrackAllDomains(
  area: IoptArea,
  pages: IoptPages,
  domains: readonly IoptDomain[],
): void {
  try {
    for (const domain of domains) dmabufTrackDomain(pages, area, domain);
  } catch (e) {
    dmabufUntrackAllDomains(area, pages);
    throw e;
  }
}

/** @see iopt_dmabuf_untrack_domain */
function dmabufUntrackDomain(pages: IoptPages, area: IoptArea, domain: IoptDomain): void {
  pages.mutex.assertHeld();
  const tracker = pages.dmabuf?.tracker ?? [];
  const i = tracker.findIndex((t) => t.area === area && t.domain === domain);
  WARN_ON(i < 0, "untrack of an untracked pair");
  tracker.splice(i, 1);
}

/** @see iopt_dmabuf_untrack_all_domains */
function dmabufUntrackAllDomains(area: IoptArea, pages: IoptPages): void {
  pages.mutex.assertHeld();
  const tracker = pages.dmabuf?.tracker;
  if (!tracker) return;
  let w = 0;
  for (const t of tracker) if (t.area !== area) tracker[w++] = t;
  tracker.length = w;
}

/** @see iopt_area_unmap_domain_range */
export function ioptAreaUnmapDomainRange(
  area: IoptArea,
  domain: IoptDomain,
  startIndex: number,
  lastIndex: number,
): void {
  const startIova = area.indexToIova(startIndex);
  iommuUnmapNofail(domain, startIova, area.indexToIovaLast(lastIndex) - startIova + 1n);
}

/** @see iopt_area_unmap_domain */
function ioptAreaUnmapDomain(area: IoptArea, domain: IoptDomain): void {
  iommuUnmapNofail(domain, area.iova, area.length);
}

/**
 * Unmap pages [start, last] of the area (a hole: nothing else needs them) from `domain` and
 * unpin them, never cutting a contiguous run: if the hole ends inside a run the read goes on
 * to the run's end and the extra PFNs are carried, unmapped but still pinned.
 * @see iopt_area_unpin_domain
 */
function ioptAreaUnpinDomain(
  batch: PfnBatch,
  area: IoptArea,
  pages: IoptPages,
  domain: IoptDomain,
  start: number,
  last: number,
  state: { unmappedEnd: number },
  realLast: number,
): void {
  while (start <= last) {
    let batchLast: number;
    if (state.unmappedEnd <= last) {
      const from = Math.max(start, state.unmappedEnd);
      batchFromDomain(batch, domain, area, from, last);
      batchLast = start + batch.totalPfns - 1;
    } else {
      batchLast = last;
    }
    if (batchLast === last && last !== realLast) {
      batchFromDomainContinue(batch, domain, area, last + 1, realLast);
    }
    if (state.unmappedEnd <= batchLast) {
      ioptAreaUnmapDomainRange(area, domain, state.unmappedEnd, start + batch.totalPfns - 1);
      state.unmappedEnd = start + batch.totalPfns;
    }
    // Unpin strictly after the unmap above.
    batchUnpin(pages, batch, 0, batchLast - start + 1);
    start = batchLast + 1;
    batch.clearCarry(state.unmappedEnd - batchLast - 1);
  }
}

/**
 * Unmap pages [area.index, lastIndex] of the area from `domain`, unpinning those no other
 * domain-filled area and no access covers. The area's own pagesNode must already be out of
 * domainsItree when this is its last domain. DMABUF: one unmap, no unpin.
 * @see __iopt_area_unfill_domain
 */
function ioptAreaUnfillDomainTo(
  area: IoptArea,
  pages: IoptPages,
  domain: IoptDomain,
  lastIndex: number,
): void {
  pages.mutex.assertHeld();
  if (pages.dmabuf) {
    WARN_ON(pages.revoked, "unfill of a revoked DMABUF area");
    ioptAreaUnmapDomainRange(area, domain, area.index, lastIndex);
    return;
  }
  const batch = PfnBatch.create(pages.kernel, lastIndex + 1, true);
  const state = { unmappedEnd: area.index };
  let pos = area.index;
  while (pos <= lastIndex) {
    const s = doubleSpanAt(pages.domainsItree, pages.accessItree, BigInt(pos), BigInt(lastIndex));
    const spanLast = Number(s.last);
    if (s.used) batch.skipCarry(spanLast - pos + 1);
    else ioptAreaUnpinDomain(batch, area, pages, domain, pos, spanLast, state, lastIndex);
    pos = spanLast + 1;
  }
  // A range ending under an access: unmap the rest without unpinning.
  if (state.unmappedEnd !== lastIndex + 1) {
    ioptAreaUnmapDomainRange(area, domain, state.unmappedEnd, lastIndex);
  }
  WARN_ON(batch.totalPfns !== 0, "unfill left a carry");
  pages.updateUnpinned();
}

/** @see iopt_area_unfill_partial_domain */
function ioptAreaUnfillPartialDomain(
  area: IoptArea,
  pages: IoptPages,
  domain: IoptDomain,
  endIndex: number,
): void {
  if (endIndex !== area.index) ioptAreaUnfillDomainTo(area, pages, domain, endIndex - 1);
}

/** Unfill the whole area from `domain`; nothing to do once revoked. @see iopt_area_unfill_domain */
function ioptAreaUnfillDomain(area: IoptArea, pages: IoptPages, domain: IoptDomain): void {
  if (pages.revoked) return;
  ioptAreaUnfillDomainTo(area, pages, domain, area.lastIndex);
}

/**
 * Map the area into one more domain (pages.mutex held). Revoked DMABUF pages map nothing and
 * succeed. On failure the domain is left as it was.
 * @see iopt_area_fill_domain
 */
function ioptAreaFillDomain(area: IoptArea, domain: IoptDomain): void {
  const pages = area.pages;
  if (!pages) throw new KernelWarning("fill of an area without pages");
  pages.mutex.assertHeld();
  if (pages.revoked) return;
  const reader = PfnReader.first(pages, area.index, area.lastIndex);
  let doneEnd = area.index;
  try {
    while (!reader.done) {
      doneEnd = reader.batchStartIndex;
      batchToDomain(reader.batch, domain, area, reader.batchStartIndex);
      doneEnd = reader.batchEndIndex;
      reader.next();
    }
    reader.updatePinned();
  } catch (e) {
    reader.releasePins();
    ioptAreaUnfillPartialDomain(area, pages, domain, doneEnd);
    reader.destroy();
    throw e;
  }
  reader.destroy();
}

/**
 * Map a new area into every domain of its io_pagetable (domains_rwsem held), tracking each
 * (area, domain) pair first for DMABUF. Revoked pages are tracked but not mapped. On success
 * the area is in domainsItree with domains[0] as storage; on failure nothing remains.
 * @see iopt_area_fill_domains
 */
export function ioptAreaFillDomains(area: IoptArea, pages: IoptPages): void {
  const iopt = area.iopt;
  if (!iopt) throw new KernelWarning("fill of an area outside an io_pagetable");
  const domains = iopt.domainList;
  const first = domains[0];
  if (!first) return;
  const track = pages.dmabuf !== undefined;
  const late = track && iommufdOptions(pages.kernel).trackerMutant;
  pages.mutex.lock();
  try {
    if (track && !late) dmabufTrackAllDomains(area, pages, domains);
    try {
      if (!pages.revoked) fillAllDomains(area, pages, domains);
    } catch (e) {
      if (track && !late) dmabufUntrackAllDomains(area, pages);
      throw e;
    }
    area.storageDomain = first;
    pages.domainsItree.insert(area.pagesNode);
  } finally {
    pages.mutex.unlock();
  }
  // The tracker mutant (a deliberate fault): track in a second section.
  if (late) pages.mutex.with(() => dmabufTrackAllDomains(area, pages, domains));
}

function fillAllDomains(area: IoptArea, pages: IoptPages, domains: readonly IoptDomain[]): void {
  const reader = PfnReader.first(pages, area.index, area.lastIndex);
  let doneFirstEnd = area.index;
  let doneAllEnd = area.index;
  let failedAt = domains.length;
  try {
    while (!reader.done) {
      doneFirstEnd = reader.batchEndIndex;
      doneAllEnd = reader.batchStartIndex;
      for (let i = 0; i < domains.length; i++) {
        failedAt = i;
        batchToDomain(reader.batch, domains[i] as IoptDomain, area, reader.batchStartIndex);
      }
      failedAt = domains.length;
      doneAllEnd = doneFirstEnd;
      reader.next();
    }
    reader.updatePinned();
  } catch (e) {
    reader.releasePins();
    // The area is not in domainsItree yet: only the last domain's unfill may unpin.
    for (let i = 0; i < domains.length; i++) {
      const domain = domains[i] as IoptDomain;
      const end = i < failedAt ? doneFirstEnd : doneAllEnd;
      if (i !== domains.length - 1) {
        if (end !== area.index) ioptAreaUnmapDomainRange(area, domain, area.index, end - 1);
      } else {
        ioptAreaUnfillPartialDomain(area, pages, domain, end);
      }
    }
    reader.destroy();
    throw e;
  }
  reader.destroy();
}

/**
 * Undo ioptAreaFillDomains when the area goes (domains_rwsem held): unmap from every domain
 * but the storage one, then unfill (unmap + unpin) the storage domain; drop the tracker
 * entries. Revoked DMABUF pages unmap nothing.
 * @see iopt_area_unfill_domains
 */
export function ioptAreaUnfillDomains(area: IoptArea, pages: IoptPages): void {
  const iopt = area.iopt;
  if (!iopt) throw new KernelWarning("unfill of an area outside an io_pagetable");
  pages.mutex.with(() => {
    const storage = area.storageDomain;
    if (!storage) return;
    for (const domain of iopt.domainList) {
      if (domain === storage) continue;
      if (!pages.revoked) ioptAreaUnmapDomainRange(area, domain, area.index, area.lastIndex);
    }
    WARN_ON(!area.pagesNode.inTree, "filled area not in domains_itree");
    pages.domainsItree.remove(area.pagesNode);
    ioptAreaUnfillDomain(area, pages, storage);
    if (pages.dmabuf) dmabufUntrackAllDomains(area, pages);
    area.storageDomain = undefined;
  });
}

/**
 * Fill one area into a domain being added (domain add, iopt_fill_domain's per-area step):
 * track and fill in one pages.mutex section; the first domain becomes the storage domain.
 */
export function ioptAreaAddDomain(area: IoptArea, pages: IoptPages, domain: IoptDomain): void {
  const track = pages.dmabuf !== undefined;
  const late = track && iommufdOptions(pages.kernel).trackerMutant;
  pages.mutex.with(() => {
    if (track && !late) dmabufTrackDomain(pages, area, domain);
    try {
      ioptAreaFillDomain(area, domain);
    } catch (e) {
      if (track && !late) dmabufUntrackDomain(pages, area, domain);
      throw e;
    }
    if (!area.storageDomain) {
      area.storageDomain = domain;
      pages.domainsItree.insert(area.pagesNode);
    }
  });
  // The tracker mutant (a deliberate fault): track in a second section.
  if (late) pages.mutex.with(() => dmabufTrackDomain(pages, area, domain));
}

/**
 * Undo ioptAreaAddDomain for the unwind of a failed domain add: `wasFirst` when the domain
 * would have been the only one.
 */
export function ioptAreaUndoAddDomain(
  area: IoptArea,
  pages: IoptPages,
  domain: IoptDomain,
  wasFirst: boolean,
): void {
  pages.mutex.with(() => {
    if (wasFirst) {
      pages.domainsItree.remove(area.pagesNode);
      area.storageDomain = undefined;
    }
    ioptAreaUnfillDomain(area, pages, domain);
    if (pages.dmabuf) dmabufUntrackDomain(pages, area, domain);
  });
}

/**
 * Take `domain` out of one area while other domains remain (domain removal): move the storage
 * role to `survivor` if needed and unmap without unpinning. DMABUF does it all under the mutex
 * (P3/P4); other pages unmap after dropping it.
 * @see iopt_unfill_domain
 */
export function ioptAreaRemoveDomain(
  area: IoptArea,
  pages: IoptPages,
  domain: IoptDomain,
  survivor: IoptDomain,
): void {
  pages.mutex.with(() => {
    WARN_ON(!area.storageDomain, "filled area without storage domain");
    if (area.storageDomain === domain) area.storageDomain = survivor;
    if (pages.dmabuf) {
      if (!pages.revoked) ioptAreaUnmapDomain(area, domain);
      dmabufUntrackDomain(pages, area, domain);
    }
  });
  if (!pages.dmabuf) ioptAreaUnmapDomain(area, domain);
}

/** Take the last domain out of one area: unfill (unmap + unpin) and leave domainsItree. */
export function ioptAreaRemoveLastDomain(
  area: IoptArea,
  pages: IoptPages,
  domain: IoptDomain,
): void {
  pages.mutex.with(() => {
    pages.domainsItree.remove(area.pagesNode);
    WARN_ON(area.storageDomain !== domain, "storage domain is not the last domain");
    area.storageDomain = undefined;
    ioptAreaUnfillDomain(area, pages, domain);
    if (pages.dmabuf) dmabufUntrackDomain(pages, area, domain);
  });
}
