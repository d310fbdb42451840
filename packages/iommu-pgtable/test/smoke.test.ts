import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  iommuIovaToPhys,
  iommuMap,
  iommuUnmap,
  iommuptDomainAlloc,
  mockIommuptDomainAlloc,
  MOCK_IOMMUPT_DEFAULT,
  vtdssFormat,
  amdv1Format,
  PT_FEAT_DYNAMIC_TOP,
} from "../src/index.js";

const RW = IOMMU_READ | IOMMU_WRITE;

describe("smoke", () => {
  it("vtdss map/iova_to_phys/unmap", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    iommuMap(d, 0x1000n, 0x5000n, 0x1000n, RW);
    expect(iommuIovaToPhys(d, 0x1234n)).toBe(0x5234n);
    expect(iommuUnmap(d, 0x1000n, 0x1000n)).toBe(0x1000n);
    expect(iommuIovaToPhys(d, 0x1234n)).toBe(0n);
  });
  it("test_mixed on amdv1 with 2M|1G", () => {
    const d = iommuptDomainAlloc({
      format: amdv1Format,
      features: 1 << PT_FEAT_DYNAMIC_TOP,
      startingLevel: 2,
    });
    d.pgsizeBitmap = (1n << 21n) | (1n << 30n);
    const start = 0x3fe400000n;
    const end = 0x4c0600000n;
    iommuMap(d, start, start, end - start, RW);
    const occ = d.pt!.occupancy();
    const leaves = occ.flatMap((o) => Object.entries(o.leavesBySizeLg2));
    expect(Object.fromEntries(leaves)).toEqual({ "21": 17, "30": 3 });
    for (let a = start; a < end; a += 0x200000n) expect(iommuIovaToPhys(d, a + 5n)).toBe(a + 5n);
    expect(iommuUnmap(d, start, end - start)).toBe(end - start);
  });
  it("mock default", () => {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    expect(d.pgsizeBitmap).toBe(((1n << 38n) - 1n) & ~((1n << 11n) - 1n));
    iommuMap(d, 0x1000800n, 0x800n, 0x1800n, RW);
    expect(iommuIovaToPhys(d, 0x1000800n)).toBe(0x800n);
    expect(iommuIovaToPhys(d, 0x1001fffn)).toBe(0x1fffn);
    expect(iommuUnmap(d, 0x1000800n, 0x1800n)).toBe(0x1800n);
  });
});
