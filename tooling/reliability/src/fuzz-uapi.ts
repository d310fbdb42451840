/**
 * Property-based uAPI fuzzing: fast-check generates programs (sequences of `Op`), each run on a
 * fresh `Machine` with the cross-package checker after every step and the quiesced check after
 * the program closes its descriptors. A failing program is shrunk by fast-check and reported
 * with its seed and path, which `replayUapi` runs again.
 *
 * The budget is counted in steps (ops executed) or in chunks: runs are drawn in chunks of
 * CHUNK_RUNS, chunk i from seed + i, until the step budget, the chunk budget or the time limit is
 * spent; each chunk is an independent, replayable fast-check run, so a shard (campaign.ts) runs
 * the chunks it owns and the shards together run exactly the unsharded chunks.
 */
import { errnoName, withoutErrorStacks } from "@x/kernel";
import fc from "fast-check";
import { type Shard, ownsUnit } from "./shard.js";
import { Checker } from "./checker.js";
import { Machine } from "./machine.js";
import { type Op, Runner, programArb } from "./sequence.js";

/** Runs per fast-check invocation (a chunk). */
const CHUNK_RUNS = 50;
const DEFAULT_MAX_LENGTH = 100;

interface Counts {
  steps: number;
  calls: number;
  /** Calls that failed with a documented errno (expected: the fuzzer aims at error paths too). */
  errors: number;
}

/**
 * One program's counts; its coverage (steps per op kind, ops per errno they ended with) stays in
 * the Maps it was counted in: made into records for every program, it was most of
 * `runProgram`'s own time.
 */
export interface ProgramStats extends Counts {
  readonly ops: ReadonlyMap<string, number>;
  readonly errnos: ReadonlyMap<string, number>;
}

/** An extra rule a caller adds to the checker's (tests plant one to exercise shrinking). */
export type ExtraInvariant = (machine: Machine) => void;

/** Run one program on a fresh machine, checking after every step and after teardown. */
export function runProgram(program: readonly Op[], extra?: ExtraInvariant): ProgramStats {
  const machine = new Machine();
  const runner = new Runner(machine);
  const checker = new Checker({
    kernel: machine.kernel,
    tasks: machine.tasks,
    devices: machine.devices,
    copies() {
      return runner.copies();
    },
  });
  // Counted in Maps while running (a record with dozens of keys is a slow dictionary).
  const opCounts = new Map<string, number>();
  const errnoCounts = new Map<string, number>();
  let steps = 0;
  for (const op of program) {
    const ret = runner.step(op);
    steps++;
    opCounts.set(op.k, (opCounts.get(op.k) ?? 0) + 1);
    if (ret > 0) {
      const name = errnoName(ret);
      errnoCounts.set(name, (errnoCounts.get(name) ?? 0) + 1);
    }
    checker.check();
    extra?.(machine);
  }
  runner.teardown();
  checker.checkQuiesced();
  return {
    steps,
    calls: runner.calls,
    errors: runner.failures,
    ops: opCounts,
    errnos: errnoCounts,
  };
}

export function count(to: Record<string, number>, key: string, n = 1): void {
  to[key] = (to[key] ?? 0) + n;
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
  /** Chunks to run at most (chunk i from seed + i). */
  readonly chunks?: number;
  /** Run only the chunks this shard owns. */
  readonly shard?: Shard;
  /** Stop early after this many milliseconds (the budget is then partly spent). */
  readonly timeMs?: number;
  readonly maxLength?: number;
  readonly extra?: ExtraInvariant;
}

export interface FuzzUapiResult extends Counts {
  /** Coverage over every program: steps per op kind, and ops per errno they ended with. */
  readonly ops: Record<string, number>;
  readonly errnos: Record<string, number>;
  /** Programs run, fast-check's shrinking runs included; chunks started. */
  runs: number;
  chunks: number;
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
    for (const [k, n] of s.ops) count(stats.ops, k, n);
    for (const [k, n] of s.errnos) count(stats.errnos, k, n);
  });
}

function emptyStats(): FuzzUapiResult {
  return {
    steps: 0,
    calls: 0,
    errors: 0,
    ops: {},
    errnos: {},
    runs: 0,
    chunks: 0,
    ms: 0,
    failure: undefined,
  };
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
  const chunks = opts.chunks ?? Number.POSITIVE_INFINITY;
  for (
    let chunk = 0;
    chunk < chunks && stats.steps < opts.steps && performance.now() < deadline;
    chunk++
  ) {
    if (opts.shard && !ownsUnit(opts.shard, chunk)) continue;
    const seed = opts.seed + chunk;
    stats.chunks++;
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
