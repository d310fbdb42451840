/**
 * `pnpm reliability`: the CI reliability run. Seeded uAPI fuzzing (100 000 steps), byte
 * fuzzing of every ioctl, fail_nth sweeps over the VMM corpus and generated programs, and the
 * race explorer over the standard concurrent paths (plus the tracker mutant, which it must
 * catch); prints the numbers and writes them to bench-results/reliability.json. Exits 1 on any
 * failure, printing what replays it.
 *
 * Budgets (environment): RELIABILITY_STEPS (100000), RELIABILITY_INPUTS (20000),
 * RELIABILITY_FUZZ_SWEEPS (30 generated programs), RELIABILITY_SEED (20261125).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { VMM_CORPUS, failNthSweep, fuzzCorpus } from "./fail-nth.js";
import { fuzzBytes } from "./fuzz-bytes.js";
import { fuzzUapi } from "./fuzz-uapi.js";
import { raceExplorerSummary } from "./race-explorer.js";

const env = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const seed = env("RELIABILITY_SEED", 20261125);
const steps = env("RELIABILITY_STEPS", 100_000);
const inputs = env("RELIABILITY_INPUTS", 20_000);
const fuzzSweeps = env("RELIABILITY_FUZZ_SWEEPS", 30);

const t0 = performance.now();
const uapi = fuzzUapi({ seed, steps });
const bytes = fuzzBytes({ seed, inputs });
const sweeps = [
  ...Object.entries(VMM_CORPUS).map(([name, ops]) => failNthSweep(name, ops)),
  ...fuzzCorpus(seed, fuzzSweeps).map((ops, i) => failNthSweep(`fuzz-${i}`, ops)),
];
const raceT0 = performance.now();
const races = raceExplorerSummary();
const raceMs = performance.now() - raceT0;
const totalMs = performance.now() - t0;

const failures = [
  ...(uapi.failure
    ? [
        `uapi: ${uapi.failure.error} (replay: fuzz -- --replay ${uapi.failure.seed} '${uapi.failure.path}')`,
      ]
    : []),
  ...bytes.failures.map(
    (f) => `bytes: ${f.call}: ${f.error} (seed ${f.seed} input ${f.index}: ${f.bytes})`,
  ),
  ...sweeps.flatMap((s) =>
    s.failure
      ? [`fail_nth ${s.name} #${s.failure.nth} at ${s.failure.site}: ${s.failure.error}`]
      : [],
  ),
  ...races.scenarios.flatMap((r) =>
    r.failures ? [`races ${r.name}: ${r.failures} failing schedules`] : [],
  ),
  ...(races.mutantCaught ? [] : ["races: the tracker mutant was not caught"]),
];
const faultPoints = sweeps.reduce((n, s) => n + s.points, 0);
const sweepMs = sweeps.reduce((n, s) => n + s.ms, 0);

const report = {
  date: new Date().toISOString(),
  host: { cpus: cpus().length, loadavg: loadavg().map((l) => Math.round(l * 100) / 100) },
  seed,
  stepsFuzzed: uapi.steps,
  byteInputsTried: bytes.inputs,
  faultPointsInjected: faultPoints,
  schedulesExplored: races.schedules,
  failures: failures.length,
  uapi: {
    programs: uapi.runs,
    steps: uapi.steps,
    calls: uapi.calls,
    documentedErrors: uapi.errors,
    ms: Math.round(uapi.ms),
    usPerStep: Math.round((uapi.ms * 1000) / Math.max(1, uapi.steps)),
  },
  bytes: {
    inputs: bytes.inputs,
    successes: bytes.successes,
    perCall: bytes.perCall,
    ms: Math.round(bytes.ms),
  },
  failNth: {
    sweeps: sweeps.map((s) => ({ name: s.name, points: s.points, ms: Math.round(s.ms) })),
    points: faultPoints,
    ms: Math.round(sweepMs),
  },
  races: { ...races, ms: Math.round(raceMs) },
  totalMs: Math.round(totalMs),
  failureDetails: failures,
};

console.log(
  [
    `reliability (seed ${seed}; load ${report.host.loadavg[0]} on ${report.host.cpus} CPUs)`,
    `  steps fuzzed          ${uapi.steps} in ${uapi.runs} programs, ${(uapi.ms / 1000).toFixed(1)} s (${report.uapi.usPerStep} µs/step)`,
    `  byte inputs tried     ${bytes.inputs} (${bytes.successes} succeeded), ${(bytes.ms / 1000).toFixed(1)} s`,
    `  fault points injected ${faultPoints} over ${sweeps.length} sweeps, ${(sweepMs / 1000).toFixed(1)} s`,
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
