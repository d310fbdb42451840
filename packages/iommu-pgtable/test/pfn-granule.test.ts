/**
 * The PAGE_SIZE frame API (mapPfns / unmapPfns / iovaToPfn / readPfnRuns) on iommupt tables
 * whose granule is not PAGE_SIZE: ARM LPAE with 16 KiB and 64 KiB granules and the selftest
 * mock's 2 KiB one. A frame call gives what iommu_map / iommu_unmap / iommu_iova_to_phys give
 * for the same bytes, and the frame runs are what batch_from_domain reads one PAGE_SIZE at a time.
 *
 * @see drivers/iommu/iommu.c (iommu_map, iommu_unmap, iommu_iova_to_phys)
 * @see drivers/iommu/generic_pt/iommu_pt.h (map_range, unmap_range)
 * @see drivers/iommu/iommufd/pages.c (batch_from_domain)
 */
import { KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { armLpaeFormat } from "../src/fmt/arm-lpae.js";
import {
  IOMMU_READ,
  IommuDomain,
  IotlbGather,
  MOCK_IOMMUPT_DEFAULT,
  PT_FEAT_FLUSH_RANGE,
  PT_FEAT_SIGN_EXTEND,
  iommuIovaToPhys,
  iommuMap,
  iommuptDomainAlloc,
  mockIommuptDomainAlloc,
  vtdssFormat,
  x86_64Format,
} from "../src/index.js";
import { IOMMU_DOMAIN_IDENTITY } from "../src/iommu-types.js";
import type { IommuDomainOps } from "../src/iommu.js";
import { RW, errnoOf } from "./helpers.js";

/** Counts of the driver's flush hooks, and the ranges iotlb_sync_map was given. */
function flushLog() {
  const log = { syncs: 0, syncMaps: [] as bigint[][] };
  const ops: IommuDomainOps = {
    iotlbSync: () => void log.syncs++,
    iotlbSyncMap: (_d, iova, size) => void log.syncMaps.push([iova, size]),
  };
  return { log, ops };
}

/** An iommupt ARM LPAE stage-2 table with a 48-bit IPA that gathers unmapped ranges. */
function armDomain(granuleLg2: 14 | 16, ops: IommuDomainOps = {}): IommuDomain {
  return iommuptDomainAlloc(
    {
      format: armLpaeFormat({ stage: 2, granuleLg2 }),
      features: 1 << PT_FEAT_FLUSH_RANGE,
      hwMaxVaLg2: 48,
    },
    { ops },
  );
}

describe("a granule above PAGE_SIZE", () => {
  for (const granuleLg2 of [14, 16] as const) {
    const k = 1 << (granuleLg2 - 12); // frames per granule
    it(`${4 * k} KiB: whole granules map, translate and unmap as the byte API does`, () => {
      const { log, ops } = flushLog();
      const d = armDomain(granuleLg2, ops);
      // From IOVA 0: the table's first granule.
      d.mapPfns(0, 8 * k, 2 * k, RW);
      expect(log.syncMaps).toEqual([[0n, BigInt(2 * k) << 12n]]);
      expect(d.mappedBytes).toBe(BigInt(2 * k) << 12n);
      expect(d.iovaToPfn(0)).toBe(8 * k);
      expect(d.iovaToPfn(k + 1)).toBe(9 * k + 1);
      expect(d.iovaToPfn(2 * k)).toBe(-1);
      expect(iommuIovaToPhys(d, (BigInt(k + 1) << 12n) | 0x234n)).toBe(
        (BigInt(9 * k + 1) << 12n) | 0x234n,
      );
      // PA 0 is a frame like any other: a frame inside it reads its offset from 0.
      d.mapPfns(4 * k, 0, k, IOMMU_READ);
      expect(d.iovaToPfn(4 * k)).toBe(0);
      expect(d.iovaToPfn(4 * k + k - 1)).toBe(k - 1);

      // Unmap starting inside a granule starts inside a leaf: nothing is removed.
      expect(d.unmapPfns(1, k)).toBe(0);
      expect(d.iovaToPfn(1)).toBe(8 * k + 1);
      // A count short of a granule removes the whole leaf it starts and counts it whole.
      expect(d.unmapPfns(4 * k, 1)).toBe(k);
      expect(d.unmapPfns(0, 2 * k)).toBe(2 * k);
      expect(d.mappedBytes).toBe(0n);
      // iommu_unmap syncs each time, also when nothing was removed.
      expect(log.syncs).toBe(3);
    });

    it(`${4 * k} KiB: frames that are not whole granules meet iommu_map's alignment errnos`, () => {
      const { log, ops } = flushLog();
      const d = armDomain(granuleLg2, ops);
      // IOVA or PA inside a granule, or less than one granule: no page size fits (-ENXIO).
      expect(errnoOf(() => d.mapPfns(k + 1, 4 * k, k, RW))).toBe("ENXIO");
      expect(errnoOf(() => d.mapPfns(k, 4 * k + 1, k, RW))).toBe("ENXIO");
      expect(errnoOf(() => d.mapPfns(k, 4 * k, k - 1, RW))).toBe("ENXIO");
      // Whole granules and a tail: refused up front (-EINVAL), as a byte length with a tail.
      expect(errnoOf(() => d.mapPfns(k, 4 * k, k + 1, RW))).toBe("EINVAL");
      expect(
        errnoOf(() =>
          iommuMap(d, BigInt(k) << 12n, BigInt(4 * k) << 12n, BigInt(k + 1) << 12n, RW),
        ),
      ).toBe("EINVAL");
      expect(d.mappedBytes).toBe(0n);
      expect(log.syncMaps).toEqual([]);
    });

    it(`${4 * k} KiB: unmap into a caller's gather leaves the sync to the caller`, () => {
      const { log, ops } = flushLog();
      const d = armDomain(granuleLg2, ops);
      d.mapPfns(k, 0x100 * k, 3 * k, RW);
      const gather = new IotlbGather();
      expect(d.unmapPfns(k, 3 * k, gather)).toBe(3 * k);
      expect(log.syncs).toBe(0);
      expect([gather.start, gather.end]).toEqual([BigInt(k) << 12n, (BigInt(4 * k) << 12n) - 1n]);
      expect(d.iovaToPfn(k)).toBe(-1);
    });

    it(`${4 * k} KiB: frame runs are refused (-EOPNOTSUPP)`, () => {
      const d = armDomain(granuleLg2);
      expect(errnoOf(() => d.readPfnRuns(0, k, () => {}))).toBe("EOPNOTSUPP");
    });
  }
});

describe("the 2 KiB mock granule", () => {
  /** Each call of readPfnRuns, and its total. */
  function runsOf(d: IommuDomain, iovaPfn: number, npages: number): [number[][], number] {
    const runs: number[][] = [];
    const total = d.readPfnRuns(iovaPfn, npages, (v, p, n, prot) => runs.push([v, p, n, prot]));
    return [runs, total];
  }

  /**
   * Frame 0 from 2 KiB granules 0-2 (PA 0x10000-0x117ff), granule 3 elsewhere, frame 2 at
   * `c` with `cProt`: frame 1 counts by its first half, so frames read 0x10, 0x11, then c's.
   */
  function threeRuns(cIova: bigint, cPa: bigint, cProt = RW): IommuDomain {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    iommuMap(d, 0n, 0x10000n, 0x1800n, RW);
    iommuMap(d, 0x1800n, 0x80000n, 0x800n, RW);
    iommuMap(d, cIova, cPa, 0x1000n, cProt);
    return d;
  }

  it("frames contiguous in IOVA and PA with one prot are one run, from frame 0", () => {
    const d = threeRuns(0x2000n, 0x12000n);
    expect(runsOf(d, 0, 8)).toEqual([[[0, 0x10, 3, RW]], 3]);
    expect(d.iovaToPfn(1)).toBe(0x11);
  });

  it("a prot change, an IOVA gap or a PA gap splits the run", () => {
    expect(runsOf(threeRuns(0x2000n, 0x12000n, IOMMU_READ), 0, 8)).toEqual([
      [
        [0, 0x10, 2, RW],
        [2, 0x12, 1, IOMMU_READ],
      ],
      3,
    ]);
    expect(runsOf(threeRuns(0x3000n, 0x12000n), 0, 8)).toEqual([
      [
        [0, 0x10, 2, RW],
        [3, 0x12, 1, RW],
      ],
      3,
    ]);
    expect(runsOf(threeRuns(0x2000n, 0x13000n), 0, 8)).toEqual([
      [
        [0, 0x10, 2, RW],
        [2, 0x13, 1, RW],
      ],
      3,
    ]);
  });

  it("a range with no frame mapped reports nothing", () => {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    expect(runsOf(d, 0, 16)).toEqual([[], 0]);
    // Only the second half of frame 1 mapped: no frame starts there.
    iommuMap(d, 0x1800n, 0x5800n, 0x800n, RW);
    expect(runsOf(d, 0, 16)).toEqual([[], 0]);
  });

  it("frames map, unmap and count in PAGE_SIZE units", () => {
    const { log, ops } = flushLog();
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT, { ops });
    d.mapPfns(0, 0x40, 3, RW);
    expect(log.syncMaps).toEqual([[0n, 0x3000n]]);
    expect(d.mappedBytes).toBe(0x3000n);
    expect(d.iovaToPfn(0)).toBe(0x40);
    expect(d.iovaToPfn(2)).toBe(0x42);
    expect(d.iovaToPfn(3)).toBe(-1);
    expect(iommuIovaToPhys(d, 0x2c00n)).toBe(0x42c00n);
    const gather = new IotlbGather();
    // 12 KiB from 0 is an 8 KiB and a 4 KiB leaf: the first frame takes the 8 KiB leaf whole.
    expect(d.unmapPfns(0, 1, gather)).toBe(2);
    expect(log.syncs).toBe(0);
    expect(d.unmapPfns(2, 1)).toBe(1);
    expect(log.syncs).toBe(1);
    expect(d.mappedBytes).toBe(0n);
  });
});

describe("PAGE_SIZE granule and no table", () => {
  it("PA frame 0 reads back as frame 0", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    d.mapPfns(0x10, 0, 2, RW);
    expect(d.iovaToPfn(0x10)).toBe(0);
    expect(d.iovaToPfn(0x11)).toBe(1);
    expect(d.iovaToPfn(0x12)).toBe(-1);
  });

  it("frame runs, and mappedBytes, of a domain without a table", () => {
    const geometry = { apertureStart: 0n, apertureEnd: (1n << 48n) - 1n, forceAperture: true };
    const d = new IommuDomain({ geometry, pgsizeBitmap: 0x1000n, ops: {} });
    expect(d.isIommupt).toBe(false);
    expect(d.mappedBytes).toBe(0n);
    expect(errnoOf(() => d.readPfnRuns(0, 1, () => {}))).toBe("EOPNOTSUPP");
  });
});

describe("the u64 top in frames (2^52)", () => {
  /** x86-64 with a sign-extended 48-bit VA: the last page of the u64 space is in the table. */
  function topDomain(ops: IommuDomainOps = {}): IommuDomain {
    return iommuptDomainAlloc(
      { format: x86_64Format, features: 1 << PT_FEAT_SIGN_EXTEND, hwMaxVaLg2: 48 },
      { ops },
    );
  }

  it("the last frame maps and unmaps; one past it overflows", () => {
    const { log, ops } = flushLog();
    const d = topDomain(ops);
    const last = 2 ** 52 - 1;
    d.mapPfns(last, 0x1234, 1, RW);
    expect(d.iovaToPfn(last)).toBe(0x1234);
    expect(iommuIovaToPhys(d, (1n << 64n) - 1n)).toBe(0x1234fffn);
    expect(log.syncs).toBe(0);
    // The failed map unwinds its empty prefix through iommu_unmap: one sync.
    expect(errnoOf(() => d.mapPfns(last, 0x1000, 2, RW))).toBe("EOVERFLOW");
    expect(log.syncs).toBe(1);
    // Past the top: iommu_unmap removes nothing (and still syncs).
    expect(d.unmapPfns(last, 2)).toBe(0);
    expect(d.unmapPfns(last - 1, 3)).toBe(0);
    expect(d.iovaToPfn(last)).toBe(0x1234);
    expect(log.syncs).toBe(3);
    expect(d.unmapPfns(last, 1)).toBe(1);
    expect(d.iovaToPfn(last)).toBe(-1);
  });

  it("a range ending exactly at 2^64 is no overflow: a 48-bit table refuses it by range", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    expect(errnoOf(() => d.mapPfns(2 ** 52 - 4, 0, 4, RW))).toBe("ERANGE");
    expect(errnoOf(() => d.mapPfns(2 ** 52 - 4, 0, 5, RW))).toBe("EOVERFLOW");
  });
});

describe("frames on a domain that is not paging", () => {
  it("map and unmap WARN (iommu_map_nosync / __iommu_unmap)", () => {
    const d = iommuptDomainAlloc(
      { format: vtdssFormat, features: 0, hwMaxVaLg2: 48 },
      { type: IOMMU_DOMAIN_IDENTITY },
    );
    expect(() => d.mapPfns(0x10, 0x10, 1, RW)).toThrow(KernelWarning);
    expect(() => d.unmapPfns(0x10, 1)).toThrow(KernelWarning);
    expect(d.mappedBytes).toBe(0n);
  });
});
