/**
 * DMABUF import (P2, P4): iopt_pages of type DMABUF over a revocable dma-buf.
 *
 * Map time: a dynamic attachment to a per-machine dummy device with `allowPeer2peer` and the
 * revoke handler as `moveNotify` (`importerPriv` = the pages); then, under the reservation
 * lock, the private interconnect gives the single physical range (the selftest exporter's hook
 * first, then vfio-pci's `vfio_pci_dma_buf_iommufd_map` by symbol name: missing or not single
 * range → EOPNOTSUPP, revoked → ENODEV). The attachment and one dma-buf reference live as long
 * as the pages, so closing the user's fd changes nothing.
 *
 * Revoke: the exporter holds the reservation lock and calls move_notify; the handler takes
 * pages.mutex, unmaps every tracked (area, domain) pair and sets `phys.len = 0`. It never
 * takes the io_pagetable locks (they order before pages.mutex), which is why the pages keep
 * their own tracker. Idempotent and permanent: a later notify (the exporter's un-revoke) finds
 * it revoked and does nothing; the areas stay, dead, until user space unmaps them.
 *
 * Decision (spec §7 "dma_buf_pin"): the baseline is the series as merged, which does not pin.
 * `setDmabufPinImporter(kernel, true)` gives the 2026 behaviour: dma_buf_pin right after taking
 * the reservation lock, before the private map; unpin on a failed map and at release.
 */
import {
  type DmaBuf,
  type DmaBufAttachOps,
  type DmaBufAttachment,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufIommufdMap,
  dmaBufPin,
  dmaBufPut,
  dmaBufUnpin,
} from "@x/dmabuf";
import { EINVAL, ENOMEM, type Kernel, KernelWarning, WARN_ON, fail } from "@x/kernel";
import { IOPT_PAGES_ACCOUNT_NONE } from "./accounting.js";
import type { IoptArea } from "./io-pagetable-area.js";
import type { IoptDomain } from "./iommu-domain.js";
import { IOPT_ADDRESS_DMABUF, IoptPages, ioptAreaUnmapDomainRange, ioptPutPages } from "./pages.js";
import { BPAGE_SIZE, MAX_NPFNS } from "./pfn-batch.js";

declare module "@x/kernel" {
  interface TraceEvents {
    "iommufd:dmabuf_revoke": { npairs: number; alreadyRevoked: boolean };
  }
}

interface DmabufImportOptions {
  pin: boolean;
  trackLate: boolean;
  /** The dummy struct device iommufd attaches with (iommufd_global_device). */
  readonly device: object;
}

const options = new WeakMap<Kernel, DmabufImportOptions>();

function importOptions(kernel: Kernel): DmabufImportOptions {
  let o = options.get(kernel);
  if (!o) options.set(kernel, (o = { pin: false, trackLate: false, device: { name: "iommufd" } }));
  return o;
}

/** Act as a pinning importer (dma_buf_pin at map, the 2026 behaviour). Default off. */
export function setDmabufPinImporter(kernel: Kernel, pin: boolean): void {
  importOptions(kernel).pin = pin;
}

/**
 * A deliberate fault for the race explorer (@x/reliability); never on in the model. On, a fill
 * tracks its (area, domain) pairs in a second pages.mutex section after the one that mapped
 * them, so a revoke that runs between the two misses the new mapping and leaves a stale MMIO
 * IOPTE (I1) — the bug the single critical section of P4 avoids.
 */
export function setTrackerMutant(kernel: Kernel, on: boolean): void {
  importOptions(kernel).trackLate = on;
}

/** Is the tracker mutant on (see setTrackerMutant)? */
export function trackerMutant(kernel: Kernel): boolean {
  return importOptions(kernel).trackLate;
}

/** @see iommufd_global_device */
export function iommufdGlobalDevice(kernel: Kernel): object {
  return importOptions(kernel).device;
}

/**
 * The revoke handler: unmap every tracked pair, then mark revoked. Runs with the dma-buf's
 * reservation lock held by the exporter.
 * @see iopt_revoke_notify
 */
function ioptRevokeNotify(attach: DmaBufAttachment): void {
  const pages = attach.importerPriv as IoptPages;
  const dmabuf = pages.dmabuf;
  if (!dmabuf) throw new KernelWarning("revoke notify on non-DMABUF pages");
  pages.mutex.with(() => {
    const already = pages.revoked;
    pages.kernel.trace.emit("iommufd:dmabuf_revoke", {
      npairs: dmabuf.tracker.length,
      alreadyRevoked: already,
    });
    if (already) return;
    for (const { area, domain } of dmabuf.tracker) {
      ioptAreaUnmapDomainRange(area, domain, area.index, area.lastIndex);
    }
    dmabuf.phys.len = 0n;
  });
}

const revokeOps: DmaBufAttachOps = { allowPeer2peer: true, moveNotify: ioptRevokeNotify };

/** Attach, take the physical range under resv, or undo the attach. @see iopt_map_dmabuf */
function ioptMapDmabuf(kernel: Kernel, pages: IoptPages, dmabuf: DmaBuf): void {
  const state = pages.dmabuf;
  if (!state) throw new KernelWarning("iopt_map_dmabuf on non-DMABUF pages");
  const opts = importOptions(kernel);
  const attach = dmaBufDynamicAttach(kernel, dmabuf, opts.device, revokeOps, pages);
  try {
    dmabuf.resv.with(() => {
      // Teach lockdep resv -> pages.mutex now, not first on a revoke.
      pages.mutex.with(() => {});
      if (opts.pin) dmaBufPin(attach);
      try {
        state.phys = dmaBufIommufdMap(kernel, attach);
      } catch (e) {
        if (opts.pin) dmaBufUnpin(attach);
        throw e;
      }
    });
  } catch (e) {
    dmaBufDetach(dmabuf, attach);
    throw e;
  }
  state.pinned = opts.pin;
  state.attach = attach;
}

/**
 * New DMABUF pages for bytes [start, start + length) of `dmabuf`. On success the caller's
 * dma-buf reference belongs to the pages; on failure the caller still owns it.
 * @see iopt_alloc_dmabuf_pages
 */
export function ioptAllocDmabufPages(
  kernel: Kernel,
  dmabuf: DmaBuf,
  startByte: bigint,
  start: bigint,
  length: bigint,
  writable: boolean,
): IoptPages {
  if (start + length - 1n >= dmabuf.size) fail(EINVAL, "beyond the dma-buf");
  if (length / BPAGE_SIZE >= BigInt(MAX_NPFNS)) fail(EINVAL, "longer than one batch run");
  const pages = new IoptPages(kernel, startByte, length, writable);
  pages.setDmabufClass();
  pages.accountMode = IOPT_PAGES_ACCOUNT_NONE;
  pages.type = IOPT_ADDRESS_DMABUF;
  pages.dmabuf = {
    attach: undefined,
    phys: { paddr: 0n, len: 0n },
    start: start - startByte,
    tracker: [],
    pinned: false,
  };
  try {
    ioptMapDmabuf(kernel, pages, dmabuf);
  } catch (e) {
    ioptPutPages(pages);
    throw e;
  }
  return pages;
}

/** Release of DMABUF pages: unpin (option), detach, drop the dma-buf reference. */
export function ioptReleaseDmabuf(pages: IoptPages): void {
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

/** @see iopt_dmabuf_track_domain */
export function dmabufTrackDomain(pages: IoptPages, area: IoptArea, domain: IoptDomain): void {
  pages.mutex.assertHeld();
  const state = pages.dmabuf;
  if (!state) throw new KernelWarning("track on non-DMABUF pages");
  for (const t of state.tracker) {
    WARN_ON(t.area === area && t.domain === domain, "pair already tracked");
  }
  if (pages.kernel.shouldFail("iommufd:dmabuf_track")) fail(ENOMEM, "tracker entry");
  state.tracker.push({ area, domain });
}

/** @see iopt_dmabuf_track_all_domains */
export function dmabufTrackAllDomains(
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
export function dmabufUntrackDomain(pages: IoptPages, area: IoptArea, domain: IoptDomain): void {
  pages.mutex.assertHeld();
  const tracker = pages.dmabuf?.tracker ?? [];
  const i = tracker.findIndex((t) => t.area === area && t.domain === domain);
  WARN_ON(i < 0, "untrack of an untracked pair");
  tracker.splice(i, 1);
}

/** @see iopt_dmabuf_untrack_all_domains */
export function dmabufUntrackAllDomains(area: IoptArea, pages: IoptPages): void {
  pages.mutex.assertHeld();
  const tracker = pages.dmabuf?.tracker;
  if (!tracker) return;
  let w = 0;
  for (const t of tracker) if (t.area !== area) tracker[w++] = t;
  tracker.length = w;
}
