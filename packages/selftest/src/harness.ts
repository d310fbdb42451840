/**
 * A kselftest_harness.h equivalent.
 *
 * A harness holds fixtures; a fixture holds a state factory (`self`), optional setup and
 * teardown, a list of variants and a list of test bodies. Every (variant, test) pair is one
 * instance named `fixture.variant.test` (or `fixture.test` without variants), and every instance
 * runs on a brand-new system built by the harness's factory: the model's equivalent of the forked
 * child the C harness runs each test in, except that nothing, not even kernel state, is shared.
 *
 * Flow of one instance: system → self → setup → body → teardown. ASSERT_* throws and ends the
 * current phase; EXPECT_* records a failure and continues; SKIP ends the phase as skipped.
 * Teardown runs exactly once once setup completed, whether the body passed, failed an ASSERT,
 * skipped or threw. Decision (as in the C harness, where `no_teardown` is cleared only after a
 * setup that did not exit): a setup that ASSERTs or SKIPs gets no body and no teardown.
 *
 * Any other exception (a KernelWarning standing for a kernel WARN, a TypeError) fails the
 * instance like a kernel splat would.
 *
 * A process a test forks (test-fork.ts) gets its own handle on the same result and the same
 * teardown-once flag, as the C harness keeps `_metadata` and `no_teardown` in shared memory:
 * its failures fail the instance, and its failing ASSERT runs the teardown unless another
 * process of the test already did.
 */

/** Thrown by ASSERT_* and caught by the runner: the phase stops here. */
class AssertAbort extends Error {
  constructor() {
    super("ASSERT failed");
    this.name = "AssertAbort";
  }
}

/** Thrown by SKIP(): the phase stops and the instance is reported as skipped. */
class SkipSignal extends Error {
  constructor(readonly reason: string) {
    super(`SKIP: ${reason}`);
    this.name = "SkipSignal";
  }
}

export type Status = "pass" | "fail" | "skip";

/** Integers as the C harness compares them: numbers and bigints mix, booleans count as 0/1. */
export type Scalar = number | bigint | boolean | null | undefined;

function toBig(v: Scalar): bigint | undefined {
  if (typeof v === "bigint") return v;
  if (typeof v === "boolean") return v ? 1n : 0n;
  if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
  return undefined;
}

function compare(a: Scalar, b: Scalar): number | undefined {
  const x = toBig(a);
  const y = toBig(b);
  if (x !== undefined && y !== undefined) return x < y ? -1 : x > y ? 1 : 0;
  if (typeof a === "number" && typeof b === "number") return a < b ? -1 : a > b ? 1 : 0;
  if (a === b) return 0;
  return undefined;
}

function show(v: Scalar): string {
  return typeof v === "bigint" ? `${v} (0x${v.toString(16)})` : String(v);
}

type Rel = "==" | "!=" | "<" | "<=" | ">" | ">=";

function holds(rel: Rel, a: Scalar, b: Scalar): boolean {
  const c = compare(a, b);
  if (c === undefined) return rel === "!=";
  switch (rel) {
    case "==":
      return c === 0;
    case "!=":
      return c !== 0;
    case "<":
      return c < 0;
    case "<=":
      return c <= 0;
    case ">":
      return c > 0;
    case ">=":
      return c >= 0;
  }
}

/**
 * The per-instance handle (the C `_metadata`), carrying the instance's `self`, `variant` and
 * system so helpers written like the kernel's macros need only this one argument.
 */
/**
 * What the C harness keeps in shared memory for one instance: the result (`_metadata`'s
 * exit_code) and `no_teardown`, so a process the test forks reports into the same result and
 * the fixture teardown runs once among all of them.
 */
interface SharedResult<Ctx> {
  passed: boolean;
  readonly log: string[];
  noTeardown: boolean;
  /** Runs the fixture teardown in the context of the process that calls it. */
  teardown?(ctx: Ctx): void;
}

export class TestMetadata<Self = unknown, Variant = unknown, Sys = unknown> {
  skipped = false;
  skipReason = "";
  private readonly shared: SharedResult<TestMetadata<Self, Variant, Sys>>;

  constructor(
    readonly name: string,
    readonly sys: Sys,
    readonly self: Self,
    readonly variant: Variant,
    shared?: SharedResult<TestMetadata<Self, Variant, Sys>>,
  ) {
    this.shared = shared ?? { passed: true, log: [], noTeardown: true };
  }

  /** False once any ASSERT/EXPECT failed or the instance threw, in this or a forked process. */
  get passed(): boolean {
    return this.shared.passed;
  }
  set passed(v: boolean) {
    this.shared.passed = v;
  }

  /** Diagnostics in the order they were produced (TH_LOG lines and failed checks). */
  get log(): string[] {
    return this.shared.log;
  }

  /**
   * The handle of a process the test forked: the child's own system view (its libc) and its
   * own copy of `self`, reporting into this instance's result.
   */
  forkChild(sys: Sys): TestMetadata<Self, Variant, Sys> {
    const self =
      this.self !== null && typeof this.self === "object"
        ? (Object.assign(Object.create(Object.getPrototypeOf(this.self)), this.self) as Self)
        : this.self;
    return new TestMetadata(`${this.name} (child)`, sys, self, this.variant, this.shared);
  }

  /**
   * Runs part of a forked child's body; false when it stopped the child. An ASSERT in a child
   * runs the fixture teardown there, unless some process of the test already ran it (__bail
   * calls teardown_fn before abort()); an exception fails the instance.
   */
  childStep(step: () => void): boolean {
    try {
      step();
      return true;
    } catch (e) {
      if (e instanceof AssertAbort) this.teardownOnce();
      else if (e instanceof SkipSignal) {
        this.skipped = true;
        this.skipReason = e.reason;
      } else {
        this.passed = false;
        this.log.push(`${this.name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
      return false;
    }
  }

  /** The fixture teardown, run by whichever process of the test gets here first. */
  teardownOnce(): void {
    if (this.shared.noTeardown) return;
    this.shared.noTeardown = true;
    this.shared.teardown?.(this);
  }

  /** Arms the teardown once setup completed (`*no_teardown = false` in the C wrapper). */
  armTeardown(teardown: (ctx: TestMetadata<Self, Variant, Sys>) => void): void {
    this.shared.teardown = teardown;
    this.shared.noTeardown = false;
  }

  /** TH_LOG: a diagnostic line, printed as a TAP comment. */
  TH_LOG(msg: string): void {
    this.log.push(msg);
  }

  private check(stop: boolean, rel: Rel, expected: Scalar, seen: Scalar, msg?: string): boolean {
    if (holds(rel, expected, seen)) return true;
    this.passed = false;
    this.log.push(
      `${this.name}: Expected ${show(expected)} ${rel} ${show(seen)}${msg ? ` (${msg})` : ""}`,
    );
    if (stop) throw new AssertAbort();
    return false;
  }

  ASSERT_EQ(expected: Scalar, seen: Scalar, msg?: string): void {
    this.check(true, "==", expected, seen, msg);
  }
  ASSERT_NE(expected: Scalar, seen: Scalar, msg?: string): void {
    this.check(true, "!=", expected, seen, msg);
  }
  ASSERT_LT(expected: Scalar, seen: Scalar, msg?: string): void {
    this.check(true, "<", expected, seen, msg);
  }
  ASSERT_LE(expected: Scalar, seen: Scalar, msg?: string): void {
    this.check(true, "<=", expected, seen, msg);
  }
  ASSERT_GT(expected: Scalar, seen: Scalar, msg?: string): void {
    this.check(true, ">", expected, seen, msg);
  }
  ASSERT_GE(expected: Scalar, seen: Scalar, msg?: string): void {
    this.check(true, ">=", expected, seen, msg);
  }
  ASSERT_TRUE(seen: Scalar, msg?: string): void {
    this.check(true, "!=", 0, seen ?? 0, msg);
  }
  ASSERT_FALSE(seen: Scalar, msg?: string): void {
    this.check(true, "==", 0, seen ?? 0, msg);
  }
  ASSERT_NULL(seen: unknown, msg?: string): void {
    this.check(true, "==", null, seen === null || seen === undefined ? null : 1, msg);
  }
  EXPECT_EQ(expected: Scalar, seen: Scalar, msg?: string): boolean {
    return this.check(false, "==", expected, seen, msg);
  }
  EXPECT_NE(expected: Scalar, seen: Scalar, msg?: string): boolean {
    return this.check(false, "!=", expected, seen, msg);
  }
  EXPECT_LT(expected: Scalar, seen: Scalar, msg?: string): boolean {
    return this.check(false, "<", expected, seen, msg);
  }
  EXPECT_LE(expected: Scalar, seen: Scalar, msg?: string): boolean {
    return this.check(false, "<=", expected, seen, msg);
  }
  EXPECT_GT(expected: Scalar, seen: Scalar, msg?: string): boolean {
    return this.check(false, ">", expected, seen, msg);
  }
  EXPECT_GE(expected: Scalar, seen: Scalar, msg?: string): boolean {
    return this.check(false, ">=", expected, seen, msg);
  }
  EXPECT_TRUE(seen: Scalar, msg?: string): boolean {
    return this.check(false, "!=", 0, seen ?? 0, msg);
  }
  EXPECT_FALSE(seen: Scalar, msg?: string): boolean {
    return this.check(false, "==", 0, seen ?? 0, msg);
  }

  /** SKIP(return, reason): the current phase ends and the instance reports as skipped. */
  SKIP(reason: string): never {
    throw new SkipSignal(reason);
  }
}

export type Body<Self, Variant, Sys> = (
  self: Self,
  variant: Variant,
  _metadata: TestMetadata<Self, Variant, Sys>,
) => void;

/** Phantom carrier of a variant type; `FIXTURE_VARIANT<V>()` is passed to `FIXTURE`. */
export interface VariantDecl<V> {
  readonly __variant?: V;
}

export class Fixture<Self, Variant, Sys> {
  setup: Body<Self, Variant, Sys> | undefined;
  teardown: Body<Self, Variant, Sys> | undefined;
  readonly variants: Array<{ readonly name: string; readonly value: Variant }> = [];
  readonly tests: Array<{ readonly name: string; readonly body: Body<Self, Variant, Sys> }> = [];

  constructor(
    readonly name: string,
    readonly init: () => Self,
  ) {}
}

export interface InstanceResult {
  readonly name: string;
  readonly status: Status;
  readonly log: readonly string[];
  readonly skipReason: string;
  /** Milliseconds spent in setup, body and teardown (system creation included). */
  readonly ms: number;
}

/** One runnable (fixture, variant, test) combination. */
export interface Instance {
  readonly name: string;
  readonly fixture: string;
  readonly variant: string | undefined;
  readonly test: string;
  run(): InstanceResult;
}

/** Runs one phase; false when it stopped (ASSERT, SKIP or an exception). */
function phase<Self, Variant, Sys>(
  t: TestMetadata<Self, Variant, Sys>,
  fn: Body<Self, Variant, Sys> | undefined,
): boolean {
  if (!fn) return true;
  try {
    fn(t.self, t.variant, t);
    return true;
  } catch (e) {
    if (e instanceof SkipSignal) {
      t.skipped = true;
      t.skipReason = e.reason;
    } else if (!(e instanceof AssertAbort)) {
      t.passed = false;
      t.log.push(`${t.name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
    return false;
  }
}

/** A set of fixtures sharing one system factory (what a kselftest binary is). */
export class Harness<Sys> {
  readonly fixtures: Array<Fixture<unknown, unknown, Sys>> = [];

  constructor(readonly createSystem: () => Sys) {}

  /** FIXTURE(name) { fields }: `init` returns a fresh self for every instance. */
  FIXTURE<Self, Variant = undefined>(
    name: string,
    init: () => Self,
    _variant?: VariantDecl<Variant>,
  ): Fixture<Self, Variant, Sys> {
    if (this.fixtures.some((f) => f.name === name)) throw new Error(`fixture ${name} twice`);
    const f = new Fixture<Self, Variant, Sys>(name, init);
    this.fixtures.push(f as unknown as Fixture<unknown, unknown, Sys>);
    return f;
  }

  FIXTURE_SETUP<Self, Variant>(f: Fixture<Self, Variant, Sys>, fn: Body<Self, Variant, Sys>): void {
    f.setup = fn;
  }

  FIXTURE_TEARDOWN<Self, Variant>(
    f: Fixture<Self, Variant, Sys>,
    fn: Body<Self, Variant, Sys>,
  ): void {
    f.teardown = fn;
  }

  FIXTURE_VARIANT_ADD<Self, Variant>(
    f: Fixture<Self, Variant, Sys>,
    name: string,
    value: Variant,
  ): void {
    if (f.variants.some((v) => v.name === name)) throw new Error(`variant ${f.name}.${name} twice`);
    f.variants.push({ name, value: Object.freeze(value) });
  }

  TEST_F<Self, Variant>(
    f: Fixture<Self, Variant, Sys>,
    name: string,
    body: Body<Self, Variant, Sys>,
  ): void {
    if (f.tests.some((t) => t.name === name)) throw new Error(`test ${f.name}.${name} twice`);
    f.tests.push({ name, body });
  }

  /** TEST(name): a test on the implicit `global` fixture (empty self, no setup). */
  TEST(name: string, body: (_metadata: TestMetadata<undefined, undefined, Sys>) => void): void {
    let g = this.fixtures.find((f) => f.name === "global") as
      | Fixture<undefined, undefined, Sys>
      | undefined;
    g ??= this.FIXTURE("global", () => undefined);
    this.TEST_F(g, name, (_self, _variant, t) => body(t));
  }

  /** Every instance in registration order: fixtures, then variants, then tests. */
  instances(): Instance[] {
    const out: Instance[] = [];
    for (const f of this.fixtures) {
      const variants = f.variants.length ? f.variants : [undefined];
      for (const v of variants) {
        for (const t of f.tests) {
          const name = v ? `${f.name}.${v.name}.${t.name}` : `${f.name}.${t.name}`;
          out.push({
            name,
            fixture: f.name,
            variant: v?.name,
            test: t.name,
            run: () => this.runOne(name, f, v?.value, t.body),
          });
        }
      }
    }
    return out;
  }

  private runOne(
    name: string,
    f: Fixture<unknown, unknown, Sys>,
    variant: unknown,
    body: Body<unknown, unknown, Sys>,
  ): InstanceResult {
    const t0 = performance.now();
    const t = new TestMetadata(name, this.createSystem(), f.init(), variant);
    if (phase(t, f.setup) && !t.skipped && t.passed) {
      t.armTeardown((ctx) => phase(ctx, f.teardown));
      phase(t, body);
      t.teardownOnce();
    }
    const status: Status = !t.passed ? "fail" : t.skipped ? "skip" : "pass";
    return { name, status, log: t.log, skipReason: t.skipReason, ms: performance.now() - t0 };
  }
}

/** FIXTURE_VARIANT(F) { fields }: declares the variant type of the fixture it is passed to. */
export function FIXTURE_VARIANT<V>(): VariantDecl<V> {
  return {};
}

/**
 * A harness plus its macros as free functions, so suites read like the C file:
 * `const { FIXTURE, TEST_F } = kselftest(createSystem)`.
 */
export function kselftest<Sys>(createSystem: () => Sys) {
  const h = new Harness(createSystem);
  return {
    harness: h,
    FIXTURE: h.FIXTURE.bind(h) as Harness<Sys>["FIXTURE"],
    FIXTURE_SETUP: h.FIXTURE_SETUP.bind(h) as Harness<Sys>["FIXTURE_SETUP"],
    FIXTURE_TEARDOWN: h.FIXTURE_TEARDOWN.bind(h) as Harness<Sys>["FIXTURE_TEARDOWN"],
    FIXTURE_VARIANT,
    FIXTURE_VARIANT_ADD: h.FIXTURE_VARIANT_ADD.bind(h) as Harness<Sys>["FIXTURE_VARIANT_ADD"],
    TEST_F: h.TEST_F.bind(h) as Harness<Sys>["TEST_F"],
    TEST: h.TEST.bind(h) as Harness<Sys>["TEST"],
  };
}

export interface RunSummary {
  readonly results: InstanceResult[];
  readonly pass: number;
  readonly fail: number;
  readonly skip: number;
  readonly ms: number;
}

/**
 * Run instances and print kselftest-style TAP through `write` (one line per call).
 * `filter` keeps instances whose name it accepts.
 */
export function runTap(
  instances: readonly Instance[],
  write: (line: string) => void,
  filter: (name: string) => boolean = () => true,
): RunSummary {
  const chosen = instances.filter((i) => filter(i.name));
  const t0 = performance.now();
  const results: InstanceResult[] = [];
  write("TAP version 13");
  write(`1..${chosen.length}`);
  write(`# Starting ${chosen.length} tests`);
  chosen.forEach((inst, i) => {
    write(`#  RUN           ${inst.name} ...`);
    const r = inst.run();
    results.push(r);
    for (const line of r.log) for (const l of line.split("\n")) write(`# ${l}`);
    const n = i + 1;
    if (r.status === "pass") {
      write(`#            OK  ${inst.name}`);
      write(`ok ${n} ${inst.name}`);
    } else if (r.status === "skip") {
      write(`#      SKIP      ${r.skipReason}`);
      write(`#            OK  ${inst.name}`);
      write(`ok ${n} ${inst.name} # SKIP ${r.skipReason}`);
    } else {
      write(`#     FAIL            ${inst.name}`);
      write(`not ok ${n} ${inst.name}`);
    }
  });
  const pass = results.filter((r) => r.status === "pass").length;
  const fail = results.filter((r) => r.status === "fail").length;
  const skip = results.filter((r) => r.status === "skip").length;
  const ms = performance.now() - t0;
  write(`# ${fail ? "FAILED" : "PASSED"}: ${pass + skip} / ${chosen.length} tests passed.`);
  write(`# Totals: pass:${pass} fail:${fail} xfail:0 xpass:0 skip:${skip} error:0`);
  write(`# Wall time: ${(ms / 1000).toFixed(3)} s`);
  return { results, pass, fail, skip, ms };
}

/** The slice of vitest's `it` this package needs (so src does not import vitest). */
export interface VitestIt {
  (name: string, fn: (ctx: { skip(note?: string): void }) => void): void;
  fails(name: string, fn: () => void): void;
  skip(name: string, fn: () => void): void;
}

/** What to do with instances that cannot pass today, each with its reason (reported upstream). */
export interface VitestExceptions {
  /** Fail for a known, reported reason: registered with `it.fails`. */
  readonly knownFailures?: ReadonlyMap<string, string>;
  /** Cannot even be run under vitest (e.g. a dependency loops forever): registered as skipped. */
  readonly excluded?: ReadonlyMap<string, string>;
}

/**
 * Register every instance as a vitest test named like the kernel's. Instances listed in
 * `knownFailures` (name → reason, each reported to the owning package) are registered with
 * `it.fails`, so they turn red once the dependency is fixed and the list must shrink; those in
 * `excluded` are registered as skipped with their reason in the name.
 */
export function registerVitest(
  instances: readonly Instance[],
  it: VitestIt,
  { knownFailures = new Map(), excluded = new Map() }: VitestExceptions = {},
): void {
  for (const inst of instances) {
    const reason = knownFailures.get(inst.name);
    const why = excluded.get(inst.name);
    if (why !== undefined) {
      it.skip(`${inst.name} (excluded: ${why})`, () => {});
    } else if (reason !== undefined) {
      it.fails(`${inst.name} (known: ${reason})`, () => expectPass(inst.run()));
    } else {
      it(inst.name, (ctx) => {
        const r = inst.run();
        if (r.status === "skip") return ctx.skip(r.skipReason);
        expectPass(r);
      });
    }
  }
}

function expectPass(r: InstanceResult): void {
  if (r.status === "fail") throw new Error(`${r.name} failed:\n${r.log.join("\n")}`);
}
