import { Mutex } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { exploreInterleavings, replayInterleaving } from "../../src/race-interleave.js";
import { YIELDING } from "../../src/yielding.js";
import { Toy, type ToyPath, toy } from "../toy-race.js";

/** Check then act in two sections: the lost update when another path writes in between. */
const racyInc = (name: string): ToyPath =>
  toy(name, 1, (m) => {
    const v = m.L.with(() => {
      m.trace.push(`${name}1`);
      return m.value;
    });
    m.L.with(() => {
      m.trace.push(`${name}2`);
      m.value = v + 1;
    });
  });
const add10 = toy("add10", 10, (m) => m.L.with(() => (m.value += 10)));
/** Touches only M: independent of everything under L. */
const onM = toy("onM", 0, (m) => {
  m.M.with(() => m.other++);
  m.M.with(() => m.other++);
});

function explore(paths: readonly ToyPath[], opts: { bound?: number; reduce?: boolean } = {}) {
  const schedules: string[] = [];
  const r = exploreInterleavings({
    setup: () => new Toy(),
    paths,
    ...opts,
    onSchedule: (s) => schedules.push(s),
  });
  return { ...r, list: schedules };
}

describe("interleaving explorer", () => {
  it("the modules carry generator twins", () => {
    expect(typeof (Mutex.prototype.with as unknown as Record<symbol, unknown>)[YIELDING]).toBe(
      "function",
    );
  });

  it("two check-then-act paths pipeline: both half-done at once", () => {
    const paths = [racyInc("a"), racyInc("b")];
    const r = explore(paths, { bound: 2, reduce: false });
    expect(r.exhaustive).toBe(true);
    expect(r.maxConcurrent).toBe(2);
    const replay = (s: string) => {
      const m = new Toy();
      return { ...replayInterleaving(() => m, paths, s), trace: m.trace.join(" ") };
    };
    // a1 b1 a2 b2: the pipeline interleaving, a lost update; it replays.
    const pipelined = r.failures.filter((f) => replay(f.schedule).trace === "a1 b1 a2 b2");
    expect(pipelined.length).toBeGreaterThan(0);
    for (const f of pipelined) {
      expect(f.error).toMatch(/value 1, want 2/);
      expect(replay(f.schedule).error).toBe(f.error);
    }
    // Serial orders are fine.
    expect(replay("a:5 b:5")).toEqual({ infeasible: false, trace: "a1 a2 b1 b2" });
  });

  it("bound 0 runs the serial orders only; each bound explores more", () => {
    const paths = [racyInc("a"), add10];
    const counts = [0, 1, 2, 3].map((bound) => explore(paths, { bound, reduce: false }).schedules);
    expect(counts[0]).toBe(2);
    expect(explore(paths, { bound: 0, reduce: false }).failures).toEqual([]);
    for (let i = 1; i < counts.length; i++)
      expect(counts[i] as number).toBeGreaterThan(counts[i - 1] as number);
    expect(explore(paths, { bound: 1 }).failures.length).toBeGreaterThan(0);
  });

  it("three paths, all half-done at once", () => {
    const r = explore([racyInc("a"), racyInc("b"), racyInc("c")], { bound: 2, reduce: false });
    expect(r.exhaustive).toBe(true);
    expect(r.maxConcurrent).toBe(3);
    expect(r.failures.some((f) => /value 1, want 3/.test(f.error))).toBe(true);
  });

  it("sleep sets drop reorderings of independent steps and keep every failure class", () => {
    const paths = [racyInc("a"), add10, onM];
    const full = explore(paths, { bound: 2, reduce: false });
    const reduced = explore(paths, { bound: 2 });
    expect(reduced.exhaustive).toBe(true);
    expect(reduced.schedules).toBeLessThan(full.schedules);
    const errors = (r: typeof full) => [...new Set(r.failures.map((f) => f.error))].sort();
    expect(errors(reduced)).toEqual(errors(full));
    // Every reduced schedule is one of the full search's.
    for (const s of reduced.list) expect(full.list).toContain(s);
  });

  it("a path waiting for a held lock is not run; a lock cycle is a deadlock failure", () => {
    const ab = toy("ab", 0, (m) => m.L.with(() => m.M.with(() => undefined)));
    const ba = toy("ba", 0, (m) => m.M.with(() => m.L.with(() => undefined)));
    const r = explore([ab, ba], { bound: 2, reduce: false });
    // Lockdep reports the inversion on the first order that closes the cycle.
    expect(r.failures.some((f) => /LockdepError|deadlock/.test(f.error))).toBe(true);
  });

  it("shards add up to the whole search", () => {
    const paths = [racyInc("a"), add10];
    const whole = explore(paths, { bound: 2, reduce: false }).list;
    const parts = [1, 2].flatMap((k) => {
      const list: string[] = [];
      exploreInterleavings({
        setup: () => new Toy(),
        paths,
        bound: 2,
        reduce: false,
        shard: { k, n: 2 },
        onSchedule: (s) => list.push(s),
      });
      return list;
    });
    expect(parts.sort()).toEqual([...whole].sort());
  });
});
