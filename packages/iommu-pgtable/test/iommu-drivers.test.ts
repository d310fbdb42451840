/**
 * The hardware-like drivers as a VMM-facing stack sees them: the hw_info payload each returns
 * (struct iommu_hw_info_amd / _vtd / _arm_smmuv3 of include/uapi/linux/iommufd.h), the
 * capabilities (amd_iommu_capable, intel_iommu_capable, arm_smmu_capable), the reserved regions
 * without firmware entries, and the SMMUv3 paging domains: stage 1 unless a nest parent, a VMID
 * per nest parent given back when the domain is freed, nest parents refused without
 * ARM_SMMU_FEAT_NESTING, table allocations through the fault source, attach refusing a domain of
 * another SMMU (arm_smmu_attach_dev) and leaving the stream without a vIOMMU master.
 *
 * @see drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c, drivers/iommu/amd/iommu.c,
 *      drivers/iommu/intel/iommu.c
 */
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3Driver,
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HW_INFO_TYPE_AMD,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_READ,
  IOMMU_RESV_SW_MSI,
  IOMMU_WRITE,
  IommuDevice,
  MSI_IOVA_BASE,
  MSI_IOVA_LENGTH,
  amdIommuDriver,
  iommuAttachDevice,
  iommuDomainFree,
  iommuMap,
  iommuUnmap,
  intelIommuDriver,
  x86FirstStageIommuDriver,
} from "../src/index.js";
import { IOMMU_CAP_DEFERRED_FLUSH } from "../src/iommu-types.js";
import { errnoOf } from "./helpers.js";

const SW_MSI = { start: MSI_IOVA_BASE, length: MSI_IOVA_LENGTH, type: IOMMU_RESV_SW_MSI };

describe("hw_info payloads", () => {
  it("AMD: 16 bytes (efr, efr2); VT-d, also its first stage: 24 (flags, cap_reg, ecap_reg)", () => {
    const cases = [
      [amdIommuDriver(), IOMMU_HW_INFO_TYPE_AMD, 16],
      [intelIommuDriver(), IOMMU_HW_INFO_TYPE_INTEL_VTD, 24],
      [x86FirstStageIommuDriver(), IOMMU_HW_INFO_TYPE_INTEL_VTD, 24],
    ] as const;
    for (const [drv, type, bytes] of cases) {
      expect(drv.hwInfo(new IommuDevice("d", drv))).toEqual({ type, data: new Uint8Array(bytes) });
    }
  });

  it("SMMUv3: the ID registers in struct iommu_hw_info_arm_smmuv3, little-endian", () => {
    const { data } = new ArmSmmuV3Driver().hwInfo();
    expect(data).toHaveLength(40);
    const v = new DataView(data.buffer);
    const field = (off: number, hi: number, lo: number) =>
      (v.getUint32(off, true) >>> lo) & ((1 << (hi - lo + 1)) - 1);
    const idr0 = 8;
    // IDR0: S2P, S1P, TTF = AArch64, COHACC, ATS, ASID16, VMID16, ST_LVL = 2-level.
    expect([0, 1, 4, 10, 12, 18].map((b) => field(idr0, b, b))).toEqual([1, 1, 1, 1, 1, 1]);
    expect([field(idr0, 3, 2), field(idr0, 28, 27)]).toEqual([2, 1]);
    // IDR1: SSIDSIZE 20, SIDSIZE 32.
    expect([field(12, 10, 6), field(12, 5, 0)]).toEqual([20, 32]);
    // IDR5: OAS 48 bits (5), 4K / 16K / 64K granules.
    expect([field(28, 2, 0), field(28, 4, 4), field(28, 5, 5), field(28, 6, 6)]).toEqual([
      5, 1, 1, 1,
    ]);
    // AIDR: SMMUv3.1. Flags, the other IDRs and IIDR are zero.
    expect(v.getUint32(36, true)).toBe(1);
    for (const off of [0, 4, 16, 20, 24, 32]) expect(v.getUint32(off, true)).toBe(0);
  });
});

describe("capabilities and reserved regions", () => {
  it("the first-stage VT-d driver is coherent and defers flushes, without dirty tracking", () => {
    const fs = x86FirstStageIommuDriver();
    const dev = new IommuDevice("d", fs);
    expect(
      [
        IOMMU_CAP_CACHE_COHERENCY,
        IOMMU_CAP_DEFERRED_FLUSH,
        IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
        IOMMU_CAP_DIRTY_TRACKING,
      ].map((cap) => fs.capable(dev, cap)),
    ).toEqual([true, true, false, false]);
  });

  it("SMMUv3: coherent and deferred flush; no enforced coherency, no dirty tracking", () => {
    const smmu = new ArmSmmuV3Driver();
    const dev = new IommuDevice("d", smmu);
    expect(
      [
        IOMMU_CAP_CACHE_COHERENCY,
        IOMMU_CAP_DEFERRED_FLUSH,
        IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
        IOMMU_CAP_DIRTY_TRACKING,
      ].map((cap) => smmu.capable(dev, cap)),
    ).toEqual([true, true, false, false]);
  });

  it("without firmware entries only the MSI window is reserved", () => {
    const intel = intelIommuDriver();
    expect(intel.getResvRegions(new IommuDevice("d", intel))).toHaveLength(1);
    const smmu = new ArmSmmuV3Driver();
    expect(smmu.getResvRegions(new IommuDevice("d", smmu))).toEqual([SW_MSI]);
  });
});

describe("SMMUv3 paging domains", () => {
  it("stage 1 for a plain domain, stage 2 with a VMID for a nest parent; free gives the VMID back", () => {
    const smmu = new ArmSmmuV3Driver();
    const dev = new IommuDevice("d", smmu);
    const parent1 = smmu.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const s1 = smmu.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_PASID);
    const parent2 = smmu.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect([s1.pt!.format.name, parent1.pt!.format.name]).toEqual([
      "arm-lpae-s1-4k",
      "arm-lpae-s2-4k",
    ]);
    // VMIDs come with the nest parents, in allocation order; a stage-1 domain takes none.
    expect(smmu.nest!.vmidOf(parent2)).toBe(2);
    expect(smmu.nest!.vmidOf(parent1)).toBe(1);
    // arm_smmu_domain_free_paging releases the VMID to the IDA, which hands out the lowest
    // free one: the next nest parent gets VMID 1 again.
    iommuDomainFree(parent1);
    const parent3 = smmu.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(smmu.nest!.vmidOf(parent3)).toBe(1);
    expect(smmu.nest!.vmidOf(parent2)).toBe(2);
  });

  it("counts its IOTLB syncs (the TLBI + CMD_SYNC of an unmap) and whole flushes", () => {
    const smmu = new ArmSmmuV3Driver();
    const d = smmu.domainAllocPaging(new IommuDevice("d", smmu), 0);
    iommuMap(d, 0x10000n, 0x20000n, 0x1000n, IOMMU_READ | IOMMU_WRITE);
    expect(smmu.stats).toEqual({ iotlbSyncs: 0, flushAll: 0 });
    iommuUnmap(d, 0x10000n, 0x1000n);
    expect(smmu.stats.iotlbSyncs).toBeGreaterThan(0);
    expect(smmu.stats.flushAll).toBe(0);
  });

  it("without ARM_SMMU_FEAT_NESTING: no nest parent (-EOPNOTSUPP), plain domains free and attach", () => {
    const smmu = new ArmSmmuV3Driver(12, undefined, [], { nesting: false });
    const dev = new IommuDevice("d", smmu);
    expect(smmu.nest).toBeUndefined();
    expect(errnoOf(() => smmu.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT))).toBe(
      "EOPNOTSUPP",
    );
    const d = smmu.domainAllocPaging(dev, 0);
    iommuAttachDevice(dev, d);
    expect(dev.domain).toBe(d);
    iommuDomainFree(d);
    expect(new ArmSmmuV3Driver().nest).toBeDefined();
  });

  it("allocates its tables through the fault source (-ENOMEM)", () => {
    const sites: string[] = [];
    const smmu = new ArmSmmuV3Driver(12, {
      shouldFail: (site) => {
        sites.push(site);
        return true;
      },
    });
    expect(errnoOf(() => smmu.domainAllocPaging(new IommuDevice("d", smmu), 0))).toBe("ENOMEM");
    expect(sites.length).toBeGreaterThan(0);
  });

  it("attach refuses a domain of another SMMU (-EINVAL) and installs a plain STE", () => {
    const smmu = new ArmSmmuV3Driver();
    const other = new ArmSmmuV3Driver();
    const dev = new IommuDevice("d", smmu);
    const foreign = other.domainAllocPaging(new IommuDevice("o", other), 0);
    expect(errnoOf(() => iommuAttachDevice(dev, foreign))).toBe("EINVAL");
    expect(dev.domain).toBeUndefined();
    // A stream that had a vIOMMU master loses it when a paging domain is attached.
    const master = smmu.nest!.master(dev);
    master.vmaster = { vsid: 1n, report: () => {} };
    const d = smmu.domainAllocPaging(dev, 0);
    iommuAttachDevice(dev, d);
    expect(master.vmaster).toBeUndefined();
    expect(dev.domain).toBe(d);
  });
});
