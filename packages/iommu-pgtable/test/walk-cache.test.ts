/**
 * The walk cache of iommu-pt.ts (the level-0 table of the last single-page walk) must never
 * outlive the table pointer it went through: every removal of a pointer is followed here by
 * single-page lookups, maps and unmaps in the same table, which must see the table as it is.
 */
import { describe, expect, it } from "vitest";
import {
  IO_PGTABLE_QUIRK_NO_WARN,
  IotlbGather,
  PT_FEAT_DYNAMIC_TOP,
  amdv1Format,
  armLpaeDomainAlloc,
  iommuIotlbSync,
  iommuMap,
  iommuUnmap,
  iommuptDomainAlloc,
} from "../src/index.js";
import { RW, errnoOf, vtdDomain as vtd } from "./helpers.js";

const SZ_2M = 2n << 20n;
/** Frames of a 2 MiB region starting at 64 MiB (one level-0 table of a 4K-granule format). */
const BASE = 0x4000;

describe("walk cache", () => {
  it("a fully covered unmap hides the table before sync, and a later 2M leaf is seen", () => {
    const d = vtd();
    // A PA 4 KiB off 2 MiB: 512 4K leaves in one level-0 table.
    d.mapPfns(BASE, 0x1001, 512, RW);
    expect(d.iovaToPfn(BASE + 5)).toBe(0x1006);
    const g = new IotlbGather();
    expect(d.unmapPfns(BASE, 512, g)).toBe(512);
    expect(g.freelist.length).toBe(1);
    // Unlinked but not yet released: the table still holds nothing reachable.
    expect(d.iovaToPfn(BASE + 5)).toBe(-1);
    expect(d.unmapPfns(BASE + 5, 1)).toBe(0);
    iommuIotlbSync(d, g);
    iommuMap(d, BigInt(BASE) << 12n, 0x40000000n, SZ_2M, RW);
    expect(d.iovaToPfn(BASE + 5)).toBe(0x40005);
    expect(errnoOf(() => d.mapPfns(BASE + 7, 0x1, 1, RW))).toBe("EADDRINUSE");
    // A start inside the 2M leaf removes nothing (iommupt).
    expect(d.unmapPfns(BASE + 7, 1)).toBe(0);
    expect(d.unmapPfns(BASE, 1)).toBe(512);
    expect(d.iovaToPfn(BASE + 5)).toBe(-1);
  });

  it("an empty table replaced by a leaf (clear_contig) is not walked again", () => {
    const d = vtd();
    d.mapPfns(BASE + 3, 0x1003, 1, RW);
    expect(d.unmapPfns(BASE + 3, 1)).toBe(1);
    // The empty level-0 table is cached by these walks.
    expect(d.iovaToPfn(BASE + 3)).toBe(-1);
    const tables = d.pt!.tableCount;
    iommuMap(d, BigInt(BASE) << 12n, 0x40000000n, SZ_2M, RW);
    expect(d.pt!.tableCount).toBe(tables - 1);
    expect(d.iovaToPfn(BASE + 3)).toBe(0x40003);
    expect(errnoOf(() => d.mapPfns(BASE + 3, 0x1003, 1, RW))).toBe("EADDRINUSE");
    expect(d.iovaToPfn(BASE + 3)).toBe(0x40003);
  });

  it("a released table reused elsewhere is not reached from its old place", () => {
    const d = vtd();
    d.mapPfns(BASE, 0x1001, 512, RW);
    expect(d.iovaToPfn(BASE)).toBe(0x1001);
    expect(d.unmapPfns(BASE, 512)).toBe(512);
    // The freed id comes back for a table 4 MiB further on.
    d.mapPfns(BASE + 1024, 0x7000, 1, RW);
    expect(d.iovaToPfn(BASE + 1024)).toBe(0x7000);
    expect(d.iovaToPfn(BASE)).toBe(-1);
    d.mapPfns(BASE, 0x9000, 1, RW);
    expect(d.iovaToPfn(BASE)).toBe(0x9000);
    expect(d.iovaToPfn(BASE + 1024)).toBe(0x7000);
  });

  it("a grown top (DYNAMIC_TOP) keeps single-page walks right", () => {
    const d = iommuptDomainAlloc({
      format: amdv1Format,
      features: 1 << PT_FEAT_DYNAMIC_TOP,
      startingLevel: 2,
    });
    d.mapPfns(BASE, 0x1000, 1, RW);
    expect(d.iovaToPfn(BASE)).toBe(0x1000);
    const top = d.pt!.topLevel;
    d.mapPfns(2 ** 30, 0x2000, 1, RW);
    expect(d.pt!.topLevel).toBeGreaterThan(top);
    expect(d.iovaToPfn(BASE)).toBe(0x1000);
    expect(d.iovaToPfn(2 ** 30)).toBe(0x2000);
    expect(d.unmapPfns(BASE, 1)).toBe(1);
    expect(d.iovaToPfn(BASE)).toBe(-1);
  });

  it("io-pgtable-arm: a block over an empty table and an unmap of a table", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, quirks: IO_PGTABLE_QUIRK_NO_WARN });
    d.mapPfns(BASE + 1, 0x1001, 1, RW);
    expect(d.unmapPfns(BASE + 1, 1)).toBe(1);
    expect(d.iovaToPfn(BASE + 1)).toBe(-1);
    iommuMap(d, BigInt(BASE) << 12n, 0x40000000n, SZ_2M, RW);
    expect(d.iovaToPfn(BASE + 1)).toBe(0x40001);
    expect(iommuUnmap(d, BigInt(BASE) << 12n, SZ_2M)).toBe(SZ_2M);
    d.mapPfns(BASE + 2, 0x1002, 1, RW);
    expect(d.iovaToPfn(BASE + 2)).toBe(0x1002);
    // A 2M unmap over the level-0 table removes it whole.
    expect(iommuUnmap(d, BigInt(BASE) << 12n, SZ_2M)).toBe(SZ_2M);
    expect(d.iovaToPfn(BASE + 2)).toBe(-1);
    d.mapPfns(BASE + 2, 0x3002, 1, RW);
    expect(d.iovaToPfn(BASE + 2)).toBe(0x3002);
  });
});
