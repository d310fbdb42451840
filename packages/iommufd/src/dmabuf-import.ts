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
 * Decision: the baseline is the series as merged, which does not pin (no dma_buf_pin).
 * `setDmabufPinImporter(kernel, true)` (@x/iommufd/testing) gives the 2026 behaviour: dma_buf_pin right after taking
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
  dmaBufUnpin,
} from "@x/dmabuf";
import { EINVAL, type Kernel, KernelWarning, fail } from "@x/kernel";
import { IOPT_PAGES_ACCOUNT_NONE } from "./accounting.js";
import { iommufdGlobalDevice, iommufdOptions } from "./main.js";
import { IOPT_ADDRESS_DMABUF, IoptPages, ioptAreaUnmapDomainRange, ioptPutPages } from "./pages.js";
import { BPAGE_SIZE, MAX_NPFNS } from "./pfn-batch.js";

declare module "@x/kernel" {
  interface TraceEvents {
    "iommufd:dmabuf_revoke": { npairs: number; alreadyRevoked: boolean };
  }
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
  const pin = iommufdOptions(kernel).dmabufPinImporter;
  const attach = dmaBufDynamicAttach(kernel, dmabuf, iommufdGlobalDevice(kernel), revokeOps, pages);
  try {
    dmabuf.resv.with(() => {
      // Teach lockdep resv -> pages.mutex now, not first on a revoke.
      pages.mutex.with(() => {});
      if (pin) dmaBufPin(attach);
      try {
        state.phys = dmaBufIommufdMap(kernel, attach);
      } catch (e) {
        if (pin) dmaBufUnpin(attach);
        throw e;
      }
    });
  } catch (e) {
    dmaBufDetach(dmabuf, attach);
    throw e;
  }
  state.pinned = pin;
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
  if (start + length - 1n >= dmabuf.size)
    fail(EINVAL, "range beyond the end of the dma-buf", { start, length, size: dmabuf.size });
  if (length / BPAGE_SIZE >= BigInt(MAX_NPFNS))
    fail(EINVAL, "dma-buf range longer than one batch run", { length });
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
