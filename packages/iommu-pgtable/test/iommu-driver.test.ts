/** Drivers, devices, attach, and DMA translation with faults and dirty bits. */
import { Kernel } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3Driver,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_HW_INFO_TYPE_AMD,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_MMIO,
  IOMMU_READ,
  IOMMU_WRITE,
  IommuDevice,
  IommuFault,
  IotlbGather,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_IOMMUPT_AMDV1,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  amdIommuDriver,
  intelIommuDriver,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceDma,
  iommuMap,
  iommuReadAndClearDirty,
  iommuReadRuns,
  iommuTranslate,
  mockIommuptDomainAlloc,
  x86FirstStageIommuDriver,
} from "../src/index.js";
import { errnoOf } from "./helpers.js";

describe("hardware-like drivers", () => {
  it("report hw_info, capabilities and refuse what they cannot do", () => {
    const k = new Kernel();
    const amd = amdIommuDriver(k);
    const intel = intelIommuDriver(k);
    const fs = x86FirstStageIommuDriver(k);
    const smmu = new ArmSmmuV3Driver(12, k);
    const dev = new IommuDevice("d", amd);
    expect(amd.hwInfo(dev).type).toBe(IOMMU_HW_INFO_TYPE_AMD);
    expect(intel.hwInfo(dev)).toEqual({
      type: IOMMU_HW_INFO_TYPE_INTEL_VTD,
      data: new Uint8Array(24),
    });
    expect(smmu.hwInfo().type).toBe(IOMMU_HW_INFO_TYPE_ARM_SMMUV3);
    expect(amd.capable(dev, IOMMU_CAP_DIRTY_TRACKING)).toBe(true);
    expect(fs.capable(dev, IOMMU_CAP_DIRTY_TRACKING)).toBe(false);
    expect(errnoOf(() => fs.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING))).toBe(
      "EOPNOTSUPP",
    );
    expect(errnoOf(() => amd.domainAllocPaging(dev, 1 << 7))).toBe("EOPNOTSUPP");
    const nested = intel.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(errnoOf(() => iommuMap(nested, 0n, 0n, 0x1000n, IOMMU_READ))).toBe("EINVAL");
    expect(smmu.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT).pt!.format.name).toBe(
      "arm-lpae-s2-4k",
    );
    expect(errnoOf(() => iommuAttachDevice(dev, nested))).toBe("EINVAL");
  });

  it("the x86 first-stage table is sign-extended: its upper half maps too", () => {
    const fs = x86FirstStageIommuDriver();
    const d = fs.domainAllocPaging(new IommuDevice("d", fs), 0);
    expect(d.geometry.apertureEnd).toBe((1n << 47n) - 1n);
    const hi = 0xffff_8000_0000_0000n;
    iommuMap(d, hi, 0x5000n, 0x1000n, IOMMU_READ | IOMMU_WRITE);
    expect(iommuTranslate(d, hi + 4n, IOMMU_WRITE)).toBe(0x5004n);
    expect(() => iommuTranslate(d, 0x8000_0000_0000n - 0x1000n, IOMMU_READ)).toThrow(IommuFault);
    expect(errnoOf(() => iommuMap(d, 0x7fff_ffff_f000n, 0n, 0x2000n, IOMMU_READ))).toBe("ERANGE");
    expect(iommuReadRuns(d, hi, 0x2000n)).toEqual([
      { iova: hi, paddr: 0x5000n, length: 0x1000n, prot: IOMMU_READ | IOMMU_WRITE },
    ]);
    // A read running off the end of the lower half stops at it.
    iommuMap(d, 0x7fff_ffff_f000n, 0x6000n, 0x1000n, IOMMU_READ);
    expect(iommuReadRuns(d, 0x7fff_ffff_e000n, 0x10000n)).toEqual([
      { iova: 0x7fff_ffff_f000n, paddr: 0x6000n, length: 0x1000n, prot: IOMMU_READ },
    ]);
  });
});

describe("device DMA", () => {
  it("blocked, not present, permission faults are recorded; good DMA returns runs", () => {
    const amd = amdIommuDriver();
    const dev = new IommuDevice("0000:01:00.0", amd);
    expect(() => iommuDeviceDma(dev, 0n, 64n, IOMMU_READ)).toThrow(/blocked/);
    const d = amd.domainAllocPaging(dev, 0);
    iommuAttachDevice(dev, d);
    iommuMap(d, 0x10000n, 0x80000n, 0x2000n, IOMMU_READ);
    iommuMap(d, 0x12000n, 0x90000n, 0x1000n, IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO);
    expect(iommuDeviceDma(dev, 0x10ff0n, 0x1020n, IOMMU_READ)).toEqual([
      { iova: 0x10ff0n, paddr: 0x80ff0n, length: 0x1010n, prot: IOMMU_READ },
      {
        iova: 0x12000n,
        paddr: 0x90000n,
        length: 0x10n,
        prot: IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO,
      },
    ]);
    expect(() => iommuDeviceDma(dev, 0x10000n, 8n, IOMMU_WRITE)).toThrow(/permission/);
    expect(() => iommuDeviceDma(dev, 0x12ff8n, 16n, IOMMU_READ)).toThrow(/not-present/);
    expect(dev.faultCount).toBe(3);
    expect(dev.faults[2]!.iova).toBe(0x13000n);
    iommuDetachDevice(dev);
    expect(() => iommuTranslate(dev.domain, 0x10000n, IOMMU_READ, dev)).toThrow(/blocked/);
  });

  it("a write through a dirty-tracking domain sets the D bits read_and_clear reports", () => {
    const intel = intelIommuDriver();
    const dev = new IommuDevice("d", intel);
    const d = intel.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    iommuAttachDevice(dev, d);
    iommuMap(d, 0x100000n, 0x100000n, 0x4000n, IOMMU_READ | IOMMU_WRITE);
    iommuDeviceDma(dev, 0x101000n, 0x1000n, IOMMU_WRITE);
    const seen: bigint[] = [];
    const dirty = { bitmap: { set: (a: bigint) => seen.push(a) }, gather: new IotlbGather() };
    iommuReadAndClearDirty(d, 0x100000n, 0x4000n, IOMMU_DIRTY_NO_CLEAR, dirty);
    expect(seen).toEqual([]);
    d.dirtyOps!.setDirtyTracking(d, true);
    iommuDeviceDma(dev, 0x101000n, 0x1001n, IOMMU_WRITE);
    iommuReadAndClearDirty(d, 0x100000n, 0x4000n, 0, dirty);
    expect(seen).toEqual([0x101000n, 0x102000n]);
  });
});

describe("selftest mock page tables", () => {
  it("DEFAULT, HUGE and AMDV1 have the kernel's geometry and page sizes", () => {
    const def = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    expect(def.geometry).toEqual({
      apertureStart: MOCK_APERTURE_START,
      apertureEnd: MOCK_APERTURE_LAST,
      forceAperture: true,
    });
    expect(def.pgsizeBitmap).toBe(((1n << 38n) - 1n) & ~0x7ffn);
    const huge = mockIommuptDomainAlloc(MOCK_IOMMUPT_HUGE);
    expect(huge.pgsizeBitmap).toBe(0x100000n | 0x1000n);
    expect(huge.geometry.apertureEnd).toBe((1n << 38n) - 1n);
    const amd = mockIommuptDomainAlloc(MOCK_IOMMUPT_AMDV1);
    expect(amd.pt!.format.name).toBe("amdv1");
    expect(amd.geometry.apertureEnd).toBe((1n << 64n) - 1n);
    expect(errnoOf(() => mockIommuptDomainAlloc(3))).toBe("EOPNOTSUPP");
  });
});
