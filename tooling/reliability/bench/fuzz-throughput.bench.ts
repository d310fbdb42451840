/**
 * Throughput of the uAPI fuzzer: process CPU per checked step (`runProgram`: the
 * cross-package checker after every op and the quiesced check after teardown) against the
 * same programs run without the checker, interleaved program by program so both see the same
 * load. The ratio is what checking costs; steps per CPU-second is what a campaign gets, and the
 * second row sets it against the fuzzer at commit 635f058 (a recorded number: that tree cannot
 * run in this process).
 *
 * That first pass is mostly V8 compiling the model: the same programs cost about a third as
 * much once every path has been optimised. The row's note splits the pass's process CPU between
 * the main thread and V8's helper threads (TurboFan compiles concurrently; GC helpers), about
 * half each. A long campaign runs there, so the third row runs
 * three more passes and then measures three (their mean), against 635f058 measured the same
 * way. (V8 still compiles functions that turn hot late in the fourth pass: one pass there moved
 * a run's figure by a third from run to run.) Those passes run the same 600 programs again; the
 * fourth row is a campaign proper, `fuzzUapi` with every program a new one and fast-check's
 * generation counted, against a 635f058 campaign of the same size.
 */
import { SMOKE, record, report, threadCpuMs } from "@x/bench";
import fc from "fast-check";
import { fuzzUapi, runProgram } from "../src/fuzz-uapi.js";
import { Machine } from "../src/machine.js";
import { type Op, Runner, programArb } from "../src/sequence.js";
import { withoutErrorStacks } from "@x/kernel";

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

fuzzUapi({ seed: 20261125, steps: CAMPAIGN_STEPS });
let campaignSteps = 0;
const campaignUs = cpuUs(() => {
  campaignSteps = fuzzUapi({ seed: 20261126, steps: CAMPAIGN_STEPS }).steps;
});

const perStep = checkedUs / steps;
record({
  pkg: "reliability",
  workload: "uAPI fuzz: CPU per checked step vs the same step unchecked",
  value: perStep,
  unit: "µs",
  baseline: uncheckedUs / steps,
  ratio: checkedUs / uncheckedUs,
  target: "<= 2x (checking costs at most the step)",
  met: checkedUs / uncheckedUs <= 2,
  note: `${Math.round(1e6 / perStep)} checked steps per CPU-second over ${PROGRAMS} programs (${steps} steps)`,
});
const stepsPerCpuSecond = 1e6 / perStep;
record({
  pkg: "reliability",
  workload: "uAPI fuzz: checked steps per CPU-second vs 635f058",
  value: perStep,
  unit: "µs",
  baseline: 1e6 / REFERENCE_635F058,
  ratio: stepsPerCpuSecond / REFERENCE_635F058,
  better: "higher",
  target: ">= 4x the checked steps per CPU-second of 635f058 (same checker)",
  met: stepsPerCpuSecond >= 4 * REFERENCE_635F058,
  note:
    `${Math.round(stepsPerCpuSecond)} vs ${REFERENCE_635F058} steps per CPU-second (635f058, recorded at load 2-4)` +
    (firstPassThreads
      ? `; the pass, checked and unchecked runs: ${firstPassThreads.main} ms on the main thread, ${firstPassThreads.helpers} ms on V8's helper threads`
      : ""),
});
const steadyPerStep = steadyUs / (STEADY_PASSES * steps);
const steadyRate = 1e6 / steadyPerStep;
record({
  pkg: "reliability",
  workload: "uAPI fuzz at steady state: checked steps per CPU-second vs 635f058",
  value: steadyPerStep,
  unit: "µs",
  baseline: 1e6 / STEADY_REFERENCE_635F058,
  ratio: steadyRate / STEADY_REFERENCE_635F058,
  better: "higher",
  target: ">= 4x the checked steps per CPU-second of 635f058 at steady state (same checker)",
  met: steadyRate >= 4 * STEADY_REFERENCE_635F058,
  note: `${Math.round(steadyRate)} vs ${STEADY_REFERENCE_635F058} steps per CPU-second, passes ${STEADY_WARM_PASSES + 1}-${STEADY_WARM_PASSES + STEADY_PASSES} (635f058, recorded)`,
});
const campaignPerStep = campaignUs / campaignSteps;
const campaignRate = 1e6 / campaignPerStep;
record({
  pkg: "reliability",
  workload: "uAPI fuzz campaign: checked steps per CPU-second vs 635f058",
  value: campaignPerStep,
  unit: "µs",
  baseline: 1e6 / CAMPAIGN_REFERENCE_635F058,
  ratio: campaignRate / CAMPAIGN_REFERENCE_635F058,
  better: "higher",
  target: ">= 4x the checked steps per CPU-second of a 635f058 campaign (same checker)",
  met: campaignRate >= 4 * CAMPAIGN_REFERENCE_635F058,
  note: `${Math.round(campaignRate)} vs ${CAMPAIGN_REFERENCE_635F058} steps per CPU-second over ${campaignSteps} steps after as many to warm up (635f058, recorded)`,
});
report();
