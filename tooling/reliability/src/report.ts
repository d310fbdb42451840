/**
 * `pnpm reliability`: the CI reliability run. Seeded uAPI fuzzing (46 chunks of 50 programs:
 * 101 426 steps at the default seed), byte fuzzing of every ioctl, fail_nth sweeps over the VMM
 * corpus and generated programs — the three on one pool of worker threads (campaign.ts; every
 * core) — and the race explorer over the standard concurrent paths (plus the tracker mutant,
 * which it must catch); prints the numbers and writes them to bench-results/reliability.json.
 * Exits 1 on any failure, printing what replays it.
 *
 * Budgets (environment): RELIABILITY_CHUNKS (46), RELIABILITY_INPUTS (20000),
 * RELIABILITY_FUZZ_SWEEPS (30 generated programs), RELIABILITY_SEED (20261125),
 * RELIABILITY_WORKERS (every core).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultWorkers, runCampaigns } from "./campaign.js";
import { raceExplorerSummary } from "./race-explorer.js";

const env = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const seed = env("RELIABILITY_SEED", 20261125);
const chunks = env("RELIABILITY_CHUNKS", 46);
const inputs = env("RELIABILITY_INPUTS", 20_000);
const fuzzSweeps = env("RELIABILITY_FUZZ_SWEEPS", 30);
const workers = env("RELIABILITY_WORKERS", defaultWorkers());

const t0 = performance.now();
const pool = await runCampaigns(
  [
    { kind: "uapi", seed, budget: chunks },
    { kind: "bytes", seed, budget: inputs },
    { kind: "fail-nth", seed, budget: fuzzSweeps },
  ],
  undefined,
  workers,
);
const [uapi, bytes, sweeps] = pool.results;
if (!uapi || !bytes || !sweeps) throw new Error("the pool returned fewer campaigns than it ran");
const raceT0 = performance.now();
const races = raceExplorerSummary();
const raceMs = performance.now() - raceT0;
const totalMs = performance.now() - t0;

const failures = [
  ...[uapi, bytes, sweeps].flatMap((r) =>
    r.failures.map((f) => `${r.kind}: ${f.error} (replay: ${f.replay})`),
  ),
  ...races.scenarios.flatMap((r) =>
    r.failures ? [`races ${r.name}: ${r.failures} failing schedules`] : [],
  ),
  ...(races.mutantCaught ? [] : ["races: the tracker mutant was not caught"]),
];

const report = {
  date: new Date().toISOString(),
  host: { cpus: cpus().length, loadavg: loadavg().map((l) => Math.round(l * 100) / 100) },
  seed,
  stepsFuzzed: uapi.steps,
  byteInputsTried: bytes.steps,
  faultPointsInjected: sweeps.steps,
  schedulesExplored: races.schedules,
  failures: failures.length,
  pool: {
    workers,
    cpuMs: Math.round(pool.cpuMs),
    wallMs: Math.round(pool.wallMs),
    stepsPerCpuSecond: Math.round(uapi.steps / (pool.cpuMs / 1000)),
  },
  uapi: {
    programs: uapi.runs,
    steps: uapi.steps,
    ms: Math.round(uapi.wallMs),
    coverage: uapi.coverage,
  },
  bytes: {
    inputs: bytes.steps,
    successes: bytes.runs,
    ms: Math.round(bytes.wallMs),
    coverage: bytes.coverage,
  },
  failNth: {
    sweeps: sweeps.runs,
    points: sweeps.steps,
    ms: Math.round(sweeps.wallMs),
    sites: sweeps.coverage.ops,
  },
  races: { ...races, ms: Math.round(raceMs) },
  totalMs: Math.round(totalMs),
  failureDetails: failures,
};

console.log(
  [
    `reliability (seed ${seed}; load ${report.host.loadavg[0]} on ${report.host.cpus} CPUs)`,
    `  fuzzing pool          ${workers} workers: ${(pool.cpuMs / 1000).toFixed(1)} s CPU, ${(pool.wallMs / 1000).toFixed(1)} s wall`,
    `  steps fuzzed          ${uapi.steps} in ${uapi.runs} programs, ${(uapi.wallMs / 1000).toFixed(1)} s`,
    `  byte inputs tried     ${bytes.steps} (${bytes.runs} succeeded), ${(bytes.wallMs / 1000).toFixed(1)} s`,
    `  fault points injected ${sweeps.steps} over ${sweeps.runs} sweeps, ${(sweeps.wallMs / 1000).toFixed(1)} s`,
    `  schedules explored    ${races.schedules} (${races.pruned} pruned) over ${races.scenarios.length} scenarios, ${(raceMs / 1000).toFixed(1)} s; tracker mutant ${races.mutantCaught ? "caught" : "NOT caught"}`,
    `  failures              ${failures.length}`,
    ...failures.map((f) => `    ${f}`),
    `  total                 ${(totalMs / 1000).toFixed(1)} s`,
  ].join("\n"),
);

const out = fileURLToPath(new URL("../../../bench-results/reliability.json", import.meta.url));
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`written to ${out}`);
if (failures.length) process.exitCode = 1;
