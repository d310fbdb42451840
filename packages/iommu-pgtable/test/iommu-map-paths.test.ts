/**
 * The iommu core around the driver: the paging checks of iommu_map_nosync / __iommu_unmap,
 * iommu_pgsize and the classic map_pages / unmap_pages loops with __iommu_map's unwind,
 * iommu_map_sg's merging, iommu_iova_to_phys of a driver that keeps its own table, and
 * read_and_clear_dirty through a driver's own op.
 *
 * @see drivers/iommu/iommu.c (iommu_map_nosync, __iommu_unmap, iommu_pgsize, iommu_map_sg,
 *   iommu_iova_to_phys)
 * @see drivers/iommu/iommufd/io_pagetable.c (iopt_read_and_clear_dirty_data)
 */
import { KernelWarning, isKernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IO_PGTABLE_QUIRK_NO_WARN,
  IommuDomain,
  IotlbGather,
  armLpaeDomainAlloc,
  iommuIovaToPhys,
  iommuMap,
  iommuMapSg,
  iommuPgsize,
  iommuReadAndClearDirty,
  iommuReadRuns,
  iommuUnmap,
  iommuptDomainAlloc,
  iommuptSetDirty,
  vtdssFormat,
} from "../src/index.js";
import { IOMMU_DOMAIN_IDENTITY } from "../src/iommu-types.js";
import { leafCounts } from "./configs.js";
import type { IommuDomainOps } from "../src/iommu.js";
import { RW, errnoOf } from "./helpers.js";

const geometry = { apertureStart: 0n, apertureEnd: (1n << 48n) - 1n, forceAperture: true };
const SZ_4K = 0x1000n;
const SZ_2M = 0x200000n;
const SZ_1G = 0x4000_0000n;

/** The message of the WARN `fn` raises. */
function warnOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelWarning) return e.message;
    throw e;
  }
  return "no WARN";
}

/** A domain whose driver keeps its own table: map_pages / unmap_pages calls are counted. */
function driverDomain(pgsizeBitmap: bigint, type?: number) {
  const calls = { map: 0, unmap: 0 };
  const ops: IommuDomainOps = {
    mapPages: (_d, _iova, _pa, pgsize, pgcount) => {
      calls.map++;
      return { mapped: pgsize * pgcount, errno: 0 };
    },
    unmapPages: (_d, _iova, pgsize, pgcount) => {
      calls.unmap++;
      return pgsize * pgcount;
    },
  };
  const d = new IommuDomain({
    ...(type === undefined ? {} : { type }),
    geometry,
    pgsizeBitmap,
    ops,
  });
  return { d, calls };
}

describe("paging checks (iommu_map_nosync, __iommu_unmap)", () => {
  it("an empty pgsize_bitmap WARNs on map and unmap, before the driver is called", () => {
    const { d, calls } = driverDomain(0n);
    expect(warnOf(() => iommuMap(d, 0x1000n, 0x1000n, 0x1000n, RW))).toMatch(/pgsize_bitmap/);
    expect(warnOf(() => iommuUnmap(d, 0x1000n, 0x1000n))).toMatch(/non-paging/);
    expect(calls).toEqual({ map: 0, unmap: 0 });
  });

  it("a domain that is not __IOMMU_DOMAIN_PAGING WARNs on map and unmap", () => {
    const { d, calls } = driverDomain(0x1000n, IOMMU_DOMAIN_IDENTITY);
    expect(warnOf(() => iommuMap(d, 0x1000n, 0x1000n, 0x1000n, RW))).toMatch(/non-paging/);
    expect(warnOf(() => iommuUnmap(d, 0x1000n, 0x1000n))).toMatch(/non-paging/);
    expect(calls).toEqual({ map: 0, unmap: 0 });
    // The same on an iommupt table: nothing is installed.
    const pt = iommuptDomainAlloc(
      { format: vtdssFormat, features: 0, hwMaxVaLg2: 48 },
      { type: IOMMU_DOMAIN_IDENTITY },
    );
    expect(warnOf(() => iommuMap(pt, 0x1000n, 0x1000n, 0x1000n, RW))).toMatch(/non-paging/);
    expect(warnOf(() => iommuUnmap(pt, 0x1000n, 0x1000n))).toMatch(/non-paging/);
    expect(pt.mappedBytes).toBe(0n);
  });
});

it("iommupt: a length below one granule, one byte short included, fits no page size (-ENXIO)", () => {
  const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
  expect(errnoOf(() => iommuMap(d, 0x1000n, 0x1000n, 0xfffn, RW))).toBe("ENXIO");
  expect(errnoOf(() => iommuMap(d, 0x1000n, 0x1000n, 0x800n, RW))).toBe("ENXIO");
  // One granule and a tail: whole pages only (-EINVAL).
  expect(errnoOf(() => iommuMap(d, 0x1000n, 0x1000n, 0x1fffn, RW))).toBe("EINVAL");
  expect(d.mappedBytes).toBe(0n);
});

describe("iommu_pgsize", () => {
  const bitmap = SZ_4K | SZ_2M | SZ_1G;

  it("cuts a range at the next larger page's boundary when iova and paddr share its offset", () => {
    // 4K up to the 2M boundary, 2M pages (iova and paddr differ inside 1G: no 1G), 4K after.
    expect(iommuPgsize(bitmap, 0x1ff000n, 0x3ff000n, 0x402000n)).toEqual({
      pgsize: SZ_4K,
      count: 1n,
    });
    expect(iommuPgsize(bitmap, 0x200000n, 0x400000n, 0x401000n)).toEqual({
      pgsize: SZ_2M,
      count: 2n,
    });
    expect(iommuPgsize(bitmap, 0x600000n, 0x800000n, 0x1000n)).toEqual({
      pgsize: SZ_4K,
      count: 1n,
    });
    // Differing offsets inside 1G: 2M pages all the way, however long.
    expect(iommuPgsize(bitmap, 0x200000n, 0x400000n, 2n * SZ_1G)).toEqual({
      pgsize: SZ_2M,
      count: 1024n,
    });
    // The same offset inside 1G: 2M pages only up to the 1G boundary.
    expect(iommuPgsize(bitmap, SZ_1G - SZ_2M, 3n * SZ_1G - SZ_2M, SZ_1G + SZ_2M)).toEqual({
      pgsize: SZ_2M,
      count: 1n,
    });
    // IOVA and paddr 0: only the length limits the size.
    expect(iommuPgsize(bitmap, 0n, 0n, 3n * SZ_2M)).toEqual({ pgsize: SZ_2M, count: 3n });
  });

  it("no page size fitting the alignment is a kernel bug", () => {
    expect(() => iommuPgsize(bitmap, 0x800n, 0n, SZ_4K)).toThrow(KernelWarning);
    expect(() => iommuPgsize(bitmap, 0n, 0n, 0x800n)).toThrow(KernelWarning);
  });
});

describe("the classic map_pages / unmap_pages loops (io-pgtable-arm)", () => {
  const arm = () =>
    armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, quirks: IO_PGTABLE_QUIRK_NO_WARN });

  it("a map failing in its third map_pages call unmaps exactly the two calls' prefix", () => {
    const d = arm();
    // The 4K after 2M is taken: 4K (to the 2M boundary) and 2M go in, then -EEXIST.
    iommuMap(d, 0x400000n, 0x9000_0000n, SZ_4K, RW);
    expect(errnoOf(() => iommuMap(d, 0x1ff000n, 0x3ff000n, 0x203000n, RW))).toBe("EEXIST");
    expect(iommuReadRuns(d, 0n, SZ_1G)).toEqual([
      { iova: 0x400000n, paddr: 0x9000_0000n, length: SZ_4K, prot: RW },
    ]);
  });

  it("a failed map syncs through iommu_unmap even with nothing installed; a refused one does not", () => {
    let syncs = 0;
    const d = armLpaeDomainAlloc(
      { stage: 1, granuleLg2: 12, quirks: IO_PGTABLE_QUIRK_NO_WARN },
      { iotlbSync: () => void syncs++ },
    );
    iommuMap(d, 0x1000n, 0x1000n, SZ_4K, RW);
    expect(syncs).toBe(0);
    // map_pages fails on its first page: the unwind of 0 bytes still syncs.
    expect(errnoOf(() => iommuMap(d, 0x1000n, 0x5000n, SZ_4K, RW))).toBe("EEXIST");
    expect(syncs).toBe(1);
    // Not aligned to the smallest page: -EINVAL before any map_pages, nothing to unwind.
    expect(errnoOf(() => iommuMap(d, 0x1800n, 0x5000n, SZ_4K, RW))).toBe("EINVAL");
    expect(syncs).toBe(1);
    // iommu_map_sg: a failing first run unwinds its own call, then the (empty) runs before it.
    expect(errnoOf(() => iommuMapSg(d, 0x1000n, [{ paddr: 0x5000n, length: SZ_4K }], RW))).toBe(
      "EEXIST",
    );
    expect(syncs).toBe(3);
  });

  it("frames at PAGE_SIZE take the same loops: io-pgtable-arm's errnos, not iommupt's", () => {
    const d = arm();
    d.mapPfns(0x200, 0x400, 0x200, RW);
    expect(d.iovaToPfn(0x3ff)).toBe(0x5ff);
    // An existing leaf is -EEXIST (iommupt's would be -EADDRINUSE).
    expect(errnoOf(() => d.mapPfns(0x300, 0x1000, 1, RW))).toBe("EEXIST");
    // Part of a 2M block cannot be unmapped (iommupt would remove the block whole).
    expect(() => d.unmapPfns(0x200, 1)).toThrow(KernelWarning);
    expect(d.unmapPfns(0x200, 0x200)).toBe(0x200);
    expect(d.mappedBytes).toBe(0n);
  });

  it("unmap walks on from where each unmap_pages call stopped, sized by what is left", () => {
    const d = arm();
    // Four 4K pages across a 2M boundary (two leaf tables).
    iommuMap(d, 0x1fe000n, 0x10_0000n, 0x4000n, RW);
    // The first call stops at the end of the first table; the second takes one page.
    expect(iommuUnmap(d, 0x1ff000n, 0x2000n)).toBe(0x2000n);
    expect(iommuReadRuns(d, 0n, SZ_1G)).toEqual([
      { iova: 0x1fe000n, paddr: 0x10_0000n, length: SZ_4K, prot: RW },
      { iova: 0x201000n, paddr: 0x10_3000n, length: SZ_4K, prot: RW },
    ]);
  });
});

describe("iommu_map_sg", () => {
  it("physically contiguous entries are one map call: a 2M leaf from two 1M entries", () => {
    let syncMaps = 0;
    const d = iommuptDomainAlloc(
      { format: vtdssFormat, features: 0, hwMaxVaLg2: 48 },
      { ops: { iotlbSyncMap: () => void syncMaps++ } },
    );
    const sg = [
      { paddr: 0x4000_0000n, length: 0x10_0000n },
      { paddr: 0x4010_0000n, length: 0x10_0000n },
    ];
    expect(iommuMapSg(d, 0x60_0000n, sg, RW)).toBe(SZ_2M);
    expect(leafCounts(d)).toEqual({ 21: 1 });
    expect(syncMaps).toBe(1);
  });

  it("a bus-address entry ends nothing and maps nothing, also the last one", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    const sg = [
      { paddr: 0x10000n, length: 0x1000n },
      { paddr: 0x11000n, length: 0x1000n, busAddress: true },
    ];
    // No iotlb_sync_map op: none is called.
    expect(iommuMapSg(d, 0x100000n, sg, RW)).toBe(0x1000n);
    expect(iommuReadRuns(d, 0n, SZ_1G)).toEqual([
      { iova: 0x100000n, paddr: 0x10000n, length: 0x1000n, prot: RW },
    ]);
    expect(iommuMapSg(d, 0x200000n, [], RW)).toBe(0n);
  });

  it("a failing later run unmaps the earlier ones", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    iommuMap(d, 0x102000n, 0x9000n, 0x1000n, RW);
    const sg = [
      { paddr: 0x10000n, length: 0x2000n },
      { paddr: 0x80000n, length: 0x1000n },
    ];
    try {
      iommuMapSg(d, 0x100000n, sg, RW);
      expect.unreachable();
    } catch (e) {
      expect(isKernelError(e) && e.errnoName).toBe("EADDRINUSE");
    }
    expect(iommuReadRuns(d, 0n, SZ_1G)).toEqual([
      { iova: 0x102000n, paddr: 0x9000n, length: 0x1000n, prot: RW },
    ]);
  });
});

describe("a driver with its own table (no iommupt)", () => {
  it("iommu_iova_to_phys asks the driver's iova_to_phys; without one it is 0", () => {
    const asked: bigint[] = [];
    const d = new IommuDomain({
      geometry,
      pgsizeBitmap: 0x1000n,
      ops: {
        iovaToPhys: (_d, iova) => {
          asked.push(iova);
          return 0x5000n | (iova & 0xfffn);
        },
      },
    });
    expect(iommuIovaToPhys(d, 0x1234n)).toBe(0x5234n);
    expect(asked).toEqual([0x1234n]);
    expect(d.iovaToPfn(0x7)).toBe(0x5);
    const none = new IommuDomain({ geometry, pgsizeBitmap: 0x1000n, ops: {} });
    expect(iommuIovaToPhys(none, 0x1234n)).toBe(0n);
    expect(none.iovaToPfn(1)).toBe(-1);
  });

  it("range reads and set_dirty need a table (-EOPNOTSUPP)", () => {
    const d = new IommuDomain({ geometry, pgsizeBitmap: 0x1000n, ops: {} });
    expect(errnoOf(() => iommuReadRuns(d, 0n, 0x1000n))).toBe("EOPNOTSUPP");
    expect(errnoOf(() => iommuptSetDirty(d, 0n))).toBe("EOPNOTSUPP");
  });

  it("read_and_clear_dirty is the driver's own op when it has one, argument checks included", () => {
    const seen: [bigint, bigint, number][] = [];
    const d = iommuptDomainAlloc(
      { format: vtdssFormat, features: 0, hwMaxVaLg2: 48 },
      {
        dirtyOps: {
          setDirtyTracking: () => {},
          readAndClearDirty: (_d, iova, size, flags) => void seen.push([iova, size, flags]),
        },
      },
    );
    const dirty = { gather: new IotlbGather() };
    iommuReadAndClearDirty(d, 0x1000n, 0n, 1, dirty);
    expect(seen).toEqual([[0x1000n, 0n, 1]]);
  });
});

describe("read_and_clear_dirty through iommupt's walk", () => {
  it("the first record starts at the caller's IOVA, inside a page", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    iommuMap(d, 0x1000n, 0x8000n, 0x2000n, RW);
    iommuptSetDirty(d, 0x1000n);
    iommuptSetDirty(d, 0x2000n);
    const set: bigint[][] = [];
    const bitmap = { set: (iova: bigint, length: bigint) => void set.push([iova, length]) };
    iommuReadAndClearDirty(d, 0x1800n, 0x1000n, 0, { bitmap, gather: new IotlbGather() });
    // One record per dirty leaf, the first clipped at its start.
    expect(set).toEqual([
      [0x1800n, 0x1000n],
      [0x2000n, 0x1000n],
    ]);
  });
});
