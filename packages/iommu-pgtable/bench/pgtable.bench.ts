/**
 * Page-table benchmarks B1–B4 (see the README), each against a baseline measured in the same run.
 * Timing is best-of-N around the measured part only (setup excluded): process CPU time for B1
 * and B3's warm scattered maps with their references, wall time for the rest.
 */
import { SMOKE, record, report } from "@x/bench";
import {
  IOMMU_MMIO,
  IOMMU_READ,
  IOMMU_WRITE,
  IotlbGather,
  iommuDomainFree,
  iommuIotlbSync,
  iommuMap,
  iommuUnmap,
  iommuUnmapFast,
} from "../src/index.js";
import { vtdDomain as vtd, amdDomain as amd } from "../test/helpers.js";

const PKG = "iommu-pgtable";
const RW = IOMMU_READ | IOMMU_WRITE;
const GiB = 1n << 30n;
const REPS = SMOKE ? 1 : 5;

/** Process CPU time in ms (user + system): what the process ran, not what others did. */
function cpuMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

const wallMs = () => performance.now();

/**
 * Best time (ms) of `measure` over `reps` rounds, with `between` run untimed after each; wall
 * time unless `clock` is cpuMs.
 */
function best(
  reps: number,
  measure: () => void,
  between?: () => void,
  clock: () => number = wallMs,
): number {
  let min = Number.POSITIVE_INFINITY;
  for (let i = 0; i < reps; i++) {
    const t0 = clock();
    measure();
    min = Math.min(min, clock() - t0);
    between?.();
  }
  return min;
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`bench correctness check failed: ${what}`);
}

/**
 * A reference radix: 4 levels of Float64Array(512) tables, 32-bit index math, no
 * checks, no accounting — the floor a per-page call can reach on this machine in this run.
 */
class Radix {
  private readonly tables: Float64Array[] = [new Float64Array(512)];

  private leafTable(pfn: number, create: boolean): Float64Array | undefined {
    let t = this.tables[0]!;
    for (let shift = 27; shift > 0; shift -= 9) {
      const i = (pfn >>> shift) & 511;
      let next = t[i]!;
      if (next === 0) {
        if (!create) return undefined;
        this.tables.push(new Float64Array(512));
        next = t[i] = this.tables.length - 1;
      }
      t = this.tables[next]!;
    }
    return t;
  }

  map(pfn: number, v: number): void {
    this.leafTable(pfn, true)![pfn & 511] = v;
  }

  lookup(pfn: number): number {
    return this.leafTable(pfn, false)?.[pfn & 511] ?? 0;
  }

  unmap(pfn: number): void {
    const t = this.leafTable(pfn, false);
    if (t) t[pfn & 511] = 0;
  }
}

// ---- B1: 1 GiB in 4 KiB pages -------------------------------------------------------------
{
  const N = 262144;
  const d = vtd();
  // PA 4 KiB off a 2 MiB boundary: only 4 KiB leaves fit.
  const iovaPfn = 1 << 18;
  const pfn = (1 << 20) + 1;
  const store = new Float64Array(N);
  const baseline = best(
    REPS * 4,
    () => {
      let v = pfn * 4096 + 3;
      for (let i = 0; i < N; i++) {
        store[i] = v;
        v += 4096;
      }
    },
    undefined,
    cpuMs,
  );
  // A round is a fraction of a millisecond, and process CPU counts the JIT's compile threads
  // too: a round they share is twice as slow. More rounds give the minimum one they left alone.
  const mapMs = best(
    REPS * 8,
    () => d.mapPfns(iovaPfn, pfn, N, RW),
    () => d.unmapPfns(iovaPfn, N),
    cpuMs,
  );
  d.mapPfns(iovaPfn, pfn, N, RW);
  check(d.pt!.tableCount === 515, `1 GiB of 4K leaves uses 515 tables (got ${d.pt!.tableCount})`);
  record({
    pkg: PKG,
    workload: "B1a map_range 1 GiB as 262144 4K PTEs (vtdss)",
    value: (mapMs * 1e6) / N,
    unit: "ns/op",
    baseline: (baseline * 1e6) / N,
    ratio: mapMs / baseline,
    target: "<= 4x Float64Array store",
    met: mapMs / baseline <= 4,
    note: `${mapMs.toFixed(3)} ms per GiB`,
  });

  // iova_to_phys of every page, against the reference radix's lookup. Each pass sums into a
  // local: a captured `sum` is a context slot, and every += there allocates a heap number, so
  // the collector ran inside the timed loop.
  const radix = new Radix();
  for (let i = 0; i < N; i++) radix.map(iovaPfn + i, pfn + i);
  let sum = 0;
  const physMs = best(
    REPS * 2,
    () => {
      let s = 0;
      for (let i = 0; i < N; i++) s += d.iovaToPfn(iovaPfn + i);
      sum += s;
    },
    undefined,
    cpuMs,
  );
  const radixMs = best(
    REPS * 2,
    () => {
      let s = 0;
      for (let i = 0; i < N; i++) s += radix.lookup(iovaPfn + i);
      sum += s;
    },
    undefined,
    cpuMs,
  );
  check(d.iovaToPfn(iovaPfn + 7) === pfn + 7, "iova_to_phys");
  record({
    pkg: PKG,
    workload: "B1c iova_to_phys per 4K page (iovaToPfn) vs reference radix lookup",
    value: (physMs * 1e6) / N,
    unit: "ns/op",
    baseline: (radixMs * 1e6) / N,
    ratio: physMs / radixMs,
    target: "<= 10 ns",
    met: (physMs * 1e6) / N <= 10,
    note: `checksum ${sum % 7}`,
  });

  // one unmap of the GiB
  let unmapped = 0;
  const tablesBefore = d.pt!.tableCount;
  const unmapMs = best(
    REPS * 2,
    () => {
      unmapped = d.unmapPfns(iovaPfn, N);
    },
    () => d.mapPfns(iovaPfn, pfn, N, RW),
    cpuMs,
  );
  const g = new IotlbGather();
  check(d.unmapPfns(iovaPfn, N, g) === N && unmapped === N, "unmap returns 1 GiB");
  check(g.freelist.length === 513, `unmap frees 513 tables (got ${g.freelist.length})`);
  iommuIotlbSync(d, g);
  check(d.pt!.tableCount === tablesBefore - 513, "tables released at sync");
  record({
    pkg: PKG,
    workload: "B1d unmap_range 1 GiB of 4K PTEs, 513 tables freed",
    value: unmapMs,
    unit: "ms",
    baseline: baseline,
    ratio: unmapMs / baseline,
    target: "<= 0.5 ms",
    met: unmapMs <= 0.5,
  });

  // single-page map + unmap calls (tables present)
  // Leave every table in place: page-by-page unmaps never fully cover one.
  d.mapPfns(iovaPfn, pfn, N, RW);
  for (let i = 0; i < N; i++) d.unmapPfns(iovaPfn + i, 1);
  let mapCallMs = 0;
  let unmapCallMs = 0;
  for (let r = 0; r < REPS * 2; r++) {
    const t0 = cpuMs();
    for (let i = 0; i < N; i++) d.mapPfns(iovaPfn + i, pfn + i, 1, RW);
    const t1 = cpuMs();
    for (let i = 0; i < N; i++) d.unmapPfns(iovaPfn + i, 1);
    const t2 = cpuMs();
    mapCallMs = r === 0 ? t1 - t0 : Math.min(mapCallMs, t1 - t0);
    unmapCallMs = r === 0 ? t2 - t1 : Math.min(unmapCallMs, t2 - t1);
  }
  const perCall = ((mapCallMs + unmapCallMs) * 1e6) / (2 * N);
  const radixCallMs = best(
    REPS * 2,
    () => {
      for (let i = 0; i < N; i++) radix.map(iovaPfn + i, pfn + i);
      for (let i = 0; i < N; i++) radix.unmap(iovaPfn + i);
    },
    undefined,
    cpuMs,
  );
  record({
    pkg: PKG,
    workload: "B1b+e single 4K map+unmap calls (mapPfns/unmapPfns) vs reference radix",
    value: perCall,
    unit: "ns/op",
    baseline: (radixCallMs * 1e6) / (2 * N),
    ratio: perCall / ((radixCallMs * 1e6) / (2 * N)),
    target: "<= 30 ns a call",
    met: perCall <= 30,
    note: `map ${((mapCallMs * 1e6) / N).toFixed(1)} ns, unmap ${((unmapCallMs * 1e6) / N).toFixed(1)} ns`,
  });

  // the bigint API for the same single-page calls, for reference
  const M = SMOKE ? 4096 : 65536;
  const bigMs = best(
    REPS,
    () => {
      for (let i = 0; i < M; i++) {
        const iova = BigInt(iovaPfn + i) << 12n;
        iommuMap(d, iova, BigInt(pfn + i) << 12n, 4096n, RW);
        iommuUnmap(d, iova, 4096n);
      }
    },
    undefined,
    cpuMs,
  );
  record({
    pkg: PKG,
    workload: "B1b' single 4K iommuMap+iommuUnmap (bigint API)",
    value: (bigMs * 1e6) / (2 * M),
    unit: "ns/op",
    target: "info",
    met: true,
  });

  // Map-per-page reference doing the same work as B1a
  const refMs = best(
    REPS,
    () => {
      const m = new Map<number, number>();
      for (let i = 0; i < N; i++) {
        if (m.has(iovaPfn + i)) throw new Error("dup");
        m.set(iovaPfn + i, pfn + i);
      }
    },
    undefined,
    cpuMs,
  );
  record({
    pkg: PKG,
    workload: "B1 range map vs Map-per-page reference",
    value: (mapMs * 1e6) / N,
    unit: "ns/op",
    baseline: (refMs * 1e6) / N,
    ratio: refMs / mapMs,
    better: "higher",
    target: ">= 100x faster",
    met: refMs / mapMs >= 100,
  });
}

// ---- B2: 256 GiB MMIO BAR --------------------------------------------------------------------
{
  const prot = RW | IOMMU_MMIO;
  const len = 256n * GiB;
  for (const [name, make, pa] of [
    ["vtdss 1G leaves", vtd, 1024n * GiB],
    ["amdv1 1G-aligned", amd, 1025n * GiB],
    ["amdv1 256G-aligned (one 256G entry)", amd, 1024n * GiB],
  ] as const) {
    const d = make();
    const iova = 256n * GiB;
    const ms = best(
      REPS * 20,
      () => iommuMap(d, iova, pa, len, prot),
      () => iommuUnmap(d, iova, len),
    );
    iommuMap(d, iova, pa, len, prot);
    check(iommuUnmap(d, iova, len) === len, "B2 unmap returns 256 GiB");
    record({
      pkg: PKG,
      workload: `B2 map 256 GiB BAR, ${name}`,
      value: ms * 1000,
      unit: "µs",
      target: "< 50 µs",
      met: ms * 1000 < 50,
    });
  }
  // PA only 2 MiB-aligned relative to the IOVA: 131072 2M leaves.
  const d = vtd();
  const ms = best(
    REPS * 2,
    () => iommuMap(d, 256n * GiB, 1024n * GiB + (2n << 20n), len, prot),
    () => iommuUnmap(d, 256n * GiB, len),
  );
  record({
    pkg: PKG,
    workload: "B2 map 256 GiB BAR in 131072 2M leaves (vtdss)",
    value: ms,
    unit: "ms",
    target: "<= 2 ms",
    met: ms <= 2,
  });
}

// ---- B3: 100k scattered 4K maps --------------------------------------------------------------
{
  const N = SMOKE ? 10000 : 100000;
  let seed = 12345;
  const rand = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
  // Distinct 2 MiB regions of the 48-bit space, random 4K page inside each.
  const regions = new Set<number>();
  while (regions.size < N) regions.add((rand() * 32 + (rand() & 31)) % 2 ** 27);
  const pages = [...regions].map((r) => r * 512 + (rand() & 511));
  const shuffled = pages.slice();
  for (let i = N - 1; i > 0; i--) {
    const j = rand() % (i + 1);
    const t = shuffled[i]!;
    shuffled[i] = shuffled[j]!;
    shuffled[j] = t;
  }
  const scattered = () => {
    const d = vtd();
    const t0 = cpuMs();
    for (let i = 0; i < N; i++) d.mapPfns(pages[i]!, 0x100000 + i, 1, RW);
    const mapMs = cpuMs() - t0;
    const tables = d.pt!.tableCount;
    const mib = d.pt!.tableBytes / 2 ** 20;
    const t1 = cpuMs();
    for (let i = 0; i < N; i++) check(d.unmapPfns(shuffled[i]!, 1) === 1, "B3 unmap");
    const unmapMs = cpuMs() - t1;
    // iommupt frees no table on a 4K unmap (none is fully covered): all of them remain.
    check(d.pt!.tableCount === tables, "B3 residual tables equal the kernel's (all kept)");
    iommuDomainFree(d);
    return { mapMs, unmapMs, tables, mib };
  };
  /**
   * The memory traffic alone of a warm scattered map, in the slab's own chunk size: `tables`
   * already-touched 4 KiB blocks taken in address order (as the warm slab hands out ids), each
   * map writing one item at a random index of its share of them (1.85 on average) and reading
   * one random item of the upper tables' 2 MiB, the entry that would point at them. No walk, no
   * decode, no allocation bookkeeping: what is left is the cache and TLB misses.
   */
  const touchFresh = (tables: number, blocks: Float64Array[], upper: Float64Array) => {
    const perChunk = blocks[0]!.length / 512;
    let sink = 0;
    let r = 777;
    const t0 = cpuMs();
    for (let i = 0, b = 0; i < N; i++) {
      r = (Math.imul(r, 1103515245) + 12345) >>> 0;
      sink += upper[r & (upper.length - 1)]!;
      for (const end = Math.floor(((i + 1) * tables) / N); b < end; b++) {
        blocks[Math.floor(b / perChunk)]![(b % perChunk) * 512 + ((r >>> 8) & 511)] = i + 1;
      }
    }
    const ms = cpuMs() - t0;
    check(sink >= 0, "B3 reference read");
    return ms;
  };
  // First run on fresh host memory (page faults): one run by nature.
  const cold = scattered();
  record({
    pkg: PKG,
    workload: `B3 ${N} scattered 4K maps (48-bit, sparse, cold slab)`,
    value: (cold.mapMs * 1e6) / N,
    unit: "ns/op",
    target: "info",
    met: true,
    note: `${cold.tables} tables (${(cold.tables / N).toFixed(2)}/page, ${cold.mib.toFixed(0)} MiB); unmap ${((cold.unmapMs * 1e6) / N).toFixed(0)} ns/page, all tables kept`,
  });
  // Then new domains on the recycled slab, each run alternated with the reference pass; best of
  // each, in process CPU time (the method of PERFORMANCE.md).
  // The reference's blocks are touched once, untimed, as the recycled slab's are.
  const blocks = Array.from({ length: Math.ceil(cold.tables / 64) }, () =>
    new Float64Array(64 * 512).fill(1),
  );
  const upper = new Float64Array(2 ** 18).fill(1);
  let warm = cold;
  let refMs = Number.POSITIVE_INFINITY;
  for (let round = 0; round < (SMOKE ? 1 : 3); round++) {
    const r = scattered();
    check(r.tables === cold.tables, "B3 warm runs build the same tables");
    if (round === 0 || r.mapMs < warm.mapMs) warm = r;
    refMs = Math.min(refMs, touchFresh(r.tables, blocks, upper));
  }
  const mapNs = (warm.mapMs * 1e6) / N;
  const refNs = (refMs * 1e6) / N;
  record({
    pkg: PKG,
    workload: `B3 ${N} scattered 4K maps (48-bit, sparse, warm slab)`,
    value: mapNs,
    unit: "ns/op",
    target: "<= 800 ns",
    met: mapNs <= 800,
  });
  record({
    pkg: PKG,
    workload: `B3 ${N} scattered 4K maps (48-bit, sparse, warm slab) vs touching as many fresh 4 KiB blocks`,
    value: mapNs,
    unit: "ns/op",
    baseline: refNs,
    ratio: mapNs / refNs,
    // Reported, not a target: the reference's iterations are independent, so the processor
    // overlaps their misses, while a map's loads depend on each other (entry, then table). The
    // row shows how much of a map is memory traffic; the absolute row above is the target.
    target: "reported",
    met: true,
    note: `${warm.tables} tables (${(warm.tables / N).toFixed(2)}/page, ${warm.mib.toFixed(0)} MiB); unmap ${((warm.unmapMs * 1e6) / N).toFixed(0)} ns/page, all tables kept`,
  });
  // Packed into 1 GiB.
  const p = vtd();
  const t2 = performance.now();
  for (let i = 0; i < N; i++) p.mapPfns((1 << 18) + i * 2, 0x100000 + i, 1, RW);
  const packedMs = performance.now() - t2;
  record({
    pkg: PKG,
    workload: `B3 ${N} 4K maps packed in 1 GiB`,
    value: (packedMs * 1e6) / N,
    unit: "ns/op",
    target: "<= 1000 ns",
    met: (packedMs * 1e6) / N <= 1000,
    note: `${p.pt!.tableCount} tables (${(p.pt!.tableCount / N).toFixed(4)}/page)`,
  });
}

// ---- B4: revoke a 64 GiB BAR from 8 domains ---------------------------------------------------
{
  const bar = 64n * GiB;
  const barIova = 64n * GiB;
  const ram = 1n * GiB;
  const domains = [amd(), amd(), amd(), amd(), vtd(), vtd(), vtd(), vtd()];
  for (const d of domains) {
    iommuMap(d, 0n, 8n * GiB + (2n << 20n), ram, RW);
    iommuMap(d, barIova, 4096n * GiB, bar, RW | IOMMU_MMIO);
  }
  const gathers = domains.map(() => new IotlbGather());
  const returned: bigint[] = [];
  const revokeMs = best(
    REPS * 20,
    () => {
      for (let i = 0; i < domains.length; i++)
        returned[i] = iommuUnmapFast(domains[i]!, barIova, bar, gathers[i]!);
      for (let i = 0; i < domains.length; i++) iommuIotlbSync(domains[i]!, gathers[i]!);
    },
    () => {
      for (const d of domains) iommuMap(d, barIova, 4096n * GiB, bar, RW | IOMMU_MMIO);
    },
  );
  check(
    returned.every((r) => r === bar),
    "B4 every domain returns 64 GiB",
  );
  for (const d of domains) iommuUnmap(d, barIova, bar);
  const remapMs = best(
    REPS * 20,
    () => {
      for (const d of domains) iommuMap(d, barIova, 4096n * GiB, bar, RW | IOMMU_MMIO);
    },
    () => {
      for (const d of domains) iommuUnmap(d, barIova, bar);
    },
  );
  record({
    pkg: PKG,
    workload: "B4 revoke 64 GiB BAR (1G leaves) from 8 domains",
    value: revokeMs * 1000,
    unit: "µs",
    target: "< 100 µs",
    met: revokeMs * 1000 < 100,
    note: `un-revoke ${(remapMs * 1000).toFixed(1)} µs`,
  });
  if (!SMOKE) {
    // The same BAR in 4 KiB pages (IOVA/PA offsets disagree at 2 MiB), one domain, scaled to 8.
    const slow = vtd();
    iommuMap(slow, barIova, 4096n * GiB + 0x1000n, bar, RW | IOMMU_MMIO);
    const t0 = performance.now();
    check(iommuUnmap(slow, barIova, bar) === bar, "B4 4K revoke");
    const slowMs = (performance.now() - t0) * 8;
    record({
      pkg: PKG,
      workload: "B4 same revoke with 4K leaves (1 domain, scaled to 8)",
      value: slowMs,
      unit: "ms",
      baseline: revokeMs,
      ratio: slowMs / revokeMs,
      target: "info (the large-page gain)",
      met: true,
    });
  }
}

report();
