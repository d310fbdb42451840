/** The README's example, run as written. */
import { Kernel } from "@x/kernel";
import { expect, it } from "vitest";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  IotlbGather,
  IommuDevice,
  amdIommuDriver,
  iommuAttachDevice,
  iommuDeviceDma,
  iommuIotlbSync,
  iommuIovaToPhys,
  iommuMap,
  iommuReadRuns,
  iommuUnmapFast,
  ptDumpText,
} from "../src/index.js";

it("README example", () => {
  const kernel = new Kernel();
  const amd = amdIommuDriver(kernel);
  const dev = new IommuDevice("0000:00:01.0", amd);
  const domain = amd.domainAllocPaging(dev, 0);

  iommuMap(domain, 1n << 30n, 0x8000_0000n, 0x201000n, IOMMU_READ | IOMMU_WRITE);
  expect(iommuIovaToPhys(domain, (1n << 30n) + 0x1234n)).toBe(0x80001234n);
  expect(iommuReadRuns(domain, 1n << 30n, 0x201000n)).toEqual([
    { iova: 1n << 30n, paddr: 0x8000_0000n, length: 0x201000n, prot: IOMMU_READ | IOMMU_WRITE },
  ]);

  iommuAttachDevice(dev, domain);
  expect(iommuDeviceDma(dev, 1n << 30n, 64n, IOMMU_WRITE)).toHaveLength(1);

  const gather = new IotlbGather();
  expect(iommuUnmapFast(domain, 1n << 30n, 0x201000n, gather)).toBe(0x201000n);
  iommuIotlbSync(domain, gather);
  expect(ptDumpText(domain.pt!)).toContain("L2");
});
