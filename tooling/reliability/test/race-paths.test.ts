import { describe, expect, it } from "vitest";
import {
  type RaceExplorerSummary,
  exploreRaces,
  formatSchedule,
  raceExplorerSummary,
  replaySchedule,
} from "../src/race-explorer.js";
import {
  accessPinPath,
  domainAddPath,
  mapPath,
  raceSetup,
  revokePath,
  unmapMemfdPath,
} from "../src/race-paths.js";

/** Fewest schedules each standard scenario must explore (so the explorer provably explores). */
const MIN_SCHEDULES: Record<string, number> = {
  "revoke×map": 8,
  "revoke×domain-add": 5,
  "revoke×export": 3,
  "flr×domain-add": 5,
  "revoke×domain-remove": 5,
  "map×unmap": 15,
  "copy×revoke": 5,
  "access-pin×unmap": 5,
  "dirty-read×unmap": 10,
  "viommu-invalidate×vdevice-destroy": 10,
  "viommu-invalidate×mock-detach": 10,
  "irq-teardown×reset": 5,
  "revoke×map×domain-add": 100,
};

describe("race explorer on the kernel paths", () => {
  let summary: RaceExplorerSummary;

  it("every standard pair and triple passes on the model; the tracker mutant is caught", () => {
    // The triple is bounded here (the report runs it exhaustively: 351 schedules).
    summary = raceExplorerSummary(120);
    expect(summary.scenarios.map((s) => s.name)).toEqual(Object.keys(MIN_SCHEDULES));
    for (const s of summary.scenarios) {
      expect(s.failures, s.name).toBe(0);
      expect(s.schedules, s.name).toBeGreaterThanOrEqual(MIN_SCHEDULES[s.name] ?? 1);
      if (s.name.split("×").length === 2) expect(s.exhaustive, s.name).toBe(true);
    }
    expect(summary.failures).toBe(0);
    expect(summary.mutantCaught).toBe(true);
    expect(summary.mutantSchedules).toEqual([
      expect.stringMatching(
        /^revoke×map: map ; revoke@map#\d+\(release iopt_pages\.mutex\/dmabuf\)$/,
      ),
      expect.stringMatching(
        /^revoke×domain-add: domain-add ; revoke@domain-add#\d+\(release iopt_pages\.mutex\/dmabuf\)$/,
      ),
    ]);
  }, 60_000);

  it("the mutant's failing schedule: revoke between the fill and the late tracker update", () => {
    const paths = [revokePath, domainAddPath];
    const mutant = raceSetup({ trackerMutant: true });
    const r = exploreRaces({ setup: mutant, paths });
    expect(r.exhaustive).toBe(true);
    expect(r.failures).toHaveLength(1);
    const f = r.failures[0]!;
    expect(f.error).toMatch(/invariant I1: revoked area 100000 still mapped/);
    // It replays, and the same interleaving on the real model is fine.
    expect(replaySchedule(mutant, paths, f.schedule).error).toBe(f.error);
    expect(replaySchedule(raceSetup(), paths, f.schedule)).toEqual({ infeasible: false });
    // Serially, the mutant is invisible: only the race shows it.
    for (const order of [
      [{ path: "revoke" }, { path: "domain-add" }],
      [{ path: "domain-add" }, { path: "revoke" }],
    ])
      expect(replaySchedule(mutant, paths, order)).toEqual({ infeasible: false });
  });

  it("without reduction more schedules run and every one that fails sits in the same window", () => {
    const paths = [revokePath, domainAddPath];
    const reduced = exploreRaces({ setup: raceSetup({ trackerMutant: true }), paths });
    const full = exploreRaces({ setup: raceSetup({ trackerMutant: true }), paths, reduce: false });
    expect(full.schedules).toBeGreaterThan(3 * reduced.schedules);
    expect(full.failures.length).toBeGreaterThanOrEqual(reduced.failures.length);
    for (const f of full.failures) {
      expect(formatSchedule(f.schedule)).toMatch(
        /^domain-add ; revoke@domain-add#\d+\((release|acquire) iopt_pages\.mutex\/dmabuf\)$/,
      );
    }
    const clean = exploreRaces({ setup: raceSetup(), paths, reduce: false });
    expect(clean.failures).toEqual([]);
    // The mutant's second section adds two boundaries, each one more place for the revoke.
    expect(full.schedules - clean.schedules).toBe(2);
  });

  it("interleavings that would wait on a held lock are pruned, not failed", () => {
    const r = exploreRaces({ setup: raceSetup(), paths: [accessPinPath, unmapMemfdPath] });
    expect(r.pruned).toBeGreaterThan(0);
    expect(r.failures).toEqual([]);
    // The unmap either ran first (the pin finds no area: ENOENT) or made the driver unpin.
    expect(Object.keys(r.outcomes["access-pin"] ?? {}).sort()).toEqual(["0", "2"]);
  });

  it("a map racing a revoke either maps (then is revoked) or fails with ENODEV", () => {
    const r = exploreRaces({ setup: raceSetup(), paths: [revokePath, mapPath] });
    expect(r.failures).toEqual([]);
    expect(Object.keys(r.outcomes.map ?? {}).sort()).toEqual(["0", "19"]);
  });
});
