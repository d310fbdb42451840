/**
 * True interleavings of the kernel's concurrent paths, on modules loaded through the dual
 * compilation (yielding-transform.ts, yielding.ts): each path runs as a generator that
 * suspends at every lock boundary lockdep reports (before an acquisition, after a release), so
 * any number of paths can be half-done at once — A's first section, B's first section, A's
 * second, B's second — which the nesting explorer (race-explorer.ts) cannot produce.
 *
 * A schedule is the sequence of scheduling decisions: at each boundary, which runnable path
 * runs its next step (up to its next boundary). A path blocked on a lock another path holds
 * (lockdep's contention hook, reached from the lock's wait loop) is not runnable until no
 * other path holds that lock (so a reader waiting behind a writer also waits for readers that
 * came after it); all unfinished paths blocked is a deadlock, reported as a failure. Boundaries reached in code running its plain form (a callback of a builtin, a
 * constructor, a getter) are not preemption points; contention there cannot wait, so such a
 * schedule is dropped as infeasible.
 *
 * Search: stateless depth-first over decisions, each schedule replayed from a fresh machine
 * (`setup`), with a preemption bound (CHESS): switching away from a path that could continue
 * is a preemption, at most `bound` per schedule; switching when the running path blocks or
 * ends is free. Within the bound the search is exhaustive unless `budget` stops it. The tests
 * use bound 1 (every standard pair in seconds); `pnpm race` defaults to 2.
 *
 * Reduction (`reduce`, on by default): sleep sets over lock-class independence. Once the
 * subtree where the running path p continued at a decision has been explored, p sleeps in the
 * subtrees where another path preempted it there, and stays asleep while the steps taken touch
 * no lock class p holds or is about to take; a decision where every runnable path sleeps ends
 * its schedule (pruned). Soundness: under the kernel's locking discipline (shared state is
 * read and written only under the lock that protects it — lockdep's assertions and the
 * invariants check that the model keeps it), two steps that hold no lock of a common class
 * touch disjoint shared state and commute, so a pruned schedule has an explored twin with the
 * same outcome: p's step moved ahead of the independent steps. Moving it costs no preemption
 * only because p was the path running at the decision: that is why a path chosen freely (at
 * the start, after a block or an end) or chosen as a preemption never sleeps, which keeps the
 * search exhaustive under the bound. Classes rather than instances make the relation coarser
 * (less reduction) but keep a path that lost one lock dependent on a path taking another lock
 * of the same class (a dma_resv of another buffer, say). A locking bug that touches state
 * under no lock of a common class breaks the premise; `reduce: false` explores every
 * interleaving within the bound (the mutant tests run both).
 *
 * Every schedule ends with the setup's `check` (quiesced paths, invariants, lockdep); any
 * exception other than a path's KernelError (a failed system call is an outcome) is a failure,
 * reported with its schedule as a string that `replayInterleaving` runs again.
 */
import { KernelError, type LockBase, type Task } from "@x/kernel";
import {
  type RaceMachine,
  type RacePath,
  type Shard,
  describeError,
  inShard,
} from "./race-explorer.js";
import { callW, wrap } from "./yielding.js";

export interface InterleaveOptions<M extends RaceMachine> {
  readonly setup: () => M;
  readonly paths: readonly RacePath<M>[];
  /** Most preemptions per schedule; default 2. */
  readonly bound?: number;
  /** Most schedules to run (every shard's, pruned ones included); default 20 000. */
  readonly budget?: number;
  /** Sleep-set reduction; default true. */
  readonly reduce?: boolean;
  readonly shard?: Shard;
  /** Called after each checked schedule with its string and failure, if any. */
  readonly onSchedule?: (schedule: string, error: string | undefined) => void;
}

interface InterleaveFailure {
  /** The schedule, as `replayInterleaving` takes it. */
  readonly schedule: string;
  readonly error: string;
}

export interface InterleaveResult {
  /** Schedules run to their end and checked. */
  readonly schedules: number;
  /** Schedules dropped: sleep-set redundant, or infeasible (contention in plain code). */
  readonly pruned: number;
  readonly exhaustive: boolean;
  readonly failures: InterleaveFailure[];
  /** Errno outcomes per path (0 = success) over the checked schedules. */
  readonly outcomes: Record<string, Record<number, number>>;
  /** Most paths seen half-done at once (holding a lock or past a boundary), any schedule. */
  readonly maxConcurrent: number;
}

/** What a path's generator yields to the scheduler. */
type Event =
  | { readonly k: "boundary"; readonly kind: "acquire" | "release"; readonly lock: LockBase }
  | { readonly k: "blocked"; readonly lock: LockBase };

interface PathState {
  readonly task: Task;
  /** `kernel.current` as the path's suspended stack left it (a kthread it switched to, say). */
  current: Task;
  gen: Generator<unknown> | undefined;
  started: boolean;
  done: boolean;
  /** The lock it waits for, or is about to take. */
  blockedOn: LockBase | undefined;
  next: LockBase | undefined;
  outcome: number;
}

/** A decision: the options offered (runnable, not asleep), the one taken. */
interface Decision {
  readonly options: readonly number[];
  readonly chosen: number;
}

/** Unwinds a schedule that cannot happen (contention where the path cannot wait). */
class Infeasible extends Error {}

/** Dropped by the sleep sets. */
class Redundant extends Error {}

interface RunResult {
  readonly decisions: Decision[];
  readonly steps: number[];
  readonly dropped: boolean;
  readonly error?: string;
  readonly outcomes: number[];
  readonly maxConcurrent: number;
}

/**
 * How one run decides. `prefix` gives the option index (into the offered options) for the
 * decisions it covers; past it, the first option. `asleepAt` holds, per decision, the options
 * already explored there: they are not offered again.
 */
interface Plan {
  readonly prefix: readonly number[];
  readonly asleepAt: ReadonlyArray<ReadonlySet<number> | undefined>;
  readonly bound: number;
  readonly reduce: boolean;
  /** Replay of a schedule string: the path to run at each step, fixed. */
  readonly forced?: readonly number[];
}

function runOnce<M extends RaceMachine>(
  opts: InterleaveOptions<M>,
  plan: Plan,
  check: boolean,
): RunResult {
  const m = opts.setup();
  const { kernel } = m;
  const { lockdep } = kernel;
  const paths: PathState[] = opts.paths.map(() => {
    const task = m.newTask();
    return {
      task,
      current: task,
      gen: undefined,
      started: false,
      done: false,
      blockedOn: undefined,
      next: undefined,
      outcome: 0,
    };
  });
  const runs = opts.paths.map((p, i) => p.prepare(m, (paths[i] as PathState).task));
  const decisions: Decision[] = [];
  const steps: number[] = [];
  let running: PathState | undefined;
  let maxConcurrent = 0;
  /** Every lock the running path's current step took or released. */
  let stepLocks = new Set<string>();
  const mine = (task: { tid: number }) => running !== undefined && task.tid === running.task.tid;

  lockdep.onBoundary = wrap(
    (_kind: "acquire" | "release", lock: LockBase, task: { tid: number }) => {
      // Reached from plain code: not a preemption point, but part of the step's footprint.
      if (mine(task)) stepLocks.add(lock.className);
    },
    function* (kind: "acquire" | "release", lock: LockBase, task: { tid: number }) {
      if (!mine(task)) return;
      if (kind === "release") stepLocks.add(lock.className);
      yield { k: "boundary", kind, lock } as Event;
    } as (...args: unknown[]) => Generator<unknown>,
  );
  lockdep.onContended = wrap(
    (lock: LockBase) => {
      throw new Infeasible(`${lock.className} contended where the path cannot wait`);
    },
    function* (lock: LockBase) {
      yield { k: "blocked", lock } as Event;
    } as (...args: unknown[]) => Generator<unknown>,
  );

  const holdsOther = (p: PathState, lock: LockBase) =>
    paths.some((q) => q !== p && lockdep.holds(lock, q.task));
  const runnable = () =>
    paths.flatMap((p, i) => (p.done || (p.blockedOn && holdsOther(p, p.blockedOn)) ? [] : [i]));
  /** The locks a path's next step may touch: what it holds and what it waits for or takes. */
  const footprintOf = (p: PathState): string[] => {
    const held = lockdep.heldBy(p.task).map((h) => h.lock.className);
    const pending = p.blockedOn ?? p.next;
    return pending ? [...held, pending.className] : held;
  };

  /** Resume `p` (start it on its first step) as the task its stack runs as. */
  const step = (p: PathState, run: unknown): IteratorResult<unknown> => {
    const prev = kernel.current;
    kernel.current = p.current;
    try {
      if (!p.started) {
        p.started = true;
        p.gen = callW(run, undefined, []);
      }
      return (p.gen as Generator<unknown>).next();
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      p.outcome = e.errno;
      return { done: true, value: undefined };
    } finally {
      p.current = kernel.current;
      kernel.current = prev;
    }
  };

  let asleep = new Set<number>();
  let preemptions = 0;
  let forcedAt = 0;
  try {
    for (;;) {
      const ready = runnable();
      if (ready.length === 0) {
        if (paths.every((p) => p.done)) break;
        throw new Error(`deadlock: every unfinished path waits for a lock another holds`);
      }
      const cur = running ? paths.indexOf(running) : -1;
      const curReady = ready.includes(cur);
      let pick: number;
      if (plan.forced) {
        pick = plan.forced[forcedAt++] ?? (curReady ? cur : (ready[0] as number));
        if (!ready.includes(pick)) throw new Infeasible();
      } else {
        // The running path first (no preemption), then the others in order.
        let options = curReady ? [cur, ...ready.filter((i) => i !== cur)] : ready;
        if (curReady && preemptions >= plan.bound) options = [cur];
        const d = decisions.length;
        const explored = plan.asleepAt[d];
        if (plan.reduce) options = options.filter((i) => !asleep.has(i) && !explored?.has(i));
        else if (explored) options = options.filter((i) => !explored.has(i));
        if (options.length === 0) throw new Redundant();
        if (options.length > 1 || explored?.size) {
          const c = plan.prefix[d] ?? 0;
          decisions.push({ options, chosen: c });
          pick = options[c] as number;
          // The running path, once its continuing here is explored, sleeps in the preempting
          // siblings (see the top comment for why only it).
          if (plan.reduce && curReady && explored?.has(cur)) asleep.add(cur);
        } else pick = options[0] as number;
      }
      if (curReady && pick !== cur) preemptions++;
      const p = paths[pick] as PathState;
      running = p;
      steps.push(pick);
      stepLocks = new Set(footprintOf(p));
      const result = step(p, runs[pick]);
      for (const h of lockdep.heldBy(p.task)) stepLocks.add(h.lock.className);
      const footprint = stepLocks;
      p.blockedOn = undefined;
      p.next = undefined;
      if (result.done) p.done = true;
      else {
        const ev = result.value as Event;
        if (ev.k === "blocked") p.blockedOn = ev.lock;
        else if (ev.kind === "acquire") p.next = ev.lock;
      }
      const half = paths.filter((q) => q.started && !q.done).length;
      if (half > maxConcurrent) maxConcurrent = half;
      if (plan.reduce && asleep.size) {
        // A sleeper wakes when this step touched a lock its next step may touch.
        const still = new Set<number>();
        for (const i of asleep) {
          const q = paths[i] as PathState;
          if (!q.done && !footprintOf(q).some((l) => footprint.has(l))) still.add(i);
        }
        asleep = still;
      }
    }
  } catch (e) {
    lockdep.onBoundary = undefined;
    lockdep.onContended = undefined;
    const outcomes = paths.map((p) => p.outcome);
    if (e instanceof Infeasible || e instanceof Redundant)
      return { decisions, steps, dropped: true, outcomes, maxConcurrent };
    return { decisions, steps, dropped: false, error: describeError(e), outcomes, maxConcurrent };
  }
  lockdep.onBoundary = undefined;
  lockdep.onContended = undefined;
  const outcomes = paths.map((p) => p.outcome);
  if (!check) return { decisions, steps, dropped: false, outcomes, maxConcurrent };
  try {
    m.check(paths.map((p) => p.task));
  } catch (e) {
    return { decisions, steps, dropped: false, error: describeError(e), outcomes, maxConcurrent };
  }
  return { decisions, steps, dropped: false, outcomes, maxConcurrent };
}

/** "a:2 b:1 a:3": run a for 2 steps, then b for 1, then a for 3 (a step ends at a boundary). */
function formatSteps(names: readonly string[], steps: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < steps.length; ) {
    let j = i;
    while (j < steps.length && steps[j] === steps[i]) j++;
    out.push(`${names[steps[i] as number]}:${j - i}`);
    i = j;
  }
  return out.join(" ");
}

function parseSteps(names: readonly string[], schedule: string): number[] {
  const steps: number[] = [];
  for (const part of schedule.split(/\s+/).filter(Boolean)) {
    const m = /^(.+):(\d+)$/.exec(part);
    const i = m ? names.indexOf(m[1] as string) : -1;
    if (!m || i < 0) throw new Error(`replay: bad schedule element ${part}`);
    for (let n = Number(m[2]); n > 0; n--) steps.push(i);
  }
  return steps;
}

/**
 * Explore the interleavings of `paths` within the preemption bound.
 * @example
 *   const r = exploreInterleavings({ setup: raceSetup(), paths: [revokePath, mapPath] });
 *   // r.failures is empty; replayInterleaving(setup, paths, r.failures[0].schedule) otherwise
 */
export function exploreInterleavings<M extends RaceMachine>(
  opts: InterleaveOptions<M>,
): InterleaveResult {
  const budget = opts.budget ?? 20_000;
  const bound = opts.bound ?? 2;
  const reduce = opts.reduce !== false;
  const names = opts.paths.map((p) => p.name);
  const failures: InterleaveFailure[] = [];
  const outcomes: Record<string, Record<number, number>> = {};
  let schedules = 0;
  let pruned = 0;
  let maxConcurrent = 0;
  let index = 0;
  let prefix: number[] = [];
  let asleepAt: Array<Set<number> | undefined> = [];
  for (;;) {
    if (index >= budget)
      return { schedules, pruned, exhaustive: false, failures, outcomes, maxConcurrent };
    const mine = inShard(index++, opts.shard);
    const r = runOnce(opts, { prefix, asleepAt, bound, reduce }, mine);
    if (r.maxConcurrent > maxConcurrent) maxConcurrent = r.maxConcurrent;
    if (mine && r.dropped) pruned++;
    else if (mine) {
      schedules++;
      r.outcomes.forEach((errno, i) => {
        const row = (outcomes[names[i] as string] ??= {});
        row[errno] = (row[errno] ?? 0) + 1;
      });
      const schedule = formatSteps(names, r.steps);
      if (r.error !== undefined) failures.push({ schedule, error: r.error });
      opts.onSchedule?.(schedule, r.error);
    }
    // Backtrack: the deepest decision with an option left; what it already ran sleeps there.
    const ds = r.decisions;
    let d = ds.length - 1;
    while (d >= 0 && (ds[d] as Decision).chosen + 1 >= (ds[d] as Decision).options.length) d--;
    if (d < 0) return { schedules, pruned, exhaustive: true, failures, outcomes, maxConcurrent };
    const at = ds[d] as Decision;
    const explored = new Set(asleepAt[d] ?? []);
    for (let i = 0; i <= at.chosen; i++) explored.add(at.options[i] as number);
    // Options are re-offered minus the explored ones, so the next is always the first.
    prefix = [...ds.slice(0, d).map((x) => x.chosen), 0];
    asleepAt = [...Array.from({ length: d }, (_, i) => asleepAt[i]), explored];
  }
}

/** Run `schedule` (as a failure reported it) again on a fresh machine from `setup`. */
export function replayInterleaving<M extends RaceMachine>(
  setup: () => M,
  paths: readonly RacePath<M>[],
  schedule: string,
): { infeasible: boolean; error?: string } {
  const forced = parseSteps(
    paths.map((p) => p.name),
    schedule,
  );
  const plan: Plan = {
    prefix: [],
    asleepAt: [],
    bound: Number.POSITIVE_INFINITY,
    reduce: false,
    forced,
  };
  const r = runOnce({ setup, paths }, plan, true);
  return r.error === undefined
    ? { infeasible: r.dropped }
    : { infeasible: r.dropped, error: r.error };
}
