/**
 * io_pagetable: the IOVA space of one IOAS. It maps IOVA ranges (areas) to slices of iopt_pages
 * and keeps every attached iommu_domain filled with them.
 *
 * Design: three interval trees with exact u64 bounds — areas, allowed ranges (empty = all
 * allowed) and reserved ranges (apertures of domains, device regions, test reservations) —
 * under `iovaRwsem`; a dense domain array (`domainList`, index 0 serves as the storage domain
 * read back by new fills; removal moves the tail into the hole) under `domainsRwsem`; the
 * registered in-kernel accesses, whose alignment joins the domains' in `iovaAlignment`.
 *
 * A map runs in two phases: areas are inserted with `pages === undefined` (the IOVA is taken)
 * under iova_rwsem; then, under domains_rwsem (read), each area is filled into every domain and
 * only then gets its pages. A domain add (domains_rwsem write) therefore sees whole areas or
 * none. Unmap removes whole areas only; areas an access holds are first announced to every
 * access (its `unmap` callback must drop its pins) and the walk retried.
 *
 * Lock order: domainsRwsem → iovaRwsem → pages.mutex (→ mmap_lock for USER pages).
 *
 * API for the ioctl layer (names after io_pagetable.c; all throw KernelError with the kernel's
 * errno and leave nothing behind on failure; IOVAs and lengths are bigint u64):
 * - `new IoPagetable(kernel)` / `destroyTable()`                      iopt_init_table / iopt_destroy_table
 * - `mapUserPages(ctx, iova, uptr, length, prot, flags) → iova`      iopt_map_user_pages
 * - `mapFilePages(ctx, iova, fd, start, length, prot, flags) → iova` iopt_map_file_pages (memfd or dma-buf)
 * - `getPages(iova, length) → list`, `mapPages(list, length, iova, prot, flags) → iova`,
 *   `freePagesList(list)`                                            IOAS_COPY
 * - `unmapIova(iova, length) → bytes`, `unmapAll() → bytes`          iopt_unmap_iova / iopt_unmap_all
 * - `setAllowIova(ranges)`                                           iopt_set_allow_iova (ranges validated by the caller)
 * - `reserveIova(start, last, owner)`, `removeReservedIova(owner)`   iopt_reserve_iova (takes iova_rwsem)
 * - `enforceGroupResvRegions(owner, regions) → swMsiStart`           iopt_table_enforce_group_resv_regions
 * - `tableAddDomain(domain)`, `tableRemoveDomain(domain)`            iopt_table_add_domain / _remove_domain
 * - `cutIova(iovas)`                                                 iopt_cut_iova (vfio compat)
 * - `disableLargePages()`, `enableLargePages()`
 * - `addAccess(access)`, `removeAccess(access)`                      iopt_add_access / iopt_remove_access
 * - `areas(start?, last?)`, `domainList`, `iovaAlignment`, `allowedRanges()`, `reservedRanges()`
 * `flags`: IOPT_ALLOC_IOVA picks the IOVA (the `iova` argument is then ignored).
 * `ctx`: anything with `accountMode` (the iommufd_ctx's IOMMU_OPTION_RLIMIT_MODE).
 * The in-kernel access pin / rw mechanics are in access-core.ts.
 */
import { type DmaBuf, dmaBufGet, dmaBufPut } from "@x/dmabuf";
import {
  EADDRINUSE,
  EBUSY,
  EEXIST,
  EINVAL,
  ENOENT,
  ENOMEM,
  ENOSPC,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
  type Kernel,
  KernelWarning,
  RwSem,
  WARN_ON,
  fail,
  isKernelError,
  U64_MAX,
} from "@x/kernel";
import {
  IOMMU_RESV_DIRECT_RELAXABLE,
  IOMMU_RESV_MSI,
  IOMMU_RESV_SW_MSI,
  type IommuResvRegion,
} from "@x/iommu-pgtable";
import {
  IOPT_PAGES_ACCOUNT_MM,
  IOPT_PAGES_ACCOUNT_USER,
  type IoptPagesAccountMode,
} from "./accounting.js";
import { ioptAllocDmabufPages } from "./dmabuf-import.js";
import { IntervalNode, IntervalTree, doubleSpanAt, forEachSpan } from "./interval-tree.js";
import { IoptArea } from "./io-pagetable-area.js";
import { IOMMU_WRITE, type IoptDomain, domainMinPageSize } from "./iommu-domain.js";
import {
  type IoptPages,
  ioptAllocFilePages,
  ioptAllocUserPages,
  ioptAreaAddDomain,
  ioptAreaFillDomains,
  ioptAreaRemoveDomain,
  ioptAreaRemoveLastDomain,
  ioptAreaUndoAddDomain,
  ioptAreaUnfillDomains,
  ioptPutPages,
} from "./pages.js";
import { BPAGE_SIZE } from "./pfn-batch.js";

/** Let the allocator choose the IOVA. */
export const IOPT_ALLOC_IOVA = 1 << 0;

/** HPAGE_SIZE with THP: automatic IOVAs keep the origin's alignment up to this. */
const HPAGE_SIZE = 2n << 20n;

/** What the io_pagetable needs of the iommufd_ctx. */
export interface IoptMapCtx {
  readonly accountMode: IoptPagesAccountMode;
}

/** What the io_pagetable needs of an in-kernel access (struct iommufd_access). */
export interface IoptAccess {
  readonly iovaAlignment: bigint;
  /** Slot in the access list, set by addAccess. */
  ioptAccessListId: number;
  /** ops->unmap: the access must drop its pins in [iova, iova + length). */
  notifyUnmap(iova: bigint, length: bigint): void;
}

/** One slice of pages to map (struct iopt_pages_list). */
export interface IoptPagesListElm {
  pages: IoptPages | undefined;
  area: IoptArea | undefined;
  readonly startByte: bigint;
  readonly length: bigint;
}

/** struct iopt_reserved */
class IoptReserved {
  readonly node = new IntervalNode<IoptReserved>(this);
  constructor(readonly owner: unknown) {}
}

const ULONG_MAX = U64_MAX;

function roundupPowOfTwo(x: bigint): bigint {
  let p = 1n;
  while (p < x) p <<= 1n;
  return p;
}

function lowestBit(x: bigint): bigint {
  return x & -x;
}

/** ALIGN(x, a) | off, or undefined when it passes u64. */
function alignUpOr(x: bigint, a: bigint, off: bigint): bigint | undefined {
  const up = x + a - 1n;
  if (up > ULONG_MAX) return undefined;
  return (up & ~(a - 1n)) | off;
}

export class IoPagetable {
  readonly domainsRwsem: RwSem;
  readonly iovaRwsem: RwSem;
  readonly areaItree = new IntervalTree<IoptArea>();
  readonly allowedItree = new IntervalTree<undefined>();
  readonly reservedItree = new IntervalTree<IoptReserved>();
  /** The attached domains, dense (xarray `domains` with next_domain_id = length). */
  readonly domainList: IoptDomain[] = [];
  readonly accessList = new Map<number, IoptAccess>();
  /** disable_large_pages: map in PAGE_SIZE units so any page can be split off (type1). */
  largePagesDisabled = false;
  iovaAlignment = 1n;

  /** @see iopt_init_table */
  constructor(readonly kernel: Kernel) {
    this.domainsRwsem = new RwSem(kernel.lockdep, "iopt.domains_rwsem");
    this.iovaRwsem = new RwSem(kernel.lockdep, "iopt.iova_rwsem");
  }

  /**
   * Tear down an empty table: allowed ranges go; everything else must already be gone.
   * @see iopt_destroy_table
   */
  destroyTable(): void {
    this.removeReservedIova(undefined);
    this.iovaRwsem.withWrite(() => this.clearAllowed());
    WARN_ON(!this.reservedItree.isEmpty, "iopt destroy: reserved ranges remain");
    WARN_ON(this.domainList.length !== 0, "iopt destroy: domains remain");
    WARN_ON(this.accessList.size !== 0, "iopt destroy: accesses remain");
    WARN_ON(!this.areaItree.isEmpty, "iopt destroy: areas remain");
  }

  private clearAllowed(): void {
    for (let n = this.allowedItree.iterFirst(0n, ULONG_MAX); n; ) {
      this.allowedItree.remove(n);
      n = this.allowedItree.iterFirst(0n, ULONG_MAX);
    }
  }

  /** Areas overlapping [start, last] in IOVA order (including ones being built). */
  areas(start = 0n, last = ULONG_MAX): IoptArea[] {
    return this.areaItree.overlapping(start, last);
  }

  allowedRanges(): Array<{ start: bigint; last: bigint }> {
    const out: Array<{ start: bigint; last: bigint }> = [];
    for (let n = this.allowedItree.iterFirst(0n, ULONG_MAX); n; ) {
      out.push({ start: n.start, last: n.last });
      n = this.allowedItree.iterNext(n, 0n, ULONG_MAX);
    }
    return out;
  }

  /** Holes of the reserved tree over [0, U64_MAX] (IOAS_IOVA_RANGES). */
  reservedHoles(): Array<[bigint, bigint]> {
    return this.iovaRwsem.withRead(() => {
      const out: Array<[bigint, bigint]> = [];
      forEachSpan(this.reservedItree, 0n, ULONG_MAX, (span) => {
        if (!span.used) out.push([span.start, span.last]);
        return false;
      });
      return out;
    });
  }

  reservedRanges(): Array<{ start: bigint; last: bigint; owner: unknown }> {
    return this.reservedItree.overlapping().map((r) => ({
      start: r.node.start,
      last: r.node.last,
      owner: r.owner,
    }));
  }

  // ---- IOVA allocation -------------------------------------------------------------------

  /**
   * Pick a free IOVA for `length` bytes keeping the alignment of `addr` (the origin address
   * of the first byte) up to HPAGE_SIZE. Never returns 0. iova_rwsem held.
   * @see iopt_alloc_iova
   */
  private allocIova(addr: bigint, length: bigint): bigint {
    this.iovaRwsem.assertHeldWrite();
    const pageOffset = addr % BPAGE_SIZE;
    if (length === 0n || length >= ULONG_MAX / 2n) fail(EOVERFLOW, "alloc length");
    let align = roundupPowOfTwo(length);
    if (addr) {
      const low = lowestBit(addr);
      if (low < align) align = low;
    }
    if (align >= HPAGE_SIZE) align = HPAGE_SIZE;
    if (align < this.iovaAlignment)
      fail(EINVAL, "alignment below iova_alignment", { align, iova_alignment: this.iovaAlignment });

    const lo = BPAGE_SIZE;
    const hi = ULONG_MAX - BPAGE_SIZE;
    let found: bigint | undefined;
    if (this.allowedItree.isEmpty) found = this.firstFit(lo, hi, length, align, pageOffset);
    else
      forEachSpan(this.allowedItree, lo, hi, (span) => {
        if (span.used) found = this.firstFit(span.start, span.last, length, align, pageOffset);
        return found !== undefined;
      });
    if (found === undefined) fail(ENOSPC, "no free IOVA");
    return found;
  }

  /**
   * The lowest IOVA in [start, last] for `length` bytes at `align` (keeping `pageOffset`) that
   * neither a reserved region nor an area covers, or undefined.
   */
  private firstFit(
    start: bigint,
    last: bigint,
    length: bigint,
    align: bigint,
    pageOffset: bigint,
  ): bigint | undefined {
    const s = alignUpOr(start, align, pageOffset);
    if (s === undefined || s > last || last - s < length - 1n) return undefined;
    let pos = s;
    for (;;) {
      const span = doubleSpanAt(this.reservedItree, this.areaItree, pos, last);
      if (!span.used && span.last - span.start >= length - 1n) {
        const h = alignUpOr(span.start, align, pageOffset);
        if (h !== undefined && h <= span.last && span.last - h >= length - 1n) return h;
      }
      if (span.last >= last) return undefined;
      pos = span.last + 1n;
    }
  }

  /** Validate a fixed IOVA. @see iopt_check_iova */
  private checkIova(iova: bigint, length: bigint): void {
    if (iova & (this.iovaAlignment - 1n))
      fail(EINVAL, "iova not aligned to iova_alignment", {
        iova,
        iova_alignment: this.iovaAlignment,
      });
    const last = iova + length - 1n;
    if (last > ULONG_MAX) fail(EOVERFLOW, "iova + length");
    if (this.reservedItree.iterFirst(iova, last))
      fail(EINVAL, "range overlaps a reserved region", { iova, length });
    if (this.areaItree.iterFirst(iova, last)) fail(EEXIST, "iova in use");
  }

  /** Set up and insert an area with no pages yet. @see iopt_insert_area */
  private insertArea(
    area: IoptArea,
    pages: IoptPages,
    iova: bigint,
    startByte: bigint,
    length: bigint,
    prot: number,
  ): void {
    this.iovaRwsem.assertHeldWrite();
    if (prot & IOMMU_WRITE && !pages.writable) fail(EPERM, "write to read-only pages");
    area.iommuProt = prot;
    area.pageOffset = Number(startByte % BPAGE_SIZE);
    if (BigInt(area.pageOffset) & (this.iovaAlignment - 1n))
      fail(EINVAL, "offset in the first page not aligned to iova_alignment", {
        offset: BigInt(area.pageOffset),
        iova_alignment: this.iovaAlignment,
      });
    const last = iova + length - 1n;
    if (last > ULONG_MAX) fail(EOVERFLOW, "area end");
    area.node.start = iova;
    area.node.last = last;
    area.pagesNode.start = startByte / BPAGE_SIZE;
    area.pagesNode.last = (startByte + length - 1n) / BPAGE_SIZE;
    WARN_ON(area.pagesNode.last >= BigInt(pages.npages), "area beyond pages");
    area.iopt = this;
    this.areaItree.insert(area.node);
  }

  /** @see iopt_abort_area */
  private abortArea(area: IoptArea): void {
    if (area.node.inTree) this.iovaRwsem.withWrite(() => this.areaItree.remove(area.node));
  }

  /** Phase 1 of a map: take the IOVA. @see iopt_alloc_area_pages */
  private allocAreaPages(
    list: IoptPagesListElm[],
    length: bigint,
    iova: bigint,
    prot: number,
    flags: number,
  ): bigint {
    for (const elm of list) {
      if (this.kernel.shouldFail("iommufd:area_alloc")) fail(ENOMEM, "iopt_area");
      elm.area = new IoptArea();
    }
    return this.iovaRwsem.withWrite(() => {
      if (length & (this.iovaAlignment - 1n) || length === 0n)
        fail(EINVAL, length ? "length not aligned to iova_alignment" : "length 0", {
          length,
          iova_alignment: this.iovaAlignment,
        });
      if (flags & IOPT_ALLOC_IOVA) {
        const first = list[0];
        if (!first?.pages) throw new KernelWarning("empty pages list");
        iova = this.allocIova(first.startByte + originAddr(first.pages), length);
        WARN_ON(!this.checkIovaOk(iova, length), "allocator chose a bad IOVA");
      } else {
        this.checkIova(iova, length);
      }
      let cur = iova;
      for (const elm of list) {
        if (!elm.area || !elm.pages) throw new KernelWarning("pages list element incomplete");
        this.insertArea(elm.area, elm.pages, cur, elm.startByte, elm.length, prot);
        cur += elm.length;
      }
      return iova;
    });
  }

  private checkIovaOk(iova: bigint, length: bigint): boolean {
    try {
      this.checkIova(iova, length);
      return true;
    } catch (e) {
      if (isKernelError(e)) return false;
      throw e;
    }
  }

  /**
   * Map a list of pages slices contiguously at `iova` (or an allocated IOVA). On success the
   * list's page references move into the new areas; on failure the areas are gone and the
   * list still holds its references (free it with freePagesList).
   * @see iopt_map_pages
   */
  mapPages(
    list: IoptPagesListElm[],
    length: bigint,
    iova: bigint,
    prot: number,
    flags: number,
  ): bigint {
    try {
      iova = this.allocAreaPages(list, length, iova, prot, flags);
      this.domainsRwsem.withRead(() => {
        let i = 0;
        try {
          for (; i < list.length; i++) {
            const elm = list[i] as IoptPagesListElm;
            ioptAreaFillDomains(elm.area as IoptArea, elm.pages as IoptPages);
          }
        } catch (e) {
          for (let j = 0; j < i; j++) {
            const elm = list[j] as IoptPagesListElm;
            ioptAreaUnfillDomains(elm.area as IoptArea, elm.pages as IoptPages);
          }
          throw e;
        }
        // Pages are set inside domains_rwsem so a domain add sees complete areas only.
        this.iovaRwsem.withWrite(() => {
          for (const elm of list) {
            (elm.area as IoptArea).pages = elm.pages;
            elm.pages = undefined;
            elm.area = undefined;
          }
        });
      });
      return iova;
    } catch (e) {
      for (const elm of list) {
        if (elm.area) this.abortArea(elm.area);
        elm.area = undefined;
      }
      throw e;
    }
  }

  /** Drop the references a pages list still holds. @see iopt_free_pages_list */
  freePagesList(list: IoptPagesListElm[]): void {
    for (const elm of list) {
      if (elm.area) this.abortArea(elm.area);
      elm.area = undefined;
      if (elm.pages) ioptPutPages(elm.pages);
      elm.pages = undefined;
    }
    list.length = 0;
  }

  /** @see iopt_map_common */
  private mapCommon(
    ctx: IoptMapCtx,
    pages: IoptPages,
    iova: bigint,
    length: bigint,
    startByte: bigint,
    prot: number,
    flags: number,
  ): bigint {
    if (
      ctx.accountMode === IOPT_PAGES_ACCOUNT_MM &&
      pages.accountMode === IOPT_PAGES_ACCOUNT_USER
    ) {
      pages.accountMode = IOPT_PAGES_ACCOUNT_MM;
    }
    const list: IoptPagesListElm[] = [{ pages, area: undefined, startByte, length }];
    try {
      return this.mapPages(list, length, iova, prot, flags);
    } catch (e) {
      this.freePagesList(list);
      throw e;
    }
  }

  /**
   * Map user memory [uptr, uptr + length) at `iova`. Pinning happens when a domain needs the
   * PFNs (now, if domains are attached) or when an access pins.
   * @see iopt_map_user_pages
   */
  mapUserPages(
    ctx: IoptMapCtx,
    iova: bigint,
    uptr: bigint,
    length: bigint,
    prot: number,
    flags: number,
  ): bigint {
    const pages = ioptAllocUserPages(this.kernel, uptr, length, (prot & IOMMU_WRITE) !== 0);
    return this.mapCommon(ctx, pages, iova, length, uptr - pages.uptr, prot, flags);
  }

  /**
   * Map bytes [start, start + length) of the file behind `fd`: a dma-buf (DMABUF pages, P8)
   * or else a memfd. Length 0 → EINVAL and overflow → EOVERFLOW come first; no such fd →
   * EBADF.
   * @see iopt_map_file_pages
   */
  mapFilePages(
    ctx: IoptMapCtx,
    iova: bigint,
    fd: number,
    start: bigint,
    length: bigint,
    prot: number,
    flags: number,
  ): bigint {
    if (length === 0n) fail(EINVAL, "MAP_FILE length 0");
    if (start + length - 1n > ULONG_MAX) fail(EOVERFLOW, "start + length", { start, length });
    const startByte = start % BPAGE_SIZE;
    const writable = (prot & IOMMU_WRITE) !== 0;
    let dmabuf: DmaBuf | undefined;
    try {
      dmabuf = dmaBufGet(this.kernel, fd);
    } catch (e) {
      if (!isKernelError(e)) throw e;
    }
    let pages: IoptPages;
    if (dmabuf) {
      try {
        pages = ioptAllocDmabufPages(this.kernel, dmabuf, startByte, start, length, writable);
      } catch (e) {
        dmaBufPut(dmabuf);
        throw e;
      }
    } else {
      const file = this.kernel.current.process.files.fget(fd);
      try {
        pages = ioptAllocFilePages(this.kernel, file, startByte, start, length, writable);
      } finally {
        file.put();
      }
    }
    return this.mapCommon(ctx, pages, iova, length, startByte, prot, flags);
  }

  /**
   * Collect the pages slices backing [iova, iova + length), which must be covered by areas
   * without a gap (ENOENT). Each element holds a pages reference.
   * @see iopt_get_pages
   */
  getPages(iova: bigint, length: bigint): IoptPagesListElm[] {
    if (length === 0n) fail(EINVAL, "length 0");
    const lastIova = iova + length - 1n;
    if (lastIova > ULONG_MAX) fail(EOVERFLOW, "iova + length");
    const list: IoptPagesListElm[] = [];
    try {
      this.iovaRwsem.withRead(() => {
        let cur = iova;
        for (;;) {
          const area = this.areaItree.iterFirst(cur, cur)?.owner;
          if (!area?.pages) fail(ENOENT, "hole in the source range");
          const last = lastIova < area.lastIova ? lastIova : area.lastIova;
          if (this.kernel.shouldFail("iommufd:pages_list")) fail(ENOMEM, "pages list");
          list.push({
            pages: area.pages.get(),
            area: undefined,
            startByte: area.startByte(cur),
            length: last - cur + 1n,
          });
          if (last === lastIova) return;
          cur = last + 1n;
        }
      });
    } catch (e) {
      this.freePagesList(list);
      throw e;
    }
    return list;
  }

  // ---- unmap -----------------------------------------------------------------------------

  /** @see iopt_unmap_iova_range */
  private unmapIovaRange(start: bigint, last: bigint, progress?: { unmapped: bigint }): bigint {
    let unmapped = 0n;
    let tries = 0;
    for (;;) {
      const retry = this.domainsRwsem.withRead(() =>
        this.iovaRwsem.withWrite(() => {
          for (;;) {
            const area = this.areaItree.iterFirst(start, last)?.owner;
            if (!area) return undefined;
            if (!area.pages) fail(EBUSY, "area being mapped or unmapped");
            if (area.numLocks) fail(EBUSY, "area locked by an object");
            if (area.iova < start || area.lastIova > last) fail(ENOENT, "would split an area");
            // Each area held by an access gets its own 100 requests.
            if (area.iova !== start) tries = 0;
            if (area.numAccesses) {
              start = area.iova;
              area.preventAccess = true;
              return { iova: area.iova, length: area.length };
            }
            const pages = area.pages;
            area.pages = undefined;
            this.iovaRwsem.upWrite();
            try {
              ioptAreaUnfillDomains(area, pages);
              this.abortArea(area);
              ioptPutPages(pages);
            } finally {
              this.iovaRwsem.downWrite();
            }
            unmapped += area.length;
            if (progress) progress.unmapped = unmapped;
          }
        }),
      );
      if (!retry) break;
      this.notifyUnmap(retry.iova, retry.length);
      tries++;
      WARN_ON(tries > 100, "accesses do not respond to unmap");
    }
    return unmapped;
  }

  /** Tell every access to drop its pins in the range. @see iommufd_access_notify_unmap */
  private notifyUnmap(iova: bigint, length: bigint): void {
    for (const access of [...this.accessList.values()]) access.notifyUnmap(iova, length);
  }

  /**
   * Unmap whole areas inside [iova, iova + length); an area sticking out is ENOENT. Returns
   * the bytes unmapped. Decision: as in current kernels nothing found is
   * success with 0 here; IOAS_UNMAP turns 0 into ENOENT itself, VFIO_IOMMU_UNMAP_DMA does not.
   * `progress.unmapped` follows along so a failure part way still tells what went.
   * @see iopt_unmap_iova
   */
  unmapIova(iova: bigint, length: bigint, progress?: { unmapped: bigint }): bigint {
    if (length === 0n) fail(EINVAL, "length 0");
    const last = iova + length - 1n;
    if (last > ULONG_MAX) fail(EOVERFLOW, "iova + length");
    return this.unmapIovaRange(iova, last, progress);
  }

  /** Unmap everything. @see iopt_unmap_all */
  unmapAll(progress?: { unmapped: bigint }): bigint {
    return this.unmapIovaRange(0n, ULONG_MAX, progress);
  }

  // ---- allowed / reserved ----------------------------------------------------------------

  /**
   * Replace the allowed ranges (IOAS_ALLOW_IOVAS; the caller validated start <= last and made
   * its allocations). EADDRINUSE, with nothing changed, if one hits a reserved range.
   * @see iopt_set_allow_iova
   */
  setAllowIova(ranges: ReadonlyArray<{ readonly start: bigint; readonly last: bigint }>): void {
    this.iovaRwsem.withWrite(() => {
      for (const r of ranges) {
        if (this.reservedItree.iterFirst(r.start, r.last))
          fail(EADDRINUSE, "allowed hits reserved");
      }
      this.clearAllowed();
      for (const r of ranges) {
        const n = new IntervalNode<undefined>(undefined);
        n.start = r.start;
        n.last = r.last;
        this.allowedItree.insert(n);
      }
    });
  }

  /** iova_rwsem held for write. @see iopt_reserve_iova */
  private reserveIovaLocked(start: bigint, last: bigint, owner: unknown): void {
    this.iovaRwsem.assertHeldWrite();
    if (this.areaItree.iterFirst(start, last) || this.allowedItree.iterFirst(start, last)) {
      fail(EADDRINUSE, "reserved range in use");
    }
    if (this.kernel.shouldFail("iommufd:reserved_alloc")) fail(ENOMEM, "iopt_reserved");
    const r = new IoptReserved(owner);
    r.node.start = start;
    r.node.last = last;
    this.reservedItree.insert(r.node);
  }

  /** Reserve [start, last] for `owner` (e.g. IOMMU_TEST_OP_ADD_RESERVED). */
  reserveIova(start: bigint, last: bigint, owner: unknown): void {
    this.iovaRwsem.withWrite(() => this.reserveIovaLocked(start, last, owner));
  }

  private removeReservedLocked(owner: unknown): void {
    for (const r of this.reservedItree.overlapping()) {
      if (r.owner === owner) this.reservedItree.remove(r.node);
    }
  }

  /** @see iopt_remove_reserved_iova */
  removeReservedIova(owner: unknown): void {
    this.iovaRwsem.withWrite(() => this.removeReservedLocked(owner));
  }

  /**
   * Reserve a device's resv regions (DIRECT_RELAXABLE skipped) for `owner`; returns the SW_MSI
   * start if there is one. All or nothing.
   * @see iopt_table_enforce_group_resv_regions
   */
  enforceGroupResvRegions(owner: unknown, regions: readonly IommuResvRegion[]): bigint | undefined {
    if (this.kernel.shouldFail("iommufd:resv_regions")) fail(EINVAL, "injected");
    return this.iovaRwsem.withWrite(() => {
      let swMsi: bigint | undefined;
      let hwMsi = 0;
      let nSwMsi = 0;
      try {
        for (const r of regions) {
          if (r.type === IOMMU_RESV_DIRECT_RELAXABLE) continue;
          if (r.type === IOMMU_RESV_MSI) hwMsi++;
          if (r.type === IOMMU_RESV_SW_MSI) {
            swMsi = r.start;
            nSwMsi++;
          }
          this.reserveIovaLocked(r.start, r.start + r.length - 1n, owner);
        }
        WARN_ON(nSwMsi > 0 && hwMsi > 0, "SW and HW MSI regions");
        WARN_ON(nSwMsi > 1, "several SW MSI regions");
      } catch (e) {
        this.removeReservedLocked(owner);
        throw e;
      }
      return swMsi;
    });
  }

  // ---- domains ---------------------------------------------------------------------------

  /** Every area conforms to a larger alignment. @see iopt_check_iova_alignment */
  private checkIovaAlignment(align: bigint): void {
    const mask = align - 1n;
    for (const area of this.areas()) {
      if (area.iova & mask || area.length & mask || BigInt(area.pageOffset) & mask) {
        fail(EADDRINUSE, "area not aligned to the new iova_alignment");
      }
    }
    for (const access of this.accessList.values()) {
      WARN_ON(access.iovaAlignment > align, "access alignment above domains'");
    }
  }

  /** @see iopt_calculate_iova_alignment */
  private calculateIovaAlignment(): void {
    let align = this.largePagesDisabled ? BPAGE_SIZE : 1n;
    for (const d of this.domainList) {
      const m = domainMinPageSize(d);
      if (m > align) align = m;
    }
    for (const a of this.accessList.values()) if (a.iovaAlignment > align) align = a.iovaAlignment;
    if (align > this.iovaAlignment) this.checkIovaAlignment(align);
    this.iovaAlignment = align;
  }

  /**
   * Attach a domain: reserve what is outside its aperture, map every area into it. On failure
   * nothing changes.
   * @see iopt_table_add_domain
   */
  tableAddDomain(domain: IoptDomain): void {
    this.domainsRwsem.withWrite(() =>
      this.iovaRwsem.withWrite(() => {
        WARN_ON(this.domainList.includes(domain), "domain added twice");
        let align = domainMinPageSize(domain);
        if (this.iovaAlignment > align) align = this.iovaAlignment;
        if (align > BPAGE_SIZE) fail(EINVAL, "domain page size above PAGE_SIZE");
        if (align !== this.iovaAlignment) this.checkIovaAlignment(align);
        const geo = domain.geometry;
        try {
          if (geo.apertureStart !== 0n) this.reserveIovaLocked(0n, geo.apertureStart - 1n, domain);
          if (geo.apertureEnd !== ULONG_MAX) {
            this.reserveIovaLocked(geo.apertureEnd + 1n, ULONG_MAX, domain);
          }
          if (this.kernel.shouldFail("iommufd:domains_xa")) fail(ENOMEM, "domains slot");
          this.fillDomain(domain);
        } catch (e) {
          this.removeReservedLocked(domain);
          throw e;
        }
        this.iovaAlignment = align;
        this.domainList.push(domain);
      }),
    );
  }

  /** Map every complete area into a new domain; all or nothing. @see iopt_fill_domain */
  private fillDomain(domain: IoptDomain): void {
    const wasFirst = this.domainList.length === 0;
    const done: IoptArea[] = [];
    try {
      for (const area of this.areas()) {
        if (!area.pages) continue;
        ioptAreaAddDomain(area, area.pages, domain);
        done.push(area);
      }
    } catch (e) {
      for (const area of done)
        ioptAreaUndoAddDomain(area, area.pages as IoptPages, domain, wasFirst);
      throw e;
    }
  }

  /**
   * Detach a domain: compact the array, unmap every area from it (moving storage roles to a
   * survivor, or unpinning when it was the last), drop its reservations. Cannot fail.
   * @see iopt_table_remove_domain
   */
  tableRemoveDomain(domain: IoptDomain): void {
    this.domainsRwsem.withWrite(() =>
      this.iovaRwsem.withWrite(() => {
        const index = this.domainList.indexOf(domain);
        WARN_ON(index < 0, "removing a domain that is not attached");
        const tail = this.domainList.pop() as IoptDomain;
        if (index !== this.domainList.length) this.domainList[index] = tail;
        this.unfillDomain(domain);
        this.removeReservedLocked(domain);
        this.calculateIovaAlignment();
      }),
    );
  }

  /** @see iopt_unfill_domain */
  private unfillDomain(domain: IoptDomain): void {
    const survivor = this.domainList[0];
    for (const area of this.areas()) {
      const pages = area.pages;
      if (!pages) continue;
      if (survivor) ioptAreaRemoveDomain(area, pages, domain, survivor);
      else ioptAreaRemoveLastDomain(area, pages, domain);
    }
  }

  // ---- large pages / split ---------------------------------------------------------------

  /** @see iopt_disable_large_pages */
  disableLargePages(): void {
    this.domainsRwsem.withWrite(() =>
      this.iovaRwsem.withWrite(() => {
        if (this.largePagesDisabled) return;
        if (this.domainList.length && !this.areaItree.isEmpty) {
          fail(EINVAL, "domains already hold areas");
        }
        this.largePagesDisabled = true;
        try {
          this.calculateIovaAlignment();
        } catch (e) {
          this.largePagesDisabled = false;
          throw e;
        }
      }),
    );
  }

  /** @see iopt_enable_large_pages */
  enableLargePages(): void {
    this.domainsRwsem.withWrite(() =>
      this.iovaRwsem.withWrite(() => {
        this.largePagesDisabled = false;
        this.calculateIovaAlignment();
      }),
    );
  }

  /**
   * Split the area holding `iova` so `iova` ends one part (VFIO type1 partial unmap).
   * @see iopt_area_split
   */
  private areaSplit(area: IoptArea, iova: bigint): void {
    this.iovaRwsem.assertHeldWrite();
    const startIova = area.iova;
    const lastIova = area.lastIova;
    const newStart = iova + 1n;
    const align = this.iovaAlignment;
    if (iova === startIova || iova === lastIova) return;
    const pages = area.pages;
    if (!pages || area.preventAccess) fail(EBUSY, "area busy");
    // P3: the tracker and revoke do not follow splits.
    if (pages.isDmabuf) fail(EOPNOTSUPP, "DMABUF areas cannot be split");
    if (newStart & (align - 1n) || area.startByte(newStart) & (align - 1n)) {
      fail(EINVAL, "split point not aligned");
    }
    if (this.kernel.shouldFail("iommufd:area_alloc")) fail(ENOMEM, "split lhs");
    if (this.kernel.shouldFail("iommufd:area_alloc")) fail(ENOMEM, "split rhs");
    const lhs = new IoptArea();
    const rhs = new IoptArea();
    pages.mutex.with(() => {
      if (area.numAccesses) fail(EINVAL, "area has accesses");
      if (area.storageDomain && !this.largePagesDisabled) fail(EINVAL, "may hold huge IOPTEs");
      this.areaItree.remove(area.node);
      const prot = area.iommuProt;
      this.insertArea(lhs, pages, startIova, area.startByte(startIova), newStart - startIova, prot);
      this.insertArea(
        rhs,
        pages,
        newStart,
        area.startByte(newStart),
        lastIova - newStart + 1n,
        prot,
      );
      lhs.storageDomain = area.storageDomain;
      rhs.storageDomain = area.storageDomain;
      lhs.pages = pages;
      rhs.pages = pages.get();
      if (area.storageDomain) {
        pages.domainsItree.remove(area.pagesNode);
        pages.domainsItree.insert(lhs.pagesNode);
        pages.domainsItree.insert(rhs.pagesNode);
      }
      area.pages = undefined;
      area.storageDomain = undefined;
    });
  }

  /** @see iopt_cut_iova */
  cutIova(iovas: readonly bigint[]): void {
    this.iovaRwsem.withWrite(() => {
      for (const iova of iovas) {
        const area = this.areaItree.iterFirst(iova, iova)?.owner;
        if (area) this.areaSplit(area, iova);
      }
    });
  }

  // ---- accesses --------------------------------------------------------------------------

  /** Register an access (16-bit id); its alignment joins iovaAlignment. @see iopt_add_access */
  addAccess(access: IoptAccess): void {
    this.domainsRwsem.withWrite(() =>
      this.iovaRwsem.withWrite(() => {
        let id = 0;
        while (this.accessList.has(id)) id++;
        if (id > 0xffff) fail(EBUSY, "access list full");
        if (this.kernel.shouldFail("iommufd:access_list")) fail(ENOMEM, "access list slot");
        this.accessList.set(id, access);
        try {
          this.calculateIovaAlignment();
        } catch (e) {
          this.accessList.delete(id);
          throw e;
        }
        access.ioptAccessListId = id;
      }),
    );
  }

  /** @see iopt_remove_access */
  removeAccess(access: IoptAccess): void {
    this.domainsRwsem.withWrite(() =>
      this.iovaRwsem.withWrite(() => {
        const id = access.ioptAccessListId;
        WARN_ON(this.accessList.get(id) !== access, "removing an unknown access");
        this.accessList.delete(id);
        this.calculateIovaAlignment();
      }),
    );
  }
}

/**
 * The origin address of page 0 of the pages, for the allocator's alignment hint. For DMABUF
 * it is the offset inside the dma-buf, not the physical address (as merged): automatic IOVAs
 * keep the offset's alignment up to HPAGE_SIZE; larger IOPTEs need FIXED_IOVA.
 */
function originAddr(pages: IoptPages): bigint {
  if (pages.dmabuf) return pages.dmabuf.start;
  if (pages.file) return pages.start;
  return pages.uptr;
}
