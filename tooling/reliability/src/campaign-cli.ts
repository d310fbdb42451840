/**
 * `pnpm --filter @x/reliability campaign -- <command>`: sharded campaigns (campaign.ts).
 *
 *   run <uapi|bytes|fail-nth> --budget B [--seed S] [--shard k/n] [--workers N] [--out f.json]
 *   merge <f.json>... [--out merged.json]
 *
 * `run` runs shard k of n (the whole campaign by default) on N worker threads (every core by
 * default) and prints the totals; `--out` writes them as JSON for `merge`, which adds shard
 * files into one report and names the shards still missing. Both exit 1 on any failure.
 */
import { writeFileSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  type CampaignKind,
  type CampaignResult,
  defaultWorkers,
  mergeResults,
  missingShards,
  runCampaign,
} from "./campaign.js";
import { scriptArgs } from "./cli-args.js";
import { WHOLE, parseShard } from "./shard.js";

const KINDS: readonly CampaignKind[] = ["uapi", "bytes", "fail-nth"];

const { values, positionals } = parseArgs({
  args: scriptArgs(),
  options: {
    seed: { type: "string", default: "20261125" },
    budget: { type: "string" },
    shard: { type: "string" },
    workers: { type: "string" },
    out: { type: "string" },
  },
  allowPositionals: true,
});

const [command, ...rest] = positionals;
let result: CampaignResult;
if (command === "run") {
  const kind = rest[0] as CampaignKind;
  if (!KINDS.includes(kind)) throw new Error(`run wants one of ${KINDS.join(", ")}`);
  if (values.budget === undefined) throw new Error("run wants --budget");
  result = await runCampaign(
    { kind, seed: Number(values.seed), budget: Number(values.budget) },
    values.shard === undefined ? WHOLE : parseShard(values.shard),
    values.workers === undefined ? defaultWorkers() : Number(values.workers),
  );
} else if (command === "merge") {
  if (!rest.length) throw new Error("merge wants shard files");
  const parts = rest.map((f) => JSON.parse(readFileSync(f, "utf8")) as CampaignResult);
  result = mergeResults(parts);
  const missing = missingShards(parts);
  if (missing.length) console.log(`shards missing: ${missing.join(", ")}`);
} else {
  throw new Error("usage: campaign run <uapi|bytes|fail-nth> --budget B | campaign merge <files>");
}

const perCpuS = result.steps / Math.max(result.cpuMs / 1000, 1e-9);
console.log(
  [
    `${result.kind} campaign, seed ${result.seed}, budget ${result.budget}, shards ${result.shards.join(" ")}`,
    `  units ${result.units}, runs ${result.runs}, steps ${result.steps}`,
    `  CPU ${(result.cpuMs / 1000).toFixed(1)} s, wall ${(result.wallMs / 1000).toFixed(1)} s, ${perCpuS.toFixed(0)} steps per CPU-second`,
    `  coverage: ${Object.keys(result.coverage.ops).length} ops, errnos ${Object.keys(result.coverage.errnos).sort().join(" ")}`,
    `  failures ${result.failures.length}`,
    ...result.failures.map((f) => `    ${f.error}\n      replay: ${f.replay}`),
  ].join("\n"),
);
if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
if (result.failures.length) process.exitCode = 1;
