import { describe, expect, it } from "vitest";
import { exploreRaces, replaySchedule } from "../src/race-explorer.js";
import { exportPath, raceSetup, revokePath } from "../src/race-paths.js";
import { revokeWithoutMemoryLock } from "./race-mutants.js";

describe("nesting race explorer: a revoke without memory_lock is caught", () => {
  it("with a schedule that replays the same failure; the model itself passes", () => {
    const setup = raceSetup();
    const paths = [revokeWithoutMemoryLock, exportPath];
    const r = exploreRaces({ setup, paths });
    expect(r.exhaustive).toBe(true);
    expect(r.failures.length).toBeGreaterThan(0);
    const f = r.failures[0]!;
    expect(f.error).toMatch(/memory decode off, dma-buf live/);
    expect(replaySchedule(setup, paths, f.schedule).error).toBe(f.error);
    expect(replaySchedule(setup, [revokePath, exportPath], f.schedule)).toEqual({
      infeasible: true,
    });
    expect(exploreRaces({ setup, paths: [revokePath, exportPath] }).failures).toEqual([]);
  });
});
