import { describe, expect, it } from "vitest";
import { ScenarioRun } from "../src/scenario.js";
import { scenarios } from "../src/scenarios/index.js";

describe("every scenario runs to the end with every check holding", () => {
  for (const def of scenarios) {
    it(`${def.id}: ${def.title}`, () => {
      const run = new ScenarioRun(def);
      const records = run.runTo();
      const failures = records
        .filter((r) => !r.ok)
        .map(
          (r) =>
            `step ${r.index + 1} "${r.name}": ${[r.error, ...r.violations, ...r.probeMismatches].filter(Boolean).join("; ")}`,
        );
      expect(failures).toEqual([]);
      expect(records).toHaveLength(def.steps.length);
    });
  }
});
