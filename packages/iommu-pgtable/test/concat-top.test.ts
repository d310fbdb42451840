/**
 * An ARM stage-2 table whose top is several concatenated pages (arm_lpae_alloc_pgtable: a
 * 40-bit IPA with 4 KiB pages starts at level 1 with a 1024-entry, 8 KiB pgd instead of a
 * fourth level). That top lives outside the slab of 4 KiB tables, so its address, its size in
 * the table accounting, the dump's walk from it and the teardown that frees every table below
 * it (__arm_lpae_free_pgtable) are each checked here.
 *
 * @see drivers/iommu/io-pgtable-arm.c
 */
import { describe, expect, it } from "vitest";
import { IOMMU_READ, IOMMU_WRITE, armLpaeDomainAlloc, iommuMap, ptImage } from "../src/index.js";
import { TABLE_PA_BASE } from "../src/iommu-pt.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const GIB = 1n << 30n;

describe("a concatenated stage-2 top (8 KiB pgd, 1024 entries)", () => {
  it("is accounted, addressed, dumped and torn down with the tables below it", () => {
    const d = armLpaeDomainAlloc({ stage: 2, granuleLg2: 12, ias: 40 });
    const pt = d.pt!;
    expect([pt.topLevel, pt.tableItems(pt.topLevel)]).toEqual([2, 1024]);
    // Only the top: one table of 8 KiB, placed just below the slab's addresses.
    expect([pt.tableCount, pt.tableBytes]).toEqual([1, 8192]);
    expect(pt.topPa()).toBe(TABLE_PA_BASE - 8192n);

    // Entries 0 and 512 of the top each get a level-1 table; the first has two leaf tables.
    iommuMap(d, 0x5000n, 0x100000n, 0x1000n, RW);
    iommuMap(d, 0x203000n, 0x300000n, 0x1000n, RW);
    iommuMap(d, 512n * GIB + 0x7000n, 0x200000n, 0x1000n, IOMMU_READ);
    expect([pt.tableCount, pt.tableBytes]).toEqual([6, 5 * 4096 + 8192]);
    expect(pt.occupancy().map((o) => o.tables)).toEqual([3, 2, 1]);

    const image = ptImage(pt);
    const top = image.filter((e) => e.level === 2);
    expect(top.map((e) => [e.index, e.tablePa])).toEqual([
      [0, pt.topPa()],
      [512, pt.topPa()],
    ]);
    // Table descriptors (type 3) to two different level-1 tables of the slab.
    expect(top.every((e) => (e.pte & 3n) === 3n)).toBe(true);
    expect(top[0]!.pte).not.toBe(top[1]!.pte);
    const leaves = image.filter((e) => e.level === 0);
    expect(leaves.map((e) => [e.index, e.pte & ~0xfffn])).toEqual([
      [5, 0x100000n],
      [3, 0x300000n],
      [7, 0x200000n],
    ]);
    // An empty item of the top has no image.
    let empty: bigint | undefined;
    pt.forEachTable((level, arr, base) => {
      if (level === 2) empty = pt.itemImage(level, arr, base, 1);
    });
    expect(empty).toBe(0n);

    pt.destroy();
    expect(Array.from(pt.alloc.perLevel)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(pt.alloc.live).toBe(0);
    expect(pt.alloc.released).toBe(5);
  });
});
