/**
 * `pnpm --filter @x/reliability campaign -- <command>`: sharded campaigns (campaign.ts,
 * race-campaign.ts).
 *
 *   run <uapi|bytes|fail-nth> --budget B [--seed S] [--shard k/n] [--workers N] [--out f.json]
 *   run race [--interleave] [--bound P] --budget B [--scenario NAME]... [--tracker-mutant]
 *            [--shard k/n] [--workers N] [--out f.json]
 *   merge <f.json>... [--out merged.json]
 *
 * `run` runs shard k of n (the whole campaign by default) on N worker threads (every core by
 * default) and prints the totals; `--out` writes them as JSON for `merge`, which adds shard
 * files into one report and names the shards still missing. A race campaign's budget is the
 * schedules per scenario search, its bound the interleaving explorer's preemptions (default
 * 2). Both exit 1 on any failure.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { register } from "node:module";
import { parseArgs } from "node:util";
import type { CampaignKind, CampaignResult } from "./campaign.js";
import { scriptArgs } from "./cli-args.js";
import type { RaceCampaignResult } from "./race-campaign.js";

const KINDS: readonly (CampaignKind | "race")[] = ["uapi", "bytes", "fail-nth", "race"];

const { values, positionals } = parseArgs({
  args: scriptArgs(),
  options: {
    seed: { type: "string", default: "20261125" },
    budget: { type: "string" },
    shard: { type: "string" },
    workers: { type: "string" },
    out: { type: "string" },
    interleave: { type: "boolean", default: false },
    bound: { type: "string" },
    scenario: { type: "string", multiple: true },
    "tracker-mutant": { type: "boolean", default: false },
  },
  allowPositionals: true,
});

const [command, ...rest] = positionals;
const files = command === "merge" ? rest : [];
const parts = files.map(
  (f) => JSON.parse(readFileSync(f, "utf8")) as CampaignResult | RaceCampaignResult,
);
// The interleaving explorer needs every module of the model loaded with its generator twins.
if (values.interleave) register("./yielding-hooks.ts", import.meta.url);
const { defaultWorkers, mergeResults, missingShards, runCampaign } = await import("./campaign.js");
const { mergeRaceResults, runRaceCampaign } = await import("./race-campaign.js");
const { WHOLE, parseShard } = await import("./shard.js");

let result: CampaignResult | RaceCampaignResult;
let missing: string[] = [];
if (command === "run") {
  const kind = rest[0] as CampaignKind | "race";
  if (!KINDS.includes(kind)) throw new Error(`run wants one of ${KINDS.join(", ")}`);
  if (values.budget === undefined) throw new Error("run wants --budget");
  if (kind !== "race" && (values.interleave || values.bound || values.scenario))
    throw new Error("--interleave, --bound and --scenario are for race campaigns");
  if (values.bound !== undefined && !values.interleave)
    throw new Error("--bound is the interleaving explorer's (--interleave)");
  const shard = values.shard === undefined ? WHOLE : parseShard(values.shard);
  const workers = values.workers === undefined ? defaultWorkers() : Number(values.workers);
  const budget = Number(values.budget);
  result =
    kind === "race"
      ? await runRaceCampaign(
          {
            kind,
            interleave: values.interleave,
            bound: Number(values.bound ?? 2),
            budget,
            trackerMutant: values["tracker-mutant"],
            scenarios: values.scenario ?? [],
          },
          shard,
          workers,
        )
      : await runCampaign({ kind, seed: Number(values.seed), budget }, shard, workers);
} else if (command === "merge") {
  if (!parts.length) throw new Error("merge wants shard files");
  const races = parts.filter((p) => p.kind === "race").length;
  if (races && races !== parts.length) throw new Error("cannot merge race and other shards");
  result = races
    ? mergeRaceResults(parts as RaceCampaignResult[])
    : mergeResults(parts as CampaignResult[]);
  missing = missingShards(parts);
  if (missing.length) console.log(`shards missing: ${missing.join(", ")}`);
} else {
  throw new Error(
    "usage: campaign run <uapi|bytes|fail-nth|race> --budget B | campaign merge <files>",
  );
}

const lines = result.kind === "race" ? raceLines(result) : fuzzLines(result);
console.log(lines.join("\n"));
if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
const failures =
  result.kind === "race"
    ? Object.values(result.results).reduce((n, r) => n + r.failures.length, 0)
    : result.failures.length;
if (failures) process.exitCode = 1;

function fuzzLines(r: CampaignResult): string[] {
  const perCpuS = r.steps / Math.max(r.cpuMs / 1000, 1e-9);
  return [
    `${r.kind} campaign, seed ${r.seed}, budget ${r.budget}, shards ${r.shards.join(" ")}`,
    `  units ${r.units}, runs ${r.runs}, steps ${r.steps}`,
    `  CPU ${(r.cpuMs / 1000).toFixed(1)} s, wall ${(r.wallMs / 1000).toFixed(1)} s, ${perCpuS.toFixed(0)} steps per CPU-second`,
    `  coverage: ${Object.keys(r.coverage.ops).length} ops, errnos ${Object.keys(r.coverage.errnos).sort().join(" ")}`,
    `  failures ${r.failures.length}`,
    ...r.failures.map((f) => `    ${f.error}\n      replay: ${f.replay}`),
  ];
}

function raceLines(r: RaceCampaignResult): string[] {
  const explorer = r.interleave ? `interleaving, bound ${r.bound}` : "nesting";
  return [
    `race campaign (${explorer}${r.trackerMutant ? ", tracker mutant" : ""}), budget ${r.budget} per scenario, shards ${r.shards.join(" ")}`,
    `  CPU ${(r.cpuMs / 1000).toFixed(1)} s, wall ${(r.wallMs / 1000).toFixed(1)} s`,
    ...Object.entries(r.results).flatMap(([name, s]) => [
      `  ${name}: ${s.schedules} schedules, ${s.pruned} pruned, ${s.exhaustive ? "exhaustive" : "budget hit"}, ${s.failures.length} failures`,
      ...s.failures.map((f) => `    ${f.error}\n      replay: ${f.replay}`),
    ]),
  ];
}
