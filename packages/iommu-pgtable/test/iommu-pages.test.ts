/**
 * The page-table allocator (drivers/iommu/iommu-pages.c): every table comes zeroed
 * (iommu_alloc_pages_node_sz allocates with __GFP_ZERO), live tables are accounted per level and
 * given back on free (the NR_IOMMU_PAGES / NR_SECONDARY_PAGETABLE counters of
 * iommu_alloc_pages_node_sz and iommu_free_pages), and freeing a table twice or dropping the
 * allocator with tables still live is a bug that must not pass silently.
 */
import { describe, expect, it } from "vitest";
import { TableAllocator } from "../src/iommu-pages.js";

/** 512 eight-byte items per table, as an ARM LPAE 4K-granule table. */
const ITEMS_LG2 = 9;

const items = (a: TableAllocator, id: number) => {
  const off = a.offset(id);
  return a.chunk(id).subarray(off, off + (1 << a.itemsLg2));
};

describe("TableAllocator (iommu_alloc_pages_node_sz / iommu_free_pages)", () => {
  it("accounts a few hundred tables per level, well past the first 64, and gives them back", () => {
    const a = new TableAllocator(ITEMS_LG2);
    const ids: number[] = [];
    for (let i = 0; i < 300; i++) ids.push(a.alloc(i % 4));
    expect(new Set(ids).size).toBe(300);
    for (let i = 0; i < 300; i++) expect(a.level(ids[i]!)).toBe(i % 4);
    expect(Array.from(a.perLevel.subarray(0, 5))).toEqual([75, 75, 75, 75, 0]);
    expect([a.live, a.allocated, a.released]).toEqual([300, 300, 0]);
    // Free the level-1 tables only: the other levels keep their counts.
    for (let i = 1; i < 300; i += 4) a.free(ids[i]!);
    expect(Array.from(a.perLevel.subarray(0, 4))).toEqual([75, 0, 75, 75]);
    expect([a.live, a.allocated, a.released]).toEqual([225, 300, 75]);
    for (let i = 0; i < 300; i++) if (i % 4 !== 1) a.free(ids[i]!);
    expect(Array.from(a.perLevel)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect([a.live, a.allocated, a.released]).toEqual([0, 300, 300]);
    a.dispose();
    expect(a.chunks).toHaveLength(0);
  });

  it("holds tables in a few large chunks, not a host object per table", () => {
    // The scale rule of the model: 300 tables are a handful of typed arrays, and the memory is
    // the tables' own bytes plus at most part of one chunk.
    for (const lg2 of [4, ITEMS_LG2]) {
      const a = new TableAllocator(lg2);
      const ids = Array.from({ length: 300 }, () => a.alloc(0));
      const tableBytes = ids.length * a.tableBytes;
      const bytes = a.chunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
      expect(a.chunks.length).toBeLessThanOrEqual(ids.length / 8);
      expect(bytes).toBeGreaterThanOrEqual(tableBytes);
      expect(bytes).toBeLessThan(tableBytes + (1 << 20));
      for (const id of ids) a.free(id);
      a.dispose();
    }
  });

  it("a table is zeroed when allocated, also one reused after a free", () => {
    const a = new TableAllocator(ITEMS_LG2);
    const ids = Array.from({ length: 100 }, () => a.alloc(0));
    for (const id of ids) items(a, id).fill(-7);
    for (const id of ids) a.free(id);
    const again = Array.from({ length: 200 }, () => a.alloc(2));
    for (const id of again) {
      expect(a.level(id)).toBe(2);
      expect(items(a, id).every((x) => x === 0)).toBe(true);
    }
    expect([a.perLevel[0], a.perLevel[2], a.live]).toEqual([0, 200, 200]);
    for (const id of again) a.free(id);
    a.dispose();
  });

  it("a table marked zeroed (an unmap walk emptied it) keeps its level and count, and is reused empty", () => {
    const a = new TableAllocator(ITEMS_LG2);
    const ids = Array.from({ length: 80 }, (_, i) => a.alloc(i % 3));
    for (const id of ids) a.markZeroed(id);
    for (let i = 0; i < ids.length; i++) expect(a.level(ids[i]!)).toBe(i % 3);
    expect(Array.from(a.perLevel.subarray(0, 3))).toEqual([27, 27, 26]);
    for (const id of ids) a.free(id);
    expect(() => a.free(ids[0]!)).toThrow(/freed twice/);
    expect([a.live, a.released, a.perLevel[0]]).toEqual([0, 80, 0]);
    // Reused as another level, written, freed without the mark: zeroed again.
    const again = Array.from({ length: 80 }, () => a.alloc(1));
    for (const id of again) {
      expect(a.level(id)).toBe(1);
      expect(items(a, id).every((x) => x === 0)).toBe(true);
      items(a, id).fill(3);
      a.free(id);
    }
    for (const id of Array.from({ length: 80 }, () => a.alloc(0))) {
      expect(items(a, id).every((x) => x === 0)).toBe(true);
      a.free(id);
    }
    a.dispose();
  });

  it("tables of a new allocator are zeroed after other allocators were disposed", () => {
    // One table per chunk (a 512 KiB table): the memory of disposed allocators comes back.
    const big = 16;
    const owners = [new TableAllocator(big), new TableAllocator(big)];
    for (const a of owners) items(a, a.alloc(0)).fill(5);
    const disposed = owners.map((a) => a.chunk(0));
    expect(disposed[0]).not.toBe(disposed[1]);
    for (const a of owners) {
      a.free(0);
      a.dispose();
    }
    const c = new TableAllocator(big);
    const ids = [c.alloc(1), c.alloc(1), c.alloc(1)];
    for (const id of ids) {
      expect(c.chunk(id)).toBeInstanceOf(Float64Array);
      expect(items(c, id).every((x) => x === 0)).toBe(true);
    }
    // The check above is about that memory: the two disposed chunks are the first two tables
    // (last given back, first taken), and only the third is new.
    expect(c.chunk(ids[0]!)).toBe(disposed[1]);
    expect(c.chunk(ids[1]!)).toBe(disposed[0]);
    expect(disposed).not.toContain(c.chunk(ids[2]!));
    for (const id of ids) c.free(id);
    c.dispose();
  });

  it("every table is its own memory: what is written to one stays there and reaches no other", () => {
    // Small tables (16 items: many to a chunk) as well as the 4K-granule size.
    for (const lg2 of [4, ITEMS_LG2]) {
      const a = new TableAllocator(lg2);
      const ids = Array.from({ length: 100 }, () => a.alloc(0));
      for (const id of ids) items(a, id).fill(id + 1);
      for (const id of ids) {
        expect(items(a, id)).toHaveLength(1 << lg2);
        expect(items(a, id).every((x) => x === id + 1)).toBe(true);
      }
      for (const id of ids) a.free(id);
      a.dispose();
    }
  });

  it("touchNext writes only the tables the next allocations return, and leaves them zeroed", () => {
    const a = new TableAllocator(ITEMS_LG2);
    const ids = Array.from({ length: 70 }, (_, i) => a.alloc(i % 3));
    for (const id of ids) items(a, id).fill(id + 1);
    // Two tables on the free list (zeroed by free), then the never-used tail of the chunk.
    a.free(ids[10]!);
    a.free(ids[20]!);
    for (const count of [1, 2, 3, 8]) a.touchNext(count);
    const counts = [a.live, a.allocated, a.released, ...a.perLevel];
    for (const id of ids) {
      const want = id === ids[10] || id === ids[20] ? 0 : id + 1;
      expect(items(a, id).every((x) => x === want)).toBe(true);
    }
    expect([a.live, a.allocated, a.released, ...a.perLevel]).toEqual(counts);
    // The next allocations are those tables, zeroed; then the rest of the slab.
    expect([a.alloc(0), a.alloc(0)]).toEqual([ids[20], ids[10]]);
    for (let i = 0; i < 60; i++) expect(items(a, a.alloc(1)).every((x) => x === 0)).toBe(true);
  });

  it("freeing a table twice throws and changes no count", () => {
    const a = new TableAllocator(ITEMS_LG2);
    const id = a.alloc(1);
    a.alloc(1);
    a.free(id);
    expect(() => a.free(id)).toThrow(/freed twice/);
    expect([a.perLevel[1], a.live, a.released]).toEqual([1, 1, 1]);
  });

  it("dispose with live tables throws and keeps them; once they are freed it succeeds", () => {
    const a = new TableAllocator(ITEMS_LG2);
    const id = a.alloc(3);
    items(a, id)[0] = 42;
    expect(() => a.dispose()).toThrow(/1 tables still live/);
    expect(a.chunks).toHaveLength(1);
    expect(items(a, id)[0]).toBe(42);
    a.free(id);
    a.dispose();
    expect(a.chunks).toHaveLength(0);
    // A disposed allocator starts again from an empty slab.
    expect(a.alloc(0)).toBe(0);
  });
});
