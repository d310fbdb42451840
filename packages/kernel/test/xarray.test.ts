import { describe, expect, it, vi } from "vitest";
import { XA_STOP, XArray } from "../src/index.js";

/**
 * The sparse index -> value map behind the page cache and the page tables, with the semantics of
 * include/linux/xarray.h: xa_store / xa_load / xa_erase (which returns the old entry),
 * xa_for_each_range in ascending index order, and a range erase.
 */
function entries(x: XArray, lo = 0, hi = Number.MAX_SAFE_INTEGER): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  x.forEachInRange(lo, hi, (i, v) => out.push([i, v]));
  return out;
}

describe("XArray values and counts", () => {
  it("stores 0 through 0xfffffffe and refuses anything else, changing nothing", () => {
    const x = new XArray();
    x.store(0, 0);
    x.store(1, 0xffff_fffe);
    expect([x.load(0), x.load(1), x.count]).toEqual([0, 0xffff_fffe, 2]);
    for (const bad of [0xffff_ffff, -1, 1.5, Number.NaN]) {
      expect(() => x.store(2, bad)).toThrow(RangeError);
    }
    // For update, -1 is "empty" and XA_STOP ends the walk.
    for (const bad of [0xffff_ffff, 1.5])
      expect(() => x.update(2, 3, () => bad)).toThrow(RangeError);
    expect([x.load(2), x.count]).toEqual([-1, 2]);
  });

  it("erase returns the old entry, also 0, and -1 for an empty slot of a live leaf", () => {
    const x = new XArray();
    x.store(3, 0);
    x.store(4, 9);
    expect(x.erase(5)).toBe(-1);
    expect(x.count).toBe(2);
    expect(x.erase(3)).toBe(0);
    expect([x.load(3), x.load(4), x.count]).toEqual([-1, 9, 1]);
    expect(x.erase(4)).toBe(9);
    expect([x.count, entries(x)]).toEqual([0, []]);
  });

  it("update counts what it adds and removes, not what it rewrites or leaves empty", () => {
    const one = new XArray();
    one.store(5, 1);
    one.update(6, 7, () => 9);
    expect([one.count, entries(one)]).toEqual([
      2,
      [
        [5, 1],
        [6, 9],
      ],
    ]);
    const x = new XArray();
    x.store(5, 1);
    x.store(7, 0);
    // Adds 6 next to a stored entry of the same leaf; rewrites 7 (from 0) and 5; 8, 9 stay empty.
    x.update(5, 10, (i, v) => (i === 6 ? 9 : i === 7 ? 4 : v < 0 ? -1 : v + 1));
    expect([x.count, entries(x)]).toEqual([
      3,
      [
        [5, 2],
        [6, 9],
        [7, 4],
      ],
    ]);
    x.update(5, 7, () => -1);
    expect([x.count, entries(x)]).toEqual([1, [[7, 4]]]);
    x.update(7, 8, () => 0);
    expect([x.count, x.load(7)]).toEqual([1, 0]);
    x.update(100, 2000, () => -1);
    expect(x.count).toBe(1);
  });

  it("update stops at XA_STOP without writing that slot", () => {
    const x = new XArray();
    x.update(0, 10, (i) => (i === 3 ? XA_STOP : i));
    expect(entries(x)).toEqual([
      [0, 0],
      [1, 1],
      [2, 2],
    ]);
  });

  it("an update writing 2 stores 2: XA_STOP is -2, not a storable value", async () => {
    // Evaluated here so that the constant is this test's own.
    vi.resetModules();
    const fresh = await import("../src/xarray.js");
    expect(fresh.XA_STOP).toBe(-2);
    const x = new fresh.XArray();
    x.update(0, 2, () => 2);
    expect([x.load(0), x.load(1)]).toEqual([2, 2]);
  });
});

describe("XArray walks", () => {
  it("visits leaves in index order whatever order they were created in", () => {
    const x = new XArray();
    for (const i of [5000, 3000, 1000, 10]) x.store(i, i);
    const want = [10, 1000, 3000, 5000].map((i) => [i, i]);
    expect(entries(x)).toEqual(want);
    expect(entries(x, 0, 5001)).toEqual(want);
    const erased: number[] = [];
    x.eraseRange(0, 2 ** 40, (i) => erased.push(i));
    expect(erased).toEqual([10, 1000, 3000, 5000]);
  });

  it("eraseRange without a callback removes [lo, hi) and nothing around it", () => {
    const x = new XArray();
    for (let i = 500; i < 530; i++) x.store(i, i);
    x.eraseRange(505, 520);
    expect(x.count).toBe(15);
    expect([x.load(504), x.load(505), x.load(519), x.load(520)]).toEqual([504, -1, -1, 520]);
  });

  it("scanRuns hands over at most n entries, a stretch cut at n and at each leaf", () => {
    const x = new XArray();
    for (let i = 0; i < 530; i++) x.store(i, 1000 + i);
    const seen: number[][] = [];
    const take = (v: number, n: number) => {
      seen.push([v, n]);
      return true;
    };
    expect(x.scanRuns(0, 3, 1, take)).toBe(3);
    expect(seen).toEqual([[1000, 3]]);
    seen.length = 0;
    expect(x.scanRuns(508, 6, 1, take)).toBe(6);
    expect(seen).toEqual([
      [1508, 4],
      [1512, 2],
    ]);
  });
});
