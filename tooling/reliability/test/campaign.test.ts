import { describe, expect, it } from "vitest";
import {
  type CampaignResult,
  type CampaignSpec,
  mergeResults,
  missingShards,
  runCampaign,
  runShard,
} from "../src/campaign.js";
import { parseShard, subShard } from "../src/shard.js";

/** What a run found, without its timings. */
function outcome(r: CampaignResult) {
  const { cpuMs: _c, wallMs: _w, shards: _s, ...rest } = r;
  return rest;
}

function shardsMerged(spec: CampaignSpec, n: number): CampaignResult {
  return mergeResults(Array.from({ length: n }, (_, k) => runShard(spec, { k: k + 1, n })));
}

describe("shards", () => {
  it("parses k/n and refuses anything else", () => {
    expect(parseShard("2/5")).toEqual({ k: 2, n: 5 });
    for (const bad of ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3"])
      expect(() => parseShard(bad)).toThrow(/--shard/);
  });

  it("splits a shard into parts that own exactly its units", () => {
    const shard = { k: 2, n: 3 };
    const owned = (s: { k: number; n: number }) =>
      Array.from({ length: 60 }, (_, i) => i).filter((i) => i % s.n === s.k - 1);
    const parts = [0, 1, 2, 3].flatMap((w) => owned(subShard(shard, w, 4)));
    expect(parts.sort((a, b) => a - b)).toEqual(owned(shard));
  });
});

describe("campaigns", () => {
  it("uAPI: shards 1..3 together run the unsharded campaign", () => {
    const spec: CampaignSpec = { kind: "uapi", seed: 20261125, budget: 3 };
    const whole = runShard(spec);
    expect(whole.units).toBe(3);
    expect(whole.failures).toEqual([]);
    expect(whole.coverage.errnos.EINVAL).toBeGreaterThan(0);
    expect(outcome(shardsMerged(spec, 3))).toEqual(outcome(whole));
  });

  it("bytes: shards 1..2 together run the unsharded campaign (machines of 200 inputs)", () => {
    const spec: CampaignSpec = { kind: "bytes", seed: 7, budget: 500 };
    const whole = runShard(spec);
    expect(whole).toMatchObject({ units: 3, steps: 500, failures: [] });
    expect(outcome(shardsMerged(spec, 2))).toEqual(outcome(whole));
  });

  it("fail_nth: shard 2/9 runs every ninth sweep of the corpus", () => {
    const spec: CampaignSpec = { kind: "fail-nth", seed: 20261125, budget: 2 };
    const r = runShard(spec, { k: 2, n: 9 });
    expect(r.failures).toEqual([]);
    expect(r.units).toBeGreaterThan(0);
    expect(r.steps).toBeGreaterThan(0);
  });

  it("merges shard files: totals, failures, coverage; names the missing shards", () => {
    const base = { kind: "uapi", seed: 1, budget: 4, cpuMs: 10, wallMs: 20 } as const;
    const a: CampaignResult = {
      ...base,
      shards: ["1/3"],
      units: 2,
      steps: 100,
      runs: 10,
      failures: [],
      coverage: { ops: { map: 3 }, errnos: { EINVAL: 2 } },
    };
    const b: CampaignResult = {
      ...base,
      shards: ["3/3"],
      units: 1,
      steps: 40,
      runs: 5,
      wallMs: 30,
      failures: [{ error: "boom", replay: "fuzz -- --replay 3 '0:1'" }],
      coverage: { ops: { map: 1, unmap: 2 }, errnos: { ENOENT: 1 } },
    };
    const m = mergeResults([a, b]);
    expect(m).toMatchObject({ shards: ["1/3", "3/3"], units: 3, steps: 140, runs: 15 });
    expect(m).toMatchObject({ cpuMs: 20, wallMs: 30 });
    expect(m.failures).toEqual(b.failures);
    expect(m.coverage).toEqual({ ops: { map: 4, unmap: 2 }, errnos: { EINVAL: 2, ENOENT: 1 } });
    expect(missingShards([a, b])).toEqual(["2/3"]);
    expect(() => mergeResults([a, { ...b, seed: 2 }])).toThrow(/cannot merge/);
  });

  it("a run on two worker threads finds what the serial run finds", async () => {
    const spec: CampaignSpec = { kind: "uapi", seed: 99, budget: 2 };
    const pooled = await runCampaign(spec, undefined, 2);
    expect(pooled.shards).toEqual(["1/1"]);
    expect(outcome(pooled)).toEqual(outcome(runShard(spec)));
  });
});
