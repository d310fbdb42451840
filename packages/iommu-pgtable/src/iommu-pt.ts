/**
 * The generic IOMMU page table ("iommupt"): one walker for every format, where a format is data
 * (pt-format.ts). It implements map_range, unmap_range, iova_to_phys, set_dirty,
 * read_and_clear_dirty and the table bookkeeping exactly as iommupt behaves:
 *
 * - map picks, run by run, the largest page size allowed by the bitmap, the alignment of
 *   iova|paddr and the remaining length, and emits as many leaves of it as fit before a larger
 *   size becomes usable (pt_compute_best_pgsize + pt_pgsz_count); it descends once per table
 *   and fills runs of items in tight typed-array loops. An existing leaf in the way is
 *   -EADDRINUSE; an existing empty lower table where a leaf goes is unlinked and queued on the
 *   gather's freelist (how a table left behind by a partial unmap becomes a large leaf).
 * - unmap clears whole entries (a request ending inside a leaf removes all of it and reports
 *   more), stops at the first hole or at a start inside a leaf, and frees lower tables only
 *   when the request fully covers them; partially covered tables stay even if empty.
 *
 * Addresses inside are granule page numbers (plain numbers, exact below 2^53: a u64 address
 * has at most 53 bits of 2 KiB pages). Per-level indexes come from 32-bit shifts after one
 * hi/lo split, never from per-level float division.
 *
 * Items are stored as documented in iommu-pages.ts; a contiguous entry stores, in each of its
 * items, the output page of that item (base + i × item pages) so that every fill is a single
 * `v += inc` loop; the hardware image (all items identical for AMDv1) is rebuilt by the format
 * encoder on dump.
 *
 * Walk cache: the level-0 table the last single-page walk reached (below 2^31 pages) is kept
 * with its key (the page number above the level-0 index), so runs of one-page map / unmap /
 * iova_to_phys calls in the same table skip the upper levels. Tables are only ever added under
 * a cached path, so the cache goes stale only when a table pointer is removed (unmap of a fully
 * covered table, a table replaced by a leaf, a new top, destroy): each of those drops it, before
 * anything else can walk.
 *
 * Locking: callers hold the IOVA range exclusively (iommufd's iova_rwsem / domains_rwsem);
 * the table itself takes no lock, as in the kernel.
 *
 * @see drivers/iommu/generic_pt/iommu_pt.h
 */
import {
  EADDRINUSE,
  EINVAL,
  ENOENT,
  ENOMEM,
  ENXIO,
  EOPNOTSUPP,
  EOVERFLOW,
  ERANGE,
  WARN_ON,
} from "@x/kernel";
import {
  ATTR_CONTIG_MASK,
  ATTR_CONTIG_SHIFT,
  ATTR_DIRTY,
  ATTR_PRESENT,
  ATTR_PROT_MASK,
  ATTR_SPAN,
  TableAllocator,
} from "./iommu-pages.js";
import { IOMMU_DIRTY_NO_CLEAR, IOMMU_READ, IOMMU_WRITE } from "./iommu-types.js";
import { GATHER_UNIT_LG2, type FreelistOwner, type IotlbGather } from "./iotlb-gather.js";
import {
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_FLUSH_RANGE,
  PT_FEAT_FLUSH_RANGE_NO_GAPS,
  PT_FEAT_SIGN_EXTEND,
  type PtFormat,
  type PtFormatInit,
  hasFeature,
} from "./pt-format.js";

/** Configuration of one page table. @see struct pt_iommu_cfg */
export interface PtIommuCfg extends PtFormatInit {
  readonly format: PtFormat;
  /**
   * Fault injection at every table allocation (site "iommu_alloc_pages"); usually
   * `(site) => kernel.shouldFail(site)`. Returning true fails that allocation with -ENOMEM.
   */
  readonly shouldFail?: (site: string) => boolean;
}

/** Fault-injection site of table allocations. */
export const PT_ALLOC_SITE = "iommu_alloc_pages";

/** Map-call facts the byte-level caller learned before converting to pages. */
export const MAP_F_OVERFLOW = 1 << 0;
/** iova/paddr have bits below the granule, or the length is below one granule. */
export const MAP_F_SUBGRANULE = 1 << 1;
/** The length is not a whole number of granules. */
export const MAP_F_LEN_TAIL = 1 << 2;

/** One leaf entry seen by a range visit. */
type PtLeafVisitor = (
  level: number,
  arr: Float64Array,
  /** Item index (in `arr`) of the entry's first item. */
  entryPos: number,
  /** Items of the entry. */
  entryItems: number,
  /** First / end (exclusive) item index of the part inside the visited range. */
  fromPos: number,
  toPos: number,
  /** Granule page of the first visited byte (the range start for the first entry). */
  vaPfn: number,
) => void;

/** Per-level occupancy for the playground. */
export interface PtLevelOccupancy {
  readonly level: number;
  readonly tables: number;
  /** Leaf entries by page size (log2 bytes). */
  readonly leavesBySizeLg2: Record<number, number>;
}

const POW2: number[] = Array.from({ length: 65 }, (_, i) => 2 ** i);
const P26 = 2 ** 26;
/** 2^-26 and 2^-32: exact factors, where a division would cost several times a product. */
const INV_P26 = 2 ** -26;
const INV_P32 = 2 ** -32;
const P31 = 2 ** 31;
const P32 = 2 ** 32;
/** Base of the fake physical addresses given to tables in PTE dumps. */
export const TABLE_PA_BASE = 1n << 40n;

const ATTR_BITS = ATTR_SPAN - 1;
/** 1 / ATTR_SPAN: a product by a power of two is exact, and cheaper than a division. */
const PFN_SCALE = 1 / ATTR_SPAN;

/**
 * The attribute bits of a leaf item (an integer in [0, 2^53)): `| 0` keeps the low 32 bits of
 * an integer exactly, and the attributes are the low 12 (a float `%` would be an fmod call).
 */
function attrsOf(e: number): number {
  return (e | 0) & ATTR_BITS;
}

/** The output page a leaf item holds. */
function pfnOf(e: number): number {
  return Math.floor(e * PFN_SCALE);
}

/** a mod p for an integer a >= 0 below 2^53 and a power of two p. */
function mod2(a: number, p: number): number {
  return a - Math.floor(a / p) * p;
}

/**
 * Index of the first empty (0) item of arr[p, stop), or `stop`. Eight items at a time first:
 * every item is 0, a leaf >= ATTR_PRESENT or a table pointer <= -1, so a product of eight
 * items (at most 2^424 in magnitude) is 0 exactly when one of them is.
 */
function firstEmpty(arr: Float64Array, p: number, stop: number): number {
  let q = p;
  for (; q + 8 <= stop; q += 8) {
    const a = arr[q]! * arr[q + 1]! * (arr[q + 2]! * arr[q + 3]!);
    const b = arr[q + 4]! * arr[q + 5]! * (arr[q + 6]! * arr[q + 7]!);
    if (a * b === 0) break;
  }
  while (q < stop && arr[q] !== 0) q++;
  return q;
}

/**
 * Index of the first present (non-0) item of arr[p, stop), or `stop`. Eight items at a time
 * first: a present item is at least 1 in magnitude, so a sum of eight squares (at most 2^109)
 * is 0 exactly when all eight are empty.
 */
function firstPresent(arr: Float64Array, p: number, stop: number): number {
  let q = p;
  for (; q + 8 <= stop; q += 8) {
    const a = arr[q]!;
    const b = arr[q + 1]!;
    const c = arr[q + 2]!;
    const d = arr[q + 3]!;
    const e = arr[q + 4]!;
    const f = arr[q + 5]!;
    const g = arr[q + 6]!;
    const h = arr[q + 7]!;
    if (a * a + b * b + c * c + d * d + (e * e + f * f + g * g + h * h) !== 0) break;
  }
  while (q < stop && arr[q] === 0) q++;
  return q;
}

/** Count trailing zeros of a non-negative integer < 2^53 (64 for 0). */
export function ctz53(x: number): number {
  if (x === 0) return 64;
  const hi = Math.floor(x * INV_P32);
  const lo = x - hi * P32;
  if (lo !== 0) return 31 - Math.clz32(lo & -lo);
  return 32 + 31 - Math.clz32(hi & -hi);
}

/** floor(log2(x)) of an integer 1 <= x < 2^53. */
export function fls53(x: number): number {
  if (x < P32) return 31 - Math.clz32(x);
  return 32 + 31 - Math.clz32(Math.floor(x * INV_P32));
}

export class PtIommu implements FreelistOwner {
  readonly format: PtFormat;
  readonly features: number;
  readonly granuleLg2: number;
  /** Largest VA width this table may reach (with DYNAMIC_TOP, by growing). */
  readonly maxVaLg2: number;
  readonly maxOaLg2: number;
  readonly alloc: TableAllocator;
  topLevel: number;
  /** Top table storage; `topId` is -1 when the top lives outside the slab (ARM concatenation). */
  /** Top table storage (read by io-pgtable-arm.ts, which walks the same items). */
  topArr: Float64Array;
  topBase: number;
  private topId: number;
  private topItemsLg2: number;
  private readonly shouldFail: ((site: string) => boolean) | undefined;
  private readonly shift: number[] = [];
  /** Per-level index shift and mask (the top's mask follows its item count). */
  private readonly idxShift = new Int32Array(8);
  /** idxShift clamped to 31, for addresses below 2^31 where a larger shift gives index 0. */
  private readonly idxShiftLow = new Int32Array(8);
  private readonly idxMask = new Int32Array(8);
  private readonly signExtend: boolean;
  /** 0: no range flushes, 1: PT_FEAT_FLUSH_RANGE, 2: PT_FEAT_FLUSH_RANGE_NO_GAPS. */
  private readonly flushMode: number;
  /** Gather units (2 KiB) per granule page. */
  private readonly gatherScale: number;
  /** Granule pages below the current top's reach (non sign-extended tables). */
  private vaLimit = 0;
  private readonly items: number[] = [];
  /** best[m]: largest usable page (lg2 granules) <= m, or -1. */
  private readonly best = new Int8Array(66).fill(-1);
  /** next[r]: next larger usable page after r, or -1. */
  private readonly next = new Int8Array(66).fill(-1);
  /** levelOf[r]: level holding a page of 2^r granules, or -1. */
  private readonly levelOf = new Int8Array(66).fill(-1);
  /** Smallest usable page, lg2 granules. */
  private minPageLg2 = 0;
  /** pgsize bitmap currently honoured (bytes). */
  pgsizeBitmap = 0n;
  /** Granule pages of output address space (an output range must end at or below it). */
  private readonly oaPages: number;
  private readonly dynamicTop: boolean;
  /** The last prot checkProt accepted (-1: none); checkProt depends on prot and features only. */
  private protChecked = -1;

  /* The walk cache (see the top of the file): leafKey = page >>> leafShift, -1 when empty. */
  private leafKey = -1;
  private readonly leafShift: number;
  /** Index mask of a level-0 table (idxMask[0], the top's when the top is level 0). */
  private leafMask = 0;
  private leafArr: Float64Array = new Float64Array(0);
  private leafBase = 0;
  /** Where walkToLeafTable stopped above level 0: the item (0 or a leaf), its level and slot. */
  private stopItem = 0;
  private stopLevel = 0;
  private stopArr: Float64Array = new Float64Array(0);
  private stopPos = 0;

  /* Walk state: one walk at a time, as the caller holds the range lock. */
  private va = 0;
  private oa = 0;
  private end = 0;
  private attrs = 0;
  private gather: IotlbGather | undefined;
  private unmapped = 0;
  private freed: number[] = [];
  /** Called when FLUSH_RANGE_NO_GAPS needs the domain to flush a gather now. */
  syncGather: ((gather: IotlbGather) => void) | undefined;

  constructor(cfg: PtIommuCfg) {
    const fmt = cfg.format;
    this.format = fmt;
    this.features = cfg.features;
    this.granuleLg2 = fmt.granuleLg2;
    this.shouldFail = cfg.shouldFail;
    const geo = fmt.init(cfg);
    if (typeof geo === "number")
      throw new RangeError(`${fmt.name}: invalid configuration (errno ${-geo})`);
    this.topLevel = geo.topLevel;
    this.maxVaLg2 = geo.maxVaLg2;
    this.maxOaLg2 = geo.maxOaLg2;
    let s = 0;
    for (let level = 0; level <= fmt.maxTopLevel; level++) {
      const n = fmt.numItemsLg2(level);
      this.shift.push(s);
      this.items.push(n);
      this.idxShift[level] = s;
      this.idxShiftLow[level] = Math.min(s, 31);
      this.idxMask[level] = (1 << n) - 1;
      s += n;
    }
    this.topItemsLg2 = geo.topItemsLg2 ?? this.items[this.topLevel]!;
    this.signExtend = hasFeature(this.features, PT_FEAT_SIGN_EXTEND);
    this.flushMode = hasFeature(this.features, PT_FEAT_FLUSH_RANGE_NO_GAPS)
      ? 2
      : hasFeature(this.features, PT_FEAT_FLUSH_RANGE)
        ? 1
        : 0;
    this.gatherScale = POW2[this.granuleLg2 - GATHER_UNIT_LG2]!;
    this.oaPages = POW2[this.maxOaLg2 - this.granuleLg2]!;
    this.dynamicTop = hasFeature(this.features, PT_FEAT_DYNAMIC_TOP);
    // Without a level 1 the key is the page itself, still naming one level-0 table.
    this.leafShift = this.idxShiftLow[1]!;
    this.topChanged();
    let slabLg2 = 0;
    for (let level = 0; level < this.topLevel; level++)
      slabLg2 = Math.max(slabLg2, this.items[level]!);
    slabLg2 = Math.max(slabLg2, this.items[Math.min(this.topLevel, fmt.maxTopLevel)]!);
    this.alloc = new TableAllocator(slabLg2);
    if (this.topItemsLg2 > slabLg2) {
      this.topId = -1;
      this.topArr = new Float64Array(1 << this.topItemsLg2);
      this.topBase = 0;
      this.alloc.perLevel[this.topLevel]!++;
    } else {
      this.topId = this.alloc.alloc(this.topLevel);
      this.topArr = this.alloc.chunk(this.topId);
      this.topBase = this.alloc.offset(this.topId);
    }
    this.setPgsizeBitmap(this.naturalPgsizeBitmap());
  }

  /** Every page size the format offers at the levels this table can have. @see get_info */
  naturalPgsizeBitmap(): bigint {
    const fmt = this.format;
    const dynamic = hasFeature(this.features, PT_FEAT_DYNAMIC_TOP);
    let bitmap = 0n;
    for (let level = 0; level <= fmt.maxTopLevel; level++) {
      const itemLg2 = this.granuleLg2 + this.shift[level]!;
      if (dynamic ? itemLg2 >= this.maxVaLg2 : level > this.topLevel) break;
      const m = fmt.contigMask(level);
      for (let k = 0; k < 16; k++) if (m & (1 << k)) bitmap |= 1n << BigInt(itemLg2 + k);
    }
    return bitmap & ((1n << BigInt(this.maxOaLg2)) - 1n);
  }

  /**
   * Restrict the sizes used by map to `bitmap` (a driver may reduce the domain's
   * pgsize_bitmap after init; the algorithms honour it). Sizes the format cannot hold WARN.
   */
  setPgsizeBitmap(bitmap: bigint): void {
    const g = this.granuleLg2;
    // Resolve every size to its level first, so a refused bitmap changes nothing.
    const sizes: [number, number][] = [];
    for (let b = 0; b < 64; b++) {
      if (!(bitmap & (1n << BigInt(b)))) continue;
      const r = b - g;
      let level = -1;
      for (let l = this.format.maxTopLevel; l >= 0; l--) {
        if (r >= this.shift[l]! && this.format.contigMask(l) & (1 << (r - this.shift[l]!))) {
          level = l;
          break;
        }
      }
      WARN_ON(r < 0 || level < 0, `${this.format.name}: page size 2^${b} not representable`);
      sizes.push([r, level]);
    }
    this.best.fill(-1);
    this.next.fill(-1);
    this.levelOf.fill(-1);
    let prev = -1;
    for (const [r, level] of sizes) {
      this.levelOf[r] = level;
      if (prev >= 0) this.next[prev] = r;
      prev = r;
    }
    const min = sizes.length ? sizes[0]![0] : -1;
    let cur = -1;
    for (let m = 0; m < 66; m++) {
      if (this.levelOf[m]! >= 0) cur = m;
      this.best[m] = cur;
    }
    this.minPageLg2 = min;
    this.pgsizeBitmap = bitmap;
  }

  /** Granule pages of one item at `level`. */
  itemPages(level: number): number {
    return POW2[this.shift[level]!]!;
  }

  /** The VA has a lower and an upper half (PT_FEAT_SIGN_EXTEND). */
  get isSignExtended(): boolean {
    return this.signExtend;
  }

  /** Items of a table at `level` (the top may differ). */
  tableItems(level: number): number {
    return level === this.topLevel ? 1 << this.topItemsLg2 : 1 << this.items[level]!;
  }

  /** VA width reachable with the current top. */
  currentVaLg2 = 0;

  /** Recompute what depends on the top level. */
  private topChanged(): void {
    const top = this.topLevel;
    this.leafKey = -1;
    this.currentVaLg2 = Math.min(
      this.maxVaLg2,
      this.granuleLg2 + this.shift[top]! + this.topItemsLg2,
    );
    this.vaLimit = POW2[this.currentVaLg2 - this.granuleLg2]!;
    for (let level = 0; level <= this.format.maxTopLevel; level++) {
      this.idxMask[level] =
        level === top ? (1 << this.topItemsLg2) - 1 : (1 << this.items[level]!) - 1;
    }
    this.leafMask = this.idxMask[0]!;
  }

  /** Pages of [va, va + n) inside the table's reach from va (0 when va is outside). */
  private clampToReach(va: number, n: number): number {
    if (!this.signExtend) return Math.min(n, this.vaLimit - va);
    const half = POW2[this.currentVaLg2 - 1 - this.granuleLg2]!;
    if (va < half) return Math.min(n, half - va);
    return va >= POW2[64 - this.granuleLg2]! - half ? n : 0;
  }

  /** The walkable start page of [va, va + n) with the current top, or -1 (-ERANGE). */
  private walkStart(va: number, n: number): number {
    if (!this.signExtend) return va + n <= this.vaLimit ? va : -1;
    return this.checkRange(va, n, this.currentVaLg2);
  }

  /** Index of `va` (granule page, already masked to the table width) in a level's table. */
  index(level: number, va: number): number {
    if (va < P31) return (va >>> this.idxShiftLow[level]!) & this.idxMask[level]!;
    const s = this.idxShift[level]!;
    const m = this.idxMask[level]!;
    const hi = Math.floor(va * INV_P26);
    if (s >= 26) return (hi >>> (s - 26)) & m;
    return (((va - hi * P26) >>> s) | (hi << (26 - s))) & m;
  }

  /**
   * pt_check_range for [va, va + n) in granule pages of the full 64-bit space: the walkable
   * (masked) start page, or -1 for -ERANGE. `vaLg2` is the width to test against.
   */
  checkRange(va: number, n: number, vaLg2: number): number {
    const g = this.granuleLg2;
    const last = va + n - 1;
    if (this.signExtend) {
      const half = POW2[vaLg2 - 1 - g]!;
      const upperPrefix = POW2[65 - vaLg2]! - 1;
      const p0 = Math.floor(va / half);
      const p1 = Math.floor(last / half);
      if (p0 !== p1 || (p0 !== 0 && p0 !== upperPrefix)) return -1;
      return p0 === 0 ? va : va - p0 * half + half;
    }
    if (last >= POW2[vaLg2 - g]!) return -1;
    return va;
  }

  /** A new zeroed table for `level`, or -1 when fault injection fails the allocation. */
  newTable(level: number): number {
    if (this.shouldFail?.(PT_ALLOC_SITE)) return -1;
    return this.alloc.alloc(level);
  }

  /** Add levels on top until `lastVa` (granule pages) and `leafLevel` fit. @see increase_top */
  private increaseTop(va: number, n: number, leafLevel: number): number {
    const created: number[] = [];
    let level = this.topLevel;
    while (this.checkRange(va, n, this.vaLg2For(level)) < 0 || leafLevel > level) {
      level++;
      if (
        level > this.format.maxTopLevel ||
        this.granuleLg2 + this.shift[level]! >= this.maxVaLg2
      ) {
        for (const id of created) this.alloc.free(id);
        return ERANGE;
      }
      const id = this.newTable(level);
      if (id < 0) {
        for (const id2 of created) this.alloc.free(id2);
        return ENOMEM;
      }
      created.push(id);
    }
    for (const id of created) {
      const arr = this.alloc.chunk(id);
      arr[this.alloc.offset(id)] = -(this.topId + 1);
      this.topId = id;
      this.topArr = arr;
      this.topBase = this.alloc.offset(id);
      this.topLevel++;
      this.topItemsLg2 = this.items[this.topLevel]!;
    }
    this.topChanged();
    return 0;
  }

  private vaLg2For(top: number): number {
    return Math.min(this.maxVaLg2, this.granuleLg2 + this.shift[top]! + this.items[top]!);
  }

  /**
   * The largest usable page (lg2 granules) for the alignment of `va|oa` and `n` pages left, or
   * -1 when none fits. @see pt_compute_best_pgsize
   */
  computeBestPgsize(va: number, oa: number, n: number): number {
    const a = Math.min(ctz53(va), ctz53(oa));
    return this.best[Math.min(a, fls53(n))]!;
  }

  /** How many pages of 2^r to emit before a larger size becomes usable. @see pt_pgsz_count */
  private pgszCount(r: number, va: number, oa: number, n: number): number {
    const count = Math.floor(n / POW2[r]!);
    const nr = this.next[r]!;
    if (nr < 0) return count;
    const big = POW2[nr]!;
    if (mod2(va, big) !== mod2(oa, big)) return count;
    const toBoundary = big - mod2(va, big);
    if (toBoundary + big > n) return count;
    return toBoundary / POW2[r]!;
  }

  /**
   * Map [va, va + n) granule pages to oa with `prot`. Returns 0 or an errno (positive);
   * `mappedPages` tells how much was installed before an error. Tables freed while replacing
   * empty tables by leaves go on `gather` (the caller syncs it). @see map_range
   */
  mapRange(
    va: number,
    oa: number,
    n: number,
    prot: number,
    gather: IotlbGather,
    flags = 0,
  ): number {
    this.mappedPages = 0;
    // The kernel WARNs and returns -EINVAL; here a WARN is thrown (KernelWarning).
    WARN_ON(!(prot & (IOMMU_READ | IOMMU_WRITE)), "iommupt: map without READ or WRITE");
    // Decision: the kernel tests only paddr against the OA width; the model also refuses an
    // output range running past it (-ERANGE), since such an OA cannot be stored.
    if (oa + n > this.oaPages) return ERANGE;
    if (prot !== this.protChecked) {
      const protErr = this.format.checkProt(prot, this.features);
      if (protErr) return protErr;
      this.protChecked = prot;
    }
    if (n === 0 && !(flags & MAP_F_SUBGRANULE)) return EINVAL;
    if (flags & MAP_F_OVERFLOW) return EOVERFLOW;
    if (flags & MAP_F_SUBGRANULE) return ENXIO;
    const r = n === 1 ? this.best[0]! : this.computeBestPgsize(va, oa, n);
    if (r < 0) return ENXIO;
    // Decision (not checked against a running kernel): a length that is not a whole number of the smallest
    // page while iova and paddr are aligned is refused up front with -EINVAL, nothing mapped.
    // (One page with r >= 0 means the smallest page is one granule: it always passes.)
    if (flags & MAP_F_LEN_TAIL || (n !== 1 && mod2(n, POW2[this.minPageLg2]!) !== 0)) return EINVAL;
    const leafLevel = this.levelOf[r]!;
    let wva = this.walkStart(va, n);
    if (this.dynamicTop && (wva < 0 || leafLevel > this.topLevel)) {
      const err = this.increaseTop(va, n, leafLevel);
      if (err) return err;
      wva = this.walkStart(va, n);
    }
    if (wva < 0) return ERANGE;
    const attrs = (prot & ATTR_PROT_MASK) | ATTR_PRESENT;
    if (n === 1 && r === 0) {
      // One page into existing tables: installed (0) or the slot is busy (EADDRINUSE).
      const err = this.mapOne(wva, oa * ATTR_SPAN + attrs);
      if (err >= 0) {
        this.mappedPages = err === 0 ? 1 : 0;
        return err;
      }
    }
    this.attrs = attrs;
    this.va = wva;
    this.oa = oa;
    this.end = wva + n;
    this.gather = gather;
    const err = this.mapLevel(this.topLevel, this.topArr, this.topBase, false);
    this.gather = undefined;
    this.mappedPages = this.oa - oa;
    return err;
  }

  /** Pages installed by the last mapRange (also on error). */
  mappedPages = 0;

  /**
   * Item `item` (a level-0 leaf) for walkable page `wva`: 0, EADDRINUSE, ENOMEM, or -1 to fall
   * back to the full walk (a larger leaf is in the way).
   */
  private mapOne(wva: number, item: number): number {
    // A walk-cache miss may end in new tables: usually a leaf table and its parent.
    if (!(wva < P31 && wva >>> this.leafShift === this.leafKey)) this.alloc.touchNext(2);
    if (!this.walkToLeafTable(wva)) return this.stopItem === 0 ? this.mapOneBelow(wva, item) : -1;
    const arr = this.leafArr;
    const p = this.leafBase + this.leafIndex(wva);
    if (arr[p] !== 0) return EADDRINUSE;
    arr[p] = item;
    return 0;
  }

  /**
   * The walk to `wva` stopped at an empty item: add one table per level below it, each linked
   * as soon as it is allocated, and install `item` in the level-0 one — what mapLevel does for
   * one page, in the same order (a failed allocation leaves the tables linked before it, as
   * there). Nothing is read from the new tables: they come zeroed from the slab, and a store to
   * a table just taken from the slab does not stall the walk the way a load does.
   */
  private mapOneBelow(wva: number, item: number): number {
    const chunks = this.alloc.chunks;
    const cs = this.alloc.chunkLg2;
    const ts = this.alloc.itemsLg2;
    let arr = this.stopArr;
    let p = this.stopPos;
    for (let level = this.stopLevel - 1; level >= 0; level--) {
      const id = this.newTable(level);
      if (id < 0) return ENOMEM;
      arr[p] = -(id + 1);
      arr = chunks[id >>> cs]!;
      p = ((id & ((1 << cs) - 1)) << ts) + this.index(level, wva);
    }
    arr[p] = item;
    return 0;
  }

  /**
   * Walk to the level-0 table holding walkable page `wva`, through the walk cache: true with
   * the table in leafArr/leafBase, false when the walk ends above level 0 (the item there, 0 or
   * a leaf, in stopItem / stopLevel).
   */
  private walkToLeafTable(wva: number): boolean {
    const low = wva < P31;
    if (low && wva >>> this.leafShift === this.leafKey) return true;
    const shl = this.idxShiftLow;
    const mk = this.idxMask;
    const chunks = this.alloc.chunks;
    const cs = this.alloc.chunkLg2;
    const cm = (1 << cs) - 1;
    const ts = this.alloc.itemsLg2;
    let arr = this.topArr;
    let base = this.topBase;
    for (let level = this.topLevel; level > 0; level--) {
      const p = base + (low ? (wva >>> shl[level]!) & mk[level]! : this.index(level, wva));
      const e = arr[p]!;
      if (e >= 0) {
        this.stopItem = e;
        this.stopLevel = level;
        this.stopArr = arr;
        this.stopPos = p;
        return false;
      }
      const id = -e - 1;
      arr = chunks[id >>> cs]!;
      base = (id & cm) << ts;
    }
    this.leafArr = arr;
    this.leafBase = base;
    this.leafKey = low ? wva >>> this.leafShift : -1;
    return true;
  }

  /** Level-0 index of walkable page `wva`. */
  private leafIndex(wva: number): number {
    return wva < P31 ? wva & this.leafMask : this.index(0, wva);
  }

  /** A table pointer is about to be removed: the walk cache may name a table below it. */
  private dropWalkCache(): void {
    this.leafKey = -1;
  }

  /**
   * Map the walk's range into the table at arr[base]. `fresh`: this walk allocated the table,
   * so every item it has not written yet is 0 (TableAllocator hands tables out zeroed) and is
   * written without being read first. A load from a table just taken from the slab misses the
   * cache and stalls the walk; a store does not.
   */
  private mapLevel(level: number, arr: Float64Array, base: number, fresh: boolean): number {
    const nItems = level === this.topLevel ? 1 << this.topItemsLg2 : 1 << this.items[level]!;
    const sh = this.shift[level]!;
    let idx = this.index(level, this.va);
    while (idx < nItems && this.va < this.end) {
      const left = this.end - this.va;
      const r = this.computeBestPgsize(this.va, this.oa, left);
      if (r < 0) return ENXIO;
      const leafLevel = this.levelOf[r]!;
      if (leafLevel === level) {
        const c = r - sh;
        let count = this.pgszCount(r, this.va, this.oa, left);
        const room = (nItems - idx) >>> c;
        if (count > room) count = room;
        const err = this.installRun(level, arr, base + idx, count, c, fresh);
        idx += count << c;
        if (err) return err;
        continue;
      }
      WARN_ON(leafLevel > level, "iommupt: leaf size above the walk level");
      const p = base + idx;
      let e = fresh ? 0 : arr[p]!;
      const below = e === 0;
      if (below) {
        const id = this.newTable(level - 1);
        if (id < 0) return ENOMEM;
        e = -(id + 1);
        arr[p] = e;
      } else if (e > 0) {
        return EADDRINUSE;
      }
      const id = -e - 1;
      const err = this.mapLevel(level - 1, this.alloc.chunk(id), this.alloc.offset(id), below);
      if (err) return err;
      idx++;
    }
    return 0;
  }

  /** Install `count` leaves of 2^c items each starting at arr[p] (`fresh`: see mapLevel). */
  private installRun(
    level: number,
    arr: Float64Array,
    p: number,
    count: number,
    c: number,
    fresh: boolean,
  ): number {
    const itemPages = POW2[this.shift[level]!]!;
    const inc = itemPages * ATTR_SPAN;
    let v = this.oa * ATTR_SPAN + (this.attrs | (c << ATTR_CONTIG_SHIFT));
    if (c === 0 && level === 0) {
      const stop = p + count;
      let q = p;
      if (fresh) {
        for (; q < stop; q++) {
          arr[q] = v;
          v += inc;
        }
      } else {
        for (; q < stop; q++) {
          if (arr[q] !== 0) break;
          arr[q] = v;
          v += inc;
        }
      }
      const done = q - p;
      this.va += done;
      this.oa += done;
      return q < stop ? EADDRINUSE : 0;
    }
    const step = 1 << c;
    const leafPages = itemPages * step;
    for (let i = 0; i < count; i++, p += step) {
      for (let j = 0; !fresh && j < step; j++) {
        if (arr[p + j] !== 0) {
          const err = this.clearContig(level, arr, p, step);
          if (err) return err;
          break;
        }
      }
      for (let j = 0; j < step; j++) {
        arr[p + j] = v;
        v += inc;
      }
      this.va += leafPages;
      this.oa += leafPages;
    }
    return 0;
  }

  /**
   * Make the `step` items at arr[p] free for a leaf: leaves there are -EADDRINUSE; empty lower
   * tables are unlinked and queued on the gather. @see clear_contig
   */
  private clearContig(level: number, arr: Float64Array, p: number, step: number): number {
    const itemPages = POW2[this.shift[level]!]!;
    const itemVa = this.va;
    for (let j = 0; j < step; j++) {
      const e = arr[p + j]!;
      if (e === 0) continue;
      if (e > 0) return EADDRINUSE;
      const ids: number[] = [];
      if (this.collectTables(-e - 1, level - 1, true, ids)) return EADDRINUSE;
      this.dropWalkCache();
      arr[p + j] = 0;
      this.queueFreed(ids, itemVa + j * itemPages, itemPages);
    }
    return 0;
  }

  /** Gather table `id` and every table below it into `out`; true if a leaf was seen and `check`. */
  collectTables(id: number, level: number, check: boolean, out: number[]): boolean {
    out.push(id);
    // A leaf table holds no table pointers: only a leaf check needs its entries.
    if (level === 0 && !check) return false;
    const arr = this.alloc.chunk(id);
    const base = this.alloc.offset(id);
    const n = 1 << this.items[level]!;
    for (let i = 0; i < n; i++) {
      const e = arr[base + i]!;
      if (e < 0) {
        if (this.collectTables(-e - 1, level - 1, check, out)) return true;
      } else if (e > 0 && check) {
        return true;
      }
    }
    return false;
  }

  /**
   * Unlink the table pointed to by item arr[p] of a level-`level` table; returns it and every
   * table below it, still allocated (the caller releases them after its flush).
   */
  detachTable(arr: Float64Array, p: number, level: number): number[] {
    const ids: number[] = [];
    this.collectTables(-arr[p]! - 1, level - 1, false, ids);
    this.dropWalkCache();
    arr[p] = 0;
    return ids;
  }

  /** Put freed tables of a walk range on the current gather. @see gather_range_pages */
  private queueFreed(ids: number[], va: number, pages: number): void {
    const gather = this.gather!;
    this.gatherRange(gather, va, pages);
    gather.addFreed(this, ids);
  }

  /** Add [va, va + pages) to the gather per the table's flush feature. @see gather_range_pages */
  private gatherRange(gather: IotlbGather, va: number, pages: number): void {
    // A queued (DMA-FQ) gather is completed by a flush-all: no range is collected.
    if (pages === 0 || this.flushMode === 0 || gather.queued) return;
    const k = this.gatherScale;
    if (this.flushMode === 2 && gather.isDisjointUnits(va * k, pages * k))
      this.syncGather?.(gather);
    gather.addUnits(va * k, pages * k);
  }

  /**
   * Unmap [va, va + n) granule pages (full 64-bit page numbers). Returns the pages unmapped:
   * whole entries, stopping at a hole or at a start inside an entry. The range removed and the
   * fully covered tables go on `gather`. @see unmap_range
   */
  unmapRange(va: number, n: number, gather: IotlbGather): number {
    if (n === 0) return 0;
    const wva = this.walkStart(va, n);
    if (wva < 0) return 0;
    let unmapped = n === 1 ? this.unmapOne(wva) : -1;
    if (unmapped < 0) {
      this.va = wva;
      this.end = wva + n;
      this.unmapped = 0;
      this.unmapLevel(this.topLevel, this.topArr, this.topBase);
      unmapped = this.unmapped;
    }
    // Decision: the gather gets [iova, iova + unmapped), the bytes removed (the 2026 kernel),
    // not the requested length (older kernels).
    this.gatherRange(gather, va, unmapped);
    if (this.freed.length !== 0) {
      gather.addFreed(this, this.freed);
      this.freed.length = 0;
    }
    return unmapped;
  }

  /** One granule page held by a single level-0 item: pages unmapped (0/1), -1 otherwise. */
  private unmapOne(wva: number): number {
    if (!this.walkToLeafTable(wva)) return this.stopItem === 0 ? 0 : -1;
    const arr = this.leafArr;
    const p = this.leafBase + this.leafIndex(wva);
    const e = arr[p]!;
    if (e === 0) return 0;
    if (attrsOf(e) & ATTR_CONTIG_MASK) return -1;
    arr[p] = 0;
    return 1;
  }

  private unmapLevel(level: number, arr: Float64Array, base: number): number {
    const nItems = level === this.topLevel ? 1 << this.topItemsLg2 : 1 << this.items[level]!;
    let idx = this.index(level, this.va);
    let p = base + idx;
    const first = arr[p]!;
    if (first > 0) {
      const c = (attrsOf(first) & ATTR_CONTIG_MASK) >>> ATTR_CONTIG_SHIFT;
      if (mod2(this.va, POW2[this.shift[level]! + c]!) !== 0) return EINVAL;
    }
    if (level === 0) {
      const want = Math.min(nItems - idx, this.end - this.va);
      const stop = p + want;
      const q = firstEmpty(arr, p, stop);
      let clearEnd = q;
      if (q === stop && q > p) {
        const c = (attrsOf(arr[q - 1]!) & ATTR_CONTIG_MASK) >>> ATTR_CONTIG_SHIFT;
        if (c !== 0) clearEnd = base + (((q - 1 - base) | ((1 << c) - 1)) + 1);
      }
      const cleared = clearEnd - p;
      if (cleared === 1) arr[p] = 0;
      else if (cleared > 1) arr.fill(0, p, clearEnd);
      this.unmapped += cleared;
      this.va += cleared;
      return q < stop ? EINVAL : 0;
    }
    const itemPages = POW2[this.shift[level]!]!;
    while (idx < nItems && this.va < this.end) {
      const e = arr[p]!;
      if (e === 0) return EINVAL;
      const itemStart = this.va - mod2(this.va, itemPages);
      if (e < 0) {
        const covered = this.va === itemStart && this.end - this.va >= itemPages;
        const id = -e - 1;
        const err = this.unmapLevel(level - 1, this.alloc.chunk(id), this.alloc.offset(id));
        if (err) return err;
        if (covered) {
          // The walk below cleared every item of the table (it stops with an error at a hole).
          this.dropWalkCache();
          arr[p] = 0;
          this.alloc.markZeroed(id);
          this.freed.push(id);
        }
        this.va = itemStart + itemPages;
        idx++;
        p++;
      } else {
        const c = (attrsOf(e) & ATTR_CONTIG_MASK) >>> ATTR_CONTIG_SHIFT;
        const step = 1 << c;
        if (step === 1) arr[p] = 0;
        else arr.fill(0, p, p + step);
        this.unmapped += itemPages * step;
        this.va = itemStart + itemPages * step;
        idx += step;
        p += step;
      }
    }
    return 0;
  }

  /** Output granule page of granule page `va` (full 64-bit), or -1 when not mapped. */
  iovaToPhys(va: number): number {
    const wva = !this.signExtend && va < this.vaLimit ? va : this.walkStart(va, 1);
    if (wva < 0) return -1;
    if (wva < P31 && wva >>> this.leafShift === this.leafKey) {
      // Walk-cache hit, kept small enough to inline into a per-page caller.
      const e = this.leafArr[this.leafBase + (wva & this.leafMask)]!;
      return e > 0 ? pfnOf(e) : -1;
    }
    return this.iovaToPhysWalk(wva);
  }

  private iovaToPhysWalk(wva: number): number {
    if (this.walkToLeafTable(wva)) {
      // Each item of a contiguous entry holds its own output page.
      const e = this.leafArr[this.leafBase + this.leafIndex(wva)]!;
      return e > 0 ? pfnOf(e) : -1;
    }
    const e = this.stopItem;
    if (e === 0) return -1;
    return pfnOf(e) + mod2(wva, POW2[this.shift[this.stopLevel]!]!);
  }

  /** Find the leaf item holding `va` (left in foundArr/foundPos); false when unmapped. */
  private findItem(va: number): boolean {
    const wva = this.walkStart(va, 1);
    if (wva < 0) return false;
    let arr = this.topArr;
    let base = this.topBase;
    for (let level = this.topLevel; ; level--) {
      const p = base + this.index(level, wva);
      const e = arr[p]!;
      if (e > 0) {
        this.foundArr = arr;
        this.foundPos = p;
        return true;
      }
      if (e === 0 || level === 0) return false;
      const id = -e - 1;
      arr = this.alloc.chunk(id);
      base = this.alloc.offset(id);
    }
  }

  private foundArr: Float64Array = new Float64Array(0);
  private foundPos = 0;

  /** IOMMU_* prot of the leaf at `va`, or -1 when not mapped. */
  protAt(va: number): number {
    if (!this.findItem(va)) return -1;
    return attrsOf(this.foundArr[this.foundPos]!) & ATTR_PROT_MASK;
  }

  /** Set the dirty bit of the item holding `va` (what a DMA write does). @see set_dirty */
  setDirty(va: number): number {
    if (!this.format.dirtyTracking) return EOPNOTSUPP;
    if (!this.findItem(va)) return ENOENT;
    const e = this.foundArr[this.foundPos]!;
    if (!(attrsOf(e) & ATTR_DIRTY)) this.foundArr[this.foundPos] = e + ATTR_DIRTY;
    return 0;
  }

  /**
   * A device write over [va, va + n): set the dirty bit of every item it goes through, in one
   * walk (holes are skipped; the caller checked the range translates).
   */
  setDirtyRange(va: number, n: number): number {
    if (!this.format.dirtyTracking) return EOPNOTSUPP;
    const ok = this.visitLeaves(va, n, (_level, arr, _entryPos, _items, fromPos, toPos) => {
      for (let p = fromPos; p < toPos; p++) {
        const e = arr[p]!;
        if (!(attrsOf(e) & ATTR_DIRTY)) arr[p] = e + ATTR_DIRTY;
      }
    });
    return ok ? 0 : ERANGE;
  }

  /**
   * Visit every leaf entry overlapping [va, va + n) (full 64-bit granule pages), in IOVA order,
   * skipping holes. Returns false if the range is outside the table.
   */
  visitLeaves(va: number, n: number, fn: PtLeafVisitor): boolean {
    const wva = this.walkStart(va, n);
    if (wva < 0) return false;
    this.visitLevel(this.topLevel, this.topArr, this.topBase, wva, wva + n, wva, fn);
    return true;
  }

  private visitLevel(
    level: number,
    arr: Float64Array,
    base: number,
    from: number,
    to: number,
    tableVa: number,
    fn: PtLeafVisitor,
  ): void {
    const nItems = level === this.topLevel ? 1 << this.topItemsLg2 : 1 << this.items[level]!;
    const itemPages = POW2[this.shift[level]!]!;
    const tableStart = tableVa - mod2(tableVa, itemPages * nItems);
    // Items from here on start at or past `to` (an exact quotient: itemPages is a power of two).
    const toIdx = Math.min(nItems, Math.ceil((to - tableStart) / itemPages));
    let idx = this.index(level, from);
    let va = from;
    while (idx < nItems && va < to) {
      const p = base + idx;
      const e = arr[p]!;
      const itemStart = tableStart + idx * itemPages;
      if (e === 0) {
        // A sparse table is mostly holes: pass a run of them in one scan.
        idx = firstPresent(arr, p + 1, base + toIdx) - base;
        va = tableStart + idx * itemPages;
        continue;
      }
      if (e < 0) {
        const id = -e - 1;
        this.visitLevel(
          level - 1,
          this.alloc.chunk(id),
          this.alloc.offset(id),
          va,
          to,
          itemStart,
          fn,
        );
        idx++;
        va = itemStart + itemPages;
        continue;
      }
      const c = (attrsOf(e) & ATTR_CONTIG_MASK) >>> ATTR_CONTIG_SHIFT;
      const step = 1 << c;
      const entryIdx = idx & ~(step - 1);
      const endIdx = Math.min(
        entryIdx + step,
        nItems,
        Math.floor((to - 1 - tableStart) / itemPages) + 1,
      );
      fn(level, arr, base + entryIdx, step, p, base + endIdx, va);
      va = tableStart + (entryIdx + step) * itemPages;
      idx = entryIdx + step;
    }
  }

  /**
   * Report dirty leaves in [va, va + n) through `record(va, pages)` and, unless
   * IOMMU_DIRTY_NO_CLEAR, clear their dirty bits and add the range to `gather`.
   *
   * How much a dirty leaf reports is record_dirty's arithmetic, kept as is: a single item
   * reports the whole item, but a contiguous entry reports from the walk's position up to
   * `min(log2_set_mod_max(index, num_contig_lg2), end_index)` items — the index of the entry's
   * LAST item, not one past it — so a contiguous entry reports one item fewer than it spans
   * (none when the walk enters at its last item). The iommufd selftest relies on this: with
   * IOMMU_OPTION_HUGE_PAGES = 0 the DEFAULT mock (2 KiB granule) gets every 4 KiB PAGE_SIZE
   * map as one 2-item contiguous leaf (map_pages takes pt_compute_best_pgsize over the domain
   * bitmap, which holds 4 KiB, not the pgsize the core passes), and a set_dirty on its first
   * item then reads back as that one 2 KiB bit (iommufd_dirty_tracking.get_dirty_bitmap).
   * @see read_and_clear_dirty, record_dirty in drivers/iommu/generic_pt/iommu_pt.h;
   *      log2_set_mod_max_t in drivers/iommu/generic_pt/pt_log2.h
   */
  readAndClearDirty(
    va: number,
    n: number,
    flags: number,
    record: ((va: number, pages: number) => void) | undefined,
    gather: IotlbGather,
  ): number {
    if (!this.format.dirtyTracking) return EOPNOTSUPP;
    if (n === 0) return EINVAL;
    const wva = this.walkStart(va, n);
    if (wva < 0) return ERANGE;
    const unmaskedBase = va - wva;
    const k = POW2[this.granuleLg2 - GATHER_UNIT_LG2]!;
    const ok = this.visitLeaves(va, n, (level, arr, entryPos, items, fromPos, toPos, at) => {
      let dirty = false;
      for (let i = 0; i < items; i++) {
        if (attrsOf(arr[entryPos + i]!) & ATTR_DIRTY) {
          dirty = true;
          break;
        }
      }
      if (!dirty) return;
      const itemPages = POW2[this.shift[level]!]!;
      const lastPos = items === 1 ? toPos : Math.min(entryPos + items - 1, toPos);
      const pages = (lastPos - fromPos) * itemPages;
      const fullVa = at + unmaskedBase;
      if (pages !== 0) record?.(fullVa, pages);
      if (!(flags & IOMMU_DIRTY_NO_CLEAR)) {
        for (let i = 0; i < items; i++) {
          const e = arr[entryPos + i]!;
          if (attrsOf(e) & ATTR_DIRTY) arr[entryPos + i] = e - ATTR_DIRTY;
        }
        if (pages !== 0) gather.addUnits(fullVa * k, pages * k);
      }
    });
    WARN_ON(!ok, "iommupt: dirty range check changed under the walk");
    return 0;
  }

  /**
   * Runs of physically contiguous output for [va, va + n): `fn(va, oa, pages, prot)` per run
   * (granule pages, full 64-bit IOVA), holes skipped. Returns the pages mapped in the range.
   */
  readRuns(
    va: number,
    n: number,
    fn: (va: number, oa: number, pages: number, prot: number) => void,
  ): number {
    // A range reaching past the table's current reach reads the part inside it.
    n = this.clampToReach(va, n);
    if (n <= 0) return 0;
    const wva = this.walkStart(va, n);
    if (wva < 0) return 0;
    const unmaskedBase = va - wva;
    let runVa = -1;
    let runOa = 0;
    let runPages = 0;
    let runProt = 0;
    let total = 0;
    this.visitLevel(
      this.topLevel,
      this.topArr,
      this.topBase,
      wva,
      wva + n,
      wva,
      (level, arr, _e, _i, fromPos, toPos, at) => {
        const sh = this.shift[level]!;
        const first = arr[fromPos]!;
        const prot = attrsOf(first) & ATTR_PROT_MASK;
        const oa = pfnOf(first) + (sh === 0 ? 0 : mod2(at, POW2[sh]!));
        const pages =
          Math.min(wva + n, (toPos - fromPos) * POW2[sh]! + (at - mod2(at, POW2[sh]!))) - at;
        total += pages;
        if (runVa >= 0 && runVa + runPages === at && runOa + runPages === oa && runProt === prot) {
          runPages += pages;
          return;
        }
        if (runVa >= 0) fn(runVa + unmaskedBase, runOa, runPages, runProt);
        runVa = at;
        runOa = oa;
        runPages = pages;
        runProt = prot;
      },
    );
    if (runVa >= 0) fn(runVa + unmaskedBase, runOa, runPages, runProt);
    return total;
  }

  /** Tables per level and leaf entries by size, for the playground. */
  occupancy(): PtLevelOccupancy[] {
    const out: PtLevelOccupancy[] = [];
    for (let level = 0; level <= this.topLevel; level++) {
      out.push({ level, tables: this.alloc.perLevel[level]!, leavesBySizeLg2: {} });
    }
    this.forEachTable((level, arr, base, nItems) => {
      const counts = out[level]!.leavesBySizeLg2 as Record<number, number>;
      for (let i = 0; i < nItems; i++) {
        const e = arr[base + i]!;
        if (e <= 0) continue;
        const c = (attrsOf(e) & ATTR_CONTIG_MASK) >>> ATTR_CONTIG_SHIFT;
        if (i % (1 << c) !== 0) continue;
        const lg2 = this.granuleLg2 + this.shift[level]! + c;
        counts[lg2] = (counts[lg2] ?? 0) + 1;
      }
    });
    return out;
  }

  /** Depth-first over every table: fn(level, arr, base, nItems, tablePa). */
  forEachTable(
    fn: (level: number, arr: Float64Array, base: number, nItems: number, pa: bigint) => void,
  ): void {
    const walk = (
      level: number,
      arr: Float64Array,
      base: number,
      nItems: number,
      pa: bigint,
    ): void => {
      fn(level, arr, base, nItems, pa);
      for (let i = 0; i < nItems; i++) {
        const e = arr[base + i]!;
        if (e < 0 && level > 0) {
          const id = -e - 1;
          walk(
            level - 1,
            this.alloc.chunk(id),
            this.alloc.offset(id),
            1 << this.items[level - 1]!,
            this.tablePa(id),
          );
        }
      }
    };
    walk(this.topLevel, this.topArr, this.topBase, 1 << this.topItemsLg2, this.topPa());
  }

  /** The fake physical address of table `id` (dumps, table pointers). */
  tablePa(id: number): bigint {
    return TABLE_PA_BASE + BigInt(id) * BigInt(this.alloc.tableBytes);
  }

  topPa(): bigint {
    return this.topId >= 0
      ? this.tablePa(this.topId)
      : TABLE_PA_BASE - BigInt(8 << this.topItemsLg2);
  }

  /** The exact hardware image of item `i` of a table (0n when empty). */
  itemImage(level: number, arr: Float64Array, base: number, i: number): bigint {
    const e = arr[base + i]!;
    if (e === 0) return 0n;
    if (e < 0) return this.format.encodeTable(this.tablePa(-e - 1), level, this.features);
    const attrs = attrsOf(e);
    const c = (attrs & ATTR_CONTIG_MASK) >>> ATTR_CONTIG_SHIFT;
    const itemLg2 = this.granuleLg2 + this.shift[level]!;
    const pfn = pfnOf(e);
    const basePfn = pfn - (i % (1 << c)) * POW2[this.shift[level]!]!;
    return this.format.encodeLeaf({
      oa: BigInt(basePfn) << BigInt(this.granuleLg2),
      sizeLg2: itemLg2 + c,
      level,
      itemLg2,
      prot: attrs & ATTR_PROT_MASK,
      dirty: (attrs & ATTR_DIRTY) !== 0,
      features: this.features,
    });
  }

  /** Return freed tables to the slab (after the IOTLB flush). */
  releaseTables(ids: readonly number[]): void {
    for (const id of ids) this.alloc.free(id);
  }

  /** Free every table, the top included. @see deinit */
  destroy(): void {
    this.dropWalkCache();
    const ids: number[] = [];
    if (this.topId >= 0) this.collectTables(this.topId, this.topLevel, false, ids);
    else {
      for (let i = 0; i < 1 << this.topItemsLg2; i++) {
        const e = this.topArr[i]!;
        if (e < 0) this.collectTables(-e - 1, this.topLevel - 1, false, ids);
      }
      this.alloc.perLevel[this.topLevel]!--;
    }
    for (const id of ids) this.alloc.free(id);
    this.alloc.dispose();
  }

  /** Live tables (including the top) and their bytes. */
  get tableCount(): number {
    return this.alloc.live + (this.topId < 0 ? 1 : 0);
  }

  get tableBytes(): number {
    return this.alloc.live * this.alloc.tableBytes + (this.topId < 0 ? 8 << this.topItemsLg2 : 0);
  }
}
