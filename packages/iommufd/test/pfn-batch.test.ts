/**
 * struct pfn_batch and its movers, one by one (drivers/iommu/iommufd/pages.c): temp_kmalloc,
 * __batch_init, batch_clear_carry, batch_skip_carry, batch_add_pfn_num, batch_unpin,
 * batch_to_domain with batch_iommu_map_small, batch_from_domain(_continue) and
 * batch_from_xarray. The batches here hold PFNs of real frames where something is pinned or
 * mapped; elsewhere only the numbers matter.
 */
import { iommuIovaToPhys } from "@x/iommu-pgtable";
import { ENOMEM, Kernel, KernelWarning, XArray } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { IoPagetable } from "../src/io-pagetable.js";
import { IoptArea } from "../src/io-pagetable-area.js";
import { IOMMU_CACHE, IOMMU_MMIO, domainMap, iommuUnmapNofail } from "../src/iommu-domain.js";
import { iommufdInit } from "../src/ioctls.js";
import { IoptPages } from "../src/pages.js";
import {
  BATCH_CPU_MEMORY,
  BATCH_MMIO,
  type BatchKind,
  MAX_NPFNS,
  PfnBatch,
  batchFromDomain,
  batchFromDomainContinue,
  batchFromXarray,
  batchToDomain,
  batchUnpin,
  tempAlloc,
} from "../src/pfn-batch.js";
import { setTempMemoryLimit } from "../src/testing.js";
import { PAGE, RW, domainRuns, errno, syncCount, testDomain } from "./pages-helpers.js";

/** A machine with iommufd loaded and, unless 0, a temp memory limit of `limit` bytes. */
function machine(limit = 0): Kernel {
  const kernel = new Kernel({ ramBytes: 1n << 30n });
  iommufdInit(kernel);
  if (limit) setTempMemoryLimit(kernel, limit);
  return kernel;
}

/** The (pfn, npfns) entries in use. */
function entries(b: PfnBatch): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < b.end; i++) out.push([b.pfns[i] as number, b.npfns[i] as number]);
  return out;
}

/** A batch holding `runs` as its entries (none merge: callers pass non-contiguous runs). */
function batchOf(
  kernel: Kernel,
  runs: Array<[number, number]>,
  kind: BatchKind = BATCH_CPU_MEMORY,
) {
  const b = PfnBatch.create(kernel, 64);
  for (const [pfn, n] of runs) expect(b.add(pfn, n, kind)).toBe(true);
  expect(b.end).toBe(runs.length);
  return b;
}

/**
 * An area of `length` bytes at `iova` over page indexes from `index`, starting `pageOffset`
 * bytes into its first page (what iopt_init_area sets up).
 */
function areaAt(
  iopt: IoPagetable,
  iova: bigint,
  length: bigint,
  index: number,
  pageOffset = 0,
  prot = RW,
): IoptArea {
  const a = new IoptArea();
  a.node.start = iova;
  a.node.last = iova + length - 1n;
  a.pagesNode.start = BigInt(index);
  a.pagesNode.last = BigInt(index) + (BigInt(pageOffset) + length - 1n) / PAGE;
  a.pageOffset = pageOffset;
  a.iommuProt = prot;
  a.iopt = iopt;
  return a;
}

/** `n` frames of RAM that are not physically contiguous, in the order they came. */
function scatteredFrames(kernel: Kernel, n: number): number[] {
  const pfns: number[] = [];
  for (let i = 0; i < 2 * n; i++) pfns.push(kernel.mem.allocFolio(0));
  // Every second frame: no two neighbours, so each is its own batch entry.
  return pfns.filter((_, i) => i % 2 === 0).reverse();
}

function isWarning(fn: () => unknown): boolean {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelWarning) return true;
    throw e;
  }
  return false;
}

describe("temp_kmalloc and __batch_init", () => {
  it("WARNs on 0 bytes, with or without a backup", () => {
    const kernel = machine();
    expect(isWarning(() => tempAlloc(kernel, 0, false))).toBe(true);
    expect(isWarning(() => tempAlloc(kernel, 0, true))).toBe(true);
    expect(isWarning(() => PfnBatch.create(kernel, 0, true))).toBe(true);
  });

  it("a request below the backup's 256 bytes gets the backup, never capped", () => {
    const kernel = machine(16);
    expect(tempAlloc(kernel, 255, true)).toBe(255);
    expect(tempAlloc(kernel, 12, true)).toBe(12);
    // At and above the backup's size the temp memory limit caps it, as it does without one.
    expect(tempAlloc(kernel, 256, true)).toBe(16);
    expect(tempAlloc(kernel, 4096, true)).toBe(16);
    expect(tempAlloc(kernel, 255, false)).toBe(16);
    expect(tempAlloc(kernel, 8, false)).toBe(8);
    // 21 entries fit the 252 bytes of the backup; 22 ask for 264 bytes and get 16 (one entry).
    expect(PfnBatch.create(kernel, 21, true).arraySize).toBe(21);
    expect(PfnBatch.create(kernel, 22, true).arraySize).toBe(1);
    expect(PfnBatch.create(kernel, 21).arraySize).toBe(1);
  });

  it("only an allocation without a backup is a fault-injection point", () => {
    const kernel = machine();
    const fault = kernel.current.fault;
    fault.arm(1);
    try {
      expect(tempAlloc(kernel, 1 << 20, true)).toBe(65536);
      expect(PfnBatch.create(kernel, 1000, true).arraySize).toBe(1000);
      expect(fault.read()).toBe(1);
      expect(errno(() => PfnBatch.create(kernel, 1000))).toBe(ENOMEM);
      expect(fault.read()).toBe(0);
    } finally {
      fault.disarm();
    }
  });

  it("WARNs when the memory got is below one entry (12 bytes), backup or not", () => {
    const kernel = machine(11);
    expect(isWarning(() => PfnBatch.create(kernel, 1000))).toBe(true);
    expect(isWarning(() => PfnBatch.create(kernel, 1000, true))).toBe(true);
    // One page's 12 bytes come from the backup, whatever the limit.
    expect(PfnBatch.create(kernel, 1, true).arraySize).toBe(1);
    setTempMemoryLimit(kernel, 12);
    expect(PfnBatch.create(kernel, 1000).arraySize).toBe(1);
    setTempMemoryLimit(kernel, 23);
    expect(PfnBatch.create(kernel, 1000).arraySize).toBe(1);
    setTempMemoryLimit(kernel, 24);
    expect(PfnBatch.create(kernel, 1000).arraySize).toBe(2);
  });
});

describe("batch_clear_carry / batch_skip_carry", () => {
  it("clear_carry keeps the last run's tail and WARNs when there is no such tail", () => {
    const kernel = machine();
    expect(isWarning(() => PfnBatch.create(kernel, 8).clearCarry(1))).toBe(true);
    const b = batchOf(kernel, [
      [100, 5],
      [200, 3],
    ]);
    expect(isWarning(() => b.clearCarry(4))).toBe(true);
    b.clearCarry(3);
    expect(entries(b)).toEqual([[200, 3]]);
    expect(b.totalPfns).toBe(3);
    b.clearCarry(2);
    expect(entries(b)).toEqual([[201, 2]]);
    b.clearCarry(0);
    expect([b.end, b.totalPfns]).toEqual([0, 0]);
  });

  it("skip_carry drops the carry's head, at most all of it, and WARNs unless it is one run", () => {
    const kernel = machine();
    const b = batchOf(kernel, [[300, 5]]);
    b.skipCarry(2);
    expect(entries(b)).toEqual([[302, 3]]);
    expect(b.totalPfns).toBe(3);
    b.skipCarry(7);
    expect([b.pfns[0], b.npfns[0], b.totalPfns]).toEqual([305, 0, 0]);
    // An empty batch has nothing to skip.
    b.skipCarry(1);
    expect([b.pfns[0], b.npfns[0], b.totalPfns]).toEqual([305, 0, 0]);
    const two = batchOf(kernel, [
      [10, 1],
      [20, 2],
    ]);
    expect(isWarning(() => two.skipCarry(1))).toBe(true);
  });
});

describe("batch_add_pfn_num and page-by-page runs", () => {
  it("a run merges into the last entry exactly up to MAX_NPFNS", () => {
    const kernel = machine();
    const b = PfnBatch.create(kernel, 4);
    expect(b.add(0, MAX_NPFNS - 5)).toBe(true);
    expect(b.add(MAX_NPFNS - 5, 5)).toBe(true);
    expect(entries(b)).toEqual([[0, MAX_NPFNS]]);
    expect(b.add(MAX_NPFNS, 1)).toBe(true);
    expect(entries(b)).toEqual([
      [0, MAX_NPFNS],
      [MAX_NPFNS, 1],
    ]);
  });

  it("a read-back run fills the last entry to MAX_NPFNS before it starts a new one", () => {
    const kernel = machine();
    const b = PfnBatch.create(kernel, 4);
    b.add(0, MAX_NPFNS - 10);
    expect(b.addRun(MAX_NPFNS - 10, 25)).toBe(25);
    expect(entries(b)).toEqual([
      [0, MAX_NPFNS],
      [MAX_NPFNS, 15],
    ]);
    expect(b.totalPfns).toBe(MAX_NPFNS + 15);
    // Not contiguous: an entry of its own.
    expect(b.addRun(1, 3)).toBe(3);
    expect(entries(b)[2]).toEqual([1, 3]);
  });

  it("a run longer than MAX_NPFNS that does not continue the last entry is cut at MAX_NPFNS", () => {
    const kernel = machine();
    const b = PfnBatch.create(kernel, 4);
    b.add(0, 10);
    expect(b.addRun(100, MAX_NPFNS + 5)).toBe(MAX_NPFNS + 5);
    expect(entries(b)).toEqual([
      [0, 10],
      [100, MAX_NPFNS],
      [100 + MAX_NPFNS, 5],
    ]);
  });

  it("a full batch takes only what fits in its last entry, and nothing of another kind", () => {
    const kernel = machine(12);
    const b = PfnBatch.create(kernel, 100);
    expect(b.arraySize).toBe(1);
    expect(b.addRun(7, 3)).toBe(3);
    b.clear();
    b.add(0, MAX_NPFNS - 10);
    // Contiguous but of the other kind: refused whole.
    expect(b.addRun(MAX_NPFNS - 10, 25, BATCH_MMIO)).toBe(0);
    expect(entries(b)).toEqual([[0, MAX_NPFNS - 10]]);
    // Not contiguous, no free entry: nothing.
    expect(b.addRun(MAX_NPFNS + 100, 25)).toBe(0);
    // Contiguous: the 10 PFNs the last entry has room for.
    expect(b.addRun(MAX_NPFNS - 10, 25)).toBe(10);
    expect(entries(b)).toEqual([[0, MAX_NPFNS]]);
    expect(b.totalPfns).toBe(MAX_NPFNS);
    expect(b.addRun(MAX_NPFNS, 1)).toBe(0);
  });
});

describe("batch_unpin", () => {
  it("visits exactly PFNs [skip, skip + count) of the batch, run by run", () => {
    const kernel = machine();
    const b = batchOf(kernel, [
      [10, 3],
      [20, 2],
      [30, 4],
    ]);
    const visit = (skip: number, count: number) => {
      const seen: Array<[number, number]> = [];
      b.forEachRun(skip, count, (pfn, n) => seen.push([pfn, n]));
      return seen;
    };
    expect(visit(0, 9)).toEqual([
      [10, 3],
      [20, 2],
      [30, 4],
    ]);
    expect(visit(0, 2)).toEqual([[10, 2]]);
    expect(visit(3, 2)).toEqual([[20, 2]]);
    expect(visit(4, 3)).toEqual([
      [21, 1],
      [30, 2],
    ]);
    expect(visit(5, 4)).toEqual([[30, 4]]);
    // Never past the batch's entries, even for a count beyond them (stale entries after a carry).
    expect(visit(7, 100)).toEqual([[32, 2]]);
    b.clearCarry(2);
    expect(visit(0, 100)).toEqual([[32, 2]]);
  });

  it("unpins exactly the pages asked for and takes them off npinned", () => {
    const kernel = machine();
    const frames = scatteredFrames(kernel, 3);
    const mem = kernel.mem;
    for (const pfn of frames) mem.pinPages(pfn, 1);
    const b = batchOf(
      kernel,
      frames.map((pfn) => [pfn, 1]),
    );
    const pages = new IoptPages(kernel, 0n, 3n * PAGE, true);
    pages.npinned = 3;
    batchUnpin(pages, b, 1, 1);
    expect(frames.map((pfn) => mem.pinCount(pfn))).toEqual([1, 0, 1]);
    expect(pages.npinned).toBe(2);
    batchUnpin(pages, b, 2, 1);
    expect(frames.map((pfn) => mem.pinCount(pfn))).toEqual([1, 0, 0]);
    batchUnpin(pages, b, 0, 1);
    expect(frames.map((pfn) => mem.pinCount(pfn))).toEqual([0, 0, 0]);
    expect(pages.npinned).toBe(0);
  });
});

/** The frame `iova` translates to in `d` (0 when unmapped). */
function frameAt(d: ReturnType<typeof testDomain>, iova: bigint): number {
  return Number(iommuIovaToPhys(d, iova) >> 12n);
}

describe("batch_to_domain", () => {
  const A = 0x100000n;

  it("maps the first index from page_offset and stops at the area's last IOVA", () => {
    // The mock domain's 2 KiB IO pages let an area start and end inside a page.
    const kernel = machine();
    const d = testDomain(kernel, "mock");
    const base = 1n << 24n; // MOCK_APERTURE_START
    const [p0, p1] = scatteredFrames(kernel, 2) as [number, number];
    const b = batchOf(kernel, [
      [p0, 1],
      [p1, 1],
    ]);
    const area = areaAt(new IoPagetable(kernel), base + 0x800n, 0x1000n, 0, 0x800);
    batchToDomain(b, d, area, 0);
    expect(domainRuns(d).map((r) => [r.iova, r.paddr, r.length])).toEqual([
      [base + 0x800n, BigInt(p0) * PAGE + 0x800n, 0x800n],
      [base + 0x1000n, BigInt(p1) * PAGE, 0x800n],
    ]);
  });

  it("an MMIO batch maps without IOMMU_CACHE and with IOMMU_MMIO", () => {
    const kernel = machine();
    const d = testDomain(kernel);
    const b = batchOf(kernel, [[0x80000, 2]], BATCH_MMIO);
    batchToDomain(b, d, areaAt(new IoPagetable(kernel), A, 2n * PAGE, 0), 0);
    expect(domainRuns(d).map((r) => r.prot)).toEqual([(RW & ~IOMMU_CACHE) | IOMMU_MMIO]);
  });

  it("a failed run unmaps what this call mapped before it, and only that", () => {
    const kernel = machine();
    const d = testDomain(kernel);
    const frames = scatteredFrames(kernel, 5);
    const [p0, p1, p2, p3, other] = frames as [number, number, number, number, number];
    // A page another area holds, in the way of the third run.
    domainMap(d, A + 2n * PAGE, BigInt(other) * PAGE, PAGE, RW);
    const before = domainRuns(d);
    const b = batchOf(kernel, [
      [p0, 1],
      [p1, 1],
      [p2, 1],
      [p3, 1],
    ]);
    const area = areaAt(new IoPagetable(kernel), A, 4n * PAGE, 0);
    const syncs = syncCount(d);
    expect(errno(() => batchToDomain(b, d, area, 0))).toBe(98); // EADDRINUSE from iommu_map
    expect(domainRuns(d)).toEqual(before);
    // iommu_map's own unroll (iommu_unmap of nothing still syncs), then batch_to_domain's.
    expect(syncCount(d)).toBe(syncs + 2);
    // A first run that fails leaves batch_to_domain nothing to undo: only iommu_map's unroll.
    const first = areaAt(new IoPagetable(kernel), A + 2n * PAGE, 2n * PAGE, 0);
    expect(errno(() => batchToDomain(b, d, first, 0))).toBe(98);
    expect(domainRuns(d)).toEqual(before);
    expect(syncCount(d)).toBe(syncs + 3);
  });
});

describe("batch_iommu_map_small (large pages disabled)", () => {
  const A = 0x200000n;

  function smallPagesIopt(kernel: Kernel): IoPagetable {
    const iopt = new IoPagetable(kernel);
    iopt.disableLargePages();
    return iopt;
  }

  it("maps PAGE_SIZE at a time, so one page of a 2 MiB run unmaps alone", () => {
    const kernel = machine();
    const d = testDomain(kernel);
    const head = kernel.mem.allocFolio(9);
    const b = batchOf(kernel, [[head, 512]]);
    batchToDomain(b, d, areaAt(smallPagesIopt(kernel), A, 512n * PAGE, 0), 0);
    iommuUnmapNofail(d, A + PAGE, PAGE);
    expect(frameAt(d, A)).toBe(head);
    expect(frameAt(d, A + PAGE)).toBe(0);
    expect(frameAt(d, A + 2n * PAGE)).toBe(head + 2);
  });

  it("a page that fails unmaps the pages of its run mapped before it, and only those", () => {
    const kernel = machine();
    const d = testDomain(kernel);
    const head = kernel.mem.allocFolio(9);
    const [other] = scatteredFrames(kernel, 1) as [number];
    domainMap(d, A + 2n * PAGE, BigInt(other) * PAGE, PAGE, RW);
    const before = domainRuns(d);
    const syncs = syncCount(d);
    const b = batchOf(kernel, [[head, 4]]);
    const iopt = smallPagesIopt(kernel);
    expect(errno(() => batchToDomain(b, d, areaAt(iopt, A, 4n * PAGE, 0), 0))).toBe(98);
    expect(domainRuns(d)).toEqual(before);
    // The failing page's iommu_map unroll, then batch_iommu_map_small's unmap of its prefix.
    expect(syncCount(d)).toBe(syncs + 2);
    // Its first page failing: nothing mapped, so only that iommu_map's own unroll.
    expect(errno(() => batchToDomain(b, d, areaAt(iopt, A + 2n * PAGE, 2n * PAGE, 0), 0))).toBe(98);
    expect(domainRuns(d)).toEqual(before);
    expect(syncCount(d)).toBe(syncs + 3);
  });

  it("maps and unwinds the last pages of the 64-bit space too", () => {
    const kernel = machine();
    const d = testDomain(kernel);
    const top = 1n << 64n;
    const [p0, p1] = scatteredFrames(kernel, 2) as [number, number];
    const iopt = smallPagesIopt(kernel);
    const area = areaAt(iopt, top - 2n * PAGE, 2n * PAGE, 0);
    const b = batchOf(kernel, [[p0, 2]]);
    batchToDomain(b, d, area, 0);
    expect([frameAt(d, top - 2n * PAGE), frameAt(d, top - PAGE)]).toEqual([p0, p0 + 1]);
    iommuUnmapNofail(d, top - PAGE, PAGE);
    expect(frameAt(d, top - 2n * PAGE)).toBe(p0);
    iommuUnmapNofail(d, top - 2n * PAGE, PAGE);
    // The second page is taken: the first is unmapped again.
    domainMap(d, top - PAGE, BigInt(p1) * PAGE, PAGE, RW);
    const syncs = syncCount(d);
    expect(errno(() => batchToDomain(b, d, area, 0))).toBe(98);
    expect([frameAt(d, top - 2n * PAGE), frameAt(d, top - PAGE)]).toEqual([0, p1]);
    expect(syncCount(d)).toBe(syncs + 2);
  });

  it("WARNs on a range that is not whole pages (alignment forbids such an area)", () => {
    const kernel = machine();
    const d = testDomain(kernel, "mock");
    const base = 1n << 24n;
    const b = batchOf(kernel, [[0x100, 2]]);
    const iopt = smallPagesIopt(kernel);
    expect(
      isWarning(() => batchToDomain(b, d, areaAt(iopt, base + 0x800n, PAGE, 0, 0x800), 0)),
    ).toBe(true);
    expect(isWarning(() => batchToDomain(b, d, areaAt(iopt, base, PAGE + 0x800n, 0), 0))).toBe(
      true,
    );
    expect(domainRuns(d)).toEqual([]);
  });
});

describe("batch_from_domain / batch_from_domain_continue", () => {
  it("reads a partial first page back at its page start, and no page past the area", () => {
    const kernel = machine();
    const d = testDomain(kernel, "mock");
    const base = 1n << 24n;
    const frames = scatteredFrames(kernel, 5);
    const [p0, p1, p2, p3, next] = frames as [number, number, number, number, number];
    // Bytes [0x800, 0x3800) of four pages: the first and the last page are half in the area.
    const area = areaAt(new IoPagetable(kernel), base + 0x800n, 3n * PAGE, 0, 0x800);
    batchToDomain(
      batchOf(kernel, [
        [p0, 1],
        [p1, 1],
        [p2, 1],
        [p3, 1],
      ]),
      d,
      area,
      0,
    );
    // The next area's page right behind it.
    domainMap(d, base + 4n * PAGE, BigInt(next) * PAGE, PAGE, RW);
    const b = PfnBatch.create(kernel, 16);
    batchFromDomain(b, d, area, 0, 3);
    expect(entries(b)).toEqual([
      [p0, 1],
      [p1, 1],
      [p2, 1],
      [p3, 1],
    ]);
    // From a later index: no page offset.
    const later = PfnBatch.create(kernel, 16);
    batchFromDomain(later, d, area, 2, 3);
    expect(entries(later)).toEqual([
      [p2, 1],
      [p3, 1],
    ]);
    // A one-entry batch takes the partial first page and stops.
    setTempMemoryLimit(kernel, 12);
    const one = PfnBatch.create(kernel, 16);
    batchFromDomain(one, d, area, 0, 3);
    expect(entries(one)).toEqual([[p0, 1]]);
  });

  it("continue takes only PFNs that extend the last entry, then gives the capacity back", () => {
    const kernel = machine();
    const d = testDomain(kernel);
    const head = kernel.mem.allocFolio(9);
    const iova = 0x400000n;
    domainMap(d, iova, BigInt(head) * PAGE, 2n * PAGE, RW);
    domainMap(d, iova + 2n * PAGE, BigInt(head + 5) * PAGE, PAGE, RW);
    const area = areaAt(new IoPagetable(kernel), iova, 3n * PAGE, 0);
    const b = PfnBatch.create(kernel, 4);
    batchFromDomain(b, d, area, 0, 0);
    batchFromDomainContinue(b, d, area, 1, 2);
    expect(entries(b)).toEqual([[head, 2]]);
    expect(b.arraySize).toBe(4);
    expect(b.add(head + 5, 1)).toBe(true);
    expect(b.kind).toBe(BATCH_CPU_MEMORY);
  });
});

describe("batch_from_xarray", () => {
  it("copies value entries until the batch is full; a hole it reaches is a WARN", () => {
    const kernel = machine();
    const xa = new XArray();
    for (const [i, pfn] of [100, 101, 0, 200].entries()) xa.store(i, pfn);
    const b = PfnBatch.create(kernel, 16);
    batchFromXarray(b, xa, 0, 3);
    // xa_mk_value(0) is a value like any other.
    expect(entries(b)).toEqual([
      [100, 2],
      [0, 1],
      [200, 1],
    ]);
    expect(isWarning(() => batchFromXarray(PfnBatch.create(kernel, 16), xa, 3, 4))).toBe(true);
    // A full batch stops before the hole.
    setTempMemoryLimit(kernel, 12);
    const one = PfnBatch.create(kernel, 16);
    batchFromXarray(one, xa, 0, 5);
    expect(entries(one)).toEqual([[100, 2]]);
  });
});
