// Checked uAPI-fuzz steps per CPU-second of one or two source trees (git worktrees or unpacked
// commits); the fuzz-throughput bench (tooling/reliability/bench) takes every figure from it,
// for this tree and for 635f058 alike:
//   node --conditions=@x/source --import tsx tooling/perf/scripts/fuzz-throughput-ab.mjs \
//     [--warm N] [--passes M] <tree> [<other tree>] [programs]
//     --campaign STEPS <tree>
// Each tree's own `programArb` draws the programs (seed 20261125, up to 100 ops, 600 by
// default). Warm-up: the first 10 programs, as in the bench's first-pass rows; with
// --warm N, N whole passes over every program instead, so the measured pass runs at steady
// state (what a long campaign gets; the first passes are mostly V8 compiling the model); with
// --passes M, M measured passes instead of one, the figure being their mean. One tree: checked
// (`runProgram`) and unchecked runs interleaved program by program. Two trees: both loaded into this process (two separate module
// graphs), their checked runs interleaved program by program, alternating which goes first, so
// both see the same load. --campaign: the tree's `fuzzUapi` run for STEPS steps (seed 20261125)
// to warm up, then for STEPS more (seed 20261126), the second one measured: what a campaign
// gets, every program a new one; a line "# measured half" on stdout separates the two halves
// for V8's trace flags. One tree's figures also split the measured part's CPU between
// the main thread and the others (`mainMs`, `helperMs`; Linux only).
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { threadCpuMs } from "@x/bench";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { warm: { type: "string" }, passes: { type: "string" }, campaign: { type: "string" } },
});
const warmPasses = Number(values.warm ?? 0);
if (!Number.isInteger(warmPasses) || warmPasses < 0) throw new Error("--warm takes a pass count");
const measuredPasses = Number(values.passes ?? 1);
if (!Number.isInteger(measuredPasses) || measuredPasses < 1)
  throw new Error("--passes takes a pass count of at least 1");
const count = /^\d+$/.test(positionals.at(-1) ?? "") ? Number(positionals.pop()) : 600;
if (positionals.length < 1 || positionals.length > 2)
  throw new Error("usage: fuzz-throughput-ab.mjs <tree> [<other tree>] [programs]");

async function load(root) {
  const rel = `${root}/tooling/reliability`;
  const fc = (await import(createRequire(`${rel}/package.json`).resolve("fast-check"))).default;
  const { runProgram } = await import(`${rel}/src/fuzz-uapi.ts`);
  const { Machine } = await import(`${rel}/src/machine.ts`);
  const { Runner, programArb } = await import(`${rel}/src/sequence.ts`);
  const { withoutErrorStacks } = await import(`${root}/packages/kernel/src/index.ts`);
  const programs = fc.sample(programArb(100), { seed: 20261125, numRuns: count });
  const unchecked = (ops) => {
    const runner = new Runner(new Machine());
    for (const op of ops) runner.step(op);
    runner.teardown();
  };
  return { root, runProgram, unchecked, withoutErrorStacks, programs, checkedUs: 0, steps: 0 };
}

function cpuUs(fn) {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return c.user + c.system;
}

function runChecked(tree, i) {
  const ops = tree.programs[i];
  tree.withoutErrorStacks(() => {
    tree.checkedUs += cpuUs(() => tree.runProgram(ops));
  });
  tree.steps += ops.length;
}

/** `fn`'s CPU split between the main thread and the others (V8's compiler and GC helpers). */
function threadSplit(fn) {
  const t0 = threadCpuMs();
  fn();
  const t1 = threadCpuMs();
  return t0 && t1 ? { mainMs: t1.main - t0.main, helperMs: t1.helpers - t0.helpers } : {};
}

const summary = (tree) => ({
  tree: tree.root,
  steps: tree.steps,
  checkedUsPerStep: +(tree.checkedUs / tree.steps).toFixed(2),
  checkedStepsPerCpuSecond: Math.round((1e6 * tree.steps) / tree.checkedUs),
});

if (values.campaign !== undefined) {
  const steps = Number(values.campaign);
  if (!Number.isInteger(steps) || steps < 1 || positionals.length !== 1)
    throw new Error("usage: fuzz-throughput-ab.mjs --campaign STEPS <tree>");
  const root = resolve(positionals[0]);
  const { fuzzUapi } = await import(`${root}/tooling/reliability/src/fuzz-uapi.ts`);
  fuzzUapi({ seed: 20261125, steps });
  process.stdout.write("# measured half\n");
  let result;
  let us = 0;
  const threads = threadSplit(() => {
    us = cpuUs(() => {
      result = fuzzUapi({ seed: 20261126, steps });
    });
  });
  console.log(
    JSON.stringify({
      tree: root,
      steps: result.steps,
      runs: result.runs,
      checkedUsPerStep: +(us / result.steps).toFixed(2),
      checkedStepsPerCpuSecond: Math.round((1e6 * result.steps) / us),
      ...threads,
    }),
  );
  process.exit(0);
}

const trees = [];
for (const root of positionals) trees.push(await load(resolve(root)));
const warmUp = warmPasses ? count : Math.min(10, count);
const passes = Math.max(1, warmPasses);
if (trees.length === 1) {
  const [t] = trees;
  let uncheckedUs = 0;
  let threads = {};
  t.withoutErrorStacks(() => {
    for (let pass = 0; pass < passes; pass++) {
      for (const ops of t.programs.slice(0, warmUp)) {
        t.runProgram(ops);
        t.unchecked(ops);
      }
    }
    threads = threadSplit(() => {
      for (let pass = 0; pass < measuredPasses; pass++) {
        t.programs.forEach((ops, i) => {
          runChecked(t, i);
          uncheckedUs += cpuUs(() => t.unchecked(ops));
        });
      }
    });
  });
  console.log(
    JSON.stringify({
      ...summary(t),
      uncheckedUsPerStep: +(uncheckedUs / t.steps).toFixed(2),
      ...threads,
    }),
  );
} else {
  const [a, b] = trees;
  for (let pass = 0; pass < passes; pass++) {
    for (let i = 0; i < warmUp; i++) {
      runChecked(a, i);
      runChecked(b, i);
    }
  }
  for (const t of trees) t.checkedUs = t.steps = 0;
  for (let pass = 0; pass < measuredPasses; pass++) {
    for (let i = 0; i < count; i++) {
      const [first, second] = i % 2 ? [a, b] : [b, a];
      runChecked(first, i);
      runChecked(second, i);
    }
  }
  const speedup = a.checkedUs / a.steps / (b.checkedUs / b.steps);
  console.log(JSON.stringify({ a: summary(a), b: summary(b), speedup: +speedup.toFixed(3) }));
}
