/** The classic core path (iommu_pgsize, min-page checks) and io-pgtable-arm's own rules. */
import { EEXIST, EINVAL, ENOMEM, KernelWarning, isKernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_READ,
  IOMMU_WRITE,
  IO_PGTABLE_QUIRK_NO_WARN,
  type IommuDomain,
  IotlbGather,
  armLpaeDomainAlloc,
  iommuIotlbSync,
  iommuIovaToPhys,
  iommuMap,
  iommuPgsize,
  iommuUnmap,
  iommuUnmapFast,
  ptImage,
} from "../src/index.js";
import { leafCounts } from "./configs.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const SZ_4K = 0x1000n;
const SZ_2M = 0x200000n;
const SZ_1G = 0x40000000n;

describe("iommu_pgsize", () => {
  it("cuts a worked example into 4K, 2M, 2M, 4K", () => {
    const bitmap = SZ_4K | SZ_2M | SZ_1G;
    let iova = 0x1ff000n;
    let paddr = 0x3ff000n;
    let size = 0x402000n;
    const got: string[] = [];
    while (size) {
      const { pgsize, count } = iommuPgsize(bitmap, iova, paddr, size);
      got.push(`${pgsize.toString(16)}x${count}`);
      iova += pgsize * count;
      paddr += pgsize * count;
      size -= pgsize * count;
    }
    expect(got).toEqual(["1000x1", "200000x2", "1000x1"]);
  });

  it("the ARM domain gets exactly those leaves", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, 0x1ff000n, 0x3ff000n, 0x402000n, RW);
    expect(leafCounts(d)).toEqual({ 12: 2, 21: 2 });
    expect(iommuIovaToPhys(d, 0x5ff123n)).toBe(0x7ff123n);
  });
});

describe("io-pgtable-arm rules", () => {
  it("partial unmap of a block is a WARN and removes nothing", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_2M, SZ_2M, SZ_2M, RW);
    expect(() => iommuUnmap(d, SZ_2M, SZ_4K)).toThrow(KernelWarning);
    expect(iommuIovaToPhys(d, SZ_2M)).toBe(SZ_2M);
    expect(iommuUnmap(d, SZ_2M, SZ_2M)).toBe(SZ_2M);
  });

  it("remap and unmapping a hole WARN; with NO_WARN they are EEXIST and 0", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_4K, 0n, SZ_4K, RW);
    expect(() => iommuMap(d, SZ_4K, 0n, SZ_4K, RW)).toThrow(KernelWarning);
    expect(() => iommuUnmap(d, 0x10000n, SZ_4K)).toThrow(KernelWarning);
    const q = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, quirks: IO_PGTABLE_QUIRK_NO_WARN });
    iommuMap(q, SZ_4K, 0n, SZ_4K, RW);
    try {
      iommuMap(q, 0n, 0n, 0x3000n, RW);
      expect.unreachable();
    } catch (e) {
      expect(isKernelError(e) && e.errnoName).toBe("EEXIST");
    }
    expect(iommuIovaToPhys(q, 0n)).toBe(0n);
    expect(iommuUnmap(q, 0x10000n, SZ_4K)).toBe(0n);
  });

  it("a block over a table tears the table down with what it mapped", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_2M + SZ_4K, 0x123000n, SZ_4K, RW);
    const tables = d.pt!.tableCount;
    iommuMap(d, SZ_2M, 0x800000n, SZ_2M, RW);
    expect(d.pt!.tableCount).toBe(tables - 1);
    expect(iommuIovaToPhys(d, SZ_2M + SZ_4K)).toBe(0x801000n);
  });

  it("stage 2 concatenates the top tables when that saves a level", () => {
    const d = armLpaeDomainAlloc({ stage: 2, granuleLg2: 12, ias: 40 });
    expect(d.pt!.topLevel).toBe(2);
    expect(d.pt!.tableItems(2)).toBe(1024);
    iommuMap(d, (1n << 40n) - SZ_1G, SZ_1G, SZ_1G, RW);
    expect(iommuIovaToPhys(d, (1n << 40n) - 1n)).toBe(2n * SZ_1G - 1n);
    const s1 = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, ias: 40 });
    expect(s1.pt!.topLevel).toBe(3);
    expect(s1.pt!.tableItems(3)).toBe(2);
  });

  it("16K and 64K granules offer their own sizes; 4T needs a 52-bit OA", () => {
    expect(armLpaeDomainAlloc({ stage: 1, granuleLg2: 14 }).pgsizeBitmap).toBe(
      (1n << 14n) | (1n << 25n),
    );
    expect(armLpaeDomainAlloc({ stage: 1, granuleLg2: 16 }).pgsizeBitmap).toBe(
      (1n << 16n) | (1n << 29n),
    );
    const big = armLpaeDomainAlloc({ stage: 1, granuleLg2: 16, oas: 52 });
    expect(big.pgsizeBitmap).toBe((1n << 16n) | (1n << 29n) | (1n << 42n));
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 14 });
    iommuMap(d, 1n << 25n, 3n << 25n, (1n << 25n) + (1n << 14n), RW);
    expect(leafCounts(d)).toEqual({ 14: 1, 25: 1 });
  });

  it("PTE images: stage 1 / stage 2 attributes and the 64K 52-bit PA packing", () => {
    const s1 = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(s1, 0n, 0x1000n, SZ_4K, IOMMU_READ | IOMMU_CACHE);
    const leaf1 = ptImage(s1.pt!).find((e) => e.level === 0)!;
    // page | ATTRINDX=1 | AP_UNPRIV | AP_RDONLY | SH_IS | AF | nG
    expect(leaf1.pte).toBe(
      0x1000n | 3n | (1n << 2n) | (1n << 6n) | (2n << 6n) | (3n << 8n) | (1n << 10n) | (1n << 11n),
    );
    const s2 = armLpaeDomainAlloc({ stage: 2, granuleLg2: 12 });
    iommuMap(s2, 0n, SZ_2M, SZ_2M, RW | IOMMU_MMIO | IOMMU_NOEXEC);
    const leaf2 = ptImage(s2.pt!).find((e) => e.level === 1)!;
    // block | MEMATTR_DEV | HAP R/W | SH_OS | AF | XN
    expect(leaf2.pte).toBe(
      SZ_2M | 1n | (1n << 2n) | (3n << 6n) | (2n << 8n) | (1n << 10n) | (3n << 53n),
    );
    const s64 = armLpaeDomainAlloc({ stage: 1, granuleLg2: 16, oas: 52 });
    iommuMap(s64, 0n, (1n << 50n) + 0x10000n, 0x10000n, RW);
    const leaf64 = ptImage(s64.pt!).find((e) => e.level === 0)!;
    expect(leaf64.pte & 0xffff_ffff_f000n).toBe(0x10000n | (0x4n << 12n));
  });
});

describe("io_pgtable_tlb_add_page: the gather of an ARM unmap (iommu_iotlb_gather_add_page)", () => {
  /** An ARM domain whose driver records each iotlb_sync as [start, end, pgsize]. */
  function armWithSync() {
    const syncs: Array<[bigint, bigint, bigint]> = [];
    const d = armLpaeDomainAlloc(
      { stage: 1, granuleLg2: 12 },
      { iotlbSync: (_d, g) => void syncs.push([g.start, g.end, g.pgsize]) },
    );
    iommuMap(d, SZ_4K, SZ_4K, 0x10000n, RW);
    iommuMap(d, SZ_2M, SZ_2M, SZ_2M, RW);
    return { d, syncs };
  }

  it("adjacent pages of one size gather into one range", () => {
    const { d, syncs } = armWithSync();
    const g = new IotlbGather();
    expect(iommuUnmapFast(d, SZ_4K, 2n * SZ_4K, g)).toBe(2n * SZ_4K);
    expect(iommuUnmapFast(d, 3n * SZ_4K, SZ_4K, g)).toBe(SZ_4K);
    expect(syncs).toEqual([]);
    expect([g.start, g.end, g.pgsize]).toEqual([SZ_4K, 4n * SZ_4K - 1n, SZ_4K]);
    iommuIotlbSync(d, g);
    expect(syncs).toEqual([[SZ_4K, 4n * SZ_4K - 1n, SZ_4K]]);
  });

  it("a disjoint page or another page size syncs what was gathered first", () => {
    const { d, syncs } = armWithSync();
    const g = new IotlbGather();
    iommuUnmapFast(d, SZ_4K, SZ_4K, g);
    iommuUnmapFast(d, 8n * SZ_4K, SZ_4K, g);
    expect(syncs).toEqual([[SZ_4K, 2n * SZ_4K - 1n, SZ_4K]]);
    iommuUnmapFast(d, SZ_2M, SZ_2M, g);
    expect(syncs[1]).toEqual([8n * SZ_4K, 9n * SZ_4K - 1n, SZ_4K]);
    expect([g.start, g.end, g.pgsize]).toEqual([SZ_2M, 2n * SZ_2M - 1n, SZ_2M]);
  });

  it("a page of another size syncs even when it touches the gathered range", () => {
    const { d, syncs } = armWithSync();
    iommuMap(d, SZ_2M - SZ_4K, SZ_4K, SZ_4K, RW);
    const g = new IotlbGather();
    iommuUnmapFast(d, SZ_2M - SZ_4K, SZ_4K, g);
    iommuUnmapFast(d, SZ_2M, SZ_2M, g);
    expect(syncs).toEqual([[SZ_2M - SZ_4K, SZ_2M - 1n, SZ_4K]]);
    expect([g.start, g.end, g.pgsize]).toEqual([SZ_2M, 2n * SZ_2M - 1n, SZ_2M]);
  });

  it("a queued gather (DMA-FQ) collects nothing: the deferred flush-all covers it", () => {
    const { d, syncs } = armWithSync();
    const g = new IotlbGather();
    g.queued = true;
    expect(iommuUnmapFast(d, SZ_4K, SZ_4K, g)).toBe(SZ_4K);
    expect(iommuUnmapFast(d, 8n * SZ_4K, SZ_4K, g)).toBe(SZ_4K);
    expect([g.empty, g.pgsize, syncs]).toEqual([true, 0n, []]);
  });
});

describe("arm_lpae_map_pages / arm_lpae_unmap_pages called directly", () => {
  const noWarn = () =>
    armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, quirks: IO_PGTABLE_QUIRK_NO_WARN });
  const mapPages = (d: IommuDomain, iova: bigint, pa: bigint, pgsize: bigint, n: bigint) =>
    d.ops.mapPages!(d, iova, pa, pgsize, n, RW);
  const unmapPages = (d: IommuDomain, iova: bigint, pgsize: bigint, n: bigint) =>
    d.ops.unmapPages!(d, iova, pgsize, n, new IotlbGather());

  it("WARN on a page size outside the bitmap, an IOVA beyond IAS or a PA beyond OAS", () => {
    const d = noWarn();
    for (const pgsize of [0n, 0x3000n, 0x2000n, 1n << 39n]) {
      expect(() => mapPages(d, 0n, 0n, pgsize, 1n)).toThrow(KernelWarning);
      expect(() => unmapPages(d, 0n, pgsize, 1n)).toThrow(KernelWarning);
    }
    expect(() => mapPages(d, 1n << 48n, 0n, SZ_4K, 1n)).toThrow(KernelWarning);
    expect(() => mapPages(d, 0n, 1n << 48n, SZ_4K, 1n)).toThrow(KernelWarning);
    expect(() => unmapPages(d, 1n << 48n, SZ_4K, 1n)).toThrow(KernelWarning);
    expect(() => unmapPages(d, 0n, SZ_4K, 0n)).toThrow(KernelWarning);
    expect(d.pt!.tableCount).toBe(1);
  });

  it("map without read or write permission is EINVAL after the argument checks", () => {
    const d = noWarn();
    expect(d.ops.mapPages!(d, SZ_4K, 0n, SZ_4K, 1n, IOMMU_CACHE)).toEqual({
      mapped: 0n,
      errno: EINVAL,
    });
    expect(iommuIovaToPhys(d, SZ_4K)).toBe(0n);
    expect(() => d.ops.mapPages!(d, 0n, 0n, 0x3000n, 1n, IOMMU_CACHE)).toThrow(KernelWarning);
  });

  it("write and clear at most up to the end of one table; the core calls again for the rest", () => {
    const d = noWarn();
    expect(mapPages(d, SZ_2M - SZ_4K, 0x10000n, SZ_4K, 4n)).toEqual({ mapped: SZ_4K, errno: 0 });
    expect(iommuIovaToPhys(d, SZ_2M - SZ_4K)).toBe(0x10000n);
    expect(iommuIovaToPhys(d, SZ_2M)).toBe(0n);
    expect(unmapPages(d, SZ_2M - SZ_4K, SZ_4K, 4n)).toBe(SZ_4K);
    expect(iommuIovaToPhys(d, SZ_2M - SZ_4K)).toBe(0n);
  });

  it("unmap clears nothing past the end of its table, even when the next table is mapped", () => {
    const d = noWarn();
    // The leaf tables of [0, 2M) and [2M, 4M), one after the other in the slab.
    iommuMap(d, SZ_2M - SZ_4K, 0x10000n, SZ_4K, RW);
    iommuMap(d, SZ_2M, 0x20000n, SZ_4K, RW);
    expect(unmapPages(d, SZ_2M - SZ_4K, SZ_4K, 4n)).toBe(SZ_4K);
    expect(iommuIovaToPhys(d, SZ_2M - SZ_4K)).toBe(0n);
    expect(iommuIovaToPhys(d, SZ_2M)).toBe(0x20000n);
  });

  it("map allocates each missing table one level below the entry that points to it", () => {
    const d = noWarn();
    const perLevel = () => Array.from(d.pt!.alloc.perLevel.subarray(0, 4));
    // 48-bit stage 1, 4K granule: a top table at level 3 (the model counts the leaf level as 0).
    expect(perLevel()).toEqual([0, 0, 0, 1]);
    iommuMap(d, SZ_4K, 0n, SZ_4K, RW);
    expect(perLevel()).toEqual([1, 1, 1, 1]);
    iommuMap(d, SZ_1G + SZ_2M, 0n, SZ_2M, RW);
    expect(perLevel()).toEqual([1, 2, 1, 1]);
  });

  it("map looks only at the entries it writes", () => {
    const d = noWarn();
    iommuMap(d, 3n * SZ_4K, 0x30000n, SZ_4K, RW);
    expect(mapPages(d, SZ_4K, 0x10000n, SZ_4K, 2n)).toEqual({ mapped: 2n * SZ_4K, errno: 0 });
    expect(iommuIovaToPhys(d, 2n * SZ_4K)).toBe(0x11000n);
    expect(iommuIovaToPhys(d, 3n * SZ_4K)).toBe(0x30000n);
  });

  it("a leaf where a table is needed is EEXIST, WARNing unless NO_WARN", () => {
    const q = noWarn();
    iommuMap(q, SZ_2M, SZ_2M, SZ_2M, RW);
    expect(mapPages(q, SZ_2M + SZ_4K, 0n, SZ_4K, 1n)).toEqual({ mapped: 0n, errno: EEXIST });
    expect(iommuIovaToPhys(q, SZ_2M + SZ_4K)).toBe(SZ_2M + SZ_4K);
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_2M, SZ_2M, SZ_2M, RW);
    expect(() => mapPages(d, SZ_2M + SZ_4K, 0n, SZ_4K, 1n)).toThrow(KernelWarning);
  });

  it("a table that cannot be allocated is ENOMEM with nothing mapped", () => {
    let fail = false;
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, shouldFail: () => fail });
    fail = true;
    expect(mapPages(d, SZ_4K, 0n, SZ_4K, 1n)).toEqual({ mapped: 0n, errno: ENOMEM });
    expect(() => iommuMap(d, SZ_4K, 0n, SZ_4K, RW)).toThrow(
      expect.objectContaining({ errno: ENOMEM }),
    );
    expect(d.pt!.tableCount).toBe(1);
  });

  it("unmap stops at an empty entry: before a level, at a hole inside the range", () => {
    const q = noWarn();
    iommuMap(q, SZ_4K, SZ_4K, SZ_4K, RW);
    iommuMap(q, 3n * SZ_4K, 3n * SZ_4K, SZ_4K, RW);
    // No table below the top entry of 1G: nothing to walk.
    expect(unmapPages(q, SZ_1G, SZ_4K, 1n)).toBe(0n);
    expect(unmapPages(q, SZ_4K, SZ_4K, 3n)).toBe(SZ_4K);
    expect(iommuIovaToPhys(q, 3n * SZ_4K)).toBe(3n * SZ_4K);
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    iommuMap(d, SZ_4K, SZ_4K, SZ_4K, RW);
    iommuMap(d, 3n * SZ_4K, 3n * SZ_4K, SZ_4K, RW);
    expect(() => unmapPages(d, SZ_1G, SZ_4K, 1n)).toThrow(KernelWarning);
    expect(() => unmapPages(d, SZ_4K, SZ_4K, 3n)).toThrow(KernelWarning);
  });

  it("blocks over several tables tear down exactly those tables, by map or by unmap", () => {
    for (const via of ["map", "unmap"] as const) {
      const d = noWarn();
      for (const iova of [SZ_4K, SZ_2M + SZ_4K, 2n * SZ_2M + SZ_4K])
        iommuMap(d, iova, iova, SZ_4K, RW);
      const tables = d.pt!.tableCount;
      if (via === "map") iommuMap(d, SZ_2M, SZ_1G, 2n * SZ_2M, RW);
      else expect(iommuUnmap(d, SZ_2M, 2n * SZ_2M)).toBe(2n * SZ_2M);
      expect(d.pt!.tableCount).toBe(tables - 2);
      expect(iommuIovaToPhys(d, SZ_4K)).toBe(SZ_4K);
      const at = (iova: bigint) => iommuIovaToPhys(d, iova);
      if (via === "map")
        expect([at(SZ_2M + SZ_4K), at(2n * SZ_2M + SZ_4K)]).toEqual([
          SZ_1G + SZ_4K,
          SZ_1G + SZ_2M + SZ_4K,
        ]);
      else expect([at(SZ_2M + SZ_4K), at(2n * SZ_2M + SZ_4K)]).toEqual([0n, 0n]);
    }
  });
});
