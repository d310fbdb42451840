/**
 * unmap_range, iova_to_phys, the dirty walks and the run reader driven on the page table itself
 * (granule pages): the range checks every entry point makes first (pt_check_range: an address
 * past the table is refused, never folded onto a mapped one), the IOVA range put on the gather
 * and when a FLUSH_RANGE_NO_GAPS table syncs, record_dirty's item arithmetic, and the runs
 * iommuReadRuns is built from.
 *
 * @see unmap_pages, iova_to_phys, read_and_clear_dirty, record_dirty, gather_range_pages in
 *      drivers/iommu/generic_pt/iommu_pt.h
 * @see arm_lpae_unmap_pages, __arm_lpae_free_pgtable in drivers/iommu/io-pgtable-arm.c
 */
import { EINVAL, ENOENT, EOPNOTSUPP, ERANGE } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IotlbGather,
  PT_FEAT_FLUSH_RANGE,
  PT_FEAT_FLUSH_RANGE_NO_GAPS,
  PT_FEAT_SIGN_EXTEND,
  amdv1Format,
  armLpaeDomainAlloc,
  iommuMap,
  iommuUnmap,
  vtdssFormat,
  x86_64Format,
} from "../src/index.js";
import { PtIommu } from "../src/iommu-pt.js";
import { RW } from "./helpers.js";

const ULONG_MAX = (1n << 64n) - 1n;
const vtd = (features = 1 << PT_FEAT_FLUSH_RANGE) =>
  new PtIommu({ format: vtdssFormat, features, hwMaxVaLg2: 48 });
const amd = () =>
  new PtIommu({ format: amdv1Format, features: 1 << PT_FEAT_FLUSH_RANGE, startingLevel: 2 });
const x86 = () =>
  new PtIommu({ format: x86_64Format, features: 1 << PT_FEAT_SIGN_EXTEND, hwMaxVaLg2: 48 });

function map(pt: PtIommu, va: number, oa: number, n: number, prot = RW): void {
  expect(pt.mapRange(va, oa, n, prot, new IotlbGather())).toBe(0);
}

function runs(pt: PtIommu, va: number, n: number): { total: number; runs: number[][] } {
  const out: number[][] = [];
  const total = pt.readRuns(va, n, (v, oa, p, prot) => out.push([v, oa, p, prot]));
  return { total, runs: out };
}

function dirty(pt: PtIommu, va: number, n: number, flags = 0) {
  const rec: number[][] = [];
  const g = new IotlbGather();
  const err = pt.readAndClearDirty(va, n, flags, (v, p) => rec.push([v, p]), g);
  return { err, rec, g };
}

/** Pages of a 48-bit VT-d table; 2^32 - 1 is where index arithmetic on -1 would land. */
const LIMIT = 2 ** 36;
const ALIAS = 2 ** 32 - 1;

describe("an address past the table reaches nothing mapped (pt_check_range first)", () => {
  it("unmap, iova_to_phys, the prot and dirty lookups", () => {
    const v = vtd();
    map(v, 0, 0x10, 1);
    map(v, 5, 0x15, 1);
    map(v, ALIAS, 0x20, 1);
    expect(v.iovaToPhys(LIMIT)).toBe(-1);
    expect(v.iovaToPhys(LIMIT + 5)).toBe(-1);
    expect(v.protAt(LIMIT)).toBe(-1);
    expect(v.setDirty(LIMIT)).toBe(ENOENT);
    expect(v.setDirtyRange(LIMIT, 1)).toBe(ERANGE);
    expect(dirty(v, LIMIT, 1).err).toBe(ERANGE);
    expect(v.unmapRange(LIMIT, 1, new IotlbGather())).toBe(0);
    expect(v.unmapRange(LIMIT, 3, new IotlbGather())).toBe(0);
    expect([v.iovaToPhys(0), v.iovaToPhys(5), v.iovaToPhys(ALIAS)]).toEqual([0x10, 0x15, 0x20]);
    expect(v.protAt(ALIAS)).toBe(RW);
    expect(v.setDirty(ALIAS)).toBe(0);
    expect(dirty(v, ALIAS, 1).rec).toEqual([[ALIAS, 1]]);
  });

  it("a hole of a sign-extended table is not the top of its upper half", () => {
    const x = x86();
    const top = 2 ** 52 - 1;
    map(x, top, 0x31, 1);
    expect(x.iovaToPhys(top)).toBe(0x31);
    // 2^36 - 1 pages is in the hole; masked to 48 bits it would be the last page.
    expect(x.iovaToPhys(2 ** 36 - 1)).toBe(-1);
    expect(x.iovaToPhys(2 ** 35)).toBe(-1);
    // A range running past the u64 end is outside too, also with a page at the alias of -1.
    map(x, ALIAS, 0x41, 1);
    expect(runs(x, top, 2)).toEqual({ total: 0, runs: [] });
  });

  it("a hole in an existing leaf table is unmapped as 0 pages and has no prot", () => {
    const v = vtd();
    map(v, 0, 0x10, 1);
    expect(v.unmapRange(1, 1, new IotlbGather())).toBe(0);
    expect(v.protAt(1)).toBe(-1);
    expect(v.iovaToPhys(0)).toBe(0x10);
  });
});

describe("the IOVA range on the gather (gather_range_pages)", () => {
  it("FLUSH_RANGE widens one range and never syncs part-way", () => {
    const v = vtd();
    let syncs = 0;
    v.syncGather = () => syncs++;
    map(v, 0, 0x100, 10);
    map(v, 100, 0x200, 10);
    const g = new IotlbGather();
    expect(v.unmapRange(0, 2, g)).toBe(2);
    expect(v.unmapRange(100, 2, g)).toBe(2);
    expect(syncs).toBe(0);
    expect([g.start, g.end]).toEqual([0n, 102n * 4096n - 1n]);
  });

  it("FLUSH_RANGE_NO_GAPS syncs only before a range that neither overlaps nor touches", () => {
    const v = vtd((1 << PT_FEAT_FLUSH_RANGE) | (1 << PT_FEAT_FLUSH_RANGE_NO_GAPS));
    const synced: bigint[][] = [];
    v.syncGather = (g) => {
      synced.push([g.start, g.end]);
      g.init();
    };
    map(v, 0, 0x100, 40);
    const g = new IotlbGather();
    expect(v.unmapRange(10, 2, g)).toBe(2);
    expect(v.unmapRange(8, 2, g)).toBe(2);
    expect(v.unmapRange(12, 2, g)).toBe(2);
    expect(synced).toEqual([]);
    expect(v.unmapRange(20, 1, g)).toBe(1);
    expect(synced).toEqual([[8n * 4096n, 14n * 4096n - 1n]]);
    expect([g.start, g.end]).toEqual([20n * 4096n, 21n * 4096n - 1n]);
  });
});

describe("dirty tracking (set_dirty, read_and_clear_dirty)", () => {
  it("a format without dirty bits refuses, a second set keeps the leaf as it is", () => {
    expect(x86().setDirtyRange(0, 1)).toBe(EOPNOTSUPP);
    const v = vtd();
    map(v, 3, 0x33, 1);
    expect(v.setDirtyRange(3, 1)).toBe(0);
    expect(v.setDirtyRange(3, 1)).toBe(0);
    expect(v.occupancy()[0]!.leavesBySizeLg2).toEqual({ 12: 1 });
    expect(dirty(v, 3, 1).rec).toEqual([[3, 1]]);
    expect([v.iovaToPhys(3), v.protAt(3)]).toEqual([0x33, RW]);
    expect(dirty(v, 3, 1).rec).toEqual([]);
  });

  it("an empty range is -EINVAL; no record callback still clears", () => {
    const v = vtd();
    map(v, 3, 0x33, 1);
    expect(v.setDirty(3)).toBe(0);
    expect(dirty(v, 3, 0).err).toBe(EINVAL);
    const g = new IotlbGather();
    expect(v.readAndClearDirty(3, 1, 0, undefined, g)).toBe(0);
    expect([g.start, g.end]).toEqual([3n * 4096n, 4n * 4096n - 1n]);
    expect(dirty(v, 3, 1).rec).toEqual([]);
  });

  it("a contiguous entry reports up to its last item or the range's end, whichever is first", () => {
    // An 8 MiB leaf (four 2 MiB items) at IOVA 1 GiB, dirty; a read of its first 600 pages
    // ends in item 1: min(log2_set_mod_max(0, 2) = 3, end index 2) = 2 items, 4 MiB.
    const a = amd();
    map(a, 2 ** 18, 2048, 2048);
    expect(a.occupancy()[1]!.leavesBySizeLg2).toEqual({ 23: 1 });
    expect(a.setDirty(2 ** 18)).toBe(0);
    const d = dirty(a, 2 ** 18, 600);
    expect(d.rec).toEqual([[2 ** 18, 1024]]);
    expect([d.g.start, d.g.end]).toEqual([1n << 30n, (1n << 30n) + (4n << 20n) - 1n]);
  });

  it("a walk entering a contiguous entry at its last item reports and gathers nothing", () => {
    const a = amd();
    map(a, 2, 2, 2);
    expect(a.occupancy()[0]!.leavesBySizeLg2).toEqual({ 13: 1 });
    expect(a.setDirty(2)).toBe(0);
    const d = dirty(a, 3, 1);
    expect(d.rec).toEqual([]);
    expect([d.g.start, d.g.end]).toEqual([ULONG_MAX, 0n]);
  });
});

describe("runs of contiguous output", () => {
  it("a run starting inside a 2 MiB leaf has that page's output and stops at the leaf's end", () => {
    const v = vtd();
    map(v, 0, 512, 512);
    expect(runs(v, 5, 1000)).toEqual({ total: 507, runs: [[5, 517, 507, RW]] });
  });

  it("a leaf walk finds a lone leaf at every distance after another, past runs of holes", () => {
    // The hole scan checks eight items at a time from the item after a hole: a leaf anywhere
    // in such a block, or in a later one, must still be found.
    for (const first of [2, 6, 9]) {
      for (let gap = 1; gap <= 20; gap++) {
        const pt = vtd();
        map(pt, first, 0x1000, 1);
        map(pt, first + gap, 0x3000, 1);
        expect(runs(pt, 0, 512).runs, `${first} + ${gap}`).toEqual([
          [first, 0x1000, 1, RW],
          [first + gap, 0x3000, 1, RW],
        ]);
        // From a hole after a hole: the scan's first block starts right after the walk's start.
        if (gap >= 3)
          expect(runs(pt, first + 2, 510 - first).runs, `from ${first + 2}`).toEqual([
            [first + gap, 0x3000, 1, RW],
          ]);
      }
    }
  });

  it("a leaf walk finds two equal leaves (one page mapped twice) anywhere in a scanned block", () => {
    // IOAS_COPY maps a page at two IOVAs: equal items, whose squares a wrong sign would cancel.
    for (let i = 0; i < 8; i++) {
      for (let j = i + 1; j < 8; j++) {
        const pt = vtd();
        map(pt, 1 + i, 0x5000, 1);
        map(pt, 1 + j, 0x5000, 1);
        expect(runs(pt, 0, 512).runs, `${i}, ${j}`).toEqual([
          [1 + i, 0x5000, 1, RW],
          [1 + j, 0x5000, 1, RW],
        ]);
      }
    }
  });

  it("merges only leaves adjacent in IOVA and output with the same prot", () => {
    const v = vtd();
    map(v, 0, 100, 1);
    map(v, 1, 101, 1);
    map(v, 5, 102, 1);
    map(v, 6, 103, 1, IOMMU_READ);
    expect(runs(v, 0, 8)).toEqual({
      total: 4,
      runs: [
        [0, 100, 2, RW],
        [5, 102, 1, RW],
        [6, 103, 1, IOMMU_READ],
      ],
    });
  });

  it("reports runs of a sign-extended table's upper half at their full addresses", () => {
    const x = x86();
    const u = 2 ** 52 - 16;
    map(x, u, 1, 1);
    map(x, u + 2, 50, 1);
    expect(runs(x, u, 4)).toEqual({
      total: 2,
      runs: [
        [u, 1, 1, RW],
        [u + 2, 50, 1, RW],
      ],
    });
  });
});

describe("freeing a table with a block before a table pointer (__arm_lpae_free_pgtable)", () => {
  it("a 1 GiB unmap over a 2 MiB block and a table of pages frees both tables", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, ias: 48 });
    const pt = d.pt!;
    iommuMap(d, 0n, 0x4000_0000n, 2n << 20n, RW);
    iommuMap(d, (2n << 20n) + 0x1000n, 0x1234_5000n, 0x1000n, RW);
    expect(pt.tableCount).toBe(4);
    expect(iommuUnmap(d, 0n, 1n << 30n)).toBe(1n << 30n);
    expect(pt.tableCount).toBe(2);
    expect(pt.alloc.live).toBe(2);
  });
});
