import { describe, expect, it } from "vitest";
import {
  type RaceCampaignResult,
  type RaceCampaignSpec,
  mergeRaceResults,
  runRaceCampaign,
  runRaceShard,
} from "../../src/race-campaign.js";
import { replayInterleaving } from "../../src/race-interleave.js";
import { standardRaceScenarios } from "../../src/race-paths.js";

function outcome(r: RaceCampaignResult) {
  const { cpuMs: _c, wallMs: _w, shards: _s, ...rest } = r;
  return rest;
}

const spec: RaceCampaignSpec = {
  kind: "race",
  interleave: true,
  bound: 1,
  budget: 200,
  trackerMutant: true,
  scenarios: ["revoke×domain-add"],
};

describe("race campaigns (interleaving explorer)", () => {
  const whole = runRaceShard(spec);

  it("shards 1..2 together are the unsharded search, failures replayable", () => {
    const r = whole.results["revoke×domain-add"]!;
    expect(r.exhaustive).toBe(true);
    expect(r.failures.length).toBeGreaterThan(0);
    const s = standardRaceScenarios({ trackerMutant: true })[1]!;
    for (const f of r.failures) {
      expect(f.replay).toContain(`--replay '${f.schedule}'`);
      expect(replayInterleaving(s.setup, s.paths, f.schedule).error).toBe(f.error);
    }
    const merged = mergeRaceResults([1, 2].map((k) => runRaceShard(spec, { k, n: 2 })));
    expect(outcome(merged)).toEqual(outcome(whole));
  });

  it("worker threads (each registering the yielding hooks) find what the serial run finds", async () => {
    const pooled = await runRaceCampaign(spec, undefined, 2);
    expect(outcome(pooled)).toEqual(outcome(whole));
  }, 120_000);
});
