/**
 * The behaviours of the kernel's kunit_iommu_pt.h suite, on every iommupt configuration:
 * test_map_simple, test_unmap_split, test_map_table_to_oa, test_random_map,
 * test_pgsize_boundary, test_mixed, test_increase_level, plus the exit-hook leak check.
 */
import { EADDRINUSE } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  PT_FEAT_DYNAMIC_TOP,
  amdv1Format,
  iommuDomainFree,
  iommuIovaToPhys,
  iommuMap,
  iommuUnmap,
  iommuptDomainAlloc,
} from "../src/index.js";
import { IOMMUPT_CFGS, leafCounts, sizesOf } from "./configs.js";

const RW = IOMMU_READ | IOMMU_WRITE;

function vaLimit(d: IommuDomain): bigint {
  return d.pt!.isSignExtended ? d.geometry.apertureEnd + 1n : 1n << BigInt(d.pt!.maxVaLg2);
}

/** A deterministic PRNG (mulberry32) so random tests replay. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

for (const cfg of IOMMUPT_CFGS) {
  describe(`iommupt ${cfg.name}`, () => {
    it("test_map_simple: one page of every size, counted, translated, unmapped", () => {
      const d = cfg.make();
      const limit = vaLimit(d);
      const maxOa = 1n << BigInt(d.pt!.maxOaLg2);
      for (const lg2 of sizesOf(d.pgsizeBitmap)) {
        const size = 1n << BigInt(lg2);
        if (size * 2n > limit || size * 2n > maxOa) continue;
        const iova = size;
        const pa = size;
        iommuMap(d, iova, pa, size, RW);
        expect(leafCounts(d)).toEqual({ [lg2]: 1 });
        expect(iommuIovaToPhys(d, iova)).toBe(pa);
        expect(iommuIovaToPhys(d, iova + size - 1n)).toBe(pa + size - 1n);
        expect(iommuIovaToPhys(d, iova - 1n)).toBe(0n);
        expect(iommuUnmap(d, iova, size)).toBe(size);
        expect(leafCounts(d)).toEqual({});
        expect(iommuIovaToPhys(d, iova)).toBe(0n);
      }
      iommuDomainFree(d);
      expect(d.pt!.alloc.live).toBe(0);
    });

    it("test_unmap_split: a short unmap removes the whole leaf and stops there", () => {
      const d = cfg.make();
      const limit = vaLimit(d);
      const sizes = sizesOf(d.pgsizeBitmap).map((s) => 1n << BigInt(s));
      for (const big of sizes) {
        if (big * 4n > limit || big * 4n > 1n << BigInt(d.pt!.maxOaLg2)) continue;
        for (const small of sizes.filter((s) => s < big)) {
          iommuMap(d, big, big, big, RW);
          iommuMap(d, big * 2n, big * 3n, big, RW);
          expect(iommuUnmap(d, big, small)).toBe(big);
          expect(iommuIovaToPhys(d, big)).toBe(0n);
          expect(iommuIovaToPhys(d, big * 2n)).toBe(big * 3n);
          // starting inside a leaf removes nothing
          expect(iommuUnmap(d, big * 2n + small, small)).toBe(0n);
          expect(iommuUnmap(d, big * 2n, big)).toBe(big);
        }
      }
      expect(leafCounts(d)).toEqual({});
    });

    it("test_map_table_to_oa: an empty table left by partial unmaps becomes a large leaf", () => {
      const d = cfg.make();
      const sizes = sizesOf(d.pgsizeBitmap);
      const small = 1n << BigInt(sizes[0]!);
      const limit = vaLimit(d);
      for (const lg2 of sizes.slice(1)) {
        const big = 1n << BigInt(lg2);
        if (big * 2n > limit || big * 2n > 1n << BigInt(d.pt!.maxOaLg2)) continue;
        // Two small pages in the big item, unmapped one by one: never fully covering a table.
        iommuMap(d, big, 0n, small, RW);
        iommuMap(d, big + big / 2n, small, small, RW);
        const withTables = d.pt!.tableCount;
        expect(iommuUnmap(d, big, small)).toBe(small);
        expect(iommuUnmap(d, big + big / 2n, small)).toBe(small);
        expect(d.pt!.tableCount).toBe(withTables);
        iommuMap(d, big, big, big, RW);
        expect(leafCounts(d)).toEqual({ [lg2]: 1 });
        // A leaf at a higher level replaces the empty table; a contiguous leaf in it does not.
        const l1Item = BigInt(d.pt!.itemPages(1)) << BigInt(d.pt!.granuleLg2);
        if (big >= l1Item) expect(d.pt!.tableCount).toBeLessThan(withTables);
        else expect(d.pt!.tableCount).toBe(withTables);
        expect(iommuIovaToPhys(d, big + 5n)).toBe(big + 5n);
        expect(iommuUnmap(d, big, big)).toBe(big);
      }
    });

    it("test_random_map: overlaps fail with EADDRINUSE, everything translates, nothing leaks", () => {
      const d = cfg.make();
      const sizes = sizesOf(d.pgsizeBitmap).filter((s) => s <= 24);
      const window = BigInt(Math.min(30, d.pt!.maxVaLg2 - 1, d.pt!.maxOaLg2 - 1));
      const rand = rng(cfg.name.length * 7919);
      const maps = new Map<bigint, { pa: bigint; len: bigint }>();
      const initialTables = d.pt!.tableCount;
      for (let i = 0; i < 300; i++) {
        const lg2 = BigInt(sizes[Math.floor(rand() * sizes.length)]!);
        const align = 1n << lg2;
        const count = BigInt(1 + Math.floor(rand() * 3));
        const len = align * count;
        const slots = (1n << window) / align - count;
        const iova = (BigInt(Math.floor(rand() * Number(slots))) * align) as bigint;
        const pa = BigInt(Math.floor(rand() * Number(slots))) * align;
        const overlaps = [...maps].filter(([a, m]) => a < iova + len && iova < a + m.len);
        try {
          iommuMap(d, iova, pa, len, RW);
          expect(overlaps).toEqual([]);
          maps.set(iova, { pa, len });
        } catch (e) {
          expect((e as { errno?: number }).errno).toBe(EADDRINUSE);
          expect(overlaps.length).toBeGreaterThan(0);
          for (const [a, m] of overlaps) {
            expect(iommuUnmap(d, a, m.len)).toBe(m.len);
            maps.delete(a);
          }
          iommuMap(d, iova, pa, len, RW);
          maps.set(iova, { pa, len });
        }
      }
      for (const [a, m] of maps) {
        expect(iommuIovaToPhys(d, a)).toBe(m.pa);
        expect(iommuIovaToPhys(d, a + m.len - 1n)).toBe(m.pa + m.len - 1n);
      }
      for (const [a, m] of maps) expect(iommuUnmap(d, a, m.len)).toBe(m.len);
      expect(leafCounts(d)).toEqual({});
      expect(d.pt!.tableCount).toBeGreaterThanOrEqual(initialTables);
      iommuDomainFree(d);
      expect(d.pt!.alloc.live).toBe(0);
    });

    it("test_pgsize_boundary: 128 KiB at iova 0xfef80000 pa 0x208b95d000 is 4 KiB leaves", () => {
      const d = cfg.make();
      if (0xfef80000n + 0x20000n > vaLimit(d) || !(d.pgsizeBitmap & 0x1000n)) return;
      iommuMap(d, 0xfef80000n, 0x208b95d000n, 0x20000n, RW);
      expect(leafCounts(d)).toEqual({ 12: 32 });
      expect(iommuIovaToPhys(d, 0xfef9f123n)).toBe(0x208b97c123n);
      expect(iommuUnmap(d, 0xfef80000n, 0x20000n)).toBe(0x20000n);
    });

    it("test_mixed: 0x3fe400000..0x4c0600000 with 2M|1G is 14×2M, 3×1G, 3×2M", () => {
      const d = cfg.make();
      const bitmap = (1n << 21n) | (1n << 30n);
      if ((d.pgsizeBitmap & bitmap) !== bitmap || vaLimit(d) < 0x4c0600000n) return;
      d.pgsizeBitmap = bitmap;
      const start = 0x3fe400000n;
      const len = 0x4c0600000n - start;
      iommuMap(d, start, start, len, RW);
      expect(leafCounts(d)).toEqual({ 21: 17, 30: 3 });
      for (let a = start; a < start + len; a += 0x200000n)
        expect(iommuIovaToPhys(d, a + 9n)).toBe(a + 9n);
      expect(iommuUnmap(d, start, len)).toBe(len);
      expect(leafCounts(d)).toEqual({});
    });
  });
}

describe("test_increase_level (AMDv1 dynamic top)", () => {
  it("grows the top to fit a high IOVA, keeping lower mappings", () => {
    const d = iommuptDomainAlloc({
      format: amdv1Format,
      features: 1 << PT_FEAT_DYNAMIC_TOP,
      startingLevel: 2,
    });
    expect(d.pt!.topLevel).toBe(2);
    expect(d.geometry.apertureEnd).toBe((1n << 64n) - 1n);
    iommuMap(d, 0x1000n, 0x2000n, 0x1000n, RW);
    iommuMap(d, 1n << 50n, 0x3000n, 0x1000n, RW);
    expect(d.pt!.topLevel).toBe(4);
    iommuMap(d, (1n << 64n) - 0x1000n, 0x4000n, 0x1000n, RW);
    expect(d.pt!.topLevel).toBe(5);
    expect(iommuIovaToPhys(d, 0x1000n)).toBe(0x2000n);
    expect(iommuIovaToPhys(d, (1n << 50n) + 1n)).toBe(0x3001n);
    expect(iommuIovaToPhys(d, (1n << 64n) - 1n)).toBe(0x4fffn);
    iommuDomainFree(d);
    expect(d.pt!.alloc.live).toBe(0);
  });

  it("a fixed top refuses a range beyond it with ERANGE and changes nothing", () => {
    const d = iommuptDomainAlloc({ format: amdv1Format, features: 0, startingLevel: 2 });
    expect(() => iommuMap(d, 1n << 39n, 0n, 0x1000n, RW)).toThrow(/ERANGE/);
    expect(d.pt!.tableCount).toBe(1);
  });
});
