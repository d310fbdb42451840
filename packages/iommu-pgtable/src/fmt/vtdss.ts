/**
 * Intel VT-d second-stage table (3-, 4- or 5-level, chosen from the hardware VA width).
 * 4 KiB, 2 MiB and 1 GiB leaves, no contiguous entries, no present bit: R|W is what makes an
 * entry present. Dirty bit 9 (SSADS). FORCE_WRITEABLE (errata ERRATA_772415_SPR17, nesting
 * parents) refuses read-only maps with -EINVAL.
 *
 * @see drivers/iommu/generic_pt/fmt/vtdss.h
 */
import { EINVAL, EOPNOTSUPP } from "@x/kernel";
import { IOMMU_READ, IOMMU_WRITE } from "../iommu-types.js";
import {
  PT_FEAT_FMT_START,
  type PtFormat,
  type PtFormatInit,
  type PtLeafImage,
  bit,
  genmask,
  hasFeature,
} from "../pt-format.js";
import { x86RadixShape } from "./x86-64.js";

export const PT_FEAT_VTDSS_FORCE_COHERENCE = PT_FEAT_FMT_START;
export const PT_FEAT_VTDSS_FORCE_WRITEABLE = PT_FEAT_FMT_START + 1;

const VTDSS_FMT_R = bit(0);
const VTDSS_FMT_W = bit(1);
const VTDSS_FMT_PS = bit(7);
const VTDSS_FMT_D = bit(9);
const VTDSS_FMT_SNP = bit(11);
const VTDSS_FMT_OA = genmask(51, 12);

export const vtdssFormat: PtFormat = {
  name: "vtdss",
  ...x86RadixShape,
  dirtyTracking: true,
  init(cfg: PtFormatInit) {
    const va = cfg.hwMaxVaLg2 ?? 48;
    let top: number;
    if (va > 57) return -EOPNOTSUPP;
    else if (va > 48) top = 4;
    else if (va > 39) top = 3;
    else if (va > 30) top = 2;
    else return -EOPNOTSUPP;
    return { topLevel: top, maxVaLg2: va, maxOaLg2: Math.min(52, cfg.hwMaxOaLg2 ?? 52) };
  },
  checkProt(prot, features) {
    if (!(prot & (IOMMU_READ | IOMMU_WRITE))) return EINVAL;
    if (hasFeature(features, PT_FEAT_VTDSS_FORCE_WRITEABLE) && !(prot & IOMMU_WRITE)) return EINVAL;
    return 0;
  },
  canRead: (prot) => (prot & IOMMU_READ) !== 0,
  canWrite: (prot) => (prot & IOMMU_WRITE) !== 0,
  encodeLeaf(leaf: PtLeafImage): bigint {
    let e = leaf.oa & VTDSS_FMT_OA;
    if (leaf.prot & IOMMU_READ) e |= VTDSS_FMT_R;
    if (leaf.prot & IOMMU_WRITE) e |= VTDSS_FMT_W;
    if (hasFeature(leaf.features, PT_FEAT_VTDSS_FORCE_COHERENCE)) e |= VTDSS_FMT_SNP;
    if (leaf.dirty) e |= VTDSS_FMT_D;
    if (leaf.level !== 0) e |= VTDSS_FMT_PS;
    return e;
  },
  encodeTable(tablePa: bigint): bigint {
    return VTDSS_FMT_R | VTDSS_FMT_W | (tablePa & VTDSS_FMT_OA);
  },
};
