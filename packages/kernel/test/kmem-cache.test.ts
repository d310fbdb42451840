import { describe, expect, it } from "vitest";
import { KmemCache } from "../src/kmem-cache.js";
import { PAGE_SIZE, PhysMem, XArray } from "../src/index.js";

/** Fixed-size zeroed objects from shared slabs: disjoint views, a new slab every perSlab. */
describe("KmemCache", () => {
  it("hands out zeroed objects of its size that share no byte, across slabs", () => {
    const cache = new KmemCache(Uint8Array, PAGE_SIZE, 8);
    const pages = Array.from({ length: 2 * 8 + 1 }, () => cache.zalloc());
    for (const [i, p] of pages.entries()) {
      expect(p.length).toBe(PAGE_SIZE);
      expect(p.every((b) => b === 0)).toBe(true);
      // Mark each page with its number everywhere; a shared byte would show another's mark.
      p.fill(i + 1);
    }
    for (const [i, p] of pages.entries()) expect(p.every((b) => b === i + 1)).toBe(true);
    const slabs = new Set(pages.map((p) => p.buffer));
    expect(slabs.size).toBe(3);
    for (const slab of slabs) {
      const offsets = pages.filter((p) => p.buffer === slab).map((p) => p.byteOffset);
      expect(offsets).toEqual(Array.from({ length: offsets.length }, (_, i) => i * PAGE_SIZE));
    }
  });

  it("hands objects out as its view type, one object's bytes long, at object boundaries", () => {
    const cache = new KmemCache(Uint32Array, 12, 4);
    const words = Array.from({ length: 5 }, () => cache.zalloc());
    for (const [i, w] of words.entries()) {
      expect(w).toBeInstanceOf(Uint32Array);
      expect([w.length, w.byteLength, w.byteOffset]).toEqual([3, 12, (i % 4) * 12]);
    }
    expect(words[4]!.buffer).not.toBe(words[0]!.buffer);
  });

  it("never hands a page out again: a page freed and rewritten elsewhere reads zero", () => {
    const mem = new PhysMem({ ramBytes: 1n << 24n });
    const a = mem.allocFolio(0);
    mem.writePhys(BigInt(a) << 12n, new Uint8Array(PAGE_SIZE).fill(0xa5));
    mem.folioPut(a);
    // The next folio is the same frame; its contents were dropped with the old folio.
    const b = mem.allocFolio(0);
    expect(b).toBe(a);
    const out = new Uint8Array(PAGE_SIZE).fill(1);
    mem.readPhys(BigInt(b) << 12n, out);
    expect(out.every((x) => x === 0)).toBe(true);
    mem.writePhys(BigInt(b) << 12n, new Uint8Array([7]));
    mem.readPhys(BigInt(b) << 12n, out);
    expect([out[0], out.subarray(1).every((x) => x === 0)]).toEqual([7, true]);
  });

  it("backs RAM pages and MMIO pages of one PhysMem from the same slabs, disjointly", () => {
    const mem = new PhysMem({ ramBytes: 1n << 24n });
    const bar = mem.addMmioRegion("bar", 4n * BigInt(PAGE_SIZE));
    const pfns = [mem.allocFolio(0), mem.allocFolio(0)];
    for (const [i, pfn] of pfns.entries())
      mem.writePhys(BigInt(pfn) << 12n, new Uint8Array(PAGE_SIZE).fill(i + 1));
    for (let i = 0; i < 4; i++)
      mem.writePhys(bar.base + BigInt(i * PAGE_SIZE), new Uint8Array(PAGE_SIZE).fill(0x10 + i));
    const out = new Uint8Array(PAGE_SIZE);
    for (const [i, pfn] of pfns.entries()) {
      mem.readPhys(BigInt(pfn) << 12n, out);
      expect(out.every((x) => x === i + 1)).toBe(true);
    }
    for (let i = 0; i < 4; i++) {
      mem.readPhys(bar.base + BigInt(i * PAGE_SIZE), out);
      expect(out.every((x) => x === 0x10 + i)).toBe(true);
    }
  });
});

describe("XArray leaves from the shared leaf cache", () => {
  it("keep their entries apart across slabs, and an emptied leaf comes back empty", () => {
    const x = new XArray();
    const y = new XArray();
    // 40 leaves each (512 entries per leaf), interleaved between two arrays: several slabs.
    for (let leaf = 0; leaf < 40; leaf++) {
      x.update(leaf * 512, leaf * 512 + 512, (i) => i);
      y.store(leaf * 512 + 511, leaf);
    }
    expect([x.count, y.count]).toEqual([40 * 512, 40]);
    for (let leaf = 0; leaf < 40; leaf++) {
      expect(x.load(leaf * 512)).toBe(leaf * 512);
      expect(x.load(leaf * 512 + 511)).toBe(leaf * 512 + 511);
      expect(y.load(leaf * 512 + 510)).toBe(-1);
      expect(y.load(leaf * 512 + 511)).toBe(leaf);
    }
    x.eraseRange(0, 40 * 512);
    y.store(3, 7);
    x.store(5, 9);
    const seen: Array<[number, number]> = [];
    x.forEachInRange(0, 512, (i, v) => seen.push([i, v]));
    expect(seen).toEqual([[5, 9]]);
    expect([x.count, y.load(3), y.load(511)]).toEqual([1, 7, 0]);
  });
});
