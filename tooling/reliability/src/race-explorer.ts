/**
 * A deterministic race explorer for the kernel's concurrent paths.
 *
 * The model is synchronous: a JS stack cannot be suspended, so a path cannot be paused halfway
 * and resumed later. Instead the preemption points are the lock boundaries lockdep reports
 * (`Lockdep.onBoundary`: before every acquisition, after every release). At a boundary of the
 * running path A, the explorer may run another path B *to completion*, nested, on B's own task;
 * B's boundaries may in turn host a third path. When B needs a lock A holds (`onContended`),
 * that interleaving cannot happen this way round (B would sleep until A releases, which is a
 * later insertion point): the schedule is infeasible — a private error unwinds B and A, the
 * machine is dropped and the schedule is counted as pruned, not failed. Every schedule runs on
 * a fresh machine from the deterministic `setup`, so schedules are independent and replayable.
 *
 * Enumeration is a depth-first search over decision points, stateless (each schedule replays
 * its prefix of choices from scratch): at the top level, which not-started path runs next; at
 * each boundary of the innermost running path, continue or start one not-started path there.
 * Two paths give every boundary of A × {B there} plus both serial orders, and symmetrically;
 * three paths give the recursive choices. The search is exhaustive unless `budget` stops it.
 *
 * Partial-order reduction (`reduce`, on by default; sound under the kernel's own locking
 * discipline — shared state is touched only under the lock that protects it):
 * 1. Lock classes: B is only offered at a boundary of a lock whose class B itself takes (learned
 *    from a solo run of B on a fresh machine). Between two such boundaries A touches only state
 *    B cannot touch, so any other insertion point is equivalent to an offered one (or, inside
 *    a section of a lock B takes, infeasible).
 * 2. Unchanged state: an acquire boundary right after a release boundary where paths were
 *    offered is skipped when the state fingerprint (the machine's `fingerprint()`, the locks
 *    the running task holds, the paths still to start) is the same: between the two, A held
 *    no lock B takes and changed nothing, so B sees the same world at both and A's segment
 *    cannot observe B. Only release→acquire gaps are merged: the section between an acquire
 *    and its release may *read* what B writes (a check in one section, an act in the next —
 *    the lost update) even when it changes nothing, so both its ends stay decision points.
 * With `reduce: false` every boundary is a decision point (the tests compare both).
 *
 * Coverage: a started path runs whole inside one gap of its host, so the schedules are the
 * interleavings in which each path's critical sections all fall between two consecutive
 * boundaries of the path hosting it. Interleavings that spread one path's sections over
 * several gaps of another (both half-done at once, each holding a different lock: the
 * pipeline of two check-then-act paths) are not generated here; race-interleave.ts generates
 * them, on modules loaded with generator twins, within a preemption bound. This explorer needs
 * no transform, so it is the one the reliability report runs.
 *
 * `shard` splits a search between processes: see `inShard`.
 *
 * After every feasible schedule the machine must be quiescent and correct: the setup's `check`
 * (invariants I1–I11, lockdep, and the rest of the reliability checker) runs, and any
 * exception other than a path's KernelError (a failed system call is an outcome) is a failure
 * with its replayable schedule.
 */
import { KernelError, type Kernel, type LockBase, type Task } from "@x/kernel";
import { standardRaceScenarios } from "./race-paths.js";

/** What a schedule runs on: one fresh machine per schedule. */
export interface RaceMachine {
  readonly kernel: Kernel;
  /** New tasks for the paths are made in this process (they share its descriptors). */
  newTask(): Task;
  /** Throws when an invariant is broken; `tasks` are the paths' tasks (none may hold a lock). */
  check(tasks: readonly Task[]): void;
  /** A cheap summary of the state the paths change (for reduction 2). */
  fingerprint(): string;
}

/** One kernel path: `prepare` (hooks off) sets it up on its task and returns the run. */
export interface RacePath<M extends RaceMachine> {
  readonly name: string;
  prepare(machine: M, task: Task): () => void;
}

/** Where a path was started: at the top level, or at a boundary of a running host path. */
interface ScheduleStep {
  readonly path: string;
  readonly at?: {
    readonly host: string;
    /** Ordinal of the host's boundary (0-based, counting every boundary of its task). */
    readonly boundary: number;
    readonly kind: "acquire" | "release";
    readonly lock: string;
  };
}

/** A replayable schedule: paths in the order they were started, each with its place. */
export type Schedule = readonly ScheduleStep[];

interface RaceFailure {
  readonly schedule: Schedule;
  readonly error: string;
}

export interface ExploreOptions<M extends RaceMachine> {
  readonly setup: () => M;
  readonly paths: readonly RacePath<M>[];
  /** Most schedules to run (feasible or pruned, every shard's); default 20 000. */
  readonly budget?: number;
  readonly reduce?: boolean;
  /** Called after each feasible schedule with its description and failure, if any. */
  readonly onSchedule?: (schedule: Schedule, error: string | undefined) => void;
  /** Only the schedules of shard `k` of `n` (1-based k); see `inShard`. */
  readonly shard?: Shard;
}

/** Shard k (1 ≤ k ≤ n) of n of a search. */
export interface Shard {
  readonly k: number;
  readonly n: number;
}

/**
 * Schedule `i` (0-based, in the search's deterministic order, pruned ones included) belongs to
 * shard k of n when i % n === k - 1. The search is stateless, so every shard still walks the
 * whole tree (a schedule's run is what reveals the choices after it); a schedule of another
 * shard is run up to its end but neither checked nor counted, so the shards' failures and
 * schedules add up to the unsharded search's.
 */
export function inShard(i: number, shard: Shard | undefined): boolean {
  if (!shard) return true;
  if (!(Number.isInteger(shard.n) && shard.n >= 1 && shard.k >= 1 && shard.k <= shard.n))
    throw new RangeError(`shard ${shard.k}/${shard.n}`);
  return i % shard.n === shard.k - 1;
}

/** Parse "k/n" (the CLIs' --shard). */
export function parseShard(text: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text);
  const shard = m ? { k: Number(m[1]), n: Number(m[2]) } : undefined;
  if (!shard) throw new RangeError(`--shard wants k/n, got ${text}`);
  inShard(0, shard);
  return shard;
}

export interface ExploreResult {
  /** Feasible schedules run and checked. */
  readonly schedules: number;
  /** Infeasible schedules (a path contended on a lock its host held), dropped. */
  readonly pruned: number;
  /** Did the search finish before the budget ran out? */
  readonly exhaustive: boolean;
  readonly failures: RaceFailure[];
  /** Errno outcomes seen per path (0 = success), over all feasible schedules. */
  readonly outcomes: Record<string, Record<number, number>>;
}

/** Unwinds an interleaving that cannot happen; never escapes the explorer. */
class Infeasible extends Error {}

/** How one run chooses: replay `prefix`, then take the first option everywhere. */
interface Chooser {
  /** `where`: the running path and its boundary ordinal; undefined at the top level. */
  choose(options: readonly number[], where?: { host: number; boundary: number }): number;
}

interface Running {
  readonly index: number;
  readonly task: Task;
  boundaries: number;
  /** The last boundary where paths were offered: its kind and fingerprint key. */
  lastOffered: { kind: "acquire" | "release"; key: string } | undefined;
}

const CONTINUE = -1;

/** Run one schedule on a fresh machine. Returns what happened; never throws. */
function runOnce<M extends RaceMachine>(
  opts: ExploreOptions<M>,
  classes: ReadonlyArray<ReadonlySet<string>> | undefined,
  chooser: Chooser,
  check = true,
): { steps: ScheduleStep[]; infeasible: boolean; error?: string; outcomes: number[] } {
  const m = opts.setup();
  const { kernel } = m;
  const { paths } = opts;
  const tasks = paths.map(() => m.newTask());
  const runs = paths.map((p, i) => p.prepare(m, tasks[i] as Task));
  const started = paths.map(() => false);
  const outcomes = paths.map(() => 0);
  const steps: ScheduleStep[] = [];
  const stack: Running[] = [];
  let aborting = false;

  const notStarted = () => paths.flatMap((_, i) => (started[i] ? [] : [i]));

  const start = (index: number, at: ScheduleStep["at"]): void => {
    started[index] = true;
    const path = paths[index] as RacePath<M>;
    steps.push(at ? { path: path.name, at } : { path: path.name });
    const task = tasks[index] as Task;
    stack.push({ index, task, boundaries: 0, lastOffered: undefined });
    try {
      kernel.runAs(task, runs[index] as () => void);
    } catch (e) {
      if (!(e instanceof KernelError) || aborting) throw e;
      outcomes[index] = e.errno;
    } finally {
      stack.pop();
    }
  };

  const stateKey = (top: Running, candidates: readonly number[]): string => {
    const held = kernel.lockdep.heldBy(top.task).map((h) => h.key);
    return `${m.fingerprint()}|${held.join(",")}|${candidates.join(",")}`;
  };

  const onBoundary = (kind: "acquire" | "release", lock: LockBase, task: { tid: number }) => {
    const top = stack[stack.length - 1];
    if (aborting || !top || top.task.tid !== task.tid) return;
    const ordinal = top.boundaries++;
    let candidates = notStarted();
    if (classes) candidates = candidates.filter((q) => classes[q]?.has(lock.className));
    if (candidates.length === 0) return;
    if (opts.reduce !== false) {
      // The key is only ever compared from an acquire with the release just before it.
      const last = top.lastOffered;
      const needed = kind === "release" || last?.kind === "release";
      const key = needed ? stateKey(top, candidates) : "";
      if (kind === "acquire" && last?.kind === "release" && last.key === key) return;
      top.lastOffered = { kind, key };
    }
    const pick = chooser.choose([CONTINUE, ...candidates], { host: top.index, boundary: ordinal });
    if (pick === CONTINUE) return;
    const host = paths[top.index] as RacePath<M>;
    start(pick, { host: host.name, boundary: ordinal, kind, lock: lock.className });
  };

  kernel.lockdep.onBoundary = onBoundary;
  kernel.lockdep.onContended = () => {
    aborting = true;
    throw new Infeasible();
  };
  try {
    for (let left = notStarted(); left.length; left = notStarted())
      start(chooser.choose(left), undefined);
  } catch (e) {
    kernel.lockdep.onBoundary = undefined;
    kernel.lockdep.onContended = undefined;
    if (aborting) return { steps, infeasible: true, outcomes };
    return { steps, infeasible: false, error: describeError(e), outcomes };
  }
  kernel.lockdep.onBoundary = undefined;
  kernel.lockdep.onContended = undefined;
  if (!check) return { steps, infeasible: false, outcomes };
  try {
    m.check(tasks);
  } catch (e) {
    return { steps, infeasible: false, error: describeError(e), outcomes };
  }
  return { steps, infeasible: false, outcomes };
}

/** One line for a schedule's failure. */
export function describeError(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Lock classes each path takes when it runs alone on a fresh machine. */
function soloClasses<M extends RaceMachine>(opts: ExploreOptions<M>): Array<Set<string>> {
  return opts.paths.map((path) => {
    const m = opts.setup();
    const task = m.newTask();
    const run = path.prepare(m, task);
    const seen = new Set<string>();
    m.kernel.lockdep.onBoundary = (kind, lock, t) => {
      if (kind === "acquire" && t.tid === task.tid) seen.add(lock.className);
    };
    try {
      m.kernel.runAs(task, run);
    } catch {
      // Whatever a path does alone is reported by the schedules that run it.
    } finally {
      m.kernel.lockdep.onBoundary = undefined;
    }
    return seen;
  });
}

/**
 * Explore the interleavings of `paths` (2 or 3 of them in practice) on machines from `setup`.
 * @example
 *   const r = exploreRaces({ setup: raceSetup, paths: [revokePath, domainAddPath] });
 *   // r.failures is empty; r.schedules > 0
 */
export function exploreRaces<M extends RaceMachine>(opts: ExploreOptions<M>): ExploreResult {
  const budget = opts.budget ?? 20_000;
  const classes = opts.reduce === false ? undefined : soloClasses(opts);
  const failures: RaceFailure[] = [];
  const outcomes: Record<string, Record<number, number>> = {};
  let schedules = 0;
  let pruned = 0;
  let index = 0;
  // Depth-first over decision points: replay `prefix`, record the option counts met.
  let prefix: number[] = [];
  for (;;) {
    if (index >= budget) {
      return { schedules, pruned, exhaustive: false, failures, outcomes };
    }
    const counts: number[] = [];
    const chosen: number[] = [];
    const chooser: Chooser = {
      choose(options) {
        const i = chosen.length;
        const c = prefix[i] ?? 0;
        if (c >= options.length) throw new Error(`race explorer: replay diverged at decision ${i}`);
        counts.push(options.length);
        chosen.push(c);
        return options[c] as number;
      },
    };
    const mine = inShard(index++, opts.shard);
    const r = runOnce(opts, classes, chooser, mine);
    // Another shard's schedule is run only to learn the choices that follow it.
    if (mine && r.infeasible) pruned++;
    else if (mine) {
      schedules++;
      r.outcomes.forEach((errno, i) => {
        const name = opts.paths[i]?.name ?? String(i);
        const row = (outcomes[name] ??= {});
        row[errno] = (row[errno] ?? 0) + 1;
      });
      if (r.error !== undefined) failures.push({ schedule: r.steps, error: r.error });
      opts.onSchedule?.(r.steps, r.error);
    }
    let d = chosen.length - 1;
    while (d >= 0 && (chosen[d] as number) + 1 >= (counts[d] as number)) d--;
    if (d < 0) return { schedules, pruned, exhaustive: true, failures, outcomes };
    prefix = [...chosen.slice(0, d), (chosen[d] as number) + 1];
  }
}

/**
 * Run one schedule again (as `exploreRaces` reported it) on a fresh machine: paths start in
 * the listed order, each at the top level or at the given boundary of its host.
 */
export function replaySchedule<M extends RaceMachine>(
  setup: () => M,
  paths: readonly RacePath<M>[],
  schedule: Schedule,
): { infeasible: boolean; error?: string } {
  const indexOf = (name: string): number => {
    const i = paths.findIndex((p) => p.name === name);
    if (i < 0) throw new Error(`replay: unknown path ${name}`);
    return i;
  };
  let next = 0;
  // Ordinals count every boundary whatever the reduction, so replay offers them all.
  const r = runOnce({ setup, paths, reduce: false }, undefined, {
    choose(options, where) {
      const step = schedule[next];
      if (!step) return options[0] as number;
      const matches = where
        ? step.at !== undefined &&
          paths[where.host]?.name === step.at.host &&
          where.boundary === step.at.boundary
        : step.at === undefined;
      if (!matches) return where ? CONTINUE : (options[0] as number);
      next++;
      return indexOf(step.path);
    },
  });
  return r.error === undefined
    ? { infeasible: r.infeasible }
    : { infeasible: r.infeasible, error: r.error };
}

/** A one-line rendering of a schedule, for reports and test names. */
export function formatSchedule(schedule: Schedule): string {
  return schedule
    .map((s) =>
      s.at ? `${s.path}@${s.at.host}#${s.at.boundary}(${s.at.kind} ${s.at.lock})` : s.path,
    )
    .join(" ; ");
}

interface RaceScenarioSummary {
  readonly name: string;
  readonly schedules: number;
  readonly pruned: number;
  readonly exhaustive: boolean;
  readonly failures: number;
  readonly ms: number;
}

export interface RaceExplorerSummary {
  readonly scenarios: RaceScenarioSummary[];
  /** Totals over the standard scenarios (the model as it is: failures must be 0). */
  readonly schedules: number;
  readonly pruned: number;
  readonly failures: number;
  /** The tracker mutant was caught in every scenario it is expected in, with these schedules. */
  readonly mutantCaught: boolean;
  readonly mutantSchedules: string[];
}

/** Scenarios where the tracker mutant must be caught (revoke between fill and late track). */
const MUTANT_SCENARIOS = ["revoke×map", "revoke×domain-add"];

/**
 * The standard race set for the reliability report: every standard scenario explored on the
 * model (failures must be 0), then the tracker mutant, which must be caught.
 */
export function raceExplorerSummary(budget?: number): RaceExplorerSummary {
  const scenarios: RaceScenarioSummary[] = [];
  for (const s of standardRaceScenarios()) {
    const t0 = performance.now();
    const r = exploreRaces({ setup: s.setup, paths: s.paths, ...(budget ? { budget } : {}) });
    scenarios.push({
      name: s.name,
      schedules: r.schedules,
      pruned: r.pruned,
      exhaustive: r.exhaustive,
      failures: r.failures.length,
      ms: Math.round(performance.now() - t0),
    });
  }
  const mutantSchedules: string[] = [];
  let mutantCaught = true;
  for (const s of standardRaceScenarios({ trackerMutant: true })) {
    if (!MUTANT_SCENARIOS.includes(s.name)) continue;
    const r = exploreRaces({ setup: s.setup, paths: s.paths });
    const first = r.failures[0];
    if (!first) mutantCaught = false;
    else mutantSchedules.push(`${s.name}: ${formatSchedule(first.schedule)}`);
  }
  const sum = (k: "schedules" | "pruned" | "failures") => scenarios.reduce((n, s) => n + s[k], 0);
  return {
    scenarios,
    schedules: sum("schedules"),
    pruned: sum("pruned"),
    failures: sum("failures"),
    mutantCaught,
    mutantSchedules,
  };
}
