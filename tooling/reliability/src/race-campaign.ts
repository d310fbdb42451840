/**
 * Race campaigns: the race explorers (race-explorer.ts nests paths, race-interleave.ts
 * interleaves them within a preemption bound) over the standard scenarios, sharded like the
 * other campaigns (campaign.ts). A unit is one schedule of a scenario's search, in the search's
 * deterministic order: shard k of n checks schedule i when i % n === k - 1 (the explorers'
 * `shard`), and a pool of worker threads splits a shard again the same way (`subShard`). The
 * shards' schedules, pruned schedules, failures and outcomes add up to the unsharded search's.
 *
 * The interleaving explorer runs on modules loaded with their generator twins: a process that
 * runs it registers the yielding hooks (yielding-hooks.ts) before it imports this module, and
 * each worker thread registers them before its own imports.
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { defaultWorkers } from "./campaign.js";
import { exploreRaces, formatSchedule } from "./race-explorer.js";
import { exploreInterleavings } from "./race-interleave.js";
import { standardRaceScenarios } from "./race-paths.js";
import { type Shard, WHOLE, shardText, subShard } from "./shard.js";
import { runInWorker } from "./worker.js";

export interface RaceCampaignSpec {
  readonly kind: "race";
  /** The interleaving explorer (race-interleave.ts) rather than the nesting one. */
  readonly interleave: boolean;
  /** Preemptions per schedule (the interleaving explorer's bound). */
  readonly bound: number;
  /** Schedules per scenario search (every shard's, pruned ones included). */
  readonly budget: number;
  readonly trackerMutant: boolean;
  /** Scenario names (standardRaceScenarios); every standard scenario when empty. */
  readonly scenarios: readonly string[];
}

interface RaceCampaignFailure {
  readonly error: string;
  /** What `replay` runs again: race-cli's schedule string, or the nesting explorer's JSON. */
  readonly schedule: string;
  readonly replay: string;
}

interface RaceScenarioResult {
  schedules: number;
  pruned: number;
  exhaustive: boolean;
  readonly failures: RaceCampaignFailure[];
  /** Errno outcomes per path (0 = success) over the checked schedules. */
  readonly outcomes: Record<string, Record<number, number>>;
}

export interface RaceCampaignResult extends RaceCampaignSpec {
  readonly shards: string[];
  cpuMs: number;
  wallMs: number;
  readonly results: Record<string, RaceScenarioResult>;
}

/** The hooks a process or worker registers before it runs the interleaving explorer. */
const YIELDING_HOOKS = new URL("./yielding-hooks.ts", import.meta.url).href;

function scenariosOf(spec: RaceCampaignSpec) {
  const all = standardRaceScenarios({ trackerMutant: spec.trackerMutant });
  const picked = spec.scenarios.length ? all.filter((s) => spec.scenarios.includes(s.name)) : all;
  if (picked.length === 0) throw new Error(`no scenario ${spec.scenarios.join(", ")}`);
  return picked;
}

/** Failures in the order of their schedule strings: the same list whatever the split. */
function bySchedule(a: RaceCampaignFailure, b: RaceCampaignFailure): number {
  return a.schedule < b.schedule ? -1 : a.schedule > b.schedule ? 1 : 0;
}

function replayCommand(spec: RaceCampaignSpec, scenario: string, schedule: string): string {
  if (!spec.interleave) {
    const opts = spec.trackerMutant ? "{ trackerMutant: true }" : "";
    return `const s = standardRaceScenarios(${opts}).find((x) => x.name === '${scenario}'); replaySchedule(s.setup, s.paths, JSON.parse('${schedule}'))`;
  }
  const mutant = spec.trackerMutant ? " --tracker-mutant" : "";
  return `pnpm --filter @x/reliability race --${mutant} --scenario '${scenario}' --replay '${schedule}'`;
}

/** Run the schedules of `shard` of every scenario in this thread. */
export function runRaceShard(spec: RaceCampaignSpec, shard: Shard = WHOLE): RaceCampaignResult {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const results: Record<string, RaceScenarioResult> = {};
  for (const s of scenariosOf(spec)) {
    const opts = { setup: s.setup, paths: s.paths, budget: spec.budget, shard };
    const r = spec.interleave
      ? exploreInterleavings({ ...opts, bound: spec.bound })
      : exploreRaces(opts);
    results[s.name] = {
      schedules: r.schedules,
      pruned: r.pruned,
      exhaustive: r.exhaustive,
      outcomes: r.outcomes,
      failures: r.failures
        .map((f) => {
          const schedule = typeof f.schedule === "string" ? f.schedule : JSON.stringify(f.schedule);
          const shown = typeof f.schedule === "string" ? "" : ` (${formatSchedule(f.schedule)})`;
          return {
            error: `${f.error}${shown}`,
            schedule,
            replay: replayCommand(spec, s.name, schedule),
          };
        })
        .sort(bySchedule),
    };
  }
  const cpu = process.cpuUsage(cpu0);
  return {
    ...spec,
    shards: [shardText(shard)],
    cpuMs: (cpu.user + cpu.system) / 1000,
    wallMs: performance.now() - t0,
    results,
  };
}

function sameCampaign(a: RaceCampaignSpec, b: RaceCampaignSpec): boolean {
  return (
    a.interleave === b.interleave &&
    a.bound === b.bound &&
    a.budget === b.budget &&
    a.trackerMutant === b.trackerMutant &&
    a.scenarios.join("\n") === b.scenarios.join("\n")
  );
}

/**
 * Merge shard results of one race campaign. Every shard walks the whole search, so a search is
 * exhaustive when each shard's is.
 */
export function mergeRaceResults(parts: readonly RaceCampaignResult[]): RaceCampaignResult {
  const first = parts[0];
  if (!first) throw new Error("nothing to merge");
  const out: RaceCampaignResult = { ...first, shards: [], cpuMs: 0, wallMs: 0, results: {} };
  for (const p of parts) {
    if (!sameCampaign(p, first)) throw new Error("cannot merge race shards of different campaigns");
    out.shards.push(...p.shards);
    out.cpuMs += p.cpuMs;
    out.wallMs = Math.max(out.wallMs, p.wallMs);
    for (const [name, r] of Object.entries(p.results)) {
      const m = (out.results[name] ??= {
        schedules: 0,
        pruned: 0,
        exhaustive: true,
        failures: [],
        outcomes: {},
      });
      m.schedules += r.schedules;
      m.pruned += r.pruned;
      m.exhaustive &&= r.exhaustive;
      m.failures.push(...r.failures);
      for (const [path, row] of Object.entries(r.outcomes)) {
        const to = (m.outcomes[path] ??= {});
        for (const [errno, n] of Object.entries(row)) to[+errno] = (to[+errno] ?? 0) + n;
      }
    }
  }
  for (const r of Object.values(out.results)) r.failures.sort(bySchedule);
  return out;
}

interface RaceWorkerTask {
  readonly raceTask: { readonly spec: RaceCampaignSpec; readonly shard: Shard };
}

/**
 * Run `shard` of a race campaign on `workers` worker threads (sub-shard w on worker w) and
 * merge the parts; one worker runs it in this thread. The result's CPU time is the pool's.
 */
export async function runRaceCampaign(
  spec: RaceCampaignSpec,
  shard: Shard = WHOLE,
  workers = defaultWorkers(),
): Promise<RaceCampaignResult> {
  if (workers <= 1) return runRaceShard(spec, shard);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const hooks = spec.interleave ? YIELDING_HOOKS : undefined;
  const parts = await Promise.all(
    Array.from({ length: workers }, (_, w) => {
      const task: RaceWorkerTask = { raceTask: { spec, shard: subShard(shard, w, workers) } };
      return runInWorker<RaceCampaignResult>(import.meta.url, task, hooks);
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  return {
    ...mergeRaceResults(parts),
    shards: [shardText(shard)],
    cpuMs: (cpu.user + cpu.system) / 1000,
    wallMs: performance.now() - t0,
  };
}

const task = (workerData as RaceWorkerTask | undefined)?.raceTask;
if (!isMainThread && task) parentPort?.postMessage(runRaceShard(task.spec, task.shard));
