/** The PAGE_SIZE frame API on a domain: same results and errnos as the byte API. */
import { KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IO_PGTABLE_QUIRK_NO_WARN,
  IotlbGather,
  MOCK_IOMMUPT_DEFAULT,
  PT_FEAT_DYNAMIC_TOP,
  amdv1Format,
  armLpaeDomainAlloc,
  iommuIovaToPhys,
  iommuMap,
  iommuReadRuns,
  iommuptDomainAlloc,
  mockIommuptDomainAlloc,
  vtdssFormat,
} from "../src/index.js";
import { errnoOf, RW } from "./helpers.js";

describe("frame API", () => {
  for (const [name, make] of [
    ["vtdss", () => iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 })],
    ["mock default (2 KiB granule)", () => mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT)],
    [
      "arm 16K (classic)",
      () => armLpaeDomainAlloc({ stage: 1, granuleLg2: 14, quirks: IO_PGTABLE_QUIRK_NO_WARN }),
    ],
  ] as const) {
    it(`${name}: map, translate, read runs, unmap`, () => {
      const d = make();
      const base = 0x4000; // 64 MiB in frames
      d.mapPfns(base, 0x1000, 8, RW);
      d.mapPfns(base + 8, 0x2000, 4, IOMMU_READ);
      expect(d.iovaToPfn(base + 3)).toBe(0x1003);
      expect(d.iovaToPfn(base + 12)).toBe(-1);
      expect(iommuIovaToPhys(d, BigInt(base + 9) << 12n)).toBe(0x2001000n);
      const runs: number[][] = [];
      if (d.isIommupt) {
        d.readPfnRuns(base - 4, 20, (v, p, n, prot) => runs.push([v, p, n, prot]));
        expect(runs).toEqual([
          [base, 0x1000, 8, RW],
          [base + 8, 0x2000, 4, IOMMU_READ],
        ]);
      }
      // The classic core checks alignment to the 16K page first (EINVAL), iommupt does not.
      expect(errnoOf(() => d.mapPfns(base + 4, 0, 4, RW))).toBe(
        d.isIommupt ? "EADDRINUSE" : "EEXIST",
      );
      expect(errnoOf(() => d.mapPfns(base + 5, 0, 1, RW))).toBe(
        d.isIommupt ? "EADDRINUSE" : "EINVAL",
      );
      expect(errnoOf(() => d.mapPfns(base + 100, 0, 0, RW))).toBe(d.isIommupt ? "EINVAL" : "ok");
      // Past the end of the u64 space: iommupt's EOVERFLOW; io-pgtable-arm WARNs on the IAS.
      if (d.isIommupt) expect(errnoOf(() => d.mapPfns(2 ** 52 - 4, 0, 8, RW))).toBe("EOVERFLOW");
      else expect(() => d.mapPfns(2 ** 52 - 4, 0, 8, RW)).toThrow(KernelWarning);
      const gather = new IotlbGather();
      expect(d.unmapPfns(base, 12, gather)).toBe(12);
      expect(d.iovaToPfn(base)).toBe(-1);
      expect(d.unmapPfns(base, 12)).toBe(0);
    });
  }

  it("mock: a 2 KiB-offset area reads back in bytes through iommuReadRuns", () => {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    iommuMap(d, 0x1000800n, 0x5800n, 0x1800n, RW);
    expect(iommuReadRuns(d, 0x1000000n, 0x3000n)).toEqual([
      { iova: 0x1000800n, paddr: 0x5800n, length: 0x1800n, prot: RW },
    ]);
    expect(iommuReadRuns(d, 0x1000c00n, 0x800n)).toEqual([
      { iova: 0x1000c00n, paddr: 0x5c00n, length: 0x800n, prot: RW },
    ]);
    // A frame counts when its first 2 KiB half is mapped, as batch_from_domain reads it.
    const frames: number[][] = [];
    expect(d.readPfnRuns(0x1000, 4, (v, p, n) => frames.push([v, p, n]))).toBe(1);
    expect(frames).toEqual([[0x1001, 0x6, 1]]);
    expect(d.iovaToPfn(0x1001)).toBe(0x6);
    expect(d.iovaToPfn(0x1000)).toBe(-1);
    // 2 KiB in the second half of a frame: no frame starts inside it, so a frame-level reader sees nothing...
    iommuMap(d, 0x2000800n, 0x10800n, 0x800n, RW);
    expect(d.readPfnRuns(0x2000, 1, () => {})).toBe(0);
    // ...and the byte reader sees it.
    expect(d.readRange(0x2000000n, 0x1000n)).toEqual([
      { iova: 0x2000800n, paddr: 0x10800n, length: 0x800n, prot: RW },
    ]);
  });

  it("method forms and mappedBytes; range reads reaching past a growable top read what is inside", () => {
    const d = iommuptDomainAlloc({
      format: amdv1Format,
      features: 1 << PT_FEAT_DYNAMIC_TOP,
      startingLevel: 2,
    });
    d.map(0x100000n, 0x200000n, 0x3000n, RW);
    expect(d.mappedBytes).toBe(0x3000n);
    expect(d.iovaToPhys(0x101234n)).toBe(0x201234n);
    expect(iommuReadRuns(d, 0n, 1n << 40n)).toEqual([
      { iova: 0x100000n, paddr: 0x200000n, length: 0x3000n, prot: RW },
    ]);
    expect(d.readPfnRuns(0, 2 ** 30, () => {})).toBe(3);
    expect(d.unmap(0x100000n, 0x3000n)).toBe(0x3000n);
    expect(d.mappedBytes).toBe(0n);
    d.free();
    expect(d.pt!.tableCount).toBe(0);
  });

  it("runs read across holes: every leaf between them, none past the range's end", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    // Leaves at both ends of one level-0 table and in tables far apart, holes between.
    for (const v of [0x40000, 0x401ff, 0x40200, 0x7fe00000])
      d.mapPfns(v, 0x1000 + (v & 0xfff), 1, RW);
    const runs: number[][] = [];
    const read = (first: number, n: number) => {
      runs.length = 0;
      return d.readPfnRuns(first, n, (v, p, k) => runs.push([v, p, k]));
    };
    expect(read(0, 2 ** 36)).toBe(4);
    expect(runs).toEqual([
      [0x40000, 0x1000, 1],
      [0x401ff, 0x11ff, 2],
      [0x7fe00000, 0x1000, 1],
    ]);
    // An end inside a run of holes, just before a leaf: the leaf is not read.
    expect(read(0x40001, 0x1fe)).toBe(0);
    expect(runs).toEqual([]);
    expect(read(0x40000, 0x1ff)).toBe(1);
    expect(read(0x40100, 0x7fdbff00)).toBe(2);
    expect(runs).toEqual([[0x401ff, 0x11ff, 2]]);
    // Leaves on either side of eight-item boundaries of one table, holes scanned between.
    const at = [0x80003, 0x80008, 0x80009, 0x80010, 0x80064, 0x801f9, 0x801fe];
    for (const v of at) d.mapPfns(v, 0x9000 + (v & 0xfff), 1, RW);
    expect(read(0x80000, 0x200)).toBe(at.length);
    expect(runs).toEqual([
      [0x80003, 0x9003, 1],
      [0x80008, 0x9008, 2],
      [0x80010, 0x9010, 1],
      [0x80064, 0x9064, 1],
      [0x801f9, 0x91f9, 1],
      [0x801fe, 0x91fe, 1],
    ]);
    expect(read(0x80004, 0x60)).toBe(3);
  });
});
