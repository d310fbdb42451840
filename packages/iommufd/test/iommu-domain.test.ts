/**
 * io_pagetable's calls into a paging domain (src/iommu-domain.ts): which of the domain's two
 * entry points a range takes, iommu_unmap_nofail's WARN, and how batch_from_domain's reads
 * stop.
 */
import { IommuDomain } from "@x/iommu-pgtable";
import { Kernel, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { domainMap, domainReadRange, iommuUnmapNofail, pageRange } from "../src/iommu-domain.js";
import { RW, testDomain } from "./pages-helpers.js";

const TOP = 1n << 64n;

function read(d: IommuDomain, iova: bigint, npages: number, stopAfter = Infinity): number[][] {
  const got: number[][] = [];
  domainReadRange(d, iova, npages, (pfn, n) => {
    got.push([pfn, n]);
    return got.length < stopAfter;
  });
  return got;
}

/** A driver's paging domain with no page table of ours: it answers iova_to_phys itself. */
function tablelessDomain(mapped: Map<bigint, bigint>): IommuDomain {
  return new IommuDomain({
    geometry: { apertureStart: 0n, apertureEnd: TOP - 1n, forceAperture: true },
    pgsizeBitmap: 0x1000n,
    ops: { iovaToPhys: (_d, iova) => mapped.get(iova & ~0xfffn) ?? 0n },
  });
}

describe("iommu-domain", () => {
  it("pageRange: page-aligned frames whose end stays below 2^52", () => {
    expect(pageRange(0x1000n, 0x2000n, 0x3000n)).toBe(true);
    expect(pageRange(0x1800n, 0n, 0x1000n)).toBe(false);
    expect(pageRange(0x1000n, 0x800n, 0x1000n)).toBe(false);
    expect(pageRange(0x1000n, 0n, 0x800n)).toBe(false);
    expect(pageRange(TOP - 0x2000n, 0n, 0x1000n)).toBe(true);
    expect(pageRange(TOP - 0x2000n, 0n, 0x2000n)).toBe(false);
  });

  it("iommu_unmap_nofail WARNs when the domain unmapped another size", () => {
    const d = testDomain(new Kernel({ ramBytes: 1n << 30n }));
    domainMap(d, 0x200000n, 0x40000000n, 0x200000n, RW);
    expect(() => iommuUnmapNofail(d, 0x600000n, 0x1000n)).toThrow(KernelWarning);
    expect(() => iommuUnmapNofail(d, 0x200800n, 0x800n)).toThrow(KernelWarning);
    // A cut through the 2 MiB IOPTE removes it whole: more than asked.
    expect(() => iommuUnmapNofail(d, 0x200000n, 0x1000n)).toThrow(/unmapped 0x200000 of 0x1000/);
    domainMap(d, 0x200000n, 0x40000000n, 0x2000n, RW);
    iommuUnmapNofail(d, 0x200000n, 0x2000n);
    expect(read(d, 0x200000n, 2)).toEqual([]);
  });

  it("reads an iommupt domain in runs; a hole, a false return or the count ends the read", () => {
    const d = testDomain(new Kernel({ ramBytes: 1n << 30n }));
    domainMap(d, 0n, 0x100000n, 0x2000n, RW);
    domainMap(d, 0x3000n, 0x300000n, 0x1000n, RW);
    expect(read(d, 0n, 4)).toEqual([[0x100, 2]]);
    expect(read(d, 0x3000n, 1)).toEqual([[0x300, 1]]);
    domainMap(d, 0x2000n, 0x200000n, 0x1000n, RW);
    expect(read(d, 0n, 4, 1)).toEqual([[0x100, 2]]);
    expect(read(d, 0n, 4)).toEqual([
      [0x100, 2],
      [0x200, 1],
      [0x300, 1],
    ]);
    // Runs past the first chunk of 512 pages: a stop or a hole in it ends the read there.
    // Not 2 MiB aligned physically: 4 KiB IOPTEs only.
    domainMap(d, 0x400000n, 0x8001000n, 600n * 0x1000n, RW);
    expect(read(d, 0x400000n, 600)).toEqual([
      [0x8001, 512],
      [0x8201, 88],
    ]);
    expect(read(d, 0x400000n, 600, 1)).toEqual([[0x8001, 512]]);
    iommuUnmapNofail(d, 0x400000n + 500n * 0x1000n, 12n * 0x1000n);
    expect(read(d, 0x400000n, 600)).toEqual([[0x8001, 500]]);
  });

  it("reads the last pages of a 64-bit space in runs", () => {
    const d = testDomain(new Kernel({ ramBytes: 1n << 30n }));
    domainMap(d, TOP - 0x2000n, 0x100000n, 0x2000n, RW);
    expect(read(d, TOP - 0x2000n, 2)).toEqual([[0x100, 2]]);
  });

  it("reads page by page from a domain without a table, or from a sub-page IOVA", () => {
    const t = tablelessDomain(
      new Map([
        [0x1000n, 0x80000n],
        [0x2000n, 0x81000n],
        [0x4000n, 0x90000n],
      ]),
    );
    expect(read(t, 0x1000n, 4)).toEqual([
      [0x80, 1],
      [0x81, 1],
    ]);
    expect(read(t, 0x1000n, 4, 1)).toEqual([[0x80, 1]]);
    expect(read(t, 0x1000n, 1)).toEqual([[0x80, 1]]);
    expect(read(t, 0x4000n, 0)).toEqual([]);
    const d = testDomain(new Kernel({ ramBytes: 1n << 30n }));
    domainMap(d, 0x1000n, 0x100000n, 0x2000n, RW);
    expect(read(d, 0x1800n, 2)).toEqual([
      [0x100, 1],
      [0x101, 1],
    ]);
  });
});
