/**
 * The behaviours of the kernel's kunit_generic_pt.h suite: format-level facts checked on every
 * format — bit helpers, best page size vs brute force, table pointers and radix, max VA,
 * possible sizes, entry OAs at the extremes, prot round trips.
 */
import { U64_MAX } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  AMDV1PT_FMT_OA,
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  TABLE_PA_BASE,
  armLpaeDomainAlloc,
  ctz53,
  fls53,
  iommuIovaToPhys,
  iommuMap,
  iommuUnmap,
  ptImage,
} from "../src/index.js";
import { IOMMUPT_CFGS, sizesOf } from "./configs.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const ALL = [
  ...IOMMUPT_CFGS,
  { name: "arm s1 4k", make: () => armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 }) },
  { name: "arm s2 16k", make: () => armLpaeDomainAlloc({ stage: 2, granuleLg2: 14, ias: 47 }) },
  { name: "arm s1 64k", make: () => armLpaeDomainAlloc({ stage: 1, granuleLg2: 16, oas: 52 }) },
];

describe("test_bitops", () => {
  it("ctz / fls at the integer limits", () => {
    expect(ctz53(0)).toBe(64);
    expect(ctz53(1)).toBe(0);
    expect(ctz53(2 ** 31)).toBe(31);
    expect(ctz53(2 ** 32)).toBe(32);
    expect(ctz53(2 ** 52)).toBe(52);
    expect(ctz53(2 ** 53 - 2)).toBe(1);
    expect(fls53(1)).toBe(0);
    expect(fls53(2 ** 32 - 1)).toBe(31);
    expect(fls53(2 ** 32)).toBe(32);
    expect(fls53(2 ** 53 - 1)).toBe(52);
  });
});

for (const cfg of ALL) {
  describe(`generic_pt ${cfg.name}`, () => {
    it("test_best_pgsize: matches a brute-force search", () => {
      const d = cfg.make();
      const pt = d.pt!;
      const pages = sizesOf(d.pgsizeBitmap).map((b) => b - pt.granuleLg2);
      let seed = 99;
      const rand = (max: number) => {
        seed = (Math.imul(seed, 48271) + 11) >>> 0;
        return seed % max;
      };
      for (let i = 0; i < 2000; i++) {
        const va = rand(1 << 24) * 2 ** rand(20);
        const oa = rand(1 << 24) * 2 ** rand(20);
        const n = 1 + rand(2 ** rand(30));
        let brute = -1;
        for (const r of pages) if (va % 2 ** r === 0 && oa % 2 ** r === 0 && 2 ** r <= n) brute = r;
        expect(pt.computeBestPgsize(va, oa, n)).toBe(brute);
      }
    });

    it("test_table_radix / test_max_va: levels decode a complete VA; the last page maps", () => {
      const d = cfg.make();
      const pt = d.pt!;
      let bits = pt.granuleLg2;
      for (let l = 0; l < pt.topLevel; l++) {
        expect(pt.itemPages(l)).toBe(2 ** (bits - pt.granuleLg2));
        bits += Math.log2(pt.tableItems(l));
      }
      bits += Math.log2(pt.tableItems(pt.topLevel));
      expect(bits).toBeGreaterThanOrEqual(pt.currentVaLg2);
      const min = 1n << BigInt(sizesOf(d.pgsizeBitmap)[0]!);
      const last = (pt.isSignExtended ? U64_MAX + 1n : 1n << BigInt(pt.maxVaLg2)) - min;
      iommuMap(d, last, min, min, RW);
      expect(iommuIovaToPhys(d, last + min - 1n)).toBe(2n * min - 1n);
      expect(iommuUnmap(d, last, min)).toBe(min);
    });

    it("test_table_ptr: every table pointer names the table below it", () => {
      const d = cfg.make();
      const min = 1n << BigInt(sizesOf(d.pgsizeBitmap)[0]!);
      iommuMap(d, 0n, 0n, min, RW);
      const img = ptImage(d.pt!);
      const tables = new Set(img.map((e) => e.tablePa));
      expect(tables.size).toBe(d.pt!.topLevel + 1);
      const pointers = img.filter((e) => e.level > 0);
      expect(pointers.length).toBe(d.pt!.topLevel);
      const fmt = d.pt!.format;
      for (const p of pointers) {
        const below = img.filter((e) => e.level === p.level - 1).map((e) => e.tablePa);
        const named = below.filter((t) => fmt.encodeTable(t, p.level, d.pt!.features) === p.pte);
        expect(named.length).toBeGreaterThan(0);
        expect(named[0]! >= TABLE_PA_BASE).toBe(true);
      }
    });

    it("test_entry_possible_sizes: no size spans a whole table", () => {
      const d = cfg.make();
      const pt = d.pt!;
      for (let l = 0; l <= pt.topLevel; l++) {
        const mask = pt.format.contigMask(l);
        for (let k = 0; k < 16; k++)
          if (mask & (1 << k))
            expect(2 ** k).toBeLessThan(pt.tableItems(l) * (l === pt.topLevel ? 2 : 1));
      }
      if (pt.format.name.startsWith("amdv1")) expect(d.pgsizeBitmap & (1n << 39n)).toBe(0n);
    });

    it("test_entry_oa: every item of every size decodes to its OA, at OA 0 and at the top", () => {
      const d = cfg.make();
      const pt = d.pt!;
      const maxOa = 1n << BigInt(pt.maxOaLg2);
      for (const lg2 of sizesOf(d.pgsizeBitmap)) {
        const size = 1n << BigInt(lg2);
        if (size > 1n << 34n || size * 2n > maxOa || size * 2n > 1n << BigInt(pt.currentVaLg2))
          continue;
        for (const oa of [0n, maxOa - size]) {
          iommuMap(d, size, oa, size, RW);
          const step =
            size >> 4n > 1n << BigInt(pt.granuleLg2) ? size >> 4n : 1n << BigInt(pt.granuleLg2);
          for (let off = 0n; off < size; off += step)
            expect(iommuIovaToPhys(d, size + off + 3n)).toBe(oa + off + 3n);
          if (pt.format.name.startsWith("amdv1")) {
            // Replicated items are identical; the OA field's run of ones gives the size back.
            const items = ptImage(pt).filter(
              (e) => (e.pte & 1n && ((e.pte >> 9n) & 7n) !== BigInt(e.level)) || e.level === 0,
            );
            const leafPtes = new Set(items.map((e) => e.pte));
            expect(leafPtes.size).toBe(1);
            const field = (([...leafPtes][0]! & AMDV1PT_FMT_OA) >> 12n) << BigInt(pt.granuleLg2);
            expect(field & ~(size - 1n)).toBe(oa);
          }
          expect(iommuUnmap(d, size, size)).toBe(size);
        }
      }
    });

    it("test_attr_from_entry: every prot combination round-trips", () => {
      const d = cfg.make();
      const flags = [IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO, IOMMU_PRIV];
      const min = 1n << BigInt(sizesOf(d.pgsizeBitmap)[0]!);
      for (let m = 0; m < 64; m++) {
        const prot = flags.reduce((a, f, i) => (m & (1 << i) ? a | f : a), 0);
        if (!(prot & RW)) continue;
        iommuMap(d, 0n, min, min, prot);
        expect(d.pt!.protAt(0)).toBe(prot);
        const fmt = d.pt!.format;
        expect(fmt.canWrite(prot)).toBe((prot & IOMMU_WRITE) !== 0);
        iommuUnmap(d, 0n, min);
      }
    });
  });
}
