import { describe, expect, it } from "vitest";
import {
  type Schedule,
  exploreRaces,
  formatSchedule,
  parseShard,
  replaySchedule,
} from "../src/race-explorer.js";
import { Toy, type ToyPath, toy } from "./toy-race.js";

/** L { M { value += 1 } } : 4 boundaries, two of them with L held. */
const nested = toy("nested", 1, (m) => m.L.with(() => m.M.with(() => m.value++)));
/** L { value += 10 } */
const add10 = toy("add10", 10, (m) => m.L.with(() => (m.value += 10)));
const add100 = toy("add100", 100, (m) => m.L.with(() => (m.value += 100)));
/** A lost update: read under L, write back under L in a second section. */
const racyInc = toy("racy-inc", 1, (m) => {
  const v = m.L.with(() => m.value);
  m.L.with(() => (m.value = v + 1));
});

function all(paths: readonly ToyPath[], reduce: boolean): { schedules: string[]; pruned: number } {
  const schedules: string[] = [];
  const r = exploreRaces({
    setup: () => new Toy(),
    paths,
    reduce,
    onSchedule: (s) => schedules.push(formatSchedule(s)),
  });
  expect(r.exhaustive).toBe(true);
  expect(r.schedules).toBe(schedules.length);
  return { schedules, pruned: r.pruned };
}

describe("race explorer: enumeration", () => {
  it("2 paths: every boundary of each path hosts the other, plus both serial orders", () => {
    const { schedules, pruned } = all([nested, add10], false);
    expect(schedules.sort()).toEqual([
      "add10 ; nested",
      "add10 ; nested@add10#0(acquire L)",
      "add10 ; nested@add10#1(release L)",
      "nested ; add10",
      "nested ; add10@nested#0(acquire L)",
      "nested ; add10@nested#3(release L)",
    ]);
    // add10 inside nested's L section (at M's boundaries) would wait for L: pruned, not failed.
    expect(pruned).toBe(2);
  });

  it("reduction 1 offers a path only at boundaries of lock classes it takes", () => {
    const { schedules, pruned } = all([nested, add10], true);
    expect(schedules).toHaveLength(6);
    expect(pruned).toBe(0);
  });

  it("reduction 2 merges an unchanged release→acquire gap, never a read-only section", () => {
    const twice = toy("twice", 2, (m) => {
      m.L.with(() => m.value++);
      m.L.with(() => m.value++);
    });
    const hostedBy = (host: string, paths: readonly ToyPath[], reduce: boolean) =>
      all(paths, reduce)
        .schedules.filter((s) => s.includes(`@${host}#`))
        .sort();
    expect(hostedBy("twice", [twice, add10], false)).toHaveLength(4);
    // The acquire at #2 follows the release at #1 with nothing changed in between.
    expect(hostedBy("twice", [twice, add10], true)).toEqual([
      "twice ; add10@twice#0(acquire L)",
      "twice ; add10@twice#1(release L)",
      "twice ; add10@twice#3(release L)",
    ]);
    // racy-inc's first section changes nothing but reads: both its ends (#0, #1) stay.
    expect(hostedBy("racy-inc", [racyInc, add10], true).map((s) => s.split("#")[1])).toEqual([
      "0(acquire L)",
      "1(release L)",
      "3(release L)",
    ]);
  });

  it("3 paths: recursive hosting, all serial orders, no schedule twice", () => {
    const { schedules } = all([add10, add100, nested], false);
    expect(new Set(schedules).size).toBe(schedules.length);
    for (const order of [
      "add10 ; add100 ; nested",
      "add10 ; nested ; add100",
      "add100 ; add10 ; nested",
      "add100 ; nested ; add10",
      "nested ; add10 ; add100",
      "nested ; add100 ; add10",
    ])
      expect(schedules).toContain(order);
    // A path hosted by a hosted path (three deep).
    expect(schedules.some((s) => /add100@add10#\d.*nested@add100#/.test(s))).toBe(true);
    expect(schedules.length).toBeGreaterThanOrEqual(40);
  });

  it("the budget bounds the search and says it was not exhaustive", () => {
    const r = exploreRaces({ setup: () => new Toy(), paths: [add10, add100, nested], budget: 5 });
    expect(r.schedules + r.pruned).toBe(5);
    expect(r.exhaustive).toBe(false);
  });
});

describe("race explorer: failures", () => {
  it("finds the lost update, with a schedule that replays it; serial orders pass", () => {
    for (const reduce of [true, false]) {
      const r = exploreRaces({ setup: () => new Toy(), paths: [racyInc, add10], reduce });
      expect(r.failures.length).toBeGreaterThan(0);
      const f = r.failures[0] as { schedule: Schedule; error: string };
      expect(f.error).toMatch(/value 1, want 11/);
      expect(f.schedule[1]?.at?.host).toBe("racy-inc");
      expect(replaySchedule(() => new Toy(), [racyInc, add10], f.schedule).error).toBe(f.error);
      expect(
        replaySchedule(
          () => new Toy(),
          [racyInc, add10],
          [{ path: "racy-inc" }, { path: "add10" }],
        ),
      ).toEqual({ infeasible: false });
    }
  });

  it("an infeasible schedule is pruned and replays as infeasible, never as a failure", () => {
    const schedule: Schedule = [
      { path: "nested" },
      { path: "add10", at: { host: "nested", boundary: 1, kind: "acquire", lock: "M" } },
    ];
    expect(replaySchedule(() => new Toy(), [nested, add10], schedule)).toEqual({
      infeasible: true,
    });
  });

  it("a non-kernel exception in a path is a failure with its schedule", () => {
    const broken = toy("broken", 0, (m) =>
      m.L.with(() => {
        throw new TypeError("boom");
      }),
    );
    const r = exploreRaces({ setup: () => new Toy(), paths: [broken, add10] });
    expect(r.failures.length).toBe(r.schedules);
    expect(r.failures[0]?.error).toMatch(/TypeError: boom/);
  });
});

describe("race explorer: synchronous callers see no difference", () => {
  it("hooks are removed after every schedule, feasible or pruned", () => {
    Toy.made = [];
    exploreRaces({ setup: () => new Toy(), paths: [nested, add10], reduce: false });
    expect(Toy.made.length).toBe(8);
    for (const m of Toy.made) {
      expect(m.kernel.lockdep.onBoundary).toBeUndefined();
      expect(m.kernel.lockdep.onContended).toBeUndefined();
    }
  });

  it("a serial schedule gives what plain calls give", () => {
    const plain = new Toy();
    nested.prepare(plain, plain.newTask())();
    add10.prepare(plain, plain.newTask())();
    let seen = -1;
    exploreRaces({
      setup: () => {
        const t = new Toy();
        Toy.made = [t];
        return t;
      },
      paths: [nested, add10],
      budget: 3,
      onSchedule: () => {
        seen = Toy.made[0]?.value ?? -2;
      },
    });
    expect(seen).toBe(plain.value);
  });
});

describe("race explorer: shards", () => {
  it("shard k of n takes schedules i with i % n === k - 1; the shards add up to the whole", () => {
    const paths = [add10, add100, nested];
    const whole = new Set<string>();
    exploreRaces({
      setup: () => new Toy(),
      paths,
      reduce: false,
      onSchedule: (s) => whole.add(formatSchedule(s)),
    });
    const parts: string[][] = [];
    let pruned = 0;
    for (const k of [1, 2, 3]) {
      const part: string[] = [];
      const r = exploreRaces({
        setup: () => new Toy(),
        paths,
        reduce: false,
        shard: { k, n: 3 },
        onSchedule: (s) => part.push(formatSchedule(s)),
      });
      expect(r.exhaustive).toBe(true);
      pruned += r.pruned;
      parts.push(part);
    }
    expect(parts.flat().sort()).toEqual([...whole].sort());
    expect(pruned).toBe(exploreRaces({ setup: () => new Toy(), paths, reduce: false }).pruned);
    expect(parseShard("2/3")).toEqual({ k: 2, n: 3 });
    expect(() => parseShard("4/3")).toThrow(RangeError);
    expect(() => parseShard("1-3")).toThrow(RangeError);
  });
});
