/**
 * The host's IOMMUs as the playground's machines have them: hardware-like drivers from
 * @x/iommu-pgtable (AMD-Vi over the AMDv1 format, Intel VT-d over its second-stage format) and
 * @x/iommufd's nesting ARM SMMUv3,
 * one driver instance per IOMMU unit, plus the two readings the views and checks make of a
 * domain (bytes mapped in a range, bytes mapped in all).
 *
 * Two devices behind different units cannot share a domain (the driver refuses another unit's
 * domain with EINVAL), which is what makes QEMU's autodomains allocate a second HWPT.
 */
import {
  type IommuDomain,
  type IommuResvRegion,
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_RESV_MSI,
  IOMMU_RESV_RESERVED,
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  PT_DRIVER_ALLOC_FLAGS,
  PT_FEAT_DYNAMIC_TOP,
  type PtDriverDesc,
  PtIommuDriver,
  amdv1Format,
  iommuReadRuns,
  vtdssFormat,
  X86_MSI_RANGE_END,
  X86_MSI_RANGE_START,
} from "@x/iommu-pgtable";
import { ArmSmmuV3IommufdDriver } from "@x/iommufd";
import type { Kernel } from "@x/kernel";

/** "smmuv3": an ARM SMMUv3 that nests (stage 1 for the guest, stage 2 for the VMM). */
export type IommuKind = "amd-vi" | "vt-d" | "smmuv3";

export interface HwIommuOptions {
  /** Restrict the page sizes the hardware offers (e.g. 64 KiB minimum pages). */
  readonly pgsizeBitmap?: bigint;
}

/** The interrupt window every x86 IOMMU reserves: DMA there is an MSI write, never memory. */
const X86_MSI_WINDOW: IommuResvRegion = {
  start: X86_MSI_RANGE_START,
  length: X86_MSI_RANGE_END - X86_MSI_RANGE_START + 1n,
  type: IOMMU_RESV_MSI,
};

/** AMD's HyperTransport window, reserved unless the IVRS says it is ignored. */
const AMD_HT_WINDOW: IommuResvRegion = {
  start: 0xfd_0000_0000n,
  length: 0x3_0000_0000n,
  type: IOMMU_RESV_RESERVED,
};

/**
 * Reserved regions as the two drivers report them (no RMRR or unity map on these hosts).
 * @see intel_iommu_get_resv_regions
 * @see amd_iommu_get_resv_regions
 */
function resvRegions(kind: Exclude<IommuKind, "smmuv3">): IommuResvRegion[] {
  return kind === "amd-vi" ? [X86_MSI_WINDOW, AMD_HT_WINDOW] : [X86_MSI_WINDOW];
}

/** IOMMU_HW_INFO_TYPE_AMD (include/uapi/linux/iommufd.h): AMD reports its feature registers. */
const IOMMU_HW_INFO_TYPE_AMD = 4;
/** FEATURE_HDSUP (drivers/iommu/amd/amd_iommu_types.h): host dirty-bit support. */
const FEATURE_HDSUP = 1n << 52n;

/** struct iommu_hw_info_amd: the EFR and EFR2 registers. @see amd_iommufd_hw_info */
function amdHwInfo(): Uint8Array {
  const data = new Uint8Array(16);
  new DataView(data.buffer).setBigUint64(0, FEATURE_HDSUP, true);
  return data;
}

function describe(kind: Exclude<IommuKind, "smmuv3">, opts: HwIommuOptions): PtDriverDesc {
  const restrict = opts.pgsizeBitmap;
  const common = {
    // Both units track dirty pages in their IOPTEs (VT-d SSADS, AMD HDSup).
    caps: [IOMMU_CAP_CACHE_COHERENCY, IOMMU_CAP_ENFORCE_CACHE_COHERENCY, IOMMU_CAP_DIRTY_TRACKING],
    allocFlags: PT_DRIVER_ALLOC_FLAGS,
    resvRegions: () => resvRegions(kind),
    ...(restrict === undefined ? {} : { pgsizeBitmap: (natural: bigint) => natural & restrict }),
  };
  return kind === "amd-vi"
    ? {
        name: "amd-vi",
        hwInfoType: IOMMU_HW_INFO_TYPE_AMD,
        hwInfoData: amdHwInfo,
        ...common,
        ptCfg: () => ({
          format: amdv1Format,
          features: PT_FEAT_DYNAMIC_TOP,
          startingLevel: 3,
          hwMaxVaLg2: 48,
          hwMaxOaLg2: 52,
        }),
      }
    : {
        name: "vt-d",
        hwInfoType: 1,
        ...common,
        ptCfg: () => ({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 }),
      };
}

/** Bytes of [iova, iova + length) that have an IOPTE in `domain`. */
export function mappedIn(domain: IommuDomain, iova: bigint, length: bigint): bigint {
  let n = 0n;
  for (const r of iommuReadRuns(domain, iova, length)) n += r.length;
  return n;
}

/** Bytes of IOPTEs in `domain`: the leaves of every level times their size. */
export function domainBytes(domain: IommuDomain): bigint {
  let total = 0n;
  for (const l of domain.pt?.occupancy() ?? [])
    for (const [lg2, n] of Object.entries(l.leavesBySizeLg2)) total += BigInt(n) << BigInt(lg2);
  return total;
}

/** One IOMMU unit: a hardware-like driver instance; its domains carry it as `priv`. */
export class HwIommu {
  readonly driver: PtIommuDriver | ArmSmmuV3IommufdDriver;

  constructor(
    kernel: Kernel,
    readonly name: string,
    readonly kind: IommuKind,
    opts: HwIommuOptions = {},
  ) {
    this.driver =
      kind === "smmuv3"
        ? new ArmSmmuV3IommufdDriver(kernel)
        : new PtIommuDriver(describe(kind, opts), kernel);
  }

  owns(domain: IommuDomain): boolean {
    return domain.priv === this.driver;
  }
}
