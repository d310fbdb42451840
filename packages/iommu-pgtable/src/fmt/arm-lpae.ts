/**
 * ARM LPAE (VMSAv8-64) stage 1 and stage 2 tables with 4 KiB, 16 KiB or 64 KiB granules, as
 * io-pgtable-arm builds them: tables of granule/8 items, up to 4 levels, the start level from
 * the input size, and for stage 2 up to 16 concatenated top tables instead of a 4th level.
 * Leaves: 4K → 4K|2M|1G; 16K → 16K|32M; 64K → 64K|512M (+4T when OAS > 48). No contiguous
 * hint (io-pgtable-arm does not use it). With a 64 KiB granule and a 52-bit OA, PA bits 51:48
 * live in PTE bits 15:12.
 *
 * @see drivers/iommu/io-pgtable-arm.c
 */
import { EINVAL } from "@x/kernel";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "../iommu-types.js";
import { type PtFormat, type PtFormatInit, type PtLeafImage, bit, genmask } from "../pt-format.js";

const ARM_LPAE_PTE_TYPE_BLOCK = 1n;
const ARM_LPAE_PTE_TYPE_TABLE = 3n;
const ARM_LPAE_PTE_TYPE_PAGE = 3n;
const ARM_LPAE_PTE_XN = 3n << 53n;
const ARM_LPAE_PTE_AF = bit(10);
const ARM_LPAE_PTE_SH_OS = 2n << 8n;
const ARM_LPAE_PTE_SH_IS = 3n << 8n;
const ARM_LPAE_PTE_nG = bit(11);
const ARM_LPAE_PTE_AP_UNPRIV = 1n << 6n;
const ARM_LPAE_PTE_AP_RDONLY = 2n << 6n;
const ARM_LPAE_PTE_ATTRINDX_SHIFT = 2n;
const ARM_LPAE_PTE_HAP_READ = 1n << 6n;
const ARM_LPAE_PTE_HAP_WRITE = 2n << 6n;
const ARM_LPAE_PTE_MEMATTR_OIWB = 0xfn << 2n;
const ARM_LPAE_PTE_MEMATTR_NC = 0x5n << 2n;
const ARM_LPAE_PTE_MEMATTR_DEV = 0x1n << 2n;
const ARM_LPAE_MAIR_ATTR_IDX_CACHE = 1n;
const ARM_LPAE_MAIR_ATTR_IDX_DEV = 2n;
const ARM_LPAE_PTE_ADDR_MASK = genmask(47, 12);
/** Concatenated stage-2 top tables allowed. */
const ARM_LPAE_S2_MAX_CONCAT_PAGES = 16;

interface ArmLpaeParams {
  readonly stage: 1 | 2;
  /** 12 (4K), 14 (16K) or 16 (64K). */
  readonly granuleLg2: 12 | 14 | 16;
}

/** Output address bits of a PTE (with the 52-bit PA packing of the 64K granule). */
function paToPte(pa: bigint, granuleLg2: number): bigint {
  if (granuleLg2 < 16) return pa & ARM_LPAE_PTE_ADDR_MASK;
  return (pa | (pa >> 36n)) & ARM_LPAE_PTE_ADDR_MASK;
}

/** The page sizes io-pgtable-arm offers for a granule (arm_lpae_restrict_pgsizes). */
export function armLpaePgsizeBitmap(granuleLg2: 12 | 14 | 16, oas: number): bigint {
  if (granuleLg2 === 12) return (1n << 12n) | (1n << 21n) | (1n << 30n);
  if (granuleLg2 === 14) return (1n << 14n) | (1n << 25n);
  return (1n << 16n) | (1n << 29n) | (oas > 48 ? 1n << 42n : 0n);
}

export function armLpaeFormat(params: ArmLpaeParams): PtFormat {
  const { stage, granuleLg2: g } = params;
  const bitsPerLevel = g - 3;
  const kb = 1 << (g - 10);
  return {
    name: `arm-lpae-s${stage}-${kb}k`,
    granuleLg2: g,
    maxTopLevel: 3,
    maxVaLg2: 48,
    maxOaLg2: g === 16 ? 52 : 48,
    numItemsLg2() {
      return bitsPerLevel;
    },
    contigMask(level) {
      if (level === 0 || level === 1) return 1;
      // 1G blocks with 4K; 4T blocks with 64K (the driver drops them unless OAS > 48).
      if (level === 2 && (g === 12 || g === 16)) return 1;
      return 0;
    },
    dirtyTracking: false,
    init(cfg: PtFormatInit) {
      const ias = cfg.hwMaxVaLg2 ?? 48;
      const oas = cfg.hwMaxOaLg2 ?? 48;
      if (ias > 48 || ias <= g || oas > (g === 16 ? 52 : 48)) return -EINVAL;
      let levels = Math.ceil((ias - g) / bitsPerLevel);
      let pgdBits = ias - g - bitsPerLevel * (levels - 1);
      if (stage === 2 && levels === 4 && 1 << pgdBits <= ARM_LPAE_S2_MAX_CONCAT_PAGES) {
        pgdBits += bitsPerLevel;
        levels--;
      }
      return { topLevel: levels - 1, maxVaLg2: ias, maxOaLg2: oas, topItemsLg2: pgdBits };
    },
    checkProt() {
      return 0;
    },
    canRead(prot) {
      return stage === 1 || (prot & IOMMU_READ) !== 0;
    },
    canWrite(prot) {
      return (prot & IOMMU_WRITE) !== 0;
    },
    encodeLeaf(leaf: PtLeafImage): bigint {
      const prot = leaf.prot;
      let pte: bigint;
      if (stage === 1) {
        pte = ARM_LPAE_PTE_nG;
        if (!(prot & IOMMU_WRITE) && prot & IOMMU_READ) pte |= ARM_LPAE_PTE_AP_RDONLY;
        if (!(prot & IOMMU_PRIV)) pte |= ARM_LPAE_PTE_AP_UNPRIV;
        if (prot & IOMMU_MMIO) pte |= ARM_LPAE_MAIR_ATTR_IDX_DEV << ARM_LPAE_PTE_ATTRINDX_SHIFT;
        else if (prot & IOMMU_CACHE)
          pte |= ARM_LPAE_MAIR_ATTR_IDX_CACHE << ARM_LPAE_PTE_ATTRINDX_SHIFT;
      } else {
        pte = 0n;
        if (prot & IOMMU_READ) pte |= ARM_LPAE_PTE_HAP_READ;
        if (prot & IOMMU_WRITE) pte |= ARM_LPAE_PTE_HAP_WRITE;
        if (prot & IOMMU_MMIO) pte |= ARM_LPAE_PTE_MEMATTR_DEV;
        else if (prot & IOMMU_CACHE) pte |= ARM_LPAE_PTE_MEMATTR_OIWB;
        else pte |= ARM_LPAE_PTE_MEMATTR_NC;
      }
      pte |= prot & IOMMU_CACHE ? ARM_LPAE_PTE_SH_IS : ARM_LPAE_PTE_SH_OS;
      if (prot & IOMMU_NOEXEC) pte |= ARM_LPAE_PTE_XN;
      pte |= ARM_LPAE_PTE_AF;
      pte |= leaf.level === 0 ? ARM_LPAE_PTE_TYPE_PAGE : ARM_LPAE_PTE_TYPE_BLOCK;
      return pte | paToPte(leaf.oa, g);
    },
    encodeTable(tablePa: bigint): bigint {
      return ARM_LPAE_PTE_TYPE_TABLE | paToPte(tablePa, g);
    },
  };
}
