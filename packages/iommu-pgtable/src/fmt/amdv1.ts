/**
 * AMD IOMMU v1 host page table, and its iommufd-selftest variant (the "mock" format: the same
 * layout with a 2 KiB granule, 56-bit VA, 51-bit OA, top level 4).
 *
 * Every power-of-two page size from an item up to 256 items is a leaf at each level (the top
 * level holds no leaves), except 512 GiB (a hardware erratum). Sizes above one item are
 * "contiguous" entries: every replicated item holds the same word, NextLevel = 7 and the size
 * encoded as a run of ones in the low OA bits. Table entries always carry IR|IW; permissions
 * come from the leaf.
 *
 * SME is modelled as inactive (sme_me_mask = 0), so ENCRYPT_TABLES changes no bit.
 *
 * @see drivers/iommu/generic_pt/fmt/amdv1.h, drivers/iommu/generic_pt/fmt/iommu_mock.c
 */
import { EINVAL } from "@x/kernel";
import { IOMMU_READ, IOMMU_WRITE } from "../iommu-types.js";
import {
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_FMT_START,
  type PtFormat,
  type PtFormatInit,
  type PtGeometry,
  type PtLeafImage,
  bit,
  genmask,
  hasFeature,
} from "../pt-format.js";

export const PT_FEAT_AMDV1_ENCRYPT_TABLES = PT_FEAT_FMT_START;
export const PT_FEAT_AMDV1_FORCE_COHERENCE = PT_FEAT_FMT_START + 1;

const AMDV1PT_FMT_PR = bit(0);
const AMDV1PT_FMT_D = bit(6);
export const AMDV1PT_FMT_OA = genmask(51, 12);
const AMDV1PT_FMT_FC = bit(60);
const AMDV1PT_FMT_IR = bit(61);
const AMDV1PT_FMT_IW = bit(62);
const NL_SHIFT = 9n;
const OA_SHIFT = 12n;
const AMDV1PT_FMT_NL_SIZE = 7n;
const SZ_512G_LG2 = 39;

function makeAmdv1(
  name: string,
  granuleLg2: number,
  maxVaLg2: number,
  maxOaLg2: number,
  maxTopLevel: number,
): PtFormat {
  const g = BigInt(granuleLg2);
  const numItemsLg2 = (level: number): number => (level === 5 ? 7 : 9);
  return {
    name,
    granuleLg2,
    maxTopLevel,
    maxVaLg2,
    maxOaLg2,
    numItemsLg2,
    contigMask(level: number): number {
      if (level >= maxTopLevel) return 0;
      const isz = granuleLg2 + 9 * level;
      let mask = 0;
      for (let k = 0; k < numItemsLg2(level) && isz + k <= 51; k++) {
        if (isz + k !== SZ_512G_LG2) mask |= 1 << k;
      }
      return mask;
    },
    dirtyTracking: true,
    init(cfg: PtFormatInit): PtGeometry | number {
      const start = cfg.startingLevel ?? 2;
      if (start === 0 || start > maxTopLevel) return -EINVAL;
      let va = maxVaLg2;
      if (!hasFeature(cfg.features, PT_FEAT_DYNAMIC_TOP) && start !== maxTopLevel) {
        va = granuleLg2 + 9 * (start + 1);
      }
      return {
        topLevel: start,
        maxVaLg2: Math.min(va, cfg.hwMaxVaLg2 ?? 64),
        maxOaLg2: Math.min(maxOaLg2, cfg.hwMaxOaLg2 ?? 64),
      };
    },
    checkProt: () => 0,
    canRead: (prot) => (prot & IOMMU_READ) !== 0,
    canWrite: (prot) => (prot & IOMMU_WRITE) !== 0,
    encodeLeaf(leaf: PtLeafImage): bigint {
      let e = AMDV1PT_FMT_PR;
      if (hasFeature(leaf.features, PT_FEAT_AMDV1_FORCE_COHERENCE)) e |= AMDV1PT_FMT_FC;
      if (leaf.prot & IOMMU_READ) e |= AMDV1PT_FMT_IR;
      if (leaf.prot & IOMMU_WRITE) e |= AMDV1PT_FMT_IW;
      if (leaf.dirty) e |= AMDV1PT_FMT_D;
      let oaField = leaf.oa >> g;
      if (leaf.sizeLg2 !== leaf.itemLg2) {
        e |= AMDV1PT_FMT_NL_SIZE << NL_SHIFT;
        oaField |= (1n << BigInt(leaf.sizeLg2 - granuleLg2 - 1)) - 1n;
      }
      return e | ((oaField << OA_SHIFT) & AMDV1PT_FMT_OA);
    },
    encodeTable(tablePa: bigint, level: number): bigint {
      return (
        AMDV1PT_FMT_PR |
        (BigInt(level) << NL_SHIFT) |
        (((tablePa >> g) << OA_SHIFT) & AMDV1PT_FMT_OA) |
        AMDV1PT_FMT_IR |
        AMDV1PT_FMT_IW
      );
    },
  };
}

/** The real AMDv1 format: 4 KiB granule, 64-bit VA, 52-bit OA, top level up to 5. */
export const amdv1Format: PtFormat = makeAmdv1("amdv1", 12, 64, 52, 5);

/** The iommufd selftest variant (AMDV1_IOMMUFD_SELFTEST): 2 KiB granule. */
export const amdv1MockFormat: PtFormat = makeAmdv1("amdv1-mock", 11, 56, 51, 4);
