/**
 * unmap_range stops at the first hole of the range and reports what it removed before it (the
 * level-0 scan for that hole checks items eight at a time, then one by one), and leaf items at
 * the top of the output range keep their PFN and attribute bits through every read and change.
 */
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IotlbGather,
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_FLUSH_RANGE,
  amdv1Format,
  iommuIotlbSync,
  iommuMap,
  iommuReadAndClearDirty,
  iommuUnmap,
  iommuptDomainAlloc,
  iommuptSetDirty,
} from "../src/index.js";
import { RW, vtdDomain as vtd } from "./helpers.js";

/** One level-0 table of 4K leaves: frames [BASE, BASE + 512). */
const BASE = 0x40000;

describe("unmap stops at the first hole", () => {
  it("at every position of a level-0 table and of a run inside it", () => {
    for (const hole of [0, 1, 6, 7, 8, 9, 15, 16, 17, 100, 255, 503, 504, 510, 511]) {
      for (const from of [0, 3, 8]) {
        if (from > hole) continue;
        const d = vtd();
        d.mapPfns(BASE, 0x100001, 512, RW);
        d.unmapPfns(BASE + hole, 1);
        const g = new IotlbGather();
        expect(d.unmapPfns(BASE + from, 512 - from, g)).toBe(hole - from);
        iommuIotlbSync(d, g);
        // Nothing at or after the hole was touched, nothing before it is left.
        for (let i = 0; i < 512; i++) {
          const want = i > hole ? 0x100001 + i : -1;
          if (i < from) continue;
          expect(d.iovaToPfn(BASE + i)).toBe(want);
        }
        expect(d.iovaToPfn(BASE + from - 1)).toBe(from === 0 ? -1 : 0x100001 + from - 1);
      }
    }
  });

  it("a full table with no hole is removed whole and freed", () => {
    const d = vtd();
    d.mapPfns(BASE, 0x100001, 512, RW);
    const g = new IotlbGather();
    expect(d.unmapPfns(BASE, 512, g)).toBe(512);
    expect(g.freelist).toHaveLength(1);
    iommuIotlbSync(d, g);
  });

  it("holes between contiguous entries (AMDv1 16K leaves)", () => {
    const d = iommuptDomainAlloc({
      format: amdv1Format,
      features: (1 << PT_FEAT_DYNAMIC_TOP) | (1 << PT_FEAT_FLUSH_RANGE),
      startingLevel: 2,
    });
    // 2 MiB as 128 entries of 4 items (16 KiB, PA 16 KiB-aligned and no more).
    iommuMap(d, 0n, 0x104000n, 2n << 20n, RW);
    // Remove entry 37 (items 148..151): an unmap from 0 stops there.
    expect(iommuUnmap(d, 37n * 0x4000n, 0x4000n)).toBe(0x4000n);
    expect(iommuUnmap(d, 0n, 2n << 20n)).toBe(37n * 0x4000n);
    expect(iommuUnmap(d, 38n * 0x4000n, 90n * 0x4000n)).toBe(90n * 0x4000n);
  });
});

describe("leaf items at the top of the output range", () => {
  it("keep PFN, prot, dirty and size through lookups, dirty harvests and unmaps", () => {
    const d = vtd();
    // The last 2 MiB and the last 4 KiB frames of the 52-bit output space.
    const topPfn = 2 ** 40 - 1;
    const twoMPfn = 2 ** 40 - 1024;
    d.mapPfns(BASE, topPfn, 1, IOMMU_READ);
    d.mapPfns(512 * 4096, twoMPfn, 512, RW);
    expect(d.iovaToPfn(BASE)).toBe(topPfn);
    expect(d.iovaToPfn(512 * 4096 + 511)).toBe(twoMPfn + 511);
    const runs: number[][] = [];
    d.readPfnRuns(BASE, 1, (va, pfn, n, prot) => runs.push([va, pfn, n, prot]));
    d.readPfnRuns(512 * 4096, 512, (va, pfn, n, prot) => runs.push([va, pfn, n, prot]));
    expect(runs).toEqual([
      [BASE, topPfn, 1, IOMMU_READ],
      [512 * 4096, twoMPfn, 512, RW],
    ]);
    iommuptSetDirty(d, BigInt(512 * 4096 + 3) << 12n);
    const dirty: bigint[] = [];
    const g = new IotlbGather();
    iommuReadAndClearDirty(d, BigInt(512 * 4096) << 12n, 2n << 20n, 0, {
      bitmap: { set: (iova, len) => dirty.push(iova, len) },
      gather: g,
    });
    iommuIotlbSync(d, g);
    expect(dirty).toEqual([BigInt(512 * 4096) << 12n, 2n << 20n]);
    expect(d.iovaToPfn(512 * 4096)).toBe(twoMPfn);
    // A one-page unmap inside the 2 MiB leaf removes all of it.
    expect(d.unmapPfns(512 * 4096 + 5, 1)).toBe(0);
    expect(d.unmapPfns(512 * 4096, 1)).toBe(512);
    expect(d.unmapPfns(BASE, 1)).toBe(1);
  });
});
