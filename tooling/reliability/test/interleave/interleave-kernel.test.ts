import { describe, expect, it } from "vitest";
import { exploreInterleavings, replayInterleaving } from "../../src/race-interleave.js";
import {
  domainAddPath,
  exportPath,
  raceSetup,
  revokePath,
  standardRaceScenarios,
} from "../../src/race-paths.js";
import { revokeWithoutMemoryLock } from "../race-mutants.js";

describe("interleaving explorer on the kernel paths", () => {
  it("every standard pair passes on the model within one preemption, exhaustively", () => {
    for (const s of standardRaceScenarios()) {
      if (s.paths.length !== 2) continue;
      const r = exploreInterleavings({ setup: s.setup, paths: s.paths, bound: 1 });
      expect(r.exhaustive, s.name).toBe(true);
      expect(r.failures, s.name).toEqual([]);
      expect(r.schedules, s.name).toBeGreaterThan(1);
      expect(r.maxConcurrent, s.name).toBe(2);
    }
  }, 120_000);

  it("the triple passes too (bounded here; `pnpm race` runs it whole)", () => {
    const s = standardRaceScenarios().find((x) => x.paths.length === 3)!;
    const r = exploreInterleavings({ setup: s.setup, paths: s.paths, bound: 1, budget: 60 });
    expect(r.failures).toEqual([]);
    expect(r.schedules).toBeGreaterThan(10);
  }, 60_000);

  it("the tracker mutant: revoke between the fill and the late tracker update, replayable", () => {
    const paths = [revokePath, domainAddPath];
    const mutant = raceSetup({ trackerMutant: true });
    for (const reduce of [true, false]) {
      const r = exploreInterleavings({ setup: mutant, paths, bound: 1, reduce });
      expect(r.exhaustive).toBe(true);
      expect(r.failures.length).toBeGreaterThan(0);
      for (const f of r.failures) {
        expect(f.error).toMatch(/invariant I1: revoked area 100000 still mapped/);
        // domain-add runs, the revoke runs whole inside its window, domain-add finishes.
        expect(f.schedule).toMatch(/^domain-add:\d+ revoke:\d+ domain-add:\d+$/);
        expect(replayInterleaving(mutant, paths, f.schedule).error).toBe(f.error);
        expect(replayInterleaving(raceSetup(), paths, f.schedule)).toEqual({ infeasible: false });
      }
    }
  });

  it("a revoke without memory_lock racing an export: a live dma-buf over a decode-off BAR", () => {
    const setup = raceSetup();
    const paths = [revokeWithoutMemoryLock, exportPath];
    for (const reduce of [true, false]) {
      const r = exploreInterleavings({ setup, paths, bound: 1, reduce });
      expect(r.failures.length).toBeGreaterThan(0);
      const f = r.failures[0]!;
      expect(f.error).toMatch(/memory decode off, dma-buf live/);
      expect(replayInterleaving(setup, paths, f.schedule).error).toBe(f.error);
      // With the lock, the same interleaving is harmless.
      expect(replayInterleaving(setup, [revokePath, exportPath], f.schedule).error).toBe(undefined);
    }
    const clean = exploreInterleavings({ setup, paths: [revokePath, exportPath], bound: 2 });
    expect(clean.failures).toEqual([]);
  });
});
