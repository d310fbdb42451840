import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { IommufdIoas } from "@x/iommufd";
import { fuzzUapi, replayUapi, runProgram } from "../src/fuzz-uapi.js";
import { Machine } from "../src/machine.js";
import { Runner, SKIPPED, programArb } from "../src/sequence.js";
import { snapshot } from "../src/snapshot.js";
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

  it("a skipped step changes nothing the checker reads (runProgram does not re-check it)", () => {
    let skipped = 0;
    const ids = new Map<object, number>();
    const idOf = (o: object): number => {
      if (!ids.has(o)) ids.set(o, ids.size);
      return ids.get(o)!;
    };
    for (const ops of fc.sample(programArb(100), { seed: 20261125, numRuns: 60 })) {
      const machine = new Machine();
      const runner = new Runner(machine);
      const scope = {
        kernel: machine.kernel,
        tasks: machine.tasks,
        devices: machine.devices,
        copies: () => runner.copies(),
      };
      const state = () =>
        [
          snapshot(scope),
          [...runner.copies()].map(
            (c) => `${idOf(c.src)}:${c.srcIova}>${idOf(c.dst)}:${c.dstIova}+${c.length}`,
          ),
          machine.kernel.mem.allocatedPages(),
          machine.kernel.mem.totalPinned(),
          machine.tasks.length,
          runner.calls,
        ].join("\n");
      for (const op of ops) {
        const before = state();
        if (runner.step(op) !== SKIPPED) continue;
        skipped++;
        expect(state(), op.k).toBe(before);
      }
      runner.teardown();
    }
    expect(skipped).toBeGreaterThan(100);
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
