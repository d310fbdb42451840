/**
 * Throughput of the uAPI fuzzer: process CPU per checked step (`runProgram`: the
 * cross-package checker after every op and the quiesced check after teardown) against the
 * same programs run without the checker, interleaved program by program so both see the same
 * load. The ratio is what checking costs; steps per CPU-second is what a campaign gets, and the
 * other three rows set it against the fuzzer at commit 635f058.
 *
 * The first two rows measure the first pass over the programs, after 10 of them to warm up.
 * That pass is mostly V8 compiling the model: the same programs cost about a third as much once
 * every path has been optimised. The first row's note splits the pass's process CPU between the
 * main thread and V8's helper threads (TurboFan compiles concurrently; GC helpers), about half
 * each. A long campaign runs at steady state, so the third row runs three more passes and then
 * measures three (their mean). (V8 still compiles functions that turn hot late in the fourth
 * pass: one pass there moved a run's figure by a third from run to run.) Those passes run the
 * same 600 programs again; the fourth row is a campaign proper, `fuzzUapi` with every program a
 * new one and fast-check's generation counted.
 *
 * 635f058 is measured in the same run: a full run unpacks that commit's tree from the clone's
 * history (reference-tree.ts) and runs each of the three rate measurements twice per tree in
 * fresh processes (tooling/perf/scripts/fuzz-throughput-ab.mjs), in the order 635f058, this
 * tree, this tree, 635f058, so a drift of the machine's speed during the run weighs on both alike; this tree's
 * figure and 635f058's are each the mean of their two. Where that tree cannot be had, and in
 * smoke runs, this process measures this tree and the rows compare with figures recorded on
 * 2026-12-05 and -06, the note saying so: on this shared machine this tree's figures moved by
 * 40 % within an hour of quiet load, so a recorded reference can flip a row either way.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { SMOKE, record, report, threadCpuMs } from "@x/bench";
import fc from "fast-check";
import { fuzzUapi, runProgram } from "../src/fuzz-uapi.js";
import { Machine } from "../src/machine.js";
import { type Op, Runner, programArb } from "../src/sequence.js";
import { withoutErrorStacks } from "@x/kernel";
import { referenceTree } from "./reference-tree.js";

const PROGRAMS = SMOKE ? 60 : 600;
/**
 * Checked steps per CPU-second of commit 635f058 on these programs (same seed, 600 programs,
 * 27 387 steps, same loop, interleaved with the unchecked runs): the median of three runs,
 * 10 940, 11 834 and 12 164, alternated with runs of this tree's sources, on 2026-12-05
 * 09:45–09:46 UTC at load 2.1–3.6 on the 2-core machine of PERFORMANCE.md.
 */
const REFERENCE_635F058 = 11_834;
/**
 * The same at steady state (`fuzz-throughput-ab.mjs --warm 4 --passes 3 <635f058 tree>`: four
 * whole passes, checked and unchecked interleaved, then the mean of three measured ones): the
 * median of three runs, 21 197, 21 084 and 19 719, alternated with runs of this tree's sources,
 * on 2026-12-06 04:19–04:20 UTC at load 1.0–1.8 on the same machine.
 */
const STEADY_REFERENCE_635F058 = 21_084;
/** Passes before the steady-state ones (the measured first pass among them), and those. */
const STEADY_WARM_PASSES = 4;
const STEADY_PASSES = 3;
/**
 * The campaign row: `fuzzUapi` for CAMPAIGN_STEPS steps to warm up (seed 20261125), then as many
 * more measured (seed 20261126). 635f058 measured the same way (`fuzz-throughput-ab.mjs
 * --campaign 300000 <635f058 tree>`): the median of three runs, 22 824, 24 964 and 22 717 steps
 * per CPU-second, alternated with runs of this tree's sources, on 2026-12-06 04:30–04:32 UTC at
 * load 0.6–1.6 on the same machine.
 */
const CAMPAIGN_REFERENCE_635F058 = 22_824;
const CAMPAIGN_STEPS = SMOKE ? 20_000 : 300_000;
const programs = fc.sample(programArb(100), { seed: 20261125, numRuns: PROGRAMS });

function unchecked(ops: readonly Op[]): void {
  const runner = new Runner(new Machine());
  for (const op of ops) runner.step(op);
  runner.teardown();
}

function cpuUs(fn: () => void): number {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return c.user + c.system;
}

let steps = 0;
let checkedUs = 0;
let uncheckedUs = 0;
let firstPassThreads: { main: number; helpers: number } | undefined;
withoutErrorStacks(() => {
  // Warm-up: the first programs pay for compilation.
  for (const ops of programs.slice(0, 10)) {
    runProgram(ops);
    unchecked(ops);
  }
  const t0 = threadCpuMs();
  for (const ops of programs) {
    steps += ops.length;
    checkedUs += cpuUs(() => runProgram(ops));
    uncheckedUs += cpuUs(() => unchecked(ops));
  }
  const t1 = threadCpuMs();
  if (t0 && t1) firstPassThreads = { main: t1.main - t0.main, helpers: t1.helpers - t0.helpers };
});
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const AB_SCRIPT = `${ROOT}tooling/perf/scripts/fuzz-throughput-ab.mjs`;
const reference = SMOKE ? { why: "a smoke run" } : referenceTree(ROOT, "635f058");

/** µs per checked step of `tree`, measured by fuzz-throughput-ab.mjs `args` in a new process. */
function abUsPerStep(tree: string, args: readonly string[]): number {
  const r = spawnSync(
    process.execPath,
    ["--conditions=@x/source", "--import", "tsx", AB_SCRIPT, ...args, tree],
    { cwd: ROOT, encoding: "utf8" },
  );
  if (r.status !== 0)
    throw new Error(`fuzz-throughput-ab.mjs ${[...args, tree].join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "").checkedUsPerStep;
}

interface Measured {
  /** µs per checked step of this tree and of 635f058. */
  readonly ours: number;
  readonly ref: number;
  readonly how: string;
}

/** 635f058, this tree, this tree, 635f058, each in a new process; the mean of each pair. */
function sameRun(tree: string, args: readonly string[]): Measured {
  const ref1 = abUsPerStep(tree, args);
  const ours = (abUsPerStep(ROOT, args) + abUsPerStep(ROOT, args)) / 2;
  const ref = (ref1 + abUsPerStep(tree, args)) / 2;
  return { ours, ref, how: "635f058 measured in this run, alternated with this tree" };
}

/** This tree in this process, 635f058 as recorded. */
function recorded(ours: number, stepsPerCpuSecond: number, when: string): Measured {
  const why = "why" in reference ? reference.why : "";
  return { ours, ref: 1e6 / stepsPerCpuSecond, how: `635f058 as recorded ${when} (${why})` };
}

function inProcessSteady(): number {
  // The measured pass above is the first of the steady-state warm-up.
  let steadyUs = 0;
  withoutErrorStacks(() => {
    for (let pass = 2; pass <= STEADY_WARM_PASSES + STEADY_PASSES; pass++) {
      for (const ops of programs) {
        const us = cpuUs(() => runProgram(ops));
        if (pass > STEADY_WARM_PASSES) steadyUs += us;
        unchecked(ops);
      }
    }
  });
  return steadyUs / (STEADY_PASSES * steps);
}

function inProcessCampaign(): number {
  fuzzUapi({ seed: 20261125, steps: CAMPAIGN_STEPS });
  let campaignSteps = 0;
  const us = cpuUs(() => {
    campaignSteps = fuzzUapi({ seed: 20261126, steps: CAMPAIGN_STEPS }).steps;
  });
  return us / campaignSteps;
}

const perStep = checkedUs / steps;
const [first, steady, campaign] =
  "tree" in reference
    ? [
        sameRun(reference.tree, []),
        sameRun(reference.tree, [
          "--warm",
          String(STEADY_WARM_PASSES),
          "--passes",
          String(STEADY_PASSES),
        ]),
        sameRun(reference.tree, ["--campaign", String(CAMPAIGN_STEPS)]),
      ]
    : [
        recorded(perStep, REFERENCE_635F058, "at load 2-4"),
        recorded(inProcessSteady(), STEADY_REFERENCE_635F058, "at load 1-2"),
        recorded(inProcessCampaign(), CAMPAIGN_REFERENCE_635F058, "at load 0.6-1.6"),
      ];

record({
  pkg: "reliability",
  workload: "uAPI fuzz: CPU per checked step vs the same step unchecked",
  value: perStep,
  unit: "µs",
  baseline: uncheckedUs / steps,
  ratio: checkedUs / uncheckedUs,
  target: "<= 2x (checking costs at most the step)",
  met: checkedUs / uncheckedUs <= 2,
  note:
    `${Math.round(1e6 / perStep)} checked steps per CPU-second over ${PROGRAMS} programs (${steps} steps)` +
    (firstPassThreads
      ? `; the pass, checked and unchecked runs: ${firstPassThreads.main} ms on the main thread, ${firstPassThreads.helpers} ms on V8's helper threads`
      : ""),
});

/** A row of checked steps per CPU-second against 635f058's. */
function rateRow(m: Measured, workload: string, target: string, what: string): void {
  const ratio = m.ref / m.ours;
  record({
    pkg: "reliability",
    workload,
    value: m.ours,
    unit: "µs",
    baseline: m.ref,
    ratio,
    better: "higher",
    target,
    met: ratio >= 4,
    note: `${Math.round(1e6 / m.ours)} vs ${Math.round(1e6 / m.ref)} steps per CPU-second, ${what}; ${m.how}`,
  });
}
rateRow(
  first,
  "uAPI fuzz: checked steps per CPU-second vs 635f058",
  ">= 4x the checked steps per CPU-second of 635f058 (same checker)",
  `the first pass over ${PROGRAMS} programs after 10 to warm up`,
);
rateRow(
  steady,
  "uAPI fuzz at steady state: checked steps per CPU-second vs 635f058",
  ">= 4x the checked steps per CPU-second of 635f058 at steady state (same checker)",
  `passes ${STEADY_WARM_PASSES + 1}-${STEADY_WARM_PASSES + STEADY_PASSES}`,
);
rateRow(
  campaign,
  "uAPI fuzz campaign: checked steps per CPU-second vs 635f058",
  ">= 4x the checked steps per CPU-second of a 635f058 campaign (same checker)",
  `${CAMPAIGN_STEPS} campaign steps after as many to warm up`,
);
report();
