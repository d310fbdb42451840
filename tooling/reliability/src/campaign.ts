/**
 * Campaigns that scale out: one fuzzer (the uAPI fuzzer, the byte fuzzer or the fail_nth
 * sweeps) over a budget of units, split into shards (shard.ts) that separate processes or
 * machines run, each shard split again over a pool of worker threads, and the results merged
 * into one report (totals, failures with what replays them, coverage of ops and errnos).
 *
 * Units: a uAPI chunk of CHUNK_RUNS programs from seed + i; a byte-fuzzing machine of
 * perMachine inputs (input i from seed and i); a fail_nth sweep (the VMM corpus, then the
 * `budget` generated programs of `fuzzCorpus(seed, budget)`). A unit's work depends on the
 * seed and its index only, so any split runs the same units with the same outcomes.
 *
 * Workers start as the CLIs do (worker.ts).
 */
import { availableParallelism } from "node:os";
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { VMM_CORPUS, failNthSweep, fuzzCorpus } from "./fail-nth.js";
import { INPUTS_PER_MACHINE, fuzzBytes } from "./fuzz-bytes.js";
import { count, fuzzUapi } from "./fuzz-uapi.js";
import { type Shard, WHOLE, ownsUnit, shardText, subShard } from "./shard.js";
import { runInWorker } from "./worker.js";

export type CampaignKind = "uapi" | "bytes" | "fail-nth";

export interface CampaignSpec {
  readonly kind: CampaignKind;
  readonly seed: number;
  /** uapi: chunks of CHUNK_RUNS programs; bytes: inputs; fail-nth: generated programs. */
  readonly budget: number;
}

interface CampaignFailure {
  readonly error: string;
  /** The command (or call) that replays it. */
  readonly replay: string;
}

export interface CampaignResult extends CampaignSpec {
  /** The shards this result covers ("k/n" each). */
  readonly shards: string[];
  /** Units run (chunks, machines, sweeps). */
  units: number;
  /** uapi: checked steps; bytes: inputs; fail-nth: injected fault points. */
  steps: number;
  /** uapi: programs; bytes: inputs that succeeded; fail-nth: sweeps. */
  runs: number;
  /** Process CPU time (every thread) and wall time of the runs, in ms. */
  cpuMs: number;
  wallMs: number;
  readonly failures: CampaignFailure[];
  readonly coverage: {
    readonly ops: Record<string, number>;
    readonly errnos: Record<string, number>;
  };
}

function emptyResult(spec: CampaignSpec, shards: string[]): CampaignResult {
  return {
    kind: spec.kind,
    seed: spec.seed,
    budget: spec.budget,
    shards,
    units: 0,
    steps: 0,
    runs: 0,
    cpuMs: 0,
    wallMs: 0,
    failures: [],
    coverage: { ops: {}, errnos: {} },
  };
}

/** Run the units of `shard` in this thread. */
export function runShard(spec: CampaignSpec, shard: Shard = WHOLE): CampaignResult {
  const res = emptyResult(spec, [shardText(shard)]);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  if (spec.kind === "uapi") runUapi(spec, shard, res);
  else if (spec.kind === "bytes") runBytes(spec, shard, res);
  else runFailNth(spec, shard, res);
  const cpu = process.cpuUsage(cpu0);
  res.cpuMs = (cpu.user + cpu.system) / 1000;
  res.wallMs = performance.now() - t0;
  return res;
}

function runUapi(spec: CampaignSpec, shard: Shard, res: CampaignResult): void {
  const r = fuzzUapi({
    seed: spec.seed,
    steps: Number.POSITIVE_INFINITY,
    chunks: spec.budget,
    shard,
  });
  res.units = r.chunks;
  res.steps = r.steps;
  res.runs = r.runs;
  addCoverage(res, r.ops, r.errnos);
  if (r.failure) {
    res.failures.push({
      error: r.failure.error,
      replay: `pnpm --filter @x/reliability fuzz -- --replay ${r.failure.seed} '${r.failure.path}'`,
    });
  }
}

function runBytes(spec: CampaignSpec, shard: Shard, res: CampaignResult): void {
  const r = fuzzBytes({ seed: spec.seed, inputs: spec.budget, shard });
  const machines = Math.ceil(spec.budget / INPUTS_PER_MACHINE);
  for (let b = 0; b < machines; b++) if (ownsUnit(shard, b)) res.units++;
  res.steps = r.inputs;
  res.runs = r.successes;
  addCoverage(res, r.perCall, r.errnos);
  for (const f of r.failures) {
    res.failures.push({
      error: `${f.call}: ${f.error}`,
      replay: `fuzzBytes({ seed: ${f.seed}, from: ${f.index - (f.index % INPUTS_PER_MACHINE)}, inputs: ${f.index + 1} }) (bytes ${f.bytes})`,
    });
  }
}

function runFailNth(spec: CampaignSpec, shard: Shard, res: CampaignResult): void {
  const programs = [
    ...Object.entries(VMM_CORPUS),
    ...fuzzCorpus(spec.seed, spec.budget).map((ops, i) => [`fuzz-${i}`, ops] as const),
  ];
  programs.forEach(([name, ops], unit) => {
    if (!ownsUnit(shard, unit)) return;
    const s = failNthSweep(name, ops);
    res.units++;
    res.runs++;
    res.steps += s.points;
    addCoverage(res, s.sites, {});
    if (s.failure) {
      res.failures.push({
        error: `${name} #${s.failure.nth} at ${s.failure.site}: ${s.failure.error}`,
        replay: name.startsWith("fuzz-")
          ? `failNthSweep("${name}", fuzzCorpus(${spec.seed}, ${spec.budget})[${name.slice(5)}])`
          : `failNthSweep("${name}", VMM_CORPUS.${name})`,
      });
    }
  });
}

function addCoverage(
  res: CampaignResult,
  ops: Readonly<Record<string, number>>,
  errnos: Readonly<Record<string, number>>,
): void {
  for (const [k, n] of Object.entries(ops)) count(res.coverage.ops, k, n);
  for (const [k, n] of Object.entries(errnos)) count(res.coverage.errnos, k, n);
}

/** Merge results of one campaign (same kind, seed and budget); wall time is the longest. */
export function mergeResults(results: readonly CampaignResult[]): CampaignResult {
  const first = results[0];
  if (!first) throw new Error("nothing to merge");
  const out = emptyResult(first, []);
  for (const r of results) {
    if (r.kind !== first.kind || r.seed !== first.seed || r.budget !== first.budget) {
      throw new Error(
        `cannot merge ${r.kind} seed ${r.seed} budget ${r.budget} into ${first.kind} seed ${first.seed} budget ${first.budget}`,
      );
    }
    out.shards.push(...r.shards);
    out.units += r.units;
    out.steps += r.steps;
    out.runs += r.runs;
    out.cpuMs += r.cpuMs;
    out.wallMs = Math.max(out.wallMs, r.wallMs);
    out.failures.push(...r.failures);
    addCoverage(out, r.coverage.ops, r.coverage.errnos);
  }
  return out;
}

/** Whether `results` together cover every shard of their split once (k = 1..n of one n). */
export function missingShards(
  results: readonly { readonly shards: readonly string[] }[],
): string[] {
  const have = new Set(results.flatMap((r) => r.shards));
  const n = Number([...have][0]?.split("/")[1] ?? 1);
  const missing: string[] = [];
  for (let k = 1; k <= n; k++) if (!have.has(`${k}/${n}`)) missing.push(`${k}/${n}`);
  return missing;
}

/** The workers a pool uses by default: every core. */
export function defaultWorkers(): number {
  return availableParallelism();
}

/** Campaigns run together on one pool, and what the whole pool cost. */
export interface PoolRun {
  /**
   * One merged result per campaign. Threads share the process's CPU clock, so with several
   * workers a result's `cpuMs` is 0 and the pool's is below; `wallMs` is its slowest part.
   */
  readonly results: CampaignResult[];
  readonly cpuMs: number;
  readonly wallMs: number;
}

/**
 * Run `shard` of each campaign on `workers` worker threads: worker w runs sub-shard w of every
 * campaign in turn, and the parts of each are merged. One worker runs them in this thread.
 */
export async function runCampaigns(
  specs: readonly CampaignSpec[],
  shard: Shard = WHOLE,
  workers = defaultWorkers(),
): Promise<PoolRun> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let results: CampaignResult[];
  if (workers <= 1) {
    results = specs.map((spec) => runShard(spec, shard));
  } else {
    const parts = await Promise.all(
      Array.from({ length: workers }, (_, w) => inWorker(specs, subShard(shard, w, workers))),
    );
    results = specs.map((_, i) => ({
      ...mergeResults(parts.map((p) => p[i]!)),
      shards: [shardText(shard)],
      cpuMs: 0,
    }));
  }
  const cpu = process.cpuUsage(cpu0);
  return { results, cpuMs: (cpu.user + cpu.system) / 1000, wallMs: performance.now() - t0 };
}

/** One campaign on a pool: its result with the pool's CPU and wall time. */
export async function runCampaign(
  spec: CampaignSpec,
  shard: Shard = WHOLE,
  workers = defaultWorkers(),
): Promise<CampaignResult> {
  const run = await runCampaigns([spec], shard, workers);
  return { ...run.results[0]!, cpuMs: run.cpuMs, wallMs: run.wallMs };
}

interface WorkerTask {
  readonly campaignTask: { readonly specs: readonly CampaignSpec[]; readonly shard: Shard };
}

function inWorker(specs: readonly CampaignSpec[], shard: Shard): Promise<CampaignResult[]> {
  const task: WorkerTask = { campaignTask: { specs, shard } };
  return runInWorker(import.meta.url, task);
}

const task = (workerData as WorkerTask | undefined)?.campaignTask;
if (!isMainThread && task) {
  parentPort?.postMessage(task.specs.map((spec) => runShard(spec, task.shard)));
}
