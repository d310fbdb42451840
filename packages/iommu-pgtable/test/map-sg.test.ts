/** iommu_map_sg: merged runs at consecutive IOVAs, bus addresses skipped, all-or-nothing. */
import { isKernelError } from "@x/kernel";
import { expect, it } from "vitest";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  iommuIovaToPhys,
  iommuMap,
  iommuMapSg,
  iommuReadRuns,
  iommuptDomainAlloc,
  vtdssFormat,
} from "../src/index.js";

const RW = IOMMU_READ | IOMMU_WRITE;

it("merges contiguous entries, skips P2P bus addresses, unwinds on failure", () => {
  let syncMaps = 0;
  const d = iommuptDomainAlloc(
    { format: vtdssFormat, features: 0, hwMaxVaLg2: 48 },
    { ops: { iotlbSyncMap: () => void syncMaps++ } },
  );
  const sg = [
    { paddr: 0x10000n, length: 0x1000n },
    { paddr: 0x11000n, length: 0x2000n },
    { paddr: 0xf000_0000n, length: 0x1000n, busAddress: true },
    { paddr: 0x40000n, length: 0x1000n },
  ];
  expect(iommuMapSg(d, 0x100000n, sg, RW)).toBe(0x4000n);
  expect(syncMaps).toBe(1);
  expect(iommuReadRuns(d, 0x100000n, 0x4000n)).toEqual([
    { iova: 0x100000n, paddr: 0x10000n, length: 0x3000n, prot: RW },
    { iova: 0x103000n, paddr: 0x40000n, length: 0x1000n, prot: RW },
  ]);
  iommuMap(d, 0x201000n, 0x9000n, 0x1000n, RW);
  try {
    iommuMapSg(
      d,
      0x200000n,
      [
        { paddr: 0x10000n, length: 0x1000n },
        { paddr: 0x80000n, length: 0x1000n },
      ],
      RW,
    );
    expect.unreachable();
  } catch (e) {
    expect(isKernelError(e) && e.errnoName).toBe("EADDRINUSE");
  }
  expect(iommuIovaToPhys(d, 0x200000n)).toBe(0n);
  expect(iommuIovaToPhys(d, 0x201000n)).toBe(0x9000n);
});
