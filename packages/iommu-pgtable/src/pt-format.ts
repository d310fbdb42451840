/**
 * A page-table format as data: what the one generic walker (iommu-pt.ts) needs to know about a
 * hardware layout, plus the encoders that turn the walker's compact items back into the exact
 * 64-bit PTE images the hardware would hold (used only for dumps and golden tests).
 *
 * Levels are numbered like generic_pt: level 0 is the leaf-only table, the top level is
 * inclusive. An item at level L covers 2^(granule + shift(L)) bytes where shift(L) is the sum
 * of the item counts (lg2) of the levels below. A leaf may span 2^k items of its level (a
 * contiguous entry); `contigMask(level)` has bit k set when that is a legal leaf size.
 *
 * @see drivers/iommu/generic_pt/pt_defs.h, pt_fmt_defaults.h
 */

/** PT_FEAT_* bit numbers (generic ones; format ones start at PT_FEAT_FMT_START). */
export const PT_FEAT_DYNAMIC_TOP = 2;
export const PT_FEAT_SIGN_EXTEND = 3;
export const PT_FEAT_FLUSH_RANGE = 4;
export const PT_FEAT_FLUSH_RANGE_NO_GAPS = 5;
export const PT_FEAT_FMT_START = 6;

/** One leaf as the encoder sees it. */
export interface PtLeafImage {
  /** Output address of the first byte of the whole (contiguous) entry. */
  readonly oa: bigint;
  /** log2 bytes of the whole entry. */
  readonly sizeLg2: number;
  readonly level: number;
  /** log2 bytes of one item at this level. */
  readonly itemLg2: number;
  /** IOMMU_* prot the leaf was mapped with. */
  readonly prot: number;
  /** This item's hardware dirty bit. */
  readonly dirty: boolean;
  /** PT_FEAT_* mask of the table. */
  readonly features: number;
}

/** Result of a format's init: where the top is and how wide the table is. */
export interface PtGeometry {
  readonly topLevel: number;
  readonly maxVaLg2: number;
  readonly maxOaLg2: number;
  /** Items of the top table when it differs from numItemsLg2(top) (ARM stage-2 concatenation). */
  readonly topItemsLg2?: number;
}

export interface PtFormatInit {
  readonly features: number;
  readonly startingLevel?: number;
  readonly hwMaxVaLg2?: number;
  readonly hwMaxOaLg2?: number;
}

export interface PtFormat {
  /** Short name used in dumps (e.g. "amdv1", "vtdss", "arm-lpae-s1-4k"). */
  readonly name: string;
  /** PT_GRANULE_LG2SZ: log2 bytes of the smallest page. */
  readonly granuleLg2: number;
  /** PT_MAX_TOP_LEVEL. */
  readonly maxTopLevel: number;
  /** PT_MAX_VA_ADDRESS_LG2 / PT_MAX_OUTPUT_ADDRESS_LG2. */
  readonly maxVaLg2: number;
  readonly maxOaLg2: number;
  /** log2 items of a table at `level`. */
  numItemsLg2(level: number): number;
  /** Legal contiguous item counts of a leaf at `level` (bit k = 2^k items); 0 = no leaves. */
  contigMask(level: number): number;
  /** True if read_and_clear_dirty / set_dirty exist for this format. */
  readonly dirtyTracking: boolean;
  /** Top level and widths for a configuration; an errno (negative) when it is invalid. */
  init(cfg: PtFormatInit): PtGeometry | number;
  /** pt_iommu_set_prot checks beyond READ|WRITE: 0 or an errno. */
  checkProt(prot: number, features: number): number;
  /** Device access rights a leaf with `prot` grants. */
  canRead(prot: number): boolean;
  canWrite(prot: number): boolean;
  /** The hardware PTE image of one item of a leaf. */
  encodeLeaf(leaf: PtLeafImage): bigint;
  /** The hardware PTE image of a table pointer at `level` (pointing to a level-1 table). */
  encodeTable(tablePa: bigint, level: number, features: number): bigint;
}

export function hasFeature(features: number, bit: number): boolean {
  return (features & (1 << bit)) !== 0;
}

/** Bits [lo, hi] set, as a bigint. */
export function genmask(hi: number, lo: number): bigint {
  return ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);
}

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}
