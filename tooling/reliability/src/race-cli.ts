/**
 * `pnpm --filter @x/reliability race [-- options]`: the interleaving race explorer
 * (race-interleave.ts) over the standard scenarios, with a larger bound than the tests'.
 *
 *   --bound N          preemptions per schedule (default 2; the tests use 1)
 *   --budget N         schedules per scenario (default 20 000)
 *   --scenario NAME    only this scenario (repeatable)
 *   --shard k/n        schedule i of each search when i % n === k - 1
 *   --tracker-mutant   run on the tracker mutant (failures expected)
 *   --no-reduce        no sleep sets
 *   --replay 'SCHED'   run one schedule of the one --scenario again
 *
 * Prints one line per scenario and each failure with the command that replays it; exits 1 on
 * a failure. The package modules are loaded with their generator twins, so the hooks are
 * registered before anything of the model is imported.
 */
import { register } from "node:module";
import { parseArgs } from "node:util";

// pnpm run passes its `--` separator through.
const args = process.argv.slice(2);
const { values } = parseArgs({
  args: args[0] === "--" ? args.slice(1) : args,
  options: {
    bound: { type: "string", default: "2" },
    budget: { type: "string", default: "20000" },
    scenario: { type: "string", multiple: true },
    shard: { type: "string" },
    "tracker-mutant": { type: "boolean", default: false },
    "no-reduce": { type: "boolean", default: false },
    replay: { type: "string" },
  },
});

register("./yielding-hooks.ts", import.meta.url);
const { parseShard } = await import("./race-explorer.js");
const { exploreInterleavings, replayInterleaving } = await import("./race-interleave.js");
const { standardRaceScenarios } = await import("./race-paths.js");

const mutant = values["tracker-mutant"];
const wanted = values.scenario;
const scenarios = standardRaceScenarios({ trackerMutant: mutant }).filter(
  (s) => !wanted || wanted.includes(s.name),
);
if (scenarios.length === 0) throw new Error(`no scenario ${wanted?.join(", ")}`);
const flags = `${mutant ? " --tracker-mutant" : ""}${values["no-reduce"] ? " --no-reduce" : ""}`;

if (values.replay !== undefined) {
  const [s] = scenarios;
  if (!s || scenarios.length !== 1) throw new Error("--replay wants exactly one --scenario");
  const r = replayInterleaving(s.setup, s.paths, values.replay);
  console.log(r.error ?? (r.infeasible ? "infeasible" : "passed"));
  if (r.error) process.exitCode = 1;
} else {
  const shard = values.shard === undefined ? undefined : parseShard(values.shard);
  for (const s of scenarios) {
    const t0 = performance.now();
    const r = exploreInterleavings({
      setup: s.setup,
      paths: s.paths,
      bound: Number(values.bound),
      budget: Number(values.budget),
      reduce: !values["no-reduce"],
      ...(shard ? { shard } : {}),
    });
    const ms = Math.round(performance.now() - t0);
    console.log(
      `${s.name}: ${r.schedules} schedules, ${r.pruned} pruned, ` +
        `${r.exhaustive ? "exhaustive" : "budget hit"}, ${r.failures.length} failures, ${ms} ms`,
    );
    for (const f of r.failures) {
      console.log(`  FAILURE ${f.error}`);
      console.log(
        `  replay: pnpm --filter @x/reliability race --${flags} --scenario '${s.name}' --replay '${f.schedule}'`,
      );
    }
    if (r.failures.length) process.exitCode = 1;
  }
}
