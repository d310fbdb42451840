/**
 * The scenario engine. A scenario is a script of named steps, each an action by one actor (the
 * guest, the VMM, a device or the host kernel) on a freshly built machine (the
 * world). After every step the engine runs the world's invariant checkers and its DMA probes,
 * takes a snapshot for the views, and keeps the trace events the kernel emitted during the step.
 * Runs are deterministic, so "open at step 7" is "rebuild the world and run steps 0..7".
 *
 * A step passes when its action returns (an expected errno is asserted inside the action with
 * `expectErrno`), its probe expectations hold and no invariant is broken. The CLI and the web page
 * are two faces over this one engine.
 */
import { type Kernel, type TraceRecord, isKernelError, errnoName } from "@x/kernel";
import type { Snapshot } from "./snapshot.js";

type Actor = "guest" | "vmm" | "device" | "kernel";

/** Where a probing DMA ended: RAM, a device BAR, nowhere (IOMMU fault), or a BAR it no longer owns. */
export type ProbeVerdict = "ram" | "mmio" | "fault" | "stale";

export interface ProbeResult {
  /** Stable name used by expectations, e.g. "gpu0→gpu1.bar0". */
  readonly name: string;
  readonly iova: bigint;
  readonly verdict: ProbeVerdict;
  /** What was reached or why it faulted, for people. */
  readonly detail: string;
}

/**
 * `tolerated` marks an errno the VMM expects and goes on from (QEMU's EMSGSIZE probe of the IOVA
 * ranges, EINVAL from an incompatible domain, ENOSPC from the hot-reset probe...).
 */
export type LogKind = "info" | "ioctl" | "tolerated" | "warn" | "error";

interface LogLine {
  readonly kind: LogKind;
  readonly text: string;
}

/** The machine a scenario runs on: built fresh per run, inspected after every step. */
export interface World {
  readonly kernel: Kernel;
  /** Invariant violations found now (I1..I11 and the world's own checks); empty when all hold. */
  check(): string[];
  /** The DMA probes of this world, run after every step. */
  probe(): ProbeResult[];
  snapshot(): Snapshot;
  /** Where the world's own actors (the VMM's console) write during the current step. */
  attachLog?(log: (text: string, kind: LogKind) => void): void;
}

/** One pre-copy round of a migration: the pages found dirty and sent again. */
export interface DirtyRound {
  readonly label: string;
  readonly dirtyPages: number;
}

interface StepContext<W extends World> {
  readonly world: W;
  log(text: string, kind?: LogKind): void;
  /** Record a migration round's dirty-page count on the step (the views chart them). */
  round(label: string, dirtyPages: number): void;
  /** Long actions report progress (the 1 TiB guest); the CLI draws it, the page ignores it. */
  progress(done: number, total: number, label: string): void;
}

export interface StepDef<W extends World> {
  readonly name: string;
  readonly actor: Actor;
  /** Why this step matters, one or two sentences for the reader. */
  readonly note?: string;
  run(ctx: StepContext<W>): void;
  /** Probe verdicts this step must leave behind (others are shown, not judged). */
  readonly expectProbes?: Readonly<Record<string, ProbeVerdict>>;
}

export interface ScenarioDef<W extends World = World> {
  /** Short id used by the CLI and the URL (`#scenario=flagship`). */
  readonly id: string;
  /** The scenario's number in the list (0 for the flagship, which combines several). */
  readonly number: number;
  readonly title: string;
  readonly summary: string;
  /** Long-running (progress is shown). */
  readonly long?: boolean;
  setup(): W;
  readonly steps: readonly StepDef<W>[];
}

export interface StepRecord {
  readonly index: number;
  readonly name: string;
  readonly actor: Actor;
  readonly note: string | undefined;
  readonly lines: readonly LogLine[];
  /** Migration rounds the step recorded, in order (empty for most steps). */
  readonly rounds: readonly DirtyRound[];
  readonly events: readonly TraceRecord[];
  readonly violations: readonly string[];
  readonly probes: readonly ProbeResult[];
  /** Probe expectations that did not hold, as messages. */
  readonly probeMismatches: readonly string[];
  /** The action's unexpected error, if any. */
  readonly error: string | undefined;
  readonly ok: boolean;
  readonly snapshot: Snapshot;
  readonly ms: number;
}

export interface RunOptions {
  onProgress?: (done: number, total: number, label: string) => void;
  /** Called with a step's index before its action runs. */
  onStepStart?: (index: number) => void;
  /** Called with each finished step. */
  onStep?: (record: StepRecord) => void;
}

/** A failed expectation inside a step's action. */
class ScenarioAssertion extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ScenarioAssertion";
  }
}

/** Assert `fn` fails with `errno`; returns the error's text for the log. */
export function expectErrno(fn: () => unknown, errno: number, what: string): string {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e, errno)) return e.message;
    throw e;
  }
  throw new ScenarioAssertion(`${what}: expected ${errnoName(errno)}, it succeeded`);
}

export function expect(condition: boolean, message: string): void {
  if (!condition) throw new ScenarioAssertion(message);
}

function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

/** One run of a scenario, stepped by the caller. */
export class ScenarioRun<W extends World = World> {
  readonly world: W;
  readonly records: StepRecord[] = [];
  /** Snapshot of the world before the first step. */
  readonly initial: Snapshot;

  constructor(
    readonly def: ScenarioDef<W>,
    private readonly options: RunOptions = {},
  ) {
    this.world = def.setup();
    this.initial = this.world.snapshot();
  }

  get position(): number {
    return this.records.length;
  }

  get done(): boolean {
    return this.records.length >= this.def.steps.length;
  }

  get ok(): boolean {
    return this.records.every((r) => r.ok);
  }

  /** Run the next step; throws if the scenario is finished. */
  step(): StepRecord {
    const def = this.def.steps[this.records.length];
    if (!def) throw new Error(`scenario ${this.def.id} has no step ${this.records.length}`);
    const lines: LogLine[] = [];
    const rounds: DirtyRound[] = [];
    const ctx: StepContext<W> = {
      world: this.world,
      log: (text, kind = "info") => lines.push({ kind, text }),
      round: (label, dirtyPages) => rounds.push({ label, dirtyPages }),
      progress: (done, total, label) => this.options.onProgress?.(done, total, label),
    };
    this.world.attachLog?.(ctx.log);
    this.options.onStepStart?.(this.records.length);
    const t0 = performance.now();
    let error: string | undefined;
    const { records: events } = this.world.kernel.trace.record(() => {
      try {
        def.run(ctx);
      } catch (e) {
        error = describeError(e);
        lines.push({ kind: "error", text: error });
      }
    });
    const ms = performance.now() - t0;
    const violations = this.guard(() => this.world.check(), "invariant checker");
    const probes = this.guardProbes();
    const probeMismatches: string[] = [];
    for (const [name, want] of Object.entries(def.expectProbes ?? {})) {
      const got = probes.find((p) => p.name === name);
      if (!got) probeMismatches.push(`probe ${name}: not run`);
      else if (got.verdict !== want)
        probeMismatches.push(`probe ${name}: expected ${want}, got ${got.verdict} (${got.detail})`);
    }
    const record: StepRecord = {
      index: this.records.length,
      name: def.name,
      actor: def.actor,
      note: def.note,
      lines,
      rounds,
      events,
      violations,
      probes,
      probeMismatches,
      error,
      ok: error === undefined && violations.length === 0 && probeMismatches.length === 0,
      snapshot: this.world.snapshot(),
      ms,
    };
    this.records.push(record);
    this.options.onStep?.(record);
    return record;
  }

  /** Run up to and including step `index` (or to the end). */
  runTo(index = this.def.steps.length - 1): StepRecord[] {
    while (!this.done && this.records.length <= index) this.step();
    return this.records;
  }

  private guard(fn: () => string[], what: string): string[] {
    try {
      return fn();
    } catch (e) {
      return [`${what} threw ${describeError(e)}`];
    }
  }

  private guardProbes(): ProbeResult[] {
    try {
      return this.world.probe();
    } catch (e) {
      return [{ name: "probes", iova: 0n, verdict: "fault", detail: describeError(e) }];
    }
  }
}
