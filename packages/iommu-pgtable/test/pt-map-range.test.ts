/**
 * map_range driven on the page table itself (granule pages, errno returned): the leaf sizes
 * pt_compute_best_pgsize / pt_pgsz_count choose, the order of its checks, increase_top, the
 * item count of a top that is not a plain table, and clear_contig replacing empty tables by a
 * leaf (the tables freed and the IOVA range they covered, both on the gather).
 *
 * @see map_pages, __map_range, clear_contig, increase_top in drivers/iommu/generic_pt/iommu_pt.h
 * @see pt_compute_best_pgsize, pt_pgsz_count in drivers/iommu/generic_pt/pt_iter.h
 */
import { EADDRINUSE, EINVAL, ENXIO, ERANGE, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { armLpaeFormat } from "../src/fmt/arm-lpae.js";
import {
  IOMMU_READ,
  IotlbGather,
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_FLUSH_RANGE,
  amdv1Format,
  vtdssFormat,
} from "../src/index.js";
import { PtIommu, type PtIommuCfg } from "../src/iommu-pt.js";
import { RW } from "./helpers.js";

const FLUSH = 1 << PT_FEAT_FLUSH_RANGE;

function table(cfg: Omit<PtIommuCfg, "features"> & { features?: number }): PtIommu {
  return new PtIommu({ features: FLUSH, ...cfg });
}

const vtd = () => table({ format: vtdssFormat, hwMaxVaLg2: 48 });
/** AMDv1 with a fixed level-2 top (39-bit VA): every power of two from 4 KiB is a leaf size. */
const amd = () => table({ format: amdv1Format, startingLevel: 2 });
/** ARM stage 2, 40-bit IPA: a level-2 top of 1024 concatenated items (arm_lpae_alloc_pgtable). */
const armConcat = (shouldFail?: (site: string) => boolean) =>
  table({
    format: armLpaeFormat({ stage: 2, granuleLg2: 12 }),
    hwMaxVaLg2: 40,
    ...(shouldFail ? { shouldFail } : {}),
  });

/** Leaf entries of the whole table by log2 bytes. */
function leaves(pt: PtIommu): Record<number, number> {
  const out: Record<number, number> = {};
  for (const o of pt.occupancy())
    for (const [lg2, n] of Object.entries(o.leavesBySizeLg2)) out[+lg2] = (out[+lg2] ?? 0) + n;
  return out;
}

function map(pt: PtIommu, va: number, oa: number, n: number, prot = RW, g = new IotlbGather()) {
  return pt.mapRange(va, oa, n, prot, g);
}

describe("map_range: leaf sizes", () => {
  it("emits the small page only up to where the next size becomes usable (pt_pgsz_count)", () => {
    // 4K at page 1, then pages 2..3 are 8 KiB aligned in iova and paddr: one 8K leaf.
    const a = amd();
    expect(map(a, 1, 1, 3)).toBe(0);
    expect(leaves(a)).toEqual({ 12: 1, 13: 1 });
    // VT-d: one 4K page up to the 2 MiB boundary, then a 2M leaf.
    const v = vtd();
    expect(map(v, 511, 511, 513)).toBe(0);
    expect(leaves(v)).toEqual({ 12: 1, 21: 1 });
  });

  it("a one-page map reports the page as mapped, a busy slot none", () => {
    const v = vtd();
    expect(map(v, 7, 9, 1)).toBe(0);
    expect(v.mappedPages).toBe(1);
    expect(map(v, 7, 10, 1)).toBe(EADDRINUSE);
    expect(v.mappedPages).toBe(0);
  });
});

describe("map_range: checks before anything is written", () => {
  it("no usable page size is -ENXIO before the length check; a length off the page is -EINVAL", () => {
    const v = vtd();
    v.setPgsizeBitmap(1n << 21n);
    // iova one 4 KiB page off the only (2 MiB) size: pt_compute_best_pgsize finds nothing.
    expect(map(v, 1, 1, 513)).toBe(ENXIO);
    // Aligned, but 2 MiB + 4 KiB: refused whole, not a 2M leaf and then -ENXIO.
    expect(map(v, 0, 0, 513)).toBe(EINVAL);
    expect(v.mappedPages).toBe(0);
    expect(v.tableCount).toBe(1);
    expect(map(v, 0, 0, 1024)).toBe(0);
    expect(leaves(v)).toEqual({ 21: 2 });
  });

  it("a fixed top is never grown: a range past it is -ERANGE without a table allocation", () => {
    let asked = 0;
    const a = armConcat(() => {
      asked++;
      return true;
    });
    expect(map(a, 2 ** 28, 0, 1)).toBe(ERANGE);
    expect(asked).toBe(0);
    expect([a.topLevel, a.tableItems(a.topLevel), a.tableCount]).toEqual([2, 1024, 1]);
  });

  it("DYNAMIC_TOP grows the top for a leaf above it even when the range is in reach", () => {
    // Level-1 top: 1 GiB of reach, and a 1 GiB leaf is a level-2 item (increase_top).
    const a = table({
      format: amdv1Format,
      features: FLUSH | (1 << PT_FEAT_DYNAMIC_TOP),
      startingLevel: 1,
    });
    expect(map(a, 0, 0, 2 ** 18)).toBe(0);
    expect(a.topLevel).toBe(2);
    expect(leaves(a)).toEqual({ 30: 1 });
    expect(a.iovaToPhys(2 ** 18 - 1)).toBe(2 ** 18 - 1);
  });
});

describe("a concatenated top (1024 items) and the 512-item tables below it", () => {
  it("maps, reads and unmaps in the top's upper half without growing it", () => {
    const a = armConcat();
    const page = 2 ** 27 + 7; // IPA 512 GiB + 28 KiB: top item 512
    // The first tables of the slab (id 0 on: the top is not one of them) come from a full walk.
    expect(map(a, page + 1, 0x4322, 2)).toBe(0);
    expect(map(a, page, 0x4321, 1)).toBe(0);
    expect(a.topLevel).toBe(2);
    expect(a.iovaToPhys(page + 2)).toBe(0x4323);
    const runs: number[][] = [];
    expect(a.readRuns(page, 3, (va, oa, n) => runs.push([va, oa, n]))).toBe(3);
    expect(runs).toEqual([[page, 0x4321, 3]]);
    expect(a.unmapRange(page, 3, new IotlbGather())).toBe(3);
    expect(a.iovaToPhys(page)).toBe(-1);
  });

  it("a walk across two leaf tables stays inside each (the table after the first is unrelated)", () => {
    const a = armConcat();
    // Leaf table A (pages 0..511), then the tables of IPA 1 GiB, then A's neighbour B.
    expect(map(a, 509, 0x1000, 1)).toBe(0);
    expect(map(a, 2 ** 18, 0x9000, 1)).toBe(0);
    expect(map(a, 510, 0x1001, 4)).toBe(0);
    expect(a.mappedPages).toBe(4);
    expect(a.iovaToPhys(2 ** 18)).toBe(0x9000);
    const runs: number[][] = [];
    expect(a.readRuns(509, 5, (va, oa, n) => runs.push([va, oa, n]))).toBe(5);
    expect(runs).toEqual([[509, 0x1000, 5]]);
    expect(a.unmapRange(509, 5, new IotlbGather())).toBe(5);
    expect(a.iovaToPhys(2 ** 18)).toBe(0x9000);
    expect(a.iovaToPhys(513)).toBe(-1);
  });
});

describe("clear_contig: empty tables replaced by a leaf", () => {
  /** Leave an empty level-0 table under each 2 MiB item listed (map one page, unmap it). */
  function emptyLeafTables(pt: PtIommu, items2M: number[]): void {
    for (const i of items2M) {
      expect(map(pt, i * 512 + 5, 0x77, 1)).toBe(0);
      expect(pt.unmapRange(i * 512 + 5, 1, new IotlbGather())).toBe(1);
    }
  }

  it("a 4 MiB leaf over two empty tables queues both, with the 4 MiB they covered", () => {
    const a = amd();
    emptyLeafTables(a, [2, 3]);
    expect(a.tableCount).toBe(4);
    const g = new IotlbGather();
    expect(map(a, 1024, 4096, 1024, RW, g)).toBe(0);
    expect(leaves(a)).toEqual({ 22: 1 });
    expect(g.freelist.length).toBe(2);
    expect([g.start, g.end]).toEqual([4n << 20n, (8n << 20n) - 1n]);
    expect(a.iovaToPhys(1024 + 600)).toBe(4096 + 600);
  });

  it("a table with a leaf two levels below the new leaf is -EADDRINUSE, nothing replaced", () => {
    const v = vtd();
    expect(map(v, 5, 0x55, 1)).toBe(0);
    const g = new IotlbGather();
    expect(map(v, 0, 2 ** 18, 2 ** 18, RW, g)).toBe(EADDRINUSE);
    expect(g.freelist.length).toBe(0);
    expect(v.iovaToPhys(5)).toBe(0x55);
    expect(v.tableCount).toBe(4);
  });

  it("the leaf check reads every item of the table below, past a 128-item top's count", () => {
    // AMDv1 with its level-5 (128-item) top; a 256 TiB leaf is one level-4 item. The level-3
    // table under it holds one 4K page at its item 200.
    const a = table({ format: amdv1Format, startingLevel: 5 });
    expect(a.tableItems(5)).toBe(128);
    expect(map(a, 200 * 2 ** 27, 0x88, 1, IOMMU_READ)).toBe(0);
    expect(map(a, 0, 0, 2 ** 36)).toBe(EADDRINUSE);
    expect(a.iovaToPhys(200 * 2 ** 27)).toBe(0x88);
  });
});

describe("the level-0 walk cache never answers for another table", () => {
  it("a walk above 2^31 pages leaves no key that a low page can match", () => {
    const v = vtd();
    const high = 2 ** 31 + 0x10;
    expect(map(v, high, 0x123, 1)).toBe(0);
    expect(v.iovaToPhys(high)).toBe(0x123);
    // 512 + 0x10 >>> 9 is 1: the low page must walk its own (absent) tables.
    expect(v.iovaToPhys(512 + 0x10)).toBe(-1);
    expect(map(v, 512 + 0x10, 0x456, 1)).toBe(0);
    expect(v.iovaToPhys(512 + 0x10)).toBe(0x456);
    expect(v.iovaToPhys(high)).toBe(0x123);
  });
});

describe("a leaf size above a fixed top", () => {
  it("WARNs (a bitmap given a size the top cannot hold)", () => {
    const a = table({ format: amdv1Format, startingLevel: 1 });
    a.setPgsizeBitmap(a.pgsizeBitmap | (1n << 30n));
    expect(() => map(a, 0, 0, 2 ** 18)).toThrow(KernelWarning);
  });
});
