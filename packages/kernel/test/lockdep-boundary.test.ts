import { describe, expect, it } from "vitest";
import { Kernel, type LockBase, Mutex, RwSem, WwAcquireCtx, WwMutex } from "../src/index.js";

type Seen = Array<[string, string, number]>;

function setup(): { k: Kernel; seen: Seen } {
  const k = new Kernel({ ramBytes: 1n << 30n, lockOrder: null });
  const seen: Seen = [];
  k.lockdep.onBoundary = (kind, lock: LockBase, task) =>
    seen.push([kind, lock.className, task.tid]);
  return { k, seen };
}

describe("lockdep lock boundaries (preemption points for the race explorer)", () => {
  it("reports before every acquisition and after every release, with the acting task", () => {
    const { k, seen } = setup();
    const m = new Mutex(k.lockdep, "m");
    const r = new RwSem(k.lockdep, "r");
    const w = new WwMutex(k.lockdep, "w");
    const tid = k.current.tid;
    m.with(() => r.withRead(() => undefined));
    r.withWrite(() => w.with(() => undefined));
    expect(seen).toEqual([
      ["acquire", "m", tid],
      ["acquire", "r", tid],
      ["release", "r", tid],
      ["release", "m", tid],
      ["acquire", "r", tid],
      ["acquire", "w", tid],
      ["release", "w", tid],
      ["release", "r", tid],
    ]);
  });

  it("the acquire boundary comes before the lock is taken, the release one after it is free", () => {
    const { k } = setup();
    const m = new Mutex(k.lockdep, "m");
    const states: boolean[] = [];
    k.lockdep.onBoundary = () => states.push(m.locked);
    m.lock();
    m.unlock();
    expect(states).toEqual([false, false]);
  });

  it("trylocks are boundaries too; a ww lock already held by the context is not", () => {
    const { k, seen } = setup();
    const m = new Mutex(k.lockdep, "m");
    const r = new RwSem(k.lockdep, "r");
    const w = new WwMutex(k.lockdep, "w");
    expect(m.tryLock()).toBe(true);
    m.unlock();
    expect(r.tryDownWrite()).toBe(true);
    r.upWrite();
    const ctx = new WwAcquireCtx();
    w.lock(ctx);
    seen.length = 0;
    expect(w.lock(ctx)).toBe(-114);
    expect(seen).toEqual([]);
    w.unlock();
    expect(seen.map((s) => s[0])).toEqual(["release"]);
  });

  it("another task run at a boundary sees the lock state of that instant", () => {
    const { k } = setup();
    const m = new Mutex(k.lockdep, "m");
    const other = k.newTask(k.current.process);
    let ran = 0;
    k.lockdep.onBoundary = (kind, _lock, task) => {
      if (task === other || kind !== "release") return;
      k.runAs(other, () => m.with(() => ran++));
    };
    m.with(() => undefined);
    expect(ran).toBe(1);
    k.lockdep.assertNoneHeld();
  });

  it("unset, nothing changes: the same locking works and records the same order", () => {
    const k = new Kernel({ ramBytes: 1n << 30n, lockOrder: null });
    expect(k.lockdep.onBoundary).toBeUndefined();
    const a = new Mutex(k.lockdep, "a");
    const b = new Mutex(k.lockdep, "b");
    a.with(() => b.with(() => undefined));
    expect(k.lockdep.edges).toEqual([["a", "b"]]);
    k.lockdep.assertNoneHeld();
  });
});
