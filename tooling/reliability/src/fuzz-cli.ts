/**
 * `pnpm --filter @x/reliability fuzz [-- --seconds N --seed S --shard k/n]`: the uAPI fuzzer
 * with a time budget instead of a step budget (default 60 s, seed from the clock); a shard runs
 * only the chunks it owns (shard.ts), so machines given the same seed fuzz different programs.
 * Prints the numbers and, on failure, the shrunk counterexample with the command that replays
 * it; exits 1 then.
 *
 *   replay:  pnpm --filter @x/reliability fuzz -- --replay <seed> <path>
 */
import { parseArgs } from "node:util";
import { scriptArgs } from "./cli-args.js";
import { fuzzUapi, replayUapi } from "./fuzz-uapi.js";
import { parseShard } from "./shard.js";

const { values, positionals } = parseArgs({
  args: scriptArgs(),
  options: {
    seconds: { type: "string", default: "60" },
    seed: { type: "string" },
    shard: { type: "string" },
    replay: { type: "boolean", default: false },
  },
  allowPositionals: true,
});

if (values.replay) {
  const [seed, path] = positionals;
  if (seed === undefined || path === undefined) throw new Error("--replay <seed> <path>");
  const error = replayUapi(Number(seed), path);
  console.log(
    error ? `still failing: ${error}` : "replay passed: the counterexample no longer fails",
  );
  if (error) process.exitCode = 1;
} else {
  const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
  const timeMs = Number(values.seconds) * 1000;
  const shard = parseShard(values.shard ?? "1/1");
  const r = fuzzUapi({ seed, steps: Number.POSITIVE_INFINITY, timeMs, shard });
  console.log(
    `fuzz: seed ${seed}, ${r.runs} programs, ${r.steps} steps, ${r.calls} calls ` +
      `(${r.errors} failed with documented errnos) in ${(r.ms / 1000).toFixed(1)} s`,
  );
  if (r.failure) {
    console.log(`FAILURE: ${r.failure.error}`);
    console.log(`ops: ${JSON.stringify(r.failure.ops)}`);
    console.log(
      `replay: pnpm --filter @x/reliability fuzz -- --replay ${r.failure.seed} '${r.failure.path}'`,
    );
    process.exitCode = 1;
  }
}
