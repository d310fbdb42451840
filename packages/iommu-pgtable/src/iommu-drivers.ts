/**
 * Hardware-like IOMMU drivers, one per format, for tests and the playground: what a VMM-facing
 * stack sees from an AMD-Vi, Intel VT-d or ARM SMMUv3 system. Each allocates paging domains the
 * way its kernel driver configures the page table; hw_info carries the right type and a
 * zero-filled payload of the right size (register values are not modelled).
 *
 * @see drivers/iommu/amd/iommu.c, drivers/iommu/intel/iommu.c, drivers/iommu/arm/arm-smmu-v3/
 */
import { EINVAL, EOPNOTSUPP, KernelWarning, fail } from "@x/kernel";
import { ArmSmmuV3Nesting, type SmmuPhysMem } from "./arm-smmu-v3-nested.js";
import { amdv1Format } from "./fmt/amdv1.js";
import { vtdssFormat, PT_FEAT_VTDSS_FORCE_WRITEABLE } from "./fmt/vtdss.js";
import { x86_64Format } from "./fmt/x86-64.js";
import type { IommuDomain, IommuDomainOps } from "./iommu.js";
import {
  type FaultSource,
  type IommuDevice,
  type IommuDriver,
  type IommuHwInfo,
  PT_DRIVER_ALLOC_FLAGS,
  PtIommuDriver,
  countingFlushOps,
} from "./iommu-driver.js";
import {
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DEFERRED_FLUSH,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  IOMMU_HW_INFO_TYPE_AMD,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
} from "./iommu-types.js";
import { armLpaeDomainAlloc } from "./io-pgtable-arm.js";
import {
  type AmdUnityMap,
  type FirmwareResvRegion,
  type IommuResvRegion,
  type IortRmr,
  amdResvRegions,
  armSmmuResvRegions,
  intelResvRegions,
} from "./iommu-resv.js";
import { PT_FEAT_DYNAMIC_TOP, PT_FEAT_FLUSH_RANGE, PT_FEAT_SIGN_EXTEND } from "./pt-format.js";

/** What the modelled hardware unit can do beyond translation. */
interface IommuHwFeatures {
  /**
   * Hardware dirty bits: AMD HDSup (amd_iommu_hd_support), VT-d SSADS (ssads_supported).
   * Without it IOMMU_CAP_DIRTY_TRACKING is false, a dirty-tracking allocation is -EOPNOTSUPP
   * and attaching a dirty-tracking domain is -EINVAL. Default: present.
   */
  readonly dirtyTracking?: boolean;
}

function dirtyCaps(hw: IommuHwFeatures): number[] {
  return hw.dirtyTracking === false ? [] : [IOMMU_CAP_DIRTY_TRACKING];
}

/** An AMD-Vi unit: its features and what the IVRS table says about reserved ranges. */
export interface AmdIommuFirmware extends IommuHwFeatures {
  readonly unityMaps?: readonly AmdUnityMap[];
  /** FEATURE_HT_RANGE_IGNORE in EFR2: the HyperTransport range is not reserved. */
  readonly htRangeIgnore?: boolean;
}

/** A VT-d unit: its features and what the DMAR table says about reserved ranges. */
export interface IntelIommuFirmware extends IommuHwFeatures {
  readonly rmrrs?: readonly FirmwareResvRegion[];
}

/**
 * AMD-Vi with v1 host page tables: AMDv1, dynamic top from level 2, range flushes. Dirty bit:
 * AMDv1 D (bit 6), turned on per domain through the DTE HAD bits.
 * @see drivers/iommu/amd/iommu.c (amd_iommu_domain_alloc_paging_flags, amd_iommu_set_dirty_tracking)
 */
export function amdIommuDriver(faults?: FaultSource, fw: AmdIommuFirmware = {}): PtIommuDriver {
  return new PtIommuDriver(
    {
      // Stryker disable next-line StringLiteral: the driver's name only appears in error text
      name: "amd-iommu",
      resvRegions: (dev) => amdResvRegions(dev, fw.unityMaps ?? [], fw.htRangeIgnore ?? false),
      hwInfoType: IOMMU_HW_INFO_TYPE_AMD,
      hwInfoData: () => new Uint8Array(16),
      caps: [IOMMU_CAP_CACHE_COHERENCY, IOMMU_CAP_DEFERRED_FLUSH, ...dirtyCaps(fw)],
      allocFlags: PT_DRIVER_ALLOC_FLAGS,
      ptCfg: () => ({
        format: amdv1Format,
        features: (1 << PT_FEAT_DYNAMIC_TOP) | (1 << PT_FEAT_FLUSH_RANGE),
        startingLevel: 2,
      }),
    },
    faults,
  );
}

/**
 * Intel VT-d second stage, 4-level (48-bit); nesting parents get FORCE_WRITEABLE. Dirty bit:
 * second-stage D (bit 9), written by the hardware only with SSADE set in the PASID entry.
 * @see drivers/iommu/intel/iommu.c (intel_iommu_domain_alloc_paging_flags, device_set_dirty_tracking)
 */
export function intelIommuDriver(faults?: FaultSource, fw: IntelIommuFirmware = {}): PtIommuDriver {
  return new PtIommuDriver(
    {
      // Stryker disable next-line StringLiteral: the driver's name only appears in error text
      name: "intel-iommu",
      resvRegions: (dev) => intelResvRegions(dev, fw.rmrrs ?? []),
      hwInfoType: IOMMU_HW_INFO_TYPE_INTEL_VTD,
      hwInfoData: () => new Uint8Array(24),
      caps: [
        IOMMU_CAP_CACHE_COHERENCY,
        IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
        IOMMU_CAP_DEFERRED_FLUSH,
        ...dirtyCaps(fw),
      ],
      allocFlags: PT_DRIVER_ALLOC_FLAGS,
      ptCfg: (flags) => ({
        format: vtdssFormat,
        features:
          (1 << PT_FEAT_FLUSH_RANGE) |
          (flags & IOMMU_HWPT_ALLOC_NEST_PARENT ? 1 << PT_FEAT_VTDSS_FORCE_WRITEABLE : 0),
        hwMaxVaLg2: 48,
      }),
    },
    faults,
  );
}

/**
 * VT-d first stage / AMD v2 style: the x86-64 4-level table, sign-extended. No dirty tracking:
 * the first-stage allocation takes IOMMU_HWPT_ALLOC_PASID only (-EOPNOTSUPP otherwise).
 */
export function x86FirstStageIommuDriver(
  faults?: FaultSource,
  fw: IntelIommuFirmware = {},
): PtIommuDriver {
  return new PtIommuDriver(
    {
      // Stryker disable next-line StringLiteral: the driver's name only appears in error text
      name: "intel-iommu-fs",
      resvRegions: (dev) => intelResvRegions(dev, fw.rmrrs ?? []),
      hwInfoType: IOMMU_HW_INFO_TYPE_INTEL_VTD,
      hwInfoData: () => new Uint8Array(24),
      caps: [IOMMU_CAP_CACHE_COHERENCY, IOMMU_CAP_DEFERRED_FLUSH],
      allocFlags: IOMMU_HWPT_ALLOC_PASID,
      ptCfg: () => ({
        format: x86_64Format,
        features: (1 << PT_FEAT_SIGN_EXTEND) | (1 << PT_FEAT_FLUSH_RANGE),
        hwMaxVaLg2: 48,
      }),
    },
    faults,
  );
}

/** What an SMMUv3 instance has beyond translation. */
export interface ArmSmmuV3Hw {
  /**
   * ARM_SMMU_FEAT_NESTING (stage 1 and stage 2 both implemented): nest-parent domains and
   * vIOMMUs. Default: present.
   */
  readonly nesting?: boolean;
  /** What the table walker reads guest tables from (the machine's physical memory). */
  readonly mem?: SmmuPhysMem;
}

/** SMMU_IDR0: S1P, S2P, AArch64 tables, COHACC, 16-bit ASID / VMID, ATS, two-level STs. */
const SMMU_IDR0 =
  (1 << 0) | (1 << 1) | (2 << 2) | (1 << 4) | (1 << 10) | (1 << 12) | (1 << 18) | (1 << 27);
/** SMMU_IDR1: SSIDSIZE 20, SIDSIZE 32. */
const SMMU_IDR1 = (20 << 6) | 32;
/** SMMU_IDR5: 48-bit OAS, 4K / 16K / 64K granules. */
const SMMU_IDR5 = 5 | (1 << 4) | (1 << 5) | (1 << 6);
/** SMMU_AIDR: SMMUv3.1. */
const SMMU_AIDR = 1;

/**
 * ARM SMMUv3 with io-pgtable-arm: stage 1 (stage 2 for nesting parents), classic core path.
 * Decision: no dirty tracking. The kernel offers it only on SMMUs with HTTU dirty-state
 * updates (ARM_SMMU_FEAT_HD) through io-pgtable-arm's DBM bit on stage-1 leaves; the model's
 * LPAE leaves carry no DBM/AP-dirty state, so the capability is false and a dirty-tracking
 * allocation is -EOPNOTSUPP, as on an SMMU without HD. Nested translation (the guest's STE,
 * CD and stage-1 table) is in arm-smmu-v3-nested.ts; the vIOMMU that makes nested domains is
 * @x/iommufd's arm-smmu-v3-iommufd.ts.
 */
export class ArmSmmuV3Driver implements IommuDriver {
  // Stryker disable next-line StringLiteral: the driver's name only appears in error text
  readonly name = "arm-smmu-v3";
  readonly stats = { iotlbSyncs: 0, flushAll: 0 };
  /** The nesting hardware, on an SMMU with ARM_SMMU_FEAT_NESTING. */
  readonly nest: ArmSmmuV3Nesting | undefined;
  private readonly ops: IommuDomainOps;

  constructor(
    private readonly granuleLg2: 12 | 14 | 16 = 12,
    private readonly faults?: FaultSource,
    /** IORT RMRs. */
    private readonly rmrs: readonly IortRmr[] = [],
    hw: ArmSmmuV3Hw = {},
  ) {
    const nest = hw.nesting === false ? undefined : new ArmSmmuV3Nesting(hw.mem ?? noMem);
    this.nest = nest;
    this.ops = {
      ...countingFlushOps(this.stats),
      free(d) {
        nest?.freeVmid(d);
      },
    };
  }

  getResvRegions(dev: IommuDevice): readonly IommuResvRegion[] {
    return armSmmuResvRegions(dev, this.rmrs);
  }

  capable(_dev: IommuDevice, cap: number): boolean {
    return cap === IOMMU_CAP_CACHE_COHERENCY || cap === IOMMU_CAP_DEFERRED_FLUSH;
  }

  /**
   * struct iommu_hw_info_arm_smmuv3 { u32 flags, __reserved, idr[6], iidr, aidr }: the ID
   * registers as the SMMU reads them. @see arm_smmu_hw_info
   */
  hwInfo(): IommuHwInfo {
    const data = new Uint8Array(40);
    const v = new DataView(data.buffer);
    v.setUint32(8, SMMU_IDR0, true);
    v.setUint32(12, SMMU_IDR1, true);
    v.setUint32(28, SMMU_IDR5, true);
    v.setUint32(36, SMMU_AIDR, true);
    return { type: IOMMU_HW_INFO_TYPE_ARM_SMMUV3, data };
  }

  /** A nest parent is a stage-2 domain with a VMID; it needs FEAT_NESTING (EOPNOTSUPP). */
  domainAllocPaging(_dev: IommuDevice, flags: number): IommuDomain {
    if (flags & ~(IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID)) {
      fail(EOPNOTSUPP, `${this.name}: unsupported alloc flags 0x${flags.toString(16)}`);
    }
    const nestParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0;
    if (nestParent && !this.nest) fail(EOPNOTSUPP, `${this.name}: no nesting`);
    const faults = this.faults;
    const domain = armLpaeDomainAlloc(
      {
        stage: nestParent ? 2 : 1,
        granuleLg2: this.granuleLg2,
        ...(faults ? { shouldFail: (site: string) => faults.shouldFail(site) } : {}),
      },
      this.ops,
      this,
    );
    if (nestParent) this.nest!.vmidOf(domain);
    return domain;
  }

  /**
   * A paging domain of this SMMU; installing its STE leaves the stream without a vmaster.
   * Nested domains are attached by the vIOMMU side (arm_smmu_attach_dev_nested).
   */
  attachDev(domain: IommuDomain, dev: IommuDevice): void {
    if (domain.priv !== this) fail(EINVAL, `${this.name}: domain of another IOMMU`);
    if (!this.nest) return;
    const master = this.nest.master(dev);
    master.vmaster = undefined;
    this.nest.steChanged(master);
  }
}

/** Without a memory to walk, every guest table read is a fault. */
const noMem: SmmuPhysMem = {
  readPhys() {
    throw new KernelWarning("arm-smmu-v3: no physical memory to walk");
  },
};
