/**
 * In-kernel accesses on an io_pagetable: pinning IOVA ranges for a driver (mdev-style) and
 * reading/writing through the IOAS with the CPU.
 *
 * A pin registers an `IoptPagesAccess` range on each pages object touched (one node per exact
 * range, refcounted by `users`) and makes sure the PFNs are in the xarray tier: copied from a
 * domain if one holds them (no new pin), else pinned from the origin. An unpin drops the range
 * and unpins from the xarray only what no other access and no domain-filled area covers. The
 * io_pagetable's unmap asks accesses to unpin (IoptAccess.notifyUnmap) before it proceeds.
 *
 * DMABUF pages refuse both: rw with EINVAL (P2), pin with EINVAL as the 2026 fix does
 * (Decision: the merged series lets a pin reach GUP on MMIO; the model follows the fix.)
 *
 * The ioctl layer (the iommufd_access object) holds its ioas_lock, checks the access is
 * attached (ENOENT) and calls `ioptAccessPinPages` / `ioptAccessUnpinPages` / `ioptAccessRw`.
 */
import {
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  EOVERFLOW,
  EPERM,
  KernelWarning,
  PAGE_SIZE,
  PfnRuns,
  WARN_ON,
  copyFromUser,
  copyToUser,
  fail,
  U64_MAX,
} from "@x/kernel";
import { doubleSpanAt } from "./interval-tree.js";
import type { IoPagetable } from "./io-pagetable.js";
import { type IoptArea, ioptForEachContigArea } from "./io-pagetable-area.js";
import { IOMMU_READ, IOMMU_WRITE, domainIovaToPhys } from "./iommu-domain.js";
import { IOPT_ADDRESS_USER, type IoptPages, IoptPagesAccess } from "./pages.js";
import { BPAGE_SIZE } from "./pfn-batch.js";
import { PfnReader, PfnReaderUser, findDomainArea } from "./pfn-reader.js";

export const IOMMUFD_ACCESS_RW_WRITE = 1 << 0;
/** Selftest-only: force the slow (pfn_reader) path. */
export const __IOMMUFD_ACCESS_RW_SLOW_PATH = 1 << 2;

/** @see iopt_area_iova_to_index */
function iovaToIndex(area: IoptArea, iova: bigint): number {
  return Number(area.startByte(iova) / BPAGE_SIZE);
}

/** @see check_area_prot */
function checkAreaProt(area: IoptArea, flags: number): boolean {
  if (flags & IOMMUFD_ACCESS_RW_WRITE) return (area.iommuProt & IOMMU_WRITE) !== 0;
  return (area.iommuProt & IOMMU_READ) !== 0;
}

/** The exact access node for [start, last] if one exists. @see iopt_pages_get_exact_access */
function getExactAccess(
  pages: IoptPages,
  start: number,
  last: number,
): IoptPagesAccess | undefined {
  const s = BigInt(start);
  const l = BigInt(last);
  for (let n = pages.accessItree.iterFirst(s, l); n; n = pages.accessItree.iterNext(n, s, l)) {
    if (n.start === s && n.last === l) return n.owner;
  }
  return undefined;
}

/** Append the xarray's PFNs of [start, last] to `out`. @see iopt_pages_fill_from_xarray */
function fillFromXarray(pages: IoptPages, start: number, last: number, out: PfnRuns): void {
  for (let i = start; i <= last; i++) {
    const pfn = pages.pinnedPfns.load(i);
    if (pfn < 0) throw new KernelWarning(`pinned_pfns has no entry at ${i}`);
    out.push(pfn, 1);
  }
}

/** Read PFNs of [start, last] back from the storage domains. @see iopt_pages_fill_from_domain */
function fillFromDomain(pages: IoptPages, start: number, last: number, out: PfnRuns): void {
  for (let i = start; i <= last; i++) {
    const area = findDomainArea(pages, i);
    const domain = area?.storageDomain;
    if (!area || !domain) throw new KernelWarning("no storage domain for a filled index");
    const off = i === area.index ? BigInt(area.pageOffset) : 0n;
    out.push(Number((domainIovaToPhys(domain, area.indexToIova(i)) - off) >> 12n), 1);
  }
}

/** Store runs `from` (pages [start, ...)) in the xarray. @see pages_to_xarray */
function runsToXarray(pages: IoptPages, start: number, from: PfnRuns, skip: number): void {
  if (pages.kernel.shouldFail("iommufd:xarray_store")) fail(ENOMEM, "xarray node");
  let index = start;
  let left = from.totalPages - skip;
  for (let r = 0; r < from.length && left > 0; r++) {
    const n = from.npages(r);
    if (skip >= n) {
      skip -= n;
      continue;
    }
    for (let k = skip; k < n && left > 0; k++, left--)
      pages.pinnedPfns.store(index++, from.pfn(r) + k);
    skip = 0;
  }
}

/**
 * Drop xarray entries of [start, last]: unpin those nothing covers any more, just forget
 * those a domain-filled area still holds pinned; entries under another access stay.
 * @see iopt_pages_unfill_xarray
 */
function unfillXarray(pages: IoptPages, start: number, last: number): void {
  pages.mutex.assertHeld();
  const mem = pages.kernel.mem;
  let pos = start;
  while (pos <= last) {
    const s = doubleSpanAt(pages.accessItree, pages.domainsItree, BigInt(pos), BigInt(last));
    const spanLast = Number(s.last);
    if (s.used === 0) {
      const runs = new PfnRuns();
      pages.pinnedPfns.eraseRange(pos, spanLast + 1, (_i, pfn) => runs.push(pfn, 1));
      runs.forEach((pfn, n) => {
        mem.unpinPages(pfn, n);
      });
      pages.subNpinned(runs.totalPages);
    } else if (s.used === 2) {
      pages.pinnedPfns.eraseRange(pos, spanLast + 1);
    }
    pos = spanLast + 1;
  }
  pages.updateUnpinned();
}

/**
 * Make [start, last] present in the xarray and append its PFNs to `out`. On failure the
 * xarray and pins are as before.
 * @see iopt_pages_fill_xarray
 */
function fillXarray(pages: IoptPages, start: number, last: number, out: PfnRuns): void {
  pages.mutex.assertHeld();
  const outStart = out.totalPages;
  let xaEnd = start;
  try {
    let pos = start;
    while (pos <= last) {
      const s = doubleSpanAt(pages.accessItree, pages.domainsItree, BigInt(pos), BigInt(last));
      const spanLast = Number(s.last);
      const before = out.totalPages;
      if (s.used === 1) {
        fillFromXarray(pages, pos, spanLast, out);
      } else if (s.used === 2) {
        fillFromDomain(pages, pos, spanLast, out);
        runsToXarray(pages, pos, out, before);
        xaEnd = spanLast + 1;
      } else {
        fillFromOrigin(pages, pos, spanLast, out);
        try {
          runsToXarray(pages, pos, out, before);
        } catch (e) {
          unpinRunsFrom(pages, out, before);
          throw e;
        }
        xaEnd = spanLast + 1;
      }
      pos = spanLast + 1;
    }
    pages.updatePinned();
  } catch (e) {
    if (xaEnd !== start) unfillXarray(pages, start, xaEnd - 1);
    out.truncatePages(outStart);
    throw e;
  }
}

/** Pin [start, last] from the origin straight into `out`. @see iopt_pages_fill_from_mm */
function fillFromOrigin(pages: IoptPages, start: number, last: number, out: PfnRuns): void {
  const user = new PfnReaderUser(pages, last - start + 1);
  const before = out.totalPages;
  let cur = start;
  try {
    while (cur !== last + 1) {
      user.pin(cur, last);
      user.runs.forEach((pfn, n) => {
        out.push(pfn, n);
      });
      cur = user.upagesEnd;
    }
  } catch (e) {
    unpinRunsFrom(pages, out, before);
    throw e;
  }
}

/** Unpin the pages appended to `out` after its first `keep` pages. @see iopt_pages_err_unpin */
function unpinRunsFrom(pages: IoptPages, out: PfnRuns, keep: number): void {
  const n = out.totalPages - keep;
  let page = 0;
  out.forEach((pfn, cnt) => {
    const skip = Math.max(0, Math.min(cnt, keep - page));
    if (cnt > skip) pages.kernel.mem.unpinPages(pfn + skip, cnt - skip);
    page += cnt;
  });
  out.truncatePages(keep);
  pages.subNpinned(n);
}

/**
 * Add an access over pages [start, last] of the area, appending the PFNs to `out`.
 * @see iopt_area_add_access
 */
function ioptAreaAddAccess(
  area: IoptArea,
  start: number,
  last: number,
  out: PfnRuns,
  flags: number,
): void {
  const pages = area.pages;
  if (!pages) throw new KernelWarning("access on an area without pages");
  if (flags & IOMMUFD_ACCESS_RW_WRITE && !pages.writable) fail(EPERM, "read-only pages");
  if (pages.isDmabuf) fail(EINVAL, "DMABUF pages cannot be pinned by an access");
  pages.mutex.with(() => {
    const existing = getExactAccess(pages, start, last);
    if (existing) {
      area.numAccesses++;
      existing.users++;
      fillFromXarray(pages, start, last, out);
      return;
    }
    if (pages.kernel.shouldFail("iommufd:access_node")) fail(ENOMEM, "iopt_pages_access");
    fillXarray(pages, start, last, out);
    const access = new IoptPagesAccess(start, last);
    area.numAccesses++;
    pages.accessItree.insert(access.node);
  });
}

/** @see iopt_area_remove_access */
function ioptAreaRemoveAccess(area: IoptArea, start: number, last: number): void {
  const pages = area.pages;
  if (!pages) throw new KernelWarning("access removal on an area without pages");
  pages.mutex.with(() => {
    const access = getExactAccess(pages, start, last);
    if (!access) throw new KernelWarning("no such access range");
    WARN_ON(area.numAccesses === 0 || access.users === 0, "access counts");
    area.numAccesses--;
    access.users--;
    if (access.users) return;
    pages.accessItree.remove(access.node);
    unfillXarray(pages, start, last);
  });
}

function checkRange(iova: bigint, length: bigint): bigint {
  if (length === 0n) fail(EINVAL, "length 0");
  const last = iova + length - 1n;
  if (last > U64_MAX) fail(EOVERFLOW, "iova + length");
  return last;
}

/**
 * Pin [iova, iova + length) for an access: PFNs appended to `out` page by page (merged into
 * runs). All or nothing.
 * @see iommufd_access_pin_pages
 */
export function ioptAccessPinPages(
  iopt: IoPagetable,
  iova: bigint,
  length: bigint,
  out: PfnRuns,
  flags: number,
  lockArea = false,
): void {
  const lastIova = checkRange(iova, length);
  iopt.iovaRwsem.withRead(() => {
    const done: Array<[IoptArea, number, number]> = [];
    try {
      const complete = ioptForEachContigArea(iopt, iova, lastIova, (area, cur, last, isLast) => {
        const index = iovaToIndex(area, cur);
        const lastIndex = iovaToIndex(area, last);
        const aligned =
          area.startByte(cur) % BPAGE_SIZE === 0n &&
          (isLast || area.startByte(area.lastIova) % BPAGE_SIZE === BPAGE_SIZE - 1n);
        if (area.preventAccess || !aligned) fail(EINVAL, "access to an area being unmapped");
        if (!checkAreaProt(area, flags)) fail(EPERM, "area protection");
        ioptAreaAddAccess(area, index, lastIndex, out, flags);
        if (lockArea) area.numLocks++;
        done.push([area, index, lastIndex]);
      });
      if (!complete) fail(ENOENT, "hole in the range");
    } catch (e) {
      for (const [area, index, lastIndex] of done) {
        ioptAreaRemoveAccess(area, index, lastIndex);
        if (lockArea) area.numLocks--;
      }
      throw e;
    }
  });
}

/** @see iommufd_access_unpin_pages; `unlockArea` undoes a pin made with `lockArea`. */
export function ioptAccessUnpinPages(
  iopt: IoPagetable,
  iova: bigint,
  length: bigint,
  unlockArea = false,
): void {
  WARN_ON(length === 0n, "unpin of 0 bytes");
  const lastIova = iova + length - 1n;
  WARN_ON(lastIova > U64_MAX, "unpin overflow");
  iopt.iovaRwsem.withRead(() => {
    const complete = ioptForEachContigArea(iopt, iova, lastIova, (area, cur, last) => {
      ioptAreaRemoveAccess(area, iovaToIndex(area, cur), iovaToIndex(area, last));
      if (unlockArea) {
        WARN_ON(area.numLocks === 0, "unlock of an area that is not locked");
        area.numLocks--;
      }
    });
    WARN_ON(!complete, "unpin of a range that is not mapped");
  });
}

/** Copy between `data` and PFNs of a batch. @see batch_rw */
function batchRw(reader: PfnReader, data: Uint8Array, offset: number, flags: number): number {
  const mem = reader.pages.kernel.mem;
  let done = 0;
  reader.batch.forEachRun(0, reader.batch.totalPfns, (pfn, n) => {
    let paddr = BigInt(pfn) * BPAGE_SIZE + BigInt(offset);
    const bytes = Math.min(n * PAGE_SIZE - offset, data.length - done);
    offset = 0;
    if (bytes <= 0) return;
    const chunk = data.subarray(done, done + bytes);
    if (flags & IOMMUFD_ACCESS_RW_WRITE) mem.writePhys(paddr, chunk);
    else mem.readPhys(paddr, chunk);
    paddr += BigInt(bytes);
    done += bytes;
  });
  return done;
}

/** @see iopt_pages_rw_slow */
function pagesRwSlow(
  pages: IoptPages,
  start: number,
  last: number,
  offset: number,
  data: Uint8Array,
  flags: number,
): void {
  pages.mutex.with(() => {
    const reader = PfnReader.first(pages, start, last);
    try {
      let done = 0;
      while (!reader.done) {
        done += batchRw(reader, data.subarray(done), offset, flags);
        offset = 0;
        reader.unpinBatch();
        reader.next();
      }
      WARN_ON(done !== data.length, "rw left bytes over");
    } finally {
      reader.destroy();
    }
  });
}

/** @see iopt_pages_rw_access */
function pagesRwAccess(pages: IoptPages, startByte: bigint, data: Uint8Array, flags: number): void {
  if (flags & IOMMUFD_ACCESS_RW_WRITE && !pages.writable) fail(EPERM, "read-only pages");
  if (pages.isDmabuf) fail(EINVAL, "DMABUF pages have no CPU access");
  const start = Number(startByte / BPAGE_SIZE);
  const last = Number((startByte + BigInt(data.length) - 1n) / BPAGE_SIZE);
  const kernel = pages.kernel;
  const changeMm = kernel.current.process.mm !== pages.sourceMm;
  if (pages.type !== IOPT_ADDRESS_USER || changeMm || flags & __IOMMUFD_ACCESS_RW_SLOW_PATH) {
    pagesRwSlow(pages, start, last, Number(startByte % BPAGE_SIZE), data, flags);
    return;
  }
  const uaddr = pages.uptr + startByte;
  try {
    if (flags & IOMMUFD_ACCESS_RW_WRITE) copyToUser(kernel, uaddr, data);
    else data.set(copyFromUser(kernel, uaddr, data.length));
  } catch (e) {
    fail(EFAULT, `access rw: ${(e as Error).message}`);
  }
}

/**
 * CPU read (into `data`) or write (from `data`) of [iova, iova + data.length).
 * @see iommufd_access_rw
 */
export function ioptAccessRw(
  iopt: IoPagetable,
  iova: bigint,
  data: Uint8Array,
  flags: number,
): void {
  const lastIova = checkRange(iova, BigInt(data.length));
  iopt.iovaRwsem.withRead(() => {
    let off = 0;
    const complete = ioptForEachContigArea(iopt, iova, lastIova, (area, cur, last) => {
      const bytes = Number(last - cur + 1n);
      if (area.preventAccess) fail(EINVAL, "area being unmapped");
      if (!checkAreaProt(area, flags)) fail(EPERM, "area protection");
      pagesRwAccess(
        area.pages as IoptPages,
        area.startByte(cur),
        data.subarray(off, off + bytes),
        flags,
      );
      off += bytes;
    });
    if (!complete) fail(ENOENT, "hole in the range");
  });
}
