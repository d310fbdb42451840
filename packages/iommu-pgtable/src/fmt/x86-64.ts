/**
 * The x86 64-bit page table (4- or 5-level), used by AMD IOMMU v2 / VT-d first stage / SVA.
 * 4 KiB, 2 MiB (PS) and 1 GiB (PS) leaves, no contiguous entries. With SIGN_EXTEND the VA has
 * a lower and an upper half; without it (AMD PASID 0) it is a plain 47/56-bit space. Leaves
 * mapped writable carry RW and D from the start; the format has no dirty tracking ops.
 *
 * @see drivers/iommu/generic_pt/fmt/x86_64.h
 */
import { EINVAL } from "@x/kernel";
import { IOMMU_WRITE } from "../iommu-types.js";
import { type PtFormat, type PtFormatInit, type PtLeafImage, bit, genmask } from "../pt-format.js";

const X86_64_FMT_P = bit(0);
const X86_64_FMT_RW = bit(1);
const X86_64_FMT_U = bit(2);
const X86_64_FMT_A = bit(5);
const X86_64_FMT_D = bit(6);
const X86_64_FMT_PS = bit(7);
const X86_64_FMT_OA = genmask(51, 12);

/**
 * The radix shape x86 page tables share (also VT-d second stage): 4 KiB granule, 512 items a
 * table, up to five levels over a 57-bit VA and a 52-bit OA, single-item leaves at levels 0-2.
 */
export const x86RadixShape = {
  granuleLg2: 12,
  maxTopLevel: 4,
  maxVaLg2: 57,
  maxOaLg2: 52,
  numItemsLg2: () => 9,
  contigMask: (level: number) => (level <= 2 ? 1 : 0),
} satisfies Partial<PtFormat>;

export const x86_64Format: PtFormat = {
  name: "x86_64",
  ...x86RadixShape,
  dirtyTracking: false,
  init(cfg: PtFormatInit) {
    const va = cfg.hwMaxVaLg2 ?? 48;
    if (va < 31 || va > 57) return -EINVAL;
    return {
      topLevel: Math.floor((va - 31) / 9) + 2,
      maxVaLg2: va,
      maxOaLg2: Math.min(52, cfg.hwMaxOaLg2 ?? 52),
    };
  },
  checkProt: () => 0,
  canRead: () => true,
  canWrite: (prot) => (prot & IOMMU_WRITE) !== 0,
  encodeLeaf(leaf: PtLeafImage): bigint {
    let e =
      X86_64_FMT_P | X86_64_FMT_U | X86_64_FMT_A | (((leaf.oa >> 12n) << 12n) & X86_64_FMT_OA);
    if (leaf.prot & IOMMU_WRITE) e |= X86_64_FMT_RW | X86_64_FMT_D;
    if (leaf.level !== 0) e |= X86_64_FMT_PS;
    return e;
  },
  encodeTable(tablePa: bigint): bigint {
    return X86_64_FMT_P | X86_64_FMT_RW | X86_64_FMT_U | X86_64_FMT_A | (tablePa & X86_64_FMT_OA);
  },
};
