/**
 * The TEST_FAIL_NTH sweep of iommufd_fail_nth.c.
 *
 * A case body returns 0 when its whole sequence succeeded and -1 at the first failing call.
 * The sweep runs it once with nothing armed (must return 0), then again and again with the
 * 1st, 2nd, 3rd … injectable point armed, from the moment the body calls `fail_nth_enable`
 * (steps before it are covered by other cases). Between runs the fixture is torn down and set
 * up again, on the same machine as in the kernel test. The sweep ends with the first run whose
 * armed failure was never reached; that run completed, so it must have returned 0. Reaching
 * iteration 1000 is a failure: fail_nth_next() in iommufd_fail_nth.c asserts
 * `ASSERT_GT(1000, nth_state->iteration)` on every call, a cap against a sweep that never ends.
 *
 * The kernel test relies on splats (WARN, KASAN) and on the teardown's pin check. Here a WARN
 * is an exception (it fails the instance) and `checkInvariants()` of the env must report
 * nothing after every run: before its teardown (the io_pagetable invariants of the state the
 * failure left) and after it (no page left pinned, no object, attachment or mapping left).
 * The last, complete run is checked the same way; the fixture is then set up once more so the
 * harness's own teardown still runs exactly once on a valid fixture.
 */
import type { Body, Fixture, Harness, TestMetadata } from "./harness.js";
import type { SelftestEnv } from "./iommufd-utils.js";

/** fail_nth_next() asserts the iteration is below this (iommufd_fail_nth.c). */
export const FAIL_NTH_MAX_ITERATIONS = 1000;

export interface FailNthState {
  iteration: number;
  /** The result of every armed run, in order (diagnostics). */
  readonly runs: number[];
}

export type FailNthBody<Self, Variant> = (
  self: Self,
  variant: Variant,
  _metadata: TestMetadata<Self, Variant, SelftestEnv>,
  nth: FailNthState,
) => number;

/**
 * fail_nth_enable(): arm the current iteration's point from here on (nothing on the clean run).
 * @see __fail_nth_enable
 */
export function fail_nth_enable(
  t: TestMetadata<unknown, unknown, SelftestEnv>,
  nth: FailNthState,
): void {
  if (!nth.iteration) return;
  t.sys.failNth.write(nth.iteration);
}

/** fail_nth_next(): false once the last run did not reach its armed point. */
function fail_nth_next(t: TestMetadata<unknown, unknown, SelftestEnv>, nth: FailNthState): boolean {
  t.ASSERT_GT(FAIL_NTH_MAX_ITERATIONS, nth.iteration);
  if (nth.iteration !== 0) {
    const left = t.sys.failNth.read();
    t.sys.failNth.write(0);
    if (left !== 0) return false;
  }
  nth.iteration++;
  return true;
}

/**
 * After the run armed with `iteration` (0: the clean run), before its teardown (the state the
 * failure left must be consistent) and after it (nothing may be left behind).
 */
function checkClean(
  t: TestMetadata<unknown, unknown, SelftestEnv>,
  iteration: number,
  when: string,
): void {
  const broken = t.sys.checkInvariants();
  for (const v of broken) t.TH_LOG(`fail-nth ${iteration}, ${when}: ${v}`);
  t.EXPECT_EQ(0, broken.length, `invariants ${when}`);
}

/**
 * TEST_FAIL_NTH(fixture, name): register `name` on `f` as a sweep over `body`.
 * Requires the fixture's setup and teardown (they are re-run between iterations).
 */
export function TEST_FAIL_NTH<Self, Variant>(
  h: Harness<SelftestEnv>,
  f: Fixture<Self, Variant, SelftestEnv>,
  name: string,
  body: FailNthBody<Self, Variant>,
): void {
  const setup: Body<Self, Variant, SelftestEnv> = f.setup ?? (() => {});
  const teardown: Body<Self, Variant, SelftestEnv> = f.teardown ?? (() => {});
  h.TEST_F(f, name, (self, variant, t) => {
    const nth: FailNthState = { iteration: 0, runs: [] };
    t.ASSERT_EQ(0, body(self, variant, t, nth));
    checkClean(t, 0, "before teardown");
    let test_result = 0;
    while (fail_nth_next(t, nth)) {
      teardown(self, variant, t);
      checkClean(t, nth.iteration - 1, "after teardown");
      setup(self, variant, t);
      test_result = body(self, variant, t, nth);
      nth.runs.push(test_result);
      checkClean(t, nth.iteration, "before teardown");
    }
    t.ASSERT_EQ(0, test_result);
    t.TH_LOG(`${nth.runs.length - 1} injection points swept`);
    // Check the complete run too, then leave a fresh fixture for the harness's own teardown.
    teardown(self, variant, t);
    checkClean(t, nth.iteration, "after teardown");
    setup(self, variant, t);
  });
}
