import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { plainRecord } from "../src/plain-record.js";

const model = {
  k: fc.constant("op" as const),
  a: fc.nat({ max: 7 }),
  b: fc.option(fc.nat(), { nil: null }),
  c: fc.array(fc.boolean(), { maxLength: 3 }),
};

describe("plainRecord", () => {
  it("draws what fc.record draws, as objects with Object.prototype, keys in the model's order", () => {
    const mine = fc.sample(fc.array(plainRecord(model)), { seed: 42, numRuns: 200 });
    const theirs = fc.sample(fc.array(fc.record(model)), { seed: 42, numRuns: 200 });
    let nullPrototypes = 0;
    mine.forEach((list, i) => {
      expect(list.length).toBe(theirs[i]!.length);
      list.forEach((o, j) => {
        const r = theirs[i]![j]!;
        if (Object.getPrototypeOf(r) === null) nullPrototypes++;
        expect(Object.getPrototypeOf(o)).toBe(Object.prototype);
        expect(Object.keys(o)).toEqual(["k", "a", "b", "c"]);
        expect(o).toEqual({ ...r });
      });
    });
    // fc.record made some of its objects with a null prototype: the comparison covered both.
    expect(nullPrototypes).toBeGreaterThan(0);
  });

  it("shrinks along the same path as fc.record", () => {
    const failing = (o: { a: number; c: boolean[] }) => o.a < 5 || o.c.length === 0;
    const mine = fc.check(fc.property(plainRecord(model), failing), { seed: 7 });
    const theirs = fc.check(fc.property(fc.record(model), failing), { seed: 7 });
    expect(mine.failed).toBe(true);
    expect(mine.counterexamplePath).toBe(theirs.counterexamplePath);
    expect({ ...mine.counterexample![0] }).toEqual({ ...theirs.counterexample![0] });
  });
});
