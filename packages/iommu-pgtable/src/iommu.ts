/**
 * The iommu core's domain API: a paging domain (geometry, pgsize_bitmap, ops) and
 * iommu_map / iommu_unmap(_fast) / iotlb sync / iova_to_phys over it.
 *
 * Two dispatch paths, chosen by the domain:
 * - iommupt domains (`domain.pt` set: AMDv1, x86-64, VT-d SS, the selftest mock) are called
 *   directly with the whole range (map_range / unmap_range), no iommu_pgsize splitting and no
 *   min-page check in the core — the 2026 kernel shape. Errnos come from iommupt: -EINVAL,
 *   -EOVERFLOW, -ENXIO (misaligned), -ERANGE, -EADDRINUSE, -ENOMEM.
 * - classic io-pgtable domains (`ops.mapPages` / `ops.unmapPages`, e.g. ARM LPAE): the core
 *   checks alignment to the smallest page (-EINVAL; unmap returns 0) and cuts the range with
 *   iommu_pgsize().
 *
 * A failed map unmaps exactly the prefix it installed, through iommu_unmap (so the driver's
 * iotlb_sync runs even for an empty prefix), before returning the error; the domain's
 * translations are as before. Unmap never fails: it returns the bytes removed.
 *
 * Besides the byte API (bigint, full u64), a domain offers a page-number API in PAGE_SIZE
 * (4 KiB) frames as plain numbers — `mapPfns`, `unmapPfns`, `iovaToPfn`, `readPfnRuns` — with
 * the same checks and errnos, for bulk users that must not pay a bigint per page.
 *
 * @see drivers/iommu/iommu.c
 */
import { EINVAL, EOPNOTSUPP, EOVERFLOW, WARN_ON, fail } from "@x/kernel";
import type { IommuDevice } from "./iommu-driver.js";
import { IotlbGather } from "./iotlb-gather.js";
import {
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_DOMAIN_UNMANAGED,
  type DmaAccess,
  PAGE_SHIFT,
  U64_MAX,
  __IOMMU_DOMAIN_PAGING,
} from "./iommu-types.js";
import { MAP_F_LEN_TAIL, MAP_F_OVERFLOW, MAP_F_SUBGRANULE, type PtIommu } from "./iommu-pt.js";

/** @see struct iommu_domain_geometry */
export interface IommuDomainGeometry {
  apertureStart: bigint;
  /** Inclusive. */
  apertureEnd: bigint;
  forceAperture: boolean;
}

/** Where read_and_clear_dirty reports. @see struct iommu_dirty_bitmap */
interface IommuDirtyBitmap {
  /** Receives each dirty IOVA range (bytes); absent = only clear. @see iova_bitmap_set */
  readonly bitmap?: { set(iova: bigint, length: bigint): void };
  readonly gather: IotlbGather;
}

/** A classic map_pages result: bytes installed, and 0 or an errno. */
interface MapPagesResult {
  mapped: bigint;
  errno: number;
}

/**
 * What a driver plugs into a domain. iommupt domains need only the flush hooks; classic
 * domains provide map_pages / unmap_pages / iova_to_phys. @see struct iommu_domain_ops
 */
export interface IommuDomainOps {
  mapPages?(
    domain: IommuDomain,
    iova: bigint,
    paddr: bigint,
    pgsize: bigint,
    pgcount: bigint,
    prot: number,
  ): MapPagesResult;
  unmapPages?(
    domain: IommuDomain,
    iova: bigint,
    pgsize: bigint,
    pgcount: bigint,
    gather: IotlbGather,
  ): bigint;
  iovaToPhys?(domain: IommuDomain, iova: bigint): bigint;
  /** Invalidate the IOTLB for the gathered range; the core frees the freelist after it. */
  iotlbSync?(domain: IommuDomain, gather: IotlbGather): void;
  /** After a successful map, for IOMMUs that cache non-present entries. May throw. */
  iotlbSyncMap?(domain: IommuDomain, iova: bigint, size: bigint): void;
  flushIotlbAll?(domain: IommuDomain): void;
  /**
   * A nested domain whose driver walks a stage-1 table: the physical runs of a device's DMA
   * through stage 1 then the parent, or a thrown IommuFault (see iommu-driver.ts).
   */
  nestedDma?(
    domain: IommuDomain,
    dev: IommuDevice,
    iova: bigint,
    length: bigint,
    access: DmaAccess,
  ): IommuPhysRun[];
  /** Called once when the domain is freed. */
  free?(domain: IommuDomain): void;
}

/**
 * A domain's dirty-tracking ops; only domains allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING
 * have them (domain->dirty_ops). @see struct iommu_dirty_ops
 */
export interface IommuDirtyOps {
  /** Start/stop the hardware setting dirty bits on device writes (throws an errno). */
  setDirtyTracking(domain: IommuDomain, enable: boolean): void;
  /** Report (and unless IOMMU_DIRTY_NO_CLEAR, clear) dirty IOVA; absent = the iommupt walk. */
  readAndClearDirty?(
    domain: IommuDomain,
    iova: bigint,
    size: bigint,
    flags: number,
    dirty: IommuDirtyBitmap,
  ): void;
}

let nextDomainId = 1;

/** @see struct iommu_domain */
export class IommuDomain {
  /** Unique id for traces and dumps. */
  readonly id = nextDomainId++;
  type: number;
  readonly geometry: IommuDomainGeometry;
  readonly ops: IommuDomainOps;
  /** The page table behind the domain (iommupt, or the storage of a classic io-pgtable). */
  readonly pt: PtIommu | undefined;
  /** is_iommupt: the core calls map_range / unmap_range directly (else the classic path). */
  readonly isIommupt: boolean;
  /** Driver-private data (the driver's own domain struct). */
  priv: unknown;
  /** domain->dirty_ops: set when allocated for dirty tracking, else undefined. */
  readonly dirtyOps: IommuDirtyOps | undefined;
  /** Hardware dirty tracking enabled: device writes set dirty bits (set_dirty_tracking). */
  dirtyTracking = false;
  /** pgsize_bitmap (see the accessor). */
  private bitmap: bigint;
  /** pgsize_bitmap != 0, kept as a boolean for the per-call checks. */
  hasPgsizes = false;
  /** Scratch gather for maps (freed tables of table→leaf replacement). */
  private readonly mapGather = new IotlbGather();
  /** log2 of the pages of PAGE_SIZE per granule, as a shift (positive = granule smaller). */
  private readonly pageToGranule: number;
  freed = false;
  /**
   * IOMMU_DOMAIN_NESTED: the nest-parent (stage-2) domain the hardware walks after stage 1.
   * The kernel keeps it in the driver's nested domain (the mock's and SMMUv3's vIOMMU
   * s2_parent, VT-d's s2_domain); here it is on the domain so the DMA walk can reach it.
   */
  readonly parent: IommuDomain | undefined;
  /** The driver ops that made the domain (domain->owner), set by the allocating core. */
  owner: unknown;

  constructor(init: {
    type?: number;
    parent?: IommuDomain;
    geometry: IommuDomainGeometry;
    pgsizeBitmap: bigint;
    ops: IommuDomainOps;
    pt?: PtIommu;
    /** The table is driven through ops.mapPages / unmapPages (io-pgtable style). */
    classic?: boolean;
    priv?: unknown;
    dirtyOps?: IommuDirtyOps;
  }) {
    this.type = init.type ?? IOMMU_DOMAIN_UNMANAGED;
    this.parent = init.parent;
    this.dirtyOps = init.dirtyOps;
    this.geometry = init.geometry;
    this.ops = init.ops;
    this.pt = init.pt;
    this.isIommupt = init.pt !== undefined && !init.classic;
    this.priv = init.priv;
    this.bitmap = 0n;
    this.pageToGranule = init.pt ? PAGE_SHIFT - init.pt.granuleLg2 : 0;
    if (init.pt) init.pt.syncGather = (gather) => iommuIotlbSync(this, gather);
    this.pgsizeBitmap = init.pgsizeBitmap;
  }

  /** @see iommu_domain->pgsize_bitmap; setting it restricts the sizes iommupt uses. */
  get pgsizeBitmap(): bigint {
    return this.bitmap;
  }

  set pgsizeBitmap(bitmap: bigint) {
    if (this.pt && this.pt.pgsizeBitmap !== bitmap) this.pt.setPgsizeBitmap(bitmap);
    this.bitmap = bitmap;
    this.hasPgsizes = bitmap !== 0n;
  }

  /**
   * iommu_map of `npages` PAGE_SIZE frames: iova frame → pfn. Same checks and errnos as
   * `iommuMap`; throws KernelError. Plain numbers: frames < 2^52.
   */
  mapPfns(iovaPfn: number, pfn: number, npages: number, prot: number): void {
    const pt = this.pt;
    const s = this.pageToGranule;
    // A granule above PAGE_SIZE takes the byte path: a frame count that is not whole granules
    // must meet the same checks (sub-granule, length tail) as iommu_map's length.
    if (!pt || !this.isIommupt || s < 0) {
      iommuMap(this, BigInt(iovaPfn) << 12n, BigInt(pfn) << 12n, BigInt(npages) << 12n, prot);
      return;
    }
    checkPaging(this);
    const va = iovaPfn * (1 << s);
    const flags = iovaPfn + npages > 2 ** 52 ? MAP_F_OVERFLOW : 0;
    const gather = this.mapGather;
    const err = pt.mapRange(va, pfn * (1 << s), npages * (1 << s), prot, gather, flags);
    finishMap(this, pt, err, va, gather);
    if (this.ops.iotlbSyncMap)
      this.ops.iotlbSyncMap(this, BigInt(iovaPfn) << 12n, BigInt(npages) << 12n);
  }

  /**
   * iommu_unmap (or _fast with `gather`) of PAGE_SIZE frames; returns frames unmapped (an
   * entry larger than the request is removed whole and counted whole).
   */
  unmapPfns(iovaPfn: number, npages: number, gather?: IotlbGather): number {
    const pt = this.pt;
    const s = this.pageToGranule;
    if (!pt || !this.isIommupt || s < 0) {
      const g = gather ?? new IotlbGather();
      const bytes = iommuUnmapFast(this, BigInt(iovaPfn) << 12n, BigInt(npages) << 12n, g);
      if (!gather) iommuIotlbSync(this, g);
      return Number(bytes >> 12n);
    }
    checkUnmapPaging(this);
    const g = gather ?? this.mapGather;
    const pages =
      iovaPfn + npages <= 2 ** 52 ? pt.unmapRange(iovaPfn * (1 << s), npages * (1 << s), g) : 0;
    // iommu_unmap syncs whatever __iommu_unmap returned, nothing included.
    if (!gather) iommuIotlbSync(this, g);
    return pages / (1 << s);
  }

  /** iova_to_phys by PAGE frame: the frame mapped at the start of `iovaPfn`, or -1. */
  iovaToPfn(iovaPfn: number): number {
    const pt = this.pt;
    if (!pt) {
      const pa = iommuIovaToPhys(this, BigInt(iovaPfn) << 12n);
      return pa === 0n ? -1 : Number(pa >> 12n);
    }
    const s = this.pageToGranule;
    if (s < 0) {
      const d = 1 << -s;
      const oa = pt.iovaToPhys(Math.floor(iovaPfn / d));
      return oa < 0 ? -1 : oa * d + (iovaPfn % d);
    }
    // Unmapped is -1, which floors to -1 at any granule.
    return Math.floor(pt.iovaToPhys(iovaPfn * (1 << s)) / (1 << s));
  }

  /**
   * Runs of physically contiguous mappings over [iovaPfn, iovaPfn + npages): fn(iovaPfn, pfn,
   * npages, prot) in PAGE frames, holes skipped. With a 2 KiB granule a frame counts as mapped
   * when its first half is, and maps to the frame holding that half's output — what
   * batch_from_domain's iova_to_phys per PAGE_SIZE sees (and what `iovaToPfn` returns).
   * Returns the frames reported. iommupt domains only.
   */
  readPfnRuns(
    iovaPfn: number,
    npages: number,
    fn: (iovaPfn: number, pfn: number, npages: number, prot: number) => void,
  ): number {
    const pt = this.pt;
    if (!pt) return fail(EOPNOTSUPP, "readPfnRuns needs an iommupt domain");
    const s = this.pageToGranule;
    if (s === 0) return pt.readRuns(iovaPfn, npages, fn);
    if (s < 0) return fail(EOPNOTSUPP, "readPfnRuns with a granule above PAGE_SIZE");
    const k = 1 << s;
    let total = 0;
    let runF = -1;
    let runPfn = 0;
    let runN = 0;
    let runProt = 0;
    pt.readRuns(iovaPfn * k, npages * k, (va, oa, n, prot) => {
      const first = Math.ceil(va / k);
      const last = Math.floor((va + n - 1) / k);
      if (last < first) return;
      const pfn = Math.floor((oa + first * k - va) / k);
      const count = last - first + 1;
      total += count;
      if (runF >= 0 && runF + runN === first && runPfn + runN === pfn && runProt === prot) {
        runN += count;
        return;
      }
      if (runF >= 0) fn(runF, runPfn, runN, runProt);
      runF = first;
      runPfn = pfn;
      runN = count;
      runProt = prot;
    });
    if (runF >= 0) fn(runF, runPfn, runN, runProt);
    return total;
  }

  /* Method forms of the core API, for callers that hold a domain (same semantics). */

  /** iommuMap on this domain. */
  map(iova: bigint, paddr: bigint, size: bigint, prot: number): void {
    iommuMap(this, iova, paddr, size, prot);
  }

  /** iommuUnmap on this domain: bytes unmapped. */
  unmap(iova: bigint, size: bigint): bigint {
    return iommuUnmap(this, iova, size);
  }

  /** iommuIovaToPhys on this domain: 0n when unmapped. */
  iovaToPhys(iova: bigint): bigint {
    return iommuIovaToPhys(this, iova);
  }

  /** iommuReadRuns on this domain. */
  readRange(iova: bigint, length: bigint): IommuPhysRun[] {
    return iommuReadRuns(this, iova, length);
  }

  /** iommuDomainFree on this domain. */
  free(): void {
    iommuDomainFree(this);
  }

  /** Bytes mapped by leaves anywhere in the domain (0n = empty). */
  get mappedBytes(): bigint {
    let bytes = 0n;
    for (const o of this.pt?.occupancy() ?? []) {
      for (const [lg2, count] of Object.entries(o.leavesBySizeLg2))
        bytes += BigInt(count) << BigInt(lg2);
    }
    return bytes;
  }
}

/** __iommu_unmap's WARN_ONs: an empty pgsize_bitmap or a domain that is not paging. */
function checkUnmapPaging(domain: IommuDomain): void {
  WARN_ON(
    !(domain.type & __IOMMU_DOMAIN_PAGING && domain.hasPgsizes),
    "iommu_unmap on a non-paging domain",
  );
}

function checkPaging(domain: IommuDomain): void {
  if (domain.type & __IOMMU_DOMAIN_PAGING && domain.hasPgsizes) return;
  WARN_ON(!(domain.type & __IOMMU_DOMAIN_PAGING), "iommu_map on a non-paging domain");
  WARN_ON(true, "iommu_map: empty pgsize_bitmap");
}

function checkU64(what: string, v: bigint): void {
  if (typeof v !== "bigint" || v < 0n || v > U64_MAX) throw new RangeError(`${what} is not a u64`);
}

/**
 * After pt.mapRange: sync freed tables, unwind a failure, throw its errno. Decision: as in the
 * kernel, the unwind unmaps exactly the installed prefix, so translations are unchanged, while
 * lower tables the failed call allocated stay when the unwind does not fully cover them.
 */
function finishMap(
  domain: IommuDomain,
  pt: PtIommu,
  err: number,
  vaPfn: number,
  gather: IotlbGather,
): void {
  if (gather.freelist.length !== 0 || !gather.empty) iommuIotlbSync(domain, gather);
  if (!err) return;
  // The unwind goes through iommu_unmap even when nothing went in, so the driver's iotlb_sync
  // runs on an empty gather then too.
  const g = BigInt(pt.granuleLg2);
  iommuUnmap(domain, BigInt(vaPfn) << g, BigInt(pt.mappedPages) << g);
  fail(err);
}

/** @see iommu_map_nosync */
function iommuMapNosync(
  domain: IommuDomain,
  iova: bigint,
  paddr: bigint,
  size: bigint,
  prot: number,
): void {
  checkU64("iova", iova);
  checkU64("paddr", paddr);
  checkU64("size", size);
  checkPaging(domain);
  const pt = domain.pt;
  if (pt && domain.isIommupt) {
    const g = BigInt(pt.granuleLg2);
    const gmask = (1n << g) - 1n;
    const flags =
      (size !== 0n && iova + size - 1n > U64_MAX ? MAP_F_OVERFLOW : 0) |
      ((iova | paddr) & gmask || (size !== 0n && size <= gmask) ? MAP_F_SUBGRANULE : 0) |
      (size & gmask ? MAP_F_LEN_TAIL : 0);
    const gather = new IotlbGather();
    const va = Number(iova >> g);
    const err = pt.mapRange(va, Number(paddr >> g), Number(size >> g), prot, gather, flags);
    finishMap(domain, pt, err, va, gather);
    return;
  }
  classicMap(domain, iova, paddr, size, prot);
}

/** iommu_map: map_nosync then iotlb_sync_map. Throws KernelError; nothing mapped on failure. */
export function iommuMap(
  domain: IommuDomain,
  iova: bigint,
  paddr: bigint,
  size: bigint,
  prot: number,
): void {
  iommuMapNosync(domain, iova, paddr, size, prot);
  domain.ops.iotlbSyncMap?.(domain, iova, size);
}

/** One scatterlist entry: `length` bytes at `paddr`; a P2P bus address is not IOMMU-mapped. */
interface ScatterEntry {
  readonly paddr: bigint;
  readonly length: bigint;
  /** sg_dma_is_bus_address(): already a DMA address (P2P through a switch), skipped. */
  readonly busAddress?: boolean;
}

/**
 * iommu_map_sg: map the entries at consecutive IOVAs from `iova`, physically contiguous
 * neighbours as one run, bus-address entries skipped; one iotlb_sync_map over the total.
 * Returns the bytes mapped; on failure unmaps everything it mapped and throws the errno.
 * Decision: the 2026 shape is taken to be the 2023 one (not checked in detail).
 */
export function iommuMapSg(
  domain: IommuDomain,
  iova: bigint,
  sg: readonly ScatterEntry[],
  prot: number,
): bigint {
  let mapped = 0n;
  let start = 0n;
  let len = 0n;
  try {
    for (let i = 0; i <= sg.length; i++) {
      const entry = sg[Math.min(i, sg.length - 1)];
      if (!entry) break;
      if (len !== 0n && (i === sg.length || entry.paddr !== start + len)) {
        iommuMapNosync(domain, iova + mapped, start, len, prot);
        mapped += len;
        len = 0n;
      }
      if (i === sg.length || entry.busAddress) continue;
      if (len !== 0n) len += entry.length;
      else {
        len = entry.length;
        start = entry.paddr;
      }
    }
    domain.ops.iotlbSyncMap?.(domain, iova, mapped);
  } catch (e) {
    iommuUnmap(domain, iova, mapped);
    throw e;
  }
  return mapped;
}

/** @see iommu_pgsize: the page size and count for the next classic map_pages call. */
export function iommuPgsize(
  pgsizeBitmap: bigint,
  iova: bigint,
  paddr: bigint,
  size: bigint,
): { pgsize: bigint; count: bigint } {
  const addrMerge = iova | paddr;
  let pgsizes = pgsizeBitmap & ((1n << BigInt(size.toString(2).length)) - 1n);
  if (addrMerge !== 0n) pgsizes &= (addrMerge & -addrMerge) * 2n - 1n;
  WARN_ON(pgsizes === 0n, "iommu_pgsize: no page size fits");
  const pgsizeIdx = BigInt(pgsizes.toString(2).length - 1);
  const pgsize = 1n << pgsizeIdx;
  const larger = pgsizeBitmap & ~((1n << (pgsizeIdx + 1n)) - 1n);
  if (larger !== 0n) {
    const nextIdx = BigInt((larger & -larger).toString(2).length - 1);
    const pgsizeNext = 1n << nextIdx;
    if (((iova ^ paddr) & (pgsizeNext - 1n)) === 0n) {
      const offset = pgsizeNext - (addrMerge & (pgsizeNext - 1n));
      if (offset + pgsizeNext <= size) return { pgsize, count: offset >> pgsizeIdx };
    }
  }
  return { pgsize, count: size >> pgsizeIdx };
}

function minPagesz(domain: IommuDomain): bigint {
  const b = domain.pgsizeBitmap;
  return b & -b;
}

/** The io-pgtable path of __iommu_map. */
function classicMap(
  domain: IommuDomain,
  iova: bigint,
  paddr: bigint,
  size: bigint,
  prot: number,
): void {
  const mapPages = domain.ops.mapPages;
  WARN_ON(!mapPages, "iommu_map: driver has no map_pages");
  const min = minPagesz(domain);
  if ((iova | paddr | size) & (min - 1n))
    fail(EINVAL, "unaligned iova/pa/size for the minimum page size");
  const origIova = iova;
  let left = size;
  let errno = 0;
  while (left !== 0n) {
    const { pgsize, count } = iommuPgsize(domain.pgsizeBitmap, iova, paddr, left);
    const r = mapPages!(domain, iova, paddr, pgsize, count, prot);
    left -= r.mapped;
    if (r.errno) {
      errno = r.errno;
      break;
    }
    iova += r.mapped;
    paddr += r.mapped;
  }
  if (errno) {
    iommuUnmap(domain, origIova, size - left);
    fail(errno);
  }
}

/** The io-pgtable path of __iommu_unmap. */
function classicUnmap(
  domain: IommuDomain,
  iova: bigint,
  size: bigint,
  gather: IotlbGather,
): bigint {
  const unmapPages = domain.ops.unmapPages;
  WARN_ON(!unmapPages, "iommu_unmap: driver has no unmap_pages");
  const min = minPagesz(domain);
  if ((iova | size) & (min - 1n)) return 0n;
  let unmapped = 0n;
  while (unmapped < size) {
    const { pgsize, count } = iommuPgsize(domain.pgsizeBitmap, iova, iova, size - unmapped);
    const done = unmapPages!(domain, iova, pgsize, count, gather);
    if (done === 0n) break;
    iova += done;
    unmapped += done;
  }
  return unmapped;
}

/**
 * iommu_unmap_fast: remove translations, collect the flush in `gather` (the caller syncs).
 * Returns bytes unmapped; `iova + result` is where it stopped. Never throws an errno.
 */
export function iommuUnmapFast(
  domain: IommuDomain,
  iova: bigint,
  size: bigint,
  gather: IotlbGather,
): bigint {
  checkU64("iova", iova);
  checkU64("size", size);
  checkUnmapPaging(domain);
  const pt = domain.pt;
  if (!pt || !domain.isIommupt) return classicUnmap(domain, iova, size, gather);
  if (size === 0n || iova + size - 1n > U64_MAX) return 0n;
  const g = BigInt(pt.granuleLg2);
  const gmask = (1n << g) - 1n;
  // An iova inside a granule starts inside a leaf: iommupt removes nothing.
  if (iova & gmask) return 0n;
  const pages = pt.unmapRange(Number(iova >> g), Number((size + gmask) >> g), gather);
  return BigInt(pages) << g;
}

/** iommu_unmap: unmap_fast then iotlb_sync. Returns bytes unmapped. */
export function iommuUnmap(domain: IommuDomain, iova: bigint, size: bigint): bigint {
  const gather = new IotlbGather();
  const unmapped = iommuUnmapFast(domain, iova, size, gather);
  iommuIotlbSync(domain, gather);
  return unmapped;
}

/** iommu_iotlb_sync: the driver invalidates, then freed tables are released, then re-init. */
export function iommuIotlbSync(domain: IommuDomain, gather: IotlbGather): void {
  domain.ops.iotlbSync?.(domain, gather);
  gather.releaseFreelist();
  gather.init();
}

/** iommu_iova_to_phys: the output address (with the in-page offset), 0n when unmapped. */
export function iommuIovaToPhys(domain: IommuDomain, iova: bigint): bigint {
  checkU64("iova", iova);
  if (domain.type === IOMMU_DOMAIN_IDENTITY) return iova;
  if (domain.type === IOMMU_DOMAIN_BLOCKED) return 0n;
  const pt = domain.pt;
  if (!pt) return domain.ops.iovaToPhys?.(domain, iova) ?? 0n;
  const g = BigInt(pt.granuleLg2);
  // Decision: an IOVA outside the table reads as "not mapped" (0); the kernel returns the
  // negative errno of its range check cast to phys_addr_t there.
  const oa = pt.iovaToPhys(Number(iova >> g));
  if (oa < 0) return 0n;
  return (BigInt(oa) << g) | (iova & ((1n << g) - 1n));
}

/** One run of a range read: `length` bytes at `iova` map to `paddr` onward with `prot`. */
export interface IommuPhysRun {
  readonly iova: bigint;
  readonly paddr: bigint;
  readonly length: bigint;
  readonly prot: number;
}

/**
 * The mappings of [iova, iova + length) as runs of contiguous physical addresses (holes
 * skipped) — one walk instead of one iova_to_phys per page. Not a kernel API: iommufd's
 * batch_from_domain equivalent uses it. iommupt domains only.
 */
export function iommuReadRuns(domain: IommuDomain, iova: bigint, length: bigint): IommuPhysRun[] {
  checkU64("iova", iova);
  checkU64("length", length);
  const pt = domain.pt;
  if (!pt) return fail(EOPNOTSUPP, "iommuReadRuns needs an iommupt domain");
  const out: IommuPhysRun[] = [];
  if (length === 0n || iova + length - 1n > U64_MAX) return out;
  const g = BigInt(pt.granuleLg2);
  const first = iova >> g;
  const last = (iova + length - 1n) >> g;
  pt.readRuns(Number(first), Number(last - first) + 1, (va, oa, n, prot) => {
    let runIova = BigInt(va) << g;
    let runPa = BigInt(oa) << g;
    let runLen = BigInt(n) << g;
    if (runIova < iova) {
      const cut = iova - runIova;
      runIova += cut;
      runPa += cut;
      runLen -= cut;
    }
    const end = iova + length;
    if (runIova + runLen > end) runLen = end - runIova;
    out.push({ iova: runIova, paddr: runPa, length: runLen, prot });
  });
  return out;
}

/**
 * dirty_ops->read_and_clear_dirty: the driver's own, or iommupt's walk (IOMMU_PT_DIRTY_OPS).
 * Cleared ranges are added to `dirty.gather`; the caller syncs it (iommu_iotlb_sync) before it
 * trusts new dirty bits, as iopt_read_and_clear_dirty_data does.
 */
export function iommuReadAndClearDirty(
  domain: IommuDomain,
  iova: bigint,
  size: bigint,
  flags: number,
  dirty: IommuDirtyBitmap,
): void {
  if (domain.dirtyOps?.readAndClearDirty) {
    domain.dirtyOps.readAndClearDirty(domain, iova, size, flags, dirty);
    return;
  }
  const pt = domain.pt;
  if (!pt) fail(EOPNOTSUPP);
  if (size === 0n) fail(EINVAL);
  if (iova + size - 1n > U64_MAX) fail(EOVERFLOW);
  const g = BigInt(pt.granuleLg2);
  const first = iova >> g;
  const last = (iova + size - 1n) >> g;
  const bitmap = dirty.bitmap;
  const err = pt.readAndClearDirty(
    Number(first),
    Number(last - first) + 1,
    flags,
    bitmap
      ? (va, pages) => {
          // The first record starts at the caller's iova, as the kernel's walk does.
          const at = BigInt(va) << g;
          bitmap.set(at < iova ? iova : at, BigInt(pages) << g);
        }
      : undefined,
    dirty.gather,
  );
  if (err) fail(err);
}

/** set_dirty of the page table under a domain (test-only in the kernel). Throws an errno. */
export function iommuptSetDirty(domain: IommuDomain, iova: bigint): void {
  const pt = domain.pt;
  if (!pt) fail(EOPNOTSUPP);
  const err = pt.setDirty(Number(iova >> BigInt(pt.granuleLg2)));
  if (err) fail(err);
}

/** iommu_domain_free: the driver's free hook and the page table's memory. */
export function iommuDomainFree(domain: IommuDomain): void {
  WARN_ON(domain.freed, "iommu_domain_free twice");
  domain.freed = true;
  domain.ops.free?.(domain);
  domain.pt?.destroy();
}
