import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IommufdIoas } from "@x/iommufd";
import { fuzzUapi, replayUapi, runProgram } from "../src/fuzz-uapi.js";
import type { Machine } from "../src/machine.js";
import { programArb } from "../src/sequence.js";
import { VMM_STATE } from "./helpers.js";

/** Steps of the seeded in-test budget (the CI's 100 000 run in `pnpm reliability`). */
const STEPS = Number(process.env.RELIABILITY_TEST_STEPS ?? 2000);

/** A planted rule: "no IOAS ever has two areas while a device is attached" (false, on purpose). */
function planted(machine: Machine): void {
  const binding = machine.devices[0]!.binding;
  if (!binding?.hwpt) return;
  for (const obj of binding.ctx.objectsInOrder()) {
    if (obj instanceof IommufdIoas && obj.iopt.areas().length >= 2)
      throw new Error("planted: two areas");
  }
}

describe("uAPI fuzzing", () => {
  it(`runs a seeded budget of ${STEPS} steps with the checker after each, without a failure`, () => {
    const r = fuzzUapi({ seed: 20261125, steps: STEPS });
    expect(r.failure).toBeUndefined();
    expect(r.steps).toBeGreaterThanOrEqual(STEPS);
    // The programs reach error paths as well as successes.
    expect(r.errors).toBeGreaterThan(0);
    expect(r.errors).toBeLessThan(r.calls);
  });

  it("generates ops as ordinary objects, the nested records of an op too", () => {
    // fast-check's record gives about half of its objects a null prototype (dictionary mode).
    let withCmds = 0;
    for (const program of fc.sample(programArb(100), { seed: 20261125, numRuns: 200 })) {
      for (const op of program) {
        expect(Object.getPrototypeOf(op)).toBe(Object.prototype);
        if (!("cmds" in op)) continue;
        withCmds++;
        for (const c of op.cmds) expect(Object.getPrototypeOf(c)).toBe(Object.prototype);
      }
    }
    expect(withCmds).toBeGreaterThan(0);
  });

  it("is deterministic: the same program gives the same outcome", () => {
    expect(runProgram(VMM_STATE)).toEqual(runProgram(VMM_STATE));
  });

  it("shrinks a counterexample and replays it from seed and path", () => {
    const r = fuzzUapi({ seed: 8, steps: 20_000, extra: planted });
    expect(r.failure).toBeDefined();
    const f = r.failure!;
    expect(f.error).toContain("planted");
    // Shrunk to the essentials: open, IOAS, attach, two maps (give or take a helper op).
    expect(f.ops.length).toBeLessThanOrEqual(6);
    expect(replayUapi(f.seed, f.path, { extra: planted })).toContain("planted");
    expect(replayUapi(f.seed, f.path)).toBeUndefined();
  });
});
