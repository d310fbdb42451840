import { Kernel } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { FAIL_NTH_MAX_ITERATIONS, TEST_FAIL_NTH, fail_nth_enable } from "../src/fail-nth.js";
import { Harness } from "../src/harness.js";
import type { SelftestEnv } from "../src/iommufd-utils.js";

/** A machine with three injectable points; only the parts of the env the sweep reads. */
function toyEnv(leaks: string[] = []) {
  const kernel = new Kernel();
  const task = kernel.current;
  const env = {
    kernel,
    failNth: {
      write: (n: number) => (n ? task.fault.arm(n) : task.fault.disarm()),
      read: () => task.fault.read(),
    },
    checkInvariants: () => leaks,
  };
  return env as unknown as SelftestEnv & { kernel: Kernel };
}

describe("TEST_FAIL_NTH", () => {
  it("runs clean, then fails the 1st, 2nd, 3rd point, and stops when one is not reached", () => {
    const log: string[] = [];
    const h = new Harness<SelftestEnv>(() => toyEnv());
    const f = h.FIXTURE("toy", () => ({ n: 0 }));
    h.FIXTURE_SETUP(f, () => log.push("setup"));
    h.FIXTURE_TEARDOWN(f, () => log.push("teardown"));
    let results: number[] = [];
    TEST_FAIL_NTH(h, f, "three_points", (_s, _v, t, nth) => {
      results = nth.runs;
      fail_nth_enable(t, nth);
      const k = (t.sys as unknown as { kernel: Kernel }).kernel;
      for (const site of ["a", "b", "c"]) if (k.shouldFail(site)) return -1;
      return 0;
    });
    const r = h.instances()[0]!.run();
    expect(r.status).toBe("pass");
    expect(results).toEqual([-1, -1, -1, 0]);
    // Between runs: teardown then setup; once more at the end, then the harness's own teardown.
    expect(log.filter((l) => l === "teardown")).toHaveLength(6);
    expect(log.filter((l) => l === "setup")).toHaveLength(6);
  });

  it("fails when the complete run does not succeed, or when something leaks", () => {
    const h = new Harness<SelftestEnv>(() => toyEnv(["1 page pins left"]));
    const f = h.FIXTURE("leaky", () => ({}));
    TEST_FAIL_NTH(h, f, "leak", (_s, _v, t, nth) => {
      fail_nth_enable(t, nth);
      return 0;
    });
    const r = h.instances()[0]!.run();
    expect(r.status).toBe("fail");
    expect(r.log.join("\n")).toContain("1 page pins left");
  });

  it("caps the sweep", () => {
    const h = new Harness<SelftestEnv>(() => toyEnv());
    const f = h.FIXTURE("endless", () => ({}));
    TEST_FAIL_NTH(h, f, "many_points", (_s, _v, t, nth) => {
      fail_nth_enable(t, nth);
      const k = (t.sys as unknown as { kernel: Kernel }).kernel;
      for (let i = 0; i < FAIL_NTH_MAX_ITERATIONS + 10; i++) if (k.shouldFail("x")) return -1;
      return 0;
    });
    const r = h.instances()[0]!.run();
    expect(r.status).toBe("fail");
    expect(r.log.join("\n")).toContain(
      `Expected ${FAIL_NTH_MAX_ITERATIONS} > ${FAIL_NTH_MAX_ITERATIONS}`,
    );
  });
});
