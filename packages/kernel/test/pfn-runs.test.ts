import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PfnRuns, XA_STOP, XArray } from "../src/index.js";

describe("PfnRuns", () => {
  it("merges contiguous pushes, keeps exact pfns above 2^32, grows", () => {
    const r = new PfnRuns(1);
    r.push(10, 2);
    r.push(12, 3);
    r.push(2 ** 40, 1);
    r.push(5, 0);
    expect(r.length).toBe(2);
    expect([r.pfn(0), r.npages(0), r.pfn(1), r.npages(1)]).toEqual([10, 5, 2 ** 40, 1]);
    expect(r.totalPages).toBe(6);
    expect(r.pfnAtPage(5)).toBe(2 ** 40);
    expect(() => r.pfnAtPage(6)).toThrow(RangeError);
    expect(() => r.pfn(2)).toThrow(RangeError);
    const seen: number[][] = [];
    r.forEach((p, n) => {
      seen.push([p, n]);
    });
    expect(seen).toEqual([
      [10, 5],
      [2 ** 40, 1],
    ]);
    r.truncatePages(3);
    expect([r.length, r.totalPages, r.npages(0)]).toEqual([1, 3, 3]);
    r.clear();
    expect([r.length, r.totalPages]).toEqual([0, 0]);
  });

  it("keeps separate runs past the initial capacity and refuses a run index outside the list", () => {
    // 20 runs: past the 8 of a new list and the 16 of its first growth.
    const r = new PfnRuns();
    for (let i = 0; i < 20; i++) r.push(i * 2, 1);
    expect([r.length, r.totalPages]).toEqual([20, 20]);
    expect([r.pfn(19), r.npages(19), r.pfn(16), r.pfnAtPage(17)]).toEqual([38, 1, 32, 34]);
    for (const i of [-1, 0.5, 20]) {
      expect(() => r.pfn(i)).toThrow(RangeError);
      expect(() => r.npages(i)).toThrow(RangeError);
    }
  });

  it("truncating at a run boundary drops the next run whole; past the end changes nothing", () => {
    const r = new PfnRuns();
    r.push(10, 2);
    r.push(20, 3);
    r.truncatePages(9);
    expect([r.length, r.totalPages, r.npages(1)]).toEqual([2, 5, 3]);
    r.truncatePages(2);
    expect([r.length, r.totalPages, r.npages(0)]).toEqual([1, 2, 2]);
    // The dropped run's slot is not read back.
    expect(() => r.pfnAtPage(2)).toThrow(RangeError);
    r.push(12, 1);
    expect([r.length, r.npages(0), r.pfnAtPage(2)]).toEqual([1, 3, 12]);
  });

  it("expands to the same page list it was given (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(50), fc.integer({ min: 1, max: 5 })), { maxLength: 40 }),
        fc.nat(200),
        (pushes, cut) => {
          const r = new PfnRuns(2);
          const pages: number[] = [];
          for (const [p, n] of pushes) {
            r.push(p, n);
            for (let i = 0; i < n; i++) pages.push(p + i);
          }
          const keep = Math.min(cut, pages.length);
          r.truncatePages(keep);
          const out: number[] = [];
          r.forEach((p, n) => {
            for (let i = 0; i < n; i++) out.push(p + i);
          });
          expect(out).toEqual(pages.slice(0, keep));
          for (let i = 1; i < r.length; i++)
            expect(r.pfn(i - 1) + r.npages(i - 1)).not.toBe(r.pfn(i));
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe("XArray", () => {
  it("stores, loads -1 when empty, erases and counts", () => {
    const x = new XArray();
    expect(x.load(5)).toBe(-1);
    x.store(5, 0);
    x.store(2 ** 33, 7);
    x.store(5, 3);
    expect([x.load(5), x.load(2 ** 33), x.count]).toEqual([3, 7, 2]);
    expect(x.erase(5)).toBe(3);
    expect(x.erase(5)).toBe(-1);
    expect(x.count).toBe(1);
    x.clear();
    expect(x.count).toBe(0);
  });

  it("walks, erases and updates ranges in order", () => {
    const x = new XArray();
    for (const i of [1, 600, 1500, 100000]) x.store(i, i * 2);
    const seen: number[] = [];
    x.forEachInRange(0, 1501, (i) => seen.push(i));
    expect(seen).toEqual([1, 600, 1500]);
    x.eraseRange(500, 2000, (i) => seen.push(-i));
    expect(seen.slice(3)).toEqual([-600, -1500]);
    expect(x.count).toBe(2);
    x.update(0, 10, (i, v) => (i === 1 ? -1 : i === 5 ? XA_STOP : v < 0 ? i : v));
    const all: Array<[number, number]> = [];
    x.forEachInRange(0, Number.MAX_SAFE_INTEGER, (i, v) => all.push([i, v]));
    expect(all).toEqual([
      [0, 0],
      [2, 2],
      [3, 3],
      [4, 4],
      [100000, 200000],
    ]);
  });

  it("scanRuns hands over stretches of step-spaced values, stopping at a hole or a refusal", () => {
    const x = new XArray();
    // 10..13 step 2 across the leaf boundary at 512, then a break in the step, then a hole.
    for (let i = 0; i < 6; i++) x.store(508 + i, 100 + 2 * i);
    x.store(514, 7);
    x.store(515, 9);
    const seen: number[][] = [];
    const took = x.scanRuns(508, 20, 2, (v, n) => {
      seen.push([v, n]);
      return true;
    });
    expect(took).toBe(8);
    expect(seen).toEqual([
      [100, 4],
      [108, 2],
      [7, 2],
    ]);
    // A refused stretch is not counted; nothing past it is visited.
    expect(x.scanRuns(508, 20, 2, (v) => v !== 108)).toBe(4);
    expect(x.scanRuns(508, 3, 2, () => true)).toBe(3);
    expect(x.scanRuns(600, 5, 2, () => true)).toBe(0);
  });
});
