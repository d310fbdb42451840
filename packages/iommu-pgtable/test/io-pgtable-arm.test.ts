/** The classic core path (iommu_pgsize, min-page checks) and io-pgtable-arm's own rules. */
import { KernelWarning, isKernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_READ,
  IOMMU_WRITE,
  IO_PGTABLE_QUIRK_NO_WARN,
  armLpaeDomainAlloc,
  iommuIovaToPhys,
  iommuMap,
  iommuPgsize,
  iommuUnmap,
  ptImage,
} from "../src/index.js";
import { leafCounts } from "./configs.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const SZ_4K = 0x1000n;
const SZ_2M = 0x200000n;
const SZ_1G = 0x40000000n;

describe("iommu_pgsize", () => {
  it("cuts a worked example into 4K, 2M, 2M, 4K", () => {
    const bitmap = SZ_4K | SZ_2M | SZ_1G;
    let iova = 0x1ff000n;
    let paddr = 0x3ff000n;
    let size = 0x402000n;
    const got: string[] = [];
    while (size) {
      const { pgsize, count } = iommuPgsize(bitmap, iova, paddr, size);
      got.push(`${pgsize.toString(16)}x${count}`);
      iova += pgsize * count;
      paddr += pgsize * count;
      size -= pgsize * count;
    }
    expect(got).toEqual(["1000x1", "200000x2", "1000x1"]);
  });

  it("the ARM domain gets exactly those leaves", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, 0x1ff000n, 0x3ff000n, 0x402000n, RW);
    expect(leafCounts(d)).toEqual({ 12: 2, 21: 2 });
    expect(iommuIovaToPhys(d, 0x5ff123n)).toBe(0x7ff123n);
  });
});

describe("io-pgtable-arm rules", () => {
  it("partial unmap of a block is a WARN and removes nothing", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_2M, SZ_2M, SZ_2M, RW);
    expect(() => iommuUnmap(d, SZ_2M, SZ_4K)).toThrow(KernelWarning);
    expect(iommuIovaToPhys(d, SZ_2M)).toBe(SZ_2M);
    expect(iommuUnmap(d, SZ_2M, SZ_2M)).toBe(SZ_2M);
  });

  it("remap and unmapping a hole WARN; with NO_WARN they are EEXIST and 0", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_4K, 0n, SZ_4K, RW);
    expect(() => iommuMap(d, SZ_4K, 0n, SZ_4K, RW)).toThrow(KernelWarning);
    expect(() => iommuUnmap(d, 0x10000n, SZ_4K)).toThrow(KernelWarning);
    const q = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, quirks: IO_PGTABLE_QUIRK_NO_WARN });
    iommuMap(q, SZ_4K, 0n, SZ_4K, RW);
    try {
      iommuMap(q, 0n, 0n, 0x3000n, RW);
      expect.unreachable();
    } catch (e) {
      expect(isKernelError(e) && e.errnoName).toBe("EEXIST");
    }
    expect(iommuIovaToPhys(q, 0n)).toBe(0n);
    expect(iommuUnmap(q, 0x10000n, SZ_4K)).toBe(0n);
  });

  it("a block over a table tears the table down with what it mapped", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_2M + SZ_4K, 0x123000n, SZ_4K, RW);
    const tables = d.pt!.tableCount;
    iommuMap(d, SZ_2M, 0x800000n, SZ_2M, RW);
    expect(d.pt!.tableCount).toBe(tables - 1);
    expect(iommuIovaToPhys(d, SZ_2M + SZ_4K)).toBe(0x801000n);
  });

  it("stage 2 concatenates the top tables when that saves a level", () => {
    const d = armLpaeDomainAlloc({ stage: 2, granuleLg2: 12, ias: 40 });
    expect(d.pt!.topLevel).toBe(2);
    expect(d.pt!.tableItems(2)).toBe(1024);
    iommuMap(d, (1n << 40n) - SZ_1G, SZ_1G, SZ_1G, RW);
    expect(iommuIovaToPhys(d, (1n << 40n) - 1n)).toBe(2n * SZ_1G - 1n);
    const s1 = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, ias: 40 });
    expect(s1.pt!.topLevel).toBe(3);
    expect(s1.pt!.tableItems(3)).toBe(2);
  });

  it("16K and 64K granules offer their own sizes; 4T needs a 52-bit OA", () => {
    expect(armLpaeDomainAlloc({ stage: 1, granuleLg2: 14 }).pgsizeBitmap).toBe(
      (1n << 14n) | (1n << 25n),
    );
    expect(armLpaeDomainAlloc({ stage: 1, granuleLg2: 16 }).pgsizeBitmap).toBe(
      (1n << 16n) | (1n << 29n),
    );
    const big = armLpaeDomainAlloc({ stage: 1, granuleLg2: 16, oas: 52 });
    expect(big.pgsizeBitmap).toBe((1n << 16n) | (1n << 29n) | (1n << 42n));
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 14 });
    iommuMap(d, 1n << 25n, 3n << 25n, (1n << 25n) + (1n << 14n), RW);
    expect(leafCounts(d)).toEqual({ 14: 1, 25: 1 });
  });

  it("PTE images: stage 1 / stage 2 attributes and the 64K 52-bit PA packing", () => {
    const s1 = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(s1, 0n, 0x1000n, SZ_4K, IOMMU_READ | IOMMU_CACHE);
    const leaf1 = ptImage(s1.pt!).find((e) => e.level === 0)!;
    // page | ATTRINDX=1 | AP_UNPRIV | AP_RDONLY | SH_IS | AF | nG
    expect(leaf1.pte).toBe(
      0x1000n | 3n | (1n << 2n) | (1n << 6n) | (2n << 6n) | (3n << 8n) | (1n << 10n) | (1n << 11n),
    );
    const s2 = armLpaeDomainAlloc({ stage: 2, granuleLg2: 12 });
    iommuMap(s2, 0n, SZ_2M, SZ_2M, RW | IOMMU_MMIO | IOMMU_NOEXEC);
    const leaf2 = ptImage(s2.pt!).find((e) => e.level === 1)!;
    // block | MEMATTR_DEV | HAP R/W | SH_OS | AF | XN
    expect(leaf2.pte).toBe(
      SZ_2M | 1n | (1n << 2n) | (3n << 6n) | (2n << 8n) | (1n << 10n) | (3n << 53n),
    );
    const s64 = armLpaeDomainAlloc({ stage: 1, granuleLg2: 16, oas: 52 });
    iommuMap(s64, 0n, (1n << 50n) + 0x10000n, 0x10000n, RW);
    const leaf64 = ptImage(s64.pt!).find((e) => e.level === 0)!;
    expect(leaf64.pte & 0xffff_ffff_f000n).toBe(0x10000n | (0x4n << 12n));
  });
});
