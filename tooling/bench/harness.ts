/**
 * The benchmark harness every package's `bench/*.bench.ts` uses. A workload is measured against
 * a baseline measured in the same run, and reported as a row: value, baseline, ratio, target,
 * met. Rows are printed as one table and appended to `bench-results/results.json`.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { Bench } from "tinybench";

export interface BenchRow {
  readonly pkg: string;
  readonly workload: string;
  /** Measured value in `unit`. */
  readonly value: number;
  readonly unit: "ns/op" | "µs" | "ms" | "s" | "MiB" | "B/page" | "x";
  /** Baseline measured in the same run (same unit), when the target is a ratio. */
  readonly baseline?: number;
  readonly ratio?: number;
  /**
   * Which way the ratio improves, for the regression check against tooling/bench/baseline.json:
   * "lower" (the default) when it is the workload over its reference, "higher" for speed-ups
   * (the reference over the workload).
   */
  readonly better?: "lower" | "higher";
  readonly target: string;
  readonly met: boolean;
  readonly note?: string;
}

/** Smoke mode (CI): fewer iterations, numbers reported but not meaningful as targets. */
export const SMOKE = process.env.BENCH_SMOKE === "1";

/** Mean ns per call of each function, measured by tinybench in one Bench (same conditions). */
export async function nsPerOp(
  fns: Record<string, () => void>,
  timeMs = SMOKE ? 20 : 300,
): Promise<Record<string, number>> {
  const bench = new Bench({ time: timeMs, warmupTime: SMOKE ? 5 : 50 });
  for (const [name, fn] of Object.entries(fns)) bench.add(name, fn);
  await bench.run();
  const out: Record<string, number> = {};
  for (const t of bench.tasks) {
    const r = t.result as { latency?: { mean: number } } | undefined;
    if (!r?.latency) throw new Error(`bench ${t.name} did not run`);
    out[t.name] = r.latency.mean * 1e6;
  }
  return out;
}

/**
 * CPU ns per call of each function: `rounds` rounds, each running every function `batch` times
 * in turn and keeping each one's fastest round. Process CPU time, not wall time, so a loaded
 * machine's preemption is not counted (tinybench's wall-clock mean is dominated by it at a
 * load of several processes per core); interleaved, so the functions see the same conditions.
 * The first round warms up and is dropped.
 */
export function cpuNsPerOp(
  fns: Record<string, () => void>,
  batch: number,
  rounds = SMOKE ? 2 : 8,
): Record<string, number> {
  const best: Record<string, number> = {};
  for (let r = 0; r <= rounds; r++) {
    for (const [name, fn] of Object.entries(fns)) {
      const c0 = process.cpuUsage();
      for (let i = 0; i < batch; i++) fn();
      const c = process.cpuUsage(c0);
      const ns = ((c.user + c.system) * 1e3) / batch;
      if (r > 0) best[name] = Math.min(best[name] ?? Number.POSITIVE_INFINITY, ns);
    }
  }
  return best;
}

/** Wall time of one run of `fn` in ms (best of `repeat`). */
export function timeOnce(fn: () => void, repeat = SMOKE ? 1 : 3): number {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    fn();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/**
 * CPU milliseconds used so far by this process's main thread and by all its other threads
 * together (V8's compiler and GC helpers, libuv's pool), from Linux's /proc/self/task; undefined
 * without it. Process CPU, what the rows measure, is their sum: the split says how much of a
 * row went to V8 compiling and collecting beside the workload. The counts are in clock ticks,
 * 10 ms each (USER_HZ), so a window shorter than a second or so is too coarse for it.
 */
export function threadCpuMs(): { main: number; helpers: number } | undefined {
  const tasks = "/proc/self/task";
  if (!existsSync(tasks)) return undefined;
  let main = 0;
  let helpers = 0;
  for (const tid of readdirSync(tasks)) {
    let stat: string;
    try {
      stat = readFileSync(`${tasks}/${tid}/stat`, "utf8");
    } catch {
      continue; // the thread exited between the listing and the read
    }
    // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ms = (Number(fields[11]) + Number(fields[12])) * 10;
    if (Number(tid) === process.pid) main += ms;
    else helpers += ms;
  }
  return { main, helpers };
}

/** Heap in MiB after a forced GC when node runs with --expose-gc. */
export function heapMiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

const rows: BenchRow[] = [];

export function record(row: BenchRow): void {
  rows.push(row);
}

/**
 * Append the rows recorded so far to bench-results/results.jsonl and print one line each; the
 * runner (run.mjs) prints the combined table of every package at the end.
 */
export function report(): BenchRow[] {
  for (const r of rows) {
    const ratio = r.ratio === undefined ? "" : ` (${r.ratio.toPrecision(3)}x)`;
    console.log(
      `${r.met ? "met " : "MISS"} ${r.workload}: ${r.value.toPrecision(4)} ${r.unit}${ratio}, target ${r.target}`,
    );
  }
  const dir = new URL("../../bench-results/", import.meta.url);
  mkdirSync(dir, { recursive: true });
  appendFileSync(
    new URL("results.jsonl", dir),
    `${rows.map((r) => JSON.stringify({ ...r, smoke: SMOKE })).join("\n")}\n`,
  );
  const out = rows.slice();
  rows.length = 0;
  return out;
}
