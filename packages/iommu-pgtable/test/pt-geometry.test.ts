/**
 * Geometry of the generic_pt table engine: the top a map grows to, the -ERANGE of a range the
 * VA width cannot hold (with nothing left behind), the two halves of a sign-extended table,
 * the page-size bitmap a DYNAMIC_TOP table reports, and unmap stopping at the first hole.
 *
 * @see drivers/iommu/generic_pt/iommu_pt.h (increase_top, pt_check_range, unmap_range)
 * @see drivers/iommu/generic_pt/pt_iter.h
 */
import { describe, expect, it } from "vitest";
import {
  IotlbGather,
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_SIGN_EXTEND,
  amdv1Format,
  armLpaeDomainAlloc,
  iommuIovaToPhys,
  iommuMap,
  iommuUnmap,
  ptImage,
  vtdssFormat,
  x86_64Format,
} from "../src/index.js";
import { PT_ALLOC_SITE, PtIommu, ctz53 } from "../src/iommu-pt.js";
import { RW, vtdDomain } from "./helpers.js";

const ERANGE = 34;

/** A table whose allocations are counted (fault injection never fires). */
function counted(cfg: Omit<ConstructorParameters<typeof PtIommu>[0], "shouldFail">) {
  const calls = { n: 0 };
  const pt = new PtIommu({
    ...cfg,
    shouldFail: (site) => {
      if (site === PT_ALLOC_SITE) calls.n++;
      return false;
    },
  });
  return { pt, calls };
}

describe("increase_top", () => {
  it("grows the top until the leaf's level exists, and no further", () => {
    const { pt } = counted({
      format: amdv1Format,
      features: 1 << PT_FEAT_DYNAMIC_TOP,
      startingLevel: 1,
    });
    expect(pt.topLevel).toBe(1);
    // A 1 GiB leaf lives at level 2: one level on top of the level-1 top.
    const pages = 1 << 18;
    expect(pt.mapRange(0, 0, pages, RW, new IotlbGather())).toBe(0);
    expect(pt.topLevel).toBe(2);
    expect(pt.occupancy().map((o) => o.leavesBySizeLg2)).toEqual([{}, {}, { 30: 1 }]);
  });

  it("refuses (-ERANGE) a range past the VA width before allocating a level it cannot use", () => {
    const { pt, calls } = counted({
      format: amdv1Format,
      features: 1 << PT_FEAT_DYNAMIC_TOP,
      startingLevel: 1,
      hwMaxVaLg2: 32,
    });
    const tables = pt.tableCount;
    // 4 GiB is the first page past a 32-bit VA: level 2 is tried, level 3's items (2^39)
    // are already wider than the VA, so the walk ends with -ERANGE.
    expect(pt.mapRange(1 << 20, 0, 1, RW, new IotlbGather())).toBe(ERANGE);
    expect(calls.n).toBe(1);
    expect([pt.topLevel, pt.tableCount, pt.alloc.live]).toEqual([1, tables, tables]);
    // The last page below 4 GiB needs the same level 2, which now stays.
    expect(pt.mapRange((1 << 20) - 1, 0, 1, RW, new IotlbGather())).toBe(0);
    expect(pt.topLevel).toBe(2);
  });
});

describe("tables below a narrower top", () => {
  it("an AMDv1 table starting at level 5 (128 items) still gets 512-item tables below", () => {
    const { pt } = counted({ format: amdv1Format, features: 0, startingLevel: 5 });
    expect([pt.tableItems(5), pt.tableItems(4), pt.tableItems(0)]).toEqual([128, 512, 512]);
    // Granule page 300 * 2^36 + 400 has index 300 in the level-4 table and 400 in its leaf
    // table; page 400 shares only the top and the level-4 table with it.
    const far = 300 * 2 ** 36 + 400;
    const g = new IotlbGather();
    expect(pt.mapRange(far, 0x111, 1, RW, g)).toBe(0);
    expect(pt.mapRange(400, 0x222, 1, RW, g)).toBe(0);
    const runs: number[][] = [];
    pt.readRuns(far - 1, 3, (va, oa, n) => runs.push([va, oa, n]));
    pt.readRuns(399, 3, (va, oa, n) => runs.push([va, oa, n]));
    expect(runs).toEqual([
      [far, 0x111, 1],
      [400, 0x222, 1],
    ]);
    expect(pt.tableCount).toBe(2 + 2 * 4);
    // Every item in the image is one the two maps wrote: no table overlaps another.
    expect(ptImage(pt).map((e) => [e.level, e.index])).toEqual([
      [5, 0],
      [4, 0],
      [4, 300],
      [3, 0],
      [2, 0],
      [1, 0],
      [0, 400],
      [3, 0],
      [2, 0],
      [1, 0],
      [0, 400],
    ]);
    expect(pt.tableBytes).toBe(10 * 4096);
  });
});

describe("the page-size bitmap of a DYNAMIC_TOP table", () => {
  it("stops below the first level whose item spans the whole VA", () => {
    const { pt } = counted({
      format: amdv1Format,
      features: 1 << PT_FEAT_DYNAMIC_TOP,
      startingLevel: 1,
      hwMaxVaLg2: 39,
    });
    // Levels 0..2 (items 2^12, 2^21, 2^30) and their contiguous sizes; nothing of 2^39 or more.
    expect(pt.pgsizeBitmap >> 39n).toBe(0n);
    expect(pt.pgsizeBitmap & (1n << 30n)).toBe(1n << 30n);
  });

  it("WARNs on a size no level holds, leaving the bitmap in force", () => {
    const { pt } = counted({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    const before = pt.pgsizeBitmap;
    expect(() => pt.setPgsizeBitmap(before | (1n << 13n))).toThrow(/not representable/);
    expect(() => pt.setPgsizeBitmap(1n << 11n)).toThrow(/not representable/);
    expect(pt.pgsizeBitmap).toBe(before);
  });

  it("a configuration the format refuses is an error at init", () => {
    // VT-d second stage needs more than a 30-bit VA (-EOPNOTSUPP).
    expect(() => new PtIommu({ format: vtdssFormat, features: 0, hwMaxVaLg2: 30 })).toThrow(
      /vtdss.*invalid configuration \(errno 95\)/,
    );
  });
});

describe("a sign-extended table (PT_FEAT_SIGN_EXTEND)", () => {
  const x86 = () =>
    counted({ format: x86_64Format, features: 1 << PT_FEAT_SIGN_EXTEND, hwMaxVaLg2: 48 }).pt;
  /** Granule page numbers of the 64-bit space. */
  const LOWER_END = 2 ** 35; // 2^47 bytes
  const UPPER_START = 2 ** 52 - 2 ** 35; // 0xffff_8000_0000_0000

  it("refuses a range in the hole or across the end of the lower half (-ERANGE)", () => {
    const pt = x86();
    const g = new IotlbGather();
    expect(pt.mapRange(LOWER_END, 0, 1, RW, g)).toBe(ERANGE);
    expect(pt.mapRange(LOWER_END - 1, 0, 2, RW, g)).toBe(ERANGE);
    expect(pt.mapRange(UPPER_START - 1, 0, 2, RW, g)).toBe(ERANGE);
    expect(pt.tableCount).toBe(1);
  });

  it("reads each half back from where it was mapped", () => {
    const pt = x86();
    const g = new IotlbGather();
    expect(pt.mapRange(UPPER_START + 5, 0x100, 1, RW, g)).toBe(0);
    expect(pt.mapRange(LOWER_END - 1, 0x200, 1, RW, g)).toBe(0);
    const runs: number[][] = [];
    pt.readRuns(UPPER_START, 16, (va, oa, n) => runs.push([va, oa, n]));
    pt.readRuns(LOWER_END - 16, 16, (va, oa, n) => runs.push([va, oa, n]));
    expect(runs).toEqual([
      [UPPER_START + 5, 0x100, 1],
      [LOWER_END - 1, 0x200, 1],
    ]);
  });
});

describe("readRuns over a range past the table's reach", () => {
  it("reads the part inside the reach (upper part of a 39-bit VA)", () => {
    const pt = counted({ format: vtdssFormat, features: 0, hwMaxVaLg2: 39 }).pt;
    // Page 2^26 is 256 GiB, in the upper half of the 39-bit space.
    expect(pt.mapRange(2 ** 26, 7, 1, RW, new IotlbGather())).toBe(0);
    expect(pt.readRuns(2 ** 26, 2 ** 40, () => {})).toBe(1);
    expect(pt.readRuns(0, 2 ** 40, () => {})).toBe(1);
  });
});

describe("index arithmetic above 2^31 pages", () => {
  it("a 4 KiB leaf at 2^45 + 0x5000 sits at index 5 of its leaf table", () => {
    const d = vtdDomain();
    d.pgsizeBitmap = 0x1000n;
    iommuMap(d, (1n << 45n) + 0x5000n, 0x1234000n, 0x1000n, RW);
    const at: number[] = [];
    d.pt!.forEachTable((level, arr, base, n) => {
      for (let i = 0; i < n; i++) if (level === 0 && arr[base + i]! > 0) at.push(i);
    });
    expect(at).toEqual([5]);
    expect(d.pt!.readRuns(2 ** 33, 16, () => {})).toBe(1);
  });

  it("a 16 KiB granule (index shifts 0, 11, 22): each level takes its own bits of the page", () => {
    // 47-bit stage 1 with 16 KiB pages: three levels of 2048 items, the top at level 2.
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 14, ias: 47 });
    // Page 2^31 + 2^26 + 3: top index (page >> 22) 528, level 1 index 0, leaf index 3.
    const iova = (1n << 45n) + (1n << 40n) + 3n * 0x4000n;
    iommuMap(d, iova, 0x10000000n, 0x4000n, RW);
    expect(ptImage(d.pt!).map((e) => [e.level, e.index])).toEqual([
      [2, 528],
      [1, 0],
      [0, 3],
    ]);
    expect(iommuIovaToPhys(d, iova + 0x10n)).toBe(0x10000010n);
  });

  it("ctz of a page number above 2^32 with several high bits", () => {
    expect(ctz53(3 * 2 ** 32)).toBe(32);
    expect(ctz53(6 * 2 ** 40)).toBe(41);
  });
});

describe("unmap_range stops at the first hole of a leaf table", () => {
  for (const hole of [10, 13]) {
    it(`a hole at page ${hole}: [8, 32) unmaps pages 8..${hole - 1}`, () => {
      const d = vtdDomain();
      d.pgsizeBitmap = 0x1000n;
      for (let p = 0; p < 32; p++) if (p !== hole) iommuMap(d, BigInt(p) << 12n, 0n, 0x1000n, RW);
      expect(iommuUnmap(d, 8n << 12n, 24n << 12n)).toBe(BigInt(hole - 8) << 12n);
    });
  }
});
