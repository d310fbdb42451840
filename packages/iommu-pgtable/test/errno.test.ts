/** Bad input and injected faults: the kernel's errno, and nothing changed. */
import { Kernel, KernelWarning, isKernelError, U64_MAX } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  IommuDevice,
  IotlbGather,
  MOCK_IOMMUPT_DEFAULT,
  PT_FEAT_FLUSH_RANGE,
  PT_FEAT_FLUSH_RANGE_NO_GAPS,
  PT_FEAT_VTDSS_FORCE_WRITEABLE,
  amdIommuDriver,
  armLpaeDomainAlloc,
  iommuIotlbSync,
  iommuIovaToPhys,
  iommuMap,
  iommuReadRuns,
  iommuUnmap,
  iommuUnmapFast,
  iommuptDomainAlloc,
  mockIommuptDomainAlloc,
  ptDumpText,
  vtdssFormat,
} from "../src/index.js";
import { errnoOf, RW } from "./helpers.js";

function vtd(features = 1 << PT_FEAT_FLUSH_RANGE) {
  return iommuptDomainAlloc({ format: vtdssFormat, features, hwMaxVaLg2: 48 });
}

describe("iommu_map errnos (iommupt path)", () => {
  it("each bad input gets the kernel's errno and leaves the table as it was", () => {
    const d = vtd();
    iommuMap(d, 0x10000n, 0x10000n, 0x1000n, RW);
    const before = ptDumpText(d.pt!);
    const cases: [string, () => void][] = [
      ["ERANGE", () => iommuMap(d, 0x20000n, 1n << 52n, 0x1000n, RW)],
      ["EINVAL", () => iommuMap(d, 0x20000n, 0x20000n, 0n, RW)],
      ["EOVERFLOW", () => iommuMap(d, U64_MAX - 0xfffn, 0x20000n, 0x2000n, RW)],
      ["ENXIO", () => iommuMap(d, 0x20800n, 0x20000n, 0x1000n, RW)],
      ["ENXIO", () => iommuMap(d, 0x20000n, 0x20800n, 0x1000n, RW)],
      ["ENXIO", () => iommuMap(d, 0x20000n, 0x20000n, 0x800n, RW)],
      ["EINVAL", () => iommuMap(d, 0x20000n, 0x20000n, 0x1800n, RW)],
      ["ERANGE", () => iommuMap(d, 1n << 48n, 0x20000n, 0x1000n, RW)],
      ["ERANGE", () => iommuMap(d, (1n << 48n) - 0x1000n, 0x20000n, 0x2000n, RW)],
      ["EADDRINUSE", () => iommuMap(d, 0x10000n, 0x40000n, 0x1000n, RW)],
      ["EADDRINUSE", () => iommuMap(d, 0xe000n, 0x40000n, 0x4000n, RW)],
      ["EADDRINUSE", () => iommuMap(d, 0n, 0n, 0x200000n, RW)],
    ];
    for (const [want, fn] of cases) {
      expect(errnoOf(fn)).toBe(want);
      expect(ptDumpText(d.pt!)).toBe(before);
    }
  });

  it("a page size the format cannot hold is a WARN and changes nothing", () => {
    const d = vtd();
    const before = d.pgsizeBitmap;
    expect(() => {
      d.pgsizeBitmap = 0x2000n;
    }).toThrow(KernelWarning);
    expect(d.pgsizeBitmap).toBe(before);
    iommuMap(d, 0x200000n, 0x200000n, 0x200000n, RW);
    expect(ptDumpText(d.pt!)).toContain("0x0000000000200083");
  });

  it("a map without READ or WRITE is a WARN", () => {
    const d = vtd();
    expect(() => iommuMap(d, 0n, 0n, 0x1000n, 0)).toThrow(KernelWarning);
  });

  it("VT-d FORCE_WRITEABLE refuses read-only maps with EINVAL", () => {
    const d = vtd(1 << PT_FEAT_VTDSS_FORCE_WRITEABLE);
    expect(errnoOf(() => iommuMap(d, 0n, 0n, 0x1000n, IOMMU_READ))).toBe("EINVAL");
    expect(errnoOf(() => iommuMap(d, 0n, 0n, 0x1000n, IOMMU_WRITE))).toBe("ok");
  });

  it("a partial install is unwound: the prefix mapped before the collision is gone", () => {
    const d = vtd();
    iommuMap(d, 0x3000n, 0x3000n, 0x1000n, RW);
    expect(errnoOf(() => iommuMap(d, 0x1000n, 0x100000n, 0x3000n, RW))).toBe("EADDRINUSE");
    expect(iommuIovaToPhys(d, 0x1000n)).toBe(0n);
    expect(iommuIovaToPhys(d, 0x2000n)).toBe(0n);
    expect(iommuIovaToPhys(d, 0x3000n)).toBe(0x3000n);
  });

  it("mock: 2 KiB alignment is fine, 1 KiB is ENXIO", () => {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    expect(errnoOf(() => iommuMap(d, 0x1000800n, 0x800n, 0x800n, RW))).toBe("ok");
    expect(errnoOf(() => iommuMap(d, 0x1000400n, 0x800n, 0x800n, RW))).toBe("ENXIO");
    expect(errnoOf(() => iommuMap(d, 0x2000000n, 0x800n, 0xc00n, RW))).toBe("EINVAL");
  });
});

describe("iommu_unmap never fails", () => {
  it("returns 0 for holes, misalignment, empty, overflowing and out-of-range requests", () => {
    const d = vtd();
    iommuMap(d, 0x200000n, 0x200000n, 0x200000n, RW);
    expect(iommuUnmap(d, 0x400000n, 0x1000n)).toBe(0n);
    expect(iommuUnmap(d, 0x200800n, 0x1000n)).toBe(0n);
    expect(iommuUnmap(d, 0x201000n, 0x1000n)).toBe(0n);
    expect(iommuUnmap(d, 0x200000n, 0n)).toBe(0n);
    expect(iommuUnmap(d, U64_MAX, 2n)).toBe(0n);
    expect(iommuUnmap(d, 1n << 50n, 0x1000n)).toBe(0n);
    expect(iommuIovaToPhys(d, 1n << 50n)).toBe(0n);
    expect(iommuIovaToPhys(d, 0x2fffffn)).toBe(0x3fffffn - 0x100000n);
  });

  it("stops at the first hole and reports the bytes before it", () => {
    const d = vtd();
    iommuMap(d, 0x1000n, 0x1000n, 0x2000n, RW);
    iommuMap(d, 0x5000n, 0x5000n, 0x1000n, RW);
    expect(iommuUnmap(d, 0x1000n, 0x5000n)).toBe(0x2000n);
    expect(iommuIovaToPhys(d, 0x5000n)).toBe(0x5000n);
  });

  it("classic path: unaligned to the smallest page returns 0, map is EINVAL", () => {
    const d = armLpaeDomainAlloc({ stage: 1, granuleLg2: 12 });
    expect(errnoOf(() => iommuMap(d, 0x800n, 0n, 0x1000n, RW))).toBe("EINVAL");
    expect(errnoOf(() => iommuMap(d, 0x1000n, 0n, 0x1800n, RW))).toBe("EINVAL");
    iommuMap(d, 0x1000n, 0n, 0x1000n, RW);
    expect(iommuUnmap(d, 0x1800n, 0x1000n)).toBe(0n);
    expect(iommuUnmap(d, 0x1000n, 0x1000n)).toBe(0x1000n);
  });
});

describe("fault injection at table allocation", () => {
  it("every failing allocation is ENOMEM with the translations unchanged", () => {
    const kernel = new Kernel();
    const amd = amdIommuDriver(kernel);
    const dev = new IommuDevice("dev", amd);
    // 4 MiB + 8 KiB across a 2 MiB boundary at a high IOVA: grows the top and needs tables.
    const iova = (1n << 45n) - 0x1000n;
    let nth = 1;
    for (;;) {
      const d = amd.domainAllocPaging(dev, 0);
      iommuMap(d, 0x1000n, 0x1000n, 0x1000n, RW);
      kernel.current.fault.arm(nth);
      let result = "ok";
      try {
        iommuMap(d, iova, 0x10000000n, 0x402000n, RW);
      } catch (e) {
        if (!isKernelError(e)) throw e;
        result = e.errnoName;
      }
      const fired = kernel.current.fault.failedSite;
      kernel.current.fault.disarm();
      if (!fired) {
        expect(result).toBe("ok");
        expect(iommuReadRuns(d, iova, 0x402000n)).toEqual([
          { iova, paddr: 0x10000000n, length: 0x402000n, prot: RW },
        ]);
        break;
      }
      expect(fired).toBe("iommu_alloc_pages");
      expect(result).toBe("ENOMEM");
      expect(iommuReadRuns(d, iova, 0x402000n)).toEqual([]);
      expect(iommuIovaToPhys(d, 0x1000n)).toBe(0x1000n);
      // The same map then succeeds on what was left behind.
      iommuMap(d, iova, 0x10000000n, 0x402000n, RW);
      expect(iommuIovaToPhys(d, iova + 0x401fffn)).toBe(0x10401fffn);
      nth++;
    }
    expect(nth).toBeGreaterThan(4);
  });

  it("domain allocation itself can fail with ENOMEM", () => {
    const kernel = new Kernel();
    const amd = amdIommuDriver(kernel);
    kernel.current.fault.arm(1);
    expect(errnoOf(() => amd.domainAllocPaging(new IommuDevice("d", amd), 0))).toBe("ENOMEM");
  });
});

describe("gather and deferred table freeing", () => {
  it("removed tables stay allocated until iotlb_sync; the range is the bytes unmapped", () => {
    const d = vtd();
    iommuMap(d, 1n << 30n, 0n, 1n << 30n, RW);
    d.pgsizeBitmap = 0x1000n;
    iommuMap(d, 2n << 30n, 0x1000n, 1n << 30n, RW);
    const tables = d.pt!.tableCount;
    const gather = new IotlbGather();
    expect(iommuUnmapFast(d, 2n << 30n, 1n << 30n, gather)).toBe(1n << 30n);
    expect(gather.freelist.length).toBe(513);
    expect(d.pt!.tableCount).toBe(tables);
    expect(gather.start).toBe(2n << 30n);
    expect(gather.end).toBe((3n << 30n) - 1n);
    iommuIotlbSync(d, gather);
    expect(d.pt!.tableCount).toBe(tables - 513);
    expect(gather.freelist.length).toBe(0);
    expect(gather.start).toBe(U64_MAX);
    expect(gather.end).toBe(0n);
  });

  it("FLUSH_RANGE_NO_GAPS flushes before gathering a disjoint range; a queued gather takes none", () => {
    let syncs = 0;
    const d = iommuptDomainAlloc(
      { format: vtdssFormat, features: 1 << PT_FEAT_FLUSH_RANGE_NO_GAPS, hwMaxVaLg2: 48 },
      { ops: { iotlbSync: () => void syncs++ } },
    );
    iommuMap(d, 0x10000n, 0n, 0x1000n, RW);
    iommuMap(d, 0x11000n, 0n, 0x1000n, RW);
    iommuMap(d, 0x80000n, 0n, 0x1000n, RW);
    const gather = new IotlbGather();
    iommuUnmapFast(d, 0x10000n, 0x1000n, gather);
    iommuUnmapFast(d, 0x11000n, 0x1000n, gather);
    expect(syncs).toBe(0);
    iommuUnmapFast(d, 0x80000n, 0x1000n, gather);
    expect(syncs).toBe(1);
    expect([gather.start, gather.end]).toEqual([0x80000n, 0x80fffn]);
    const q = vtd();
    q.pgsizeBitmap = 0x1000n;
    iommuMap(q, 0n, 0n, 0x200000n, RW);
    const queued = new IotlbGather();
    queued.queued = true;
    expect(iommuUnmapFast(q, 0n, 0x200000n, queued)).toBe(0x200000n);
    expect(queued.empty).toBe(true);
    expect(queued.freelist.length).toBe(1);
  });
});
