/**
 * struct iommu_iotlb_gather and its helpers (include/linux/iommu.h): iommu_iotlb_gather_init,
 * iommu_iotlb_gather_add_range, iommu_iotlb_gather_is_disjoint, and the freelist of table pages
 * that may only go back after the flush. The model keeps the range in 2 KiB units, so the
 * byte values here are 2 KiB aligned, where the two views agree.
 */
import { KernelWarning } from "@x/kernel";
import { describe, expect, it, vi } from "vitest";
import { IotlbGather } from "../src/index.js";

const ULONG_MAX = (1n << 64n) - 1n;

/** A page table's side of the freelist; it records copies, as the gather reuses its array. */
function owner() {
  const released: number[][] = [];
  return { released, releaseTables: vi.fn((ids: readonly number[]) => released.push([...ids])) };
}

describe("iommu_iotlb_gather", () => {
  it("starts empty: start ULONG_MAX, end 0, no page size", () => {
    const g = new IotlbGather();
    expect([g.empty, g.start, g.end, g.pgsize]).toEqual([true, ULONG_MAX, 0n, 0n]);
  });

  it("add_range widens [start, end] to cover each range and never narrows it", () => {
    const g = new IotlbGather();
    g.addRange(0x4000n, 0x1000n);
    expect([g.empty, g.start, g.end]).toEqual([false, 0x4000n, 0x4fffn]);
    g.addRange(0x8000n, 0x800n);
    expect([g.start, g.end]).toEqual([0x4000n, 0x87ffn]);
    g.addRange(0x2000n, 0x800n);
    expect([g.start, g.end]).toEqual([0x2000n, 0x87ffn]);
    g.addRange(0x5000n, 0x1000n);
    expect([g.start, g.end]).toEqual([0x2000n, 0x87ffn]);
    // A range that ends inside the gather moves only its start.
    g.addRange(0x1000n, 0x2000n);
    expect([g.start, g.end]).toEqual([0x1000n, 0x87ffn]);
  });

  it("a range at IOVA 0 is a non-empty gather (end 0x7ff)", () => {
    const g = new IotlbGather();
    g.addRange(0n, 0x800n);
    expect([g.empty, g.start, g.end]).toEqual([false, 0n, 0x7ffn]);
    expect(g.isDisjoint(0x1000n, 0x800n)).toBe(true);
    g.init();
    expect([g.empty, g.start, g.end]).toEqual([true, ULONG_MAX, 0n]);
  });

  it("a range of size 0 inside the gather changes nothing", () => {
    const g = new IotlbGather();
    g.addRange(0x4000n, 0x2000n);
    g.addRange(0x5000n, 0n);
    expect([g.start, g.end]).toEqual([0x4000n, 0x5fffn]);
  });

  it("is_disjoint: false while empty; adjacent or overlapping ranges are not disjoint", () => {
    const g = new IotlbGather();
    expect(g.isDisjoint(0x1000n, 0x1000n)).toBe(false);
    g.addRange(0x4000n, 0x2000n); // [0x4000, 0x5fff]
    const cases: Array<[bigint, bigint, boolean]> = [
      [0x1000n, 0x1000n, true], // ends at 0x1fff: a gap below
      [0x2000n, 0x1800n, true], // ends at 0x37ff: still a gap
      [0x3000n, 0x1000n, false], // ends at 0x3fff: touches start
      [0x3000n, 0x2000n, false], // overlaps start
      [0x4800n, 0x800n, false], // inside
      [0x5000n, 0x2000n, false], // overlaps end
      [0x6000n, 0x1000n, false], // starts at end + 1: touches
      [0x6800n, 0x800n, true], // a gap above
      [0x10000n, 0x1000n, true],
    ];
    for (const [iova, size, disjoint] of cases) {
      expect([iova, g.isDisjoint(iova, size)]).toEqual([iova, disjoint]);
    }
  });

  it("init empties the range, the page size and the freelist", () => {
    const g = new IotlbGather();
    g.addRange(0x4000n, 0x1000n);
    g.pgsize = 0x1000n;
    g.addFreed(owner(), [3, 4]);
    g.init();
    expect([g.empty, g.start, g.end, g.pgsize, g.freelist.length]).toEqual([
      true,
      ULONG_MAX,
      0n,
      0n,
      0,
    ]);
    // Each part alone is reset too: a freelist without a range, a page size without one.
    g.addFreed(owner(), [5]);
    g.init();
    expect(g.freelist).toEqual([]);
    g.pgsize = 0x200000n;
    g.init();
    expect(g.pgsize).toBe(0n);
  });

  it("the freelist goes back to its page table once, after the flush", () => {
    const g = new IotlbGather();
    const pt = owner();
    g.releaseFreelist();
    g.addFreed(pt, []);
    g.releaseFreelist();
    expect(pt.releaseTables).not.toHaveBeenCalled();
    g.addFreed(pt, [7]);
    g.addFreed(pt, [8, 9]);
    expect(g.freelist).toEqual([7, 8, 9]);
    g.releaseFreelist();
    expect(pt.released).toEqual([[7, 8, 9]]);
    expect(g.freelist).toEqual([]);
    g.releaseFreelist();
    expect(pt.releaseTables).toHaveBeenCalledTimes(1);
  });

  it("one gather collects the tables of one page table at a time", () => {
    const g = new IotlbGather();
    const a = owner();
    const b = owner();
    g.addFreed(a, [1]);
    expect(() => g.addFreed(b, [2])).toThrow(KernelWarning);
    g.releaseFreelist();
    // Once released, another page table may use the gather.
    g.addFreed(b, [2]);
    g.releaseFreelist();
    expect([a.released, b.released]).toEqual([[[1]], [[2]]]);
  });
});
