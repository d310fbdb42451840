import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3Driver,
  IOMMU_RESV_DIRECT,
  IOMMU_RESV_DIRECT_RELAXABLE,
  IOMMU_RESV_MSI,
  IOMMU_RESV_RESERVED,
  IOMMU_RESV_SW_MSI,
  IommuDevice,
  amdIommuDriver,
  intelIommuDriver,
  x86FirstStageIommuDriver,
} from "../src/index.js";

const MSI = { start: 0xfee00000n, length: 0x100000n, type: IOMMU_RESV_MSI };
const HT = { start: 0xfd00000000n, length: 0x300000000n, type: IOMMU_RESV_RESERVED };

describe("get_resv_regions of the hardware-like drivers", () => {
  it("uapi-internal values of enum iommu_resv_type", () => {
    expect([
      IOMMU_RESV_DIRECT,
      IOMMU_RESV_DIRECT_RELAXABLE,
      IOMMU_RESV_RESERVED,
      IOMMU_RESV_MSI,
      IOMMU_RESV_SW_MSI,
    ]).toEqual([0, 1, 2, 3, 4]);
  });

  it("VT-d: RMRRs in the device's scope, relaxable for USB and graphics, then the interrupt range", () => {
    const rmrr = { start: 0x7a000000n, length: 0x20000n, devices: ["nic", "usb", "gpu"] };
    const drv = intelIommuDriver(undefined, { rmrrs: [rmrr] });
    expect(drv.getResvRegions(new IommuDevice("other", drv))).toEqual([MSI]);
    expect(drv.getResvRegions(new IommuDevice("nic", drv, 0x020000))).toEqual([
      { start: rmrr.start, length: rmrr.length, type: IOMMU_RESV_DIRECT },
      MSI,
    ]);
    for (const [name, cls] of [
      ["usb", 0x0c0330],
      ["gpu", 0x030000],
    ] as const) {
      expect(drv.getResvRegions(new IommuDevice(name, drv, cls))[0]!.type).toBe(
        IOMMU_RESV_DIRECT_RELAXABLE,
      );
    }
    expect(drv.getResvRegions(new IommuDevice("lpc", drv, 0x060100))).toEqual([
      { start: 0n, length: 1n << 24n, type: IOMMU_RESV_DIRECT_RELAXABLE },
      MSI,
    ]);
    const fs = x86FirstStageIommuDriver();
    expect(fs.getResvRegions(new IommuDevice("d", fs))).toEqual([MSI]);
  });

  it("AMD-Vi: unity maps (exclusion ranges reserved), MSI, then HT unless the IOMMU ignores it", () => {
    const drv = amdIommuDriver(undefined, {
      unityMaps: [
        { start: 0x100000n, length: 0x1000n, devices: ["a"] },
        { start: 0x200000n, length: 0x2000n, devices: ["a"], exclusion: true },
      ],
    });
    expect(drv.getResvRegions(new IommuDevice("b", drv))).toEqual([MSI, HT]);
    expect(drv.getResvRegions(new IommuDevice("a", drv))).toEqual([
      { start: 0x100000n, length: 0x1000n, type: IOMMU_RESV_DIRECT },
      { start: 0x200000n, length: 0x2000n, type: IOMMU_RESV_RESERVED },
      MSI,
      HT,
    ]);
    const ign = amdIommuDriver(undefined, { htRangeIgnore: true });
    expect(ign.getResvRegions(new IommuDevice("b", ign))).toEqual([MSI]);
  });

  it("SMMUv3: the software MSI window at MSI_IOVA_BASE, then the device's IORT RMRs", () => {
    const drv = new ArmSmmuV3Driver(12, undefined, [
      { start: 0x80000000n, length: 0x10000n, devices: ["gpu"], remapPermitted: true },
      { start: 0x90000000n, length: 0x10000n, devices: ["gpu"] },
    ]);
    const sw = { start: 0x8000000n, length: 0x100000n, type: IOMMU_RESV_SW_MSI };
    expect(drv.getResvRegions(new IommuDevice("nic", drv))).toEqual([sw]);
    expect(drv.getResvRegions(new IommuDevice("gpu", drv))).toEqual([
      sw,
      { start: 0x80000000n, length: 0x10000n, type: IOMMU_RESV_DIRECT_RELAXABLE },
      { start: 0x90000000n, length: 0x10000n, type: IOMMU_RESV_DIRECT },
    ]);
  });
});
