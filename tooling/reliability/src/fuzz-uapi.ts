/**
 * Property-based uAPI fuzzing: fast-check generates programs (sequences of `Op`), each run on a
 * fresh `Machine` with the cross-package checker after every step and the quiesced check after
 * the program closes its descriptors. A failing program is shrunk by fast-check and reported
 * with its seed and path, which `replayUapi` runs again.
 *
 * The budget is counted in steps (ops executed): runs are drawn in chunks of CHUNK_RUNS from
 * seeds seed, seed + 1, … until the step budget or the time limit is spent; each chunk is an
 * independent, replayable fast-check run.
 */
import { withoutErrorStacks } from "@x/kernel";
import fc from "fast-check";
import { Checker } from "./checker.js";
import { Machine } from "./machine.js";
import { type Op, Runner, programArb } from "./sequence.js";

/** Runs per fast-check invocation. */
const CHUNK_RUNS = 50;
const DEFAULT_MAX_LENGTH = 100;

export interface ProgramStats {
  steps: number;
  calls: number;
  /** Calls that failed with a documented errno (expected: the fuzzer aims at error paths too). */
  errors: number;
}

/** An extra rule a caller adds to the checker's (tests plant one to exercise shrinking). */
export type ExtraInvariant = (machine: Machine) => void;

/** Run one program on a fresh machine, checking after every step and after teardown. */
export function runProgram(ops: readonly Op[], extra?: ExtraInvariant): ProgramStats {
  const machine = new Machine();
  const runner = new Runner(machine);
  const checker = new Checker({
    kernel: machine.kernel,
    tasks: machine.tasks,
    devices: machine.devices,
    copies: () => runner.copies(),
  });
  let steps = 0;
  for (const op of ops) {
    runner.step(op);
    steps++;
    checker.check();
    extra?.(machine);
  }
  runner.teardown();
  checker.checkQuiesced();
  return { steps, calls: runner.calls, errors: runner.failures };
}

interface Counterexample {
  readonly seed: number;
  readonly path: string;
  readonly ops: readonly Op[];
  readonly error: string;
}

export interface FuzzUapiOptions {
  readonly seed: number;
  /** Steps to run in total. */
  readonly steps: number;
  /** Stop early after this many milliseconds (the budget is then partly spent). */
  readonly timeMs?: number;
  readonly maxLength?: number;
  readonly extra?: ExtraInvariant;
}

export interface FuzzUapiResult extends ProgramStats {
  runs: number;
  ms: number;
  failure: Counterexample | undefined;
}

function property(maxLength: number, stats: FuzzUapiResult, extra: ExtraInvariant | undefined) {
  return fc.property(programArb(maxLength), (ops) => {
    const s = runProgram(ops, extra);
    stats.runs++;
    stats.steps += s.steps;
    stats.calls += s.calls;
    stats.errors += s.errors;
  });
}

function emptyStats(): FuzzUapiResult {
  return { steps: 0, calls: 0, errors: 0, runs: 0, ms: 0, failure: undefined };
}

/**
 * Fuzz until `steps` ops ran (or `timeMs` passed, or a counterexample was found). Most calls
 * fail with an errno by design, so KernelErrors carry no stack meanwhile.
 */
export function fuzzUapi(opts: FuzzUapiOptions): FuzzUapiResult {
  return withoutErrorStacks(() => fuzzUapiRun(opts));
}

function fuzzUapiRun(opts: FuzzUapiOptions): FuzzUapiResult {
  const maxLength = opts.maxLength ?? DEFAULT_MAX_LENGTH;
  const t0 = performance.now();
  const stats = emptyStats();
  const deadline = opts.timeMs === undefined ? Number.POSITIVE_INFINITY : t0 + opts.timeMs;
  for (let seed = opts.seed; stats.steps < opts.steps && performance.now() < deadline; seed++) {
    const details = fc.check(property(maxLength, stats, opts.extra), { seed, numRuns: CHUNK_RUNS });
    if (details.failed) {
      stats.failure = {
        seed,
        path: details.counterexamplePath ?? "",
        ops: details.counterexample?.[0] ?? [],
        error: errorText(details.errorInstance),
      };
      break;
    }
  }
  stats.ms = performance.now() - t0;
  return stats;
}

/**
 * Re-run a reported counterexample (fast-check replays the shrunk case from seed and path):
 * its error text if it still fails, undefined once the bug is gone.
 */
export function replayUapi(
  seed: number,
  path: string,
  opts: { maxLength?: number; extra?: ExtraInvariant } = {},
): string | undefined {
  const stats = emptyStats();
  const prop = property(opts.maxLength ?? DEFAULT_MAX_LENGTH, stats, opts.extra);
  const details = fc.check(prop, { seed, path, numRuns: CHUNK_RUNS, endOnFailure: true });
  return details.failed ? errorText(details.errorInstance) : undefined;
}

export function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}
