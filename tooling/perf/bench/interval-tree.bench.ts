/**
 * @x/iommufd's IOVA interval tree against @flatten-js/interval-tree 2.0.3 on the same keys:
 * 100k page-aligned u64 intervals (bigint bounds, as IOVA bookkeeping holds them) inserted,
 * queried with 100k short windows, then removed in a shuffled order. Each phase is timed on a
 * fresh tree of each kind, the two kinds interleaved run by run, best of a few runs; target:
 * ours ≥ 3× faster in every phase. Phases last 0.1–8 s, so they are timed in process CPU time
 * (user + system): on the shared 2-core machine wall time mostly measures the other processes.
 */
import Flatten, { Interval } from "@flatten-js/interval-tree";
import { SMOKE, record, report } from "@x/bench";
import { IntervalNode, IntervalTree } from "@x/iommufd";

const N = SMOKE ? 10_000 : 100_000;
const REPEAT = SMOKE ? 1 : 3;

/** Deterministic keys: starts anywhere in a 48-bit space, lengths 4 KiB..1 GiB, all distinct. */
function keys(): { start: bigint[]; last: bigint[] } {
  let s = 0x2545f491;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
  const start: bigint[] = [];
  const last: bigint[] = [];
  const seen = new Set<bigint>();
  while (start.length < N) {
    const pfn = (BigInt(rnd()) << 4n) | BigInt(rnd() & 0xf); // 36-bit PFN: a 48-bit IOVA
    const a = pfn << 12n;
    if (seen.has(a)) continue;
    seen.add(a);
    start.push(a);
    last.push(a + (BigInt((rnd() % 262_144) + 1) << 12n) - 1n);
  }
  return { start, last };
}

const { start, last } = keys();
// Query windows of one page each, at random keys' starts shifted a little: a mix of hits and misses.
const qlo = start.map((a, i) => a + BigInt((i * 7919) % 1024) * 4096n);
const qhi = qlo.map((a) => a + 4095n);
const order = Array.from({ length: N }, (_, i) => i);
for (let i = N - 1; i > 0; i--) {
  const j = (i * 2_654_435_761) % (i + 1);
  [order[i], order[j]] = [order[j]!, order[i]!];
}

/**
 * CPU milliseconds of `fn`, after a full GC: process CPU time counts the collector's threads,
 * and the garbage the other tree's previous phase left must not be collected on this one's time.
 */
function timed(fn: () => void): number {
  (globalThis as { gc?: () => void }).gc?.();
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

interface Phases {
  insert: number;
  query: number;
  remove: number;
  hits: number;
}

function ours(): Phases {
  const tree = new IntervalTree<number>();
  const nodes = start.map((a, i) => {
    const n = new IntervalNode(i);
    n.start = a;
    n.last = last[i]!;
    return n;
  });
  const insert = timed(() => {
    for (const n of nodes) tree.insert(n);
  });
  let hits = 0;
  const query = timed(() => {
    for (let i = 0; i < N; i++) hits += tree.overlapping(qlo[i]!, qhi[i]!).length;
  });
  const remove = timed(() => {
    for (const i of order) tree.remove(nodes[i]!);
  });
  if (tree.size !== 0) throw new Error("ours: tree not empty after removing every key");
  return { insert, query, remove, hits };
}

function flatten(): Phases {
  const tree = new Flatten<number>();
  const ivs = start.map((a, i) => new Interval(a, last[i]!));
  const insert = timed(() => {
    for (let i = 0; i < N; i++) tree.insert(ivs[i]!, i);
  });
  let hits = 0;
  const query = timed(() => {
    for (let i = 0; i < N; i++) hits += tree.search(new Interval(qlo[i]!, qhi[i]!)).length;
  });
  const remove = timed(() => {
    for (const i of order) tree.remove(ivs[i]!, i);
  });
  if (tree.size !== 0) throw new Error("flatten: tree not empty after removing every key");
  return { insert, query, remove, hits };
}

function keepBest(best: Phases, p: Phases): void {
  best.insert = Math.min(best.insert, p.insert);
  best.query = Math.min(best.query, p.query);
  best.remove = Math.min(best.remove, p.remove);
  best.hits = p.hits;
}

const worst = (): Phases => ({ insert: Infinity, query: Infinity, remove: Infinity, hits: -1 });
const a = worst();
const b = worst();
// Interleaved, so a change in the machine's load hits both; @flatten-js takes ~70 µs per key
// over the three phases, so it runs fewer times.
for (let r = 0; r < REPEAT; r++) {
  keepBest(a, ours());
  if (r < (SMOKE ? 1 : 2)) keepBest(b, flatten());
}
if (a.hits !== b.hits) throw new Error(`query results differ: ours ${a.hits}, flatten ${b.hits}`);

for (const phase of ["insert", "query", "remove"] as const) {
  const value = (a[phase] * 1e6) / N;
  const baseline = (b[phase] * 1e6) / N;
  record({
    pkg: "perf",
    workload: `IOVA interval tree: ${N / 1000}k ${phase} (bigint u64 keys)`,
    value,
    unit: "ns/op",
    baseline,
    ratio: baseline / value,
    better: "higher",
    target: ">= 3x faster than @flatten-js",
    met: baseline / value >= 3,
    note: `CPU time; ${phase === "query" ? `${a.hits} overlaps found by both` : "same keys in both trees"}`,
  });
}
report();
