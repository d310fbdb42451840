import { describe, expect, it } from "vitest";
import {
  type RaceCampaignResult,
  type RaceCampaignSpec,
  mergeRaceResults,
  runRaceCampaign,
  runRaceShard,
} from "../src/race-campaign.js";
import { replaySchedule } from "../src/race-explorer.js";
import { standardRaceScenarios } from "../src/race-paths.js";

/** What a run found, without its timings and shard names. */
function outcome(r: RaceCampaignResult) {
  const { cpuMs: _c, wallMs: _w, shards: _s, ...rest } = r;
  return rest;
}

const spec: RaceCampaignSpec = {
  kind: "race",
  interleave: false,
  bound: 2,
  budget: 500,
  trackerMutant: true,
  scenarios: ["revoke×domain-add", "revoke×map"],
};

describe("race campaigns (nesting explorer)", () => {
  const whole = runRaceShard(spec);

  it("finds the tracker mutant in both scenarios, with schedules that replay it", () => {
    for (const name of spec.scenarios) {
      const r = whole.results[name]!;
      expect(r.exhaustive, name).toBe(true);
      expect(r.failures.length, name).toBeGreaterThan(0);
      const s = standardRaceScenarios({ trackerMutant: true }).find((x) => x.name === name)!;
      for (const f of r.failures) {
        expect(f.error).toMatch(/invariant I1: revoked area [0-9a-f]+ still mapped/);
        expect(f.replay).toContain(f.schedule);
        const again = replaySchedule(s.setup, s.paths, JSON.parse(f.schedule));
        expect(f.error.startsWith(again.error!)).toBe(true);
      }
    }
  });

  it("shards 1..3 together are the unsharded search: schedules, pruned, failures, outcomes", () => {
    const parts = [1, 2, 3].map((k) => runRaceShard(spec, { k, n: 3 }));
    for (const p of parts)
      for (const r of Object.values(p.results)) expect(r.schedules).toBeGreaterThan(0);
    const merged = mergeRaceResults(parts);
    expect(merged.shards).toEqual(["1/3", "2/3", "3/3"]);
    expect(outcome(merged)).toEqual(outcome(whole));
  });

  it("two worker threads find what the serial run finds", async () => {
    const pooled = await runRaceCampaign(spec, { k: 2, n: 2 }, 2);
    expect(pooled.shards).toEqual(["2/2"]);
    expect(outcome(pooled)).toEqual(outcome(runRaceShard(spec, { k: 2, n: 2 })));
  });

  it("refuses to merge shards of different campaigns", () => {
    const a = runRaceShard({ ...spec, scenarios: ["revoke×map"] }, { k: 1, n: 2 });
    expect(() => mergeRaceResults([a, { ...a, budget: 7 }])).toThrow(/cannot merge/);
  });
});
