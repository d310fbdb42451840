import { describe, expect, it } from "vitest";
import { Kernel, LockdepError, Mutex, RwSem } from "../src/index.js";

describe("lockdep held lists and rwsem readers", () => {
  it("releases out of order as well as innermost first, per task", () => {
    const k = new Kernel({ ramBytes: 1n << 30n, lockOrder: null });
    const a = new Mutex(k.lockdep, "a");
    const b = new Mutex(k.lockdep, "b");
    const c = new Mutex(k.lockdep, "c");
    const t2 = k.newTask(k.current.process);
    a.lock();
    b.lock(1);
    c.lock();
    k.runAs(t2, () => new Mutex(k.lockdep, "x").lock());
    expect(k.lockdep.heldBy().map((h) => h.key)).toEqual(["a", "b/1", "c"]);
    b.unlock();
    expect(k.lockdep.heldBy().map((h) => h.key)).toEqual(["a", "c"]);
    expect(() => b.unlock()).toThrow(LockdepError);
    c.unlock();
    a.unlock();
    k.lockdep.assertNoneHeld();
    expect(k.lockdep.heldBy(t2).map((h) => h.key)).toEqual(["x"]);
    // The subclass key is the same record each time, and the edges still name it.
    b.with(() => c.with(() => undefined), 1);
    expect(k.lockdep.orderRecorded("b/1", "c")).toBe(true);
  });

  it("each task is checked against its own held list, whichever task locked last", () => {
    const k = new Kernel({ ramBytes: 1n << 30n, lockOrder: null });
    const a = new Mutex(k.lockdep, "a");
    const t2 = k.newTask(k.current.process);
    k.runAs(t2, () => k.lockdep.assertNoneHeld());
    a.lock();
    // The current task locked last; t2 holds nothing and passes its boundary check.
    k.runAs(t2, () => {
      k.lockdep.assertNoneHeld();
      expect(k.lockdep.holds(a)).toBe(false);
    });
    expect(k.lockdep.holds(a, t2)).toBe(false);
    expect(k.lockdep.holds(a)).toBe(true);
    expect(() => k.lockdep.assertNoneHeld()).toThrow(/locks still held: a/);
    // And the other way round: t2 locked last, the current task still holds `a`.
    k.runAs(t2, () => new Mutex(k.lockdep, "b").lock());
    expect(() => k.lockdep.assertNoneHeld()).toThrow(/locks still held: a$/);
    a.unlock();
    k.lockdep.assertNoneHeld();
    expect(() => k.runAs(t2, () => k.lockdep.assertNoneHeld())).toThrow(/locks still held: b$/);
  });

  it("counts read holds of several tasks, released in any order", () => {
    const k = new Kernel({ ramBytes: 1n << 30n, lockOrder: null });
    const s = new RwSem(k.lockdep, "s");
    const tasks = [k.current, k.newTask(k.current.process), k.newTask(k.current.process)];
    const as = (i: number, fn: () => void) => k.runAs(tasks[i]!, fn);
    const writable = () =>
      k.runAs(tasks[2]!, () => {
        const ok = s.tryDownWrite();
        if (ok) s.upWrite();
        return ok;
      });
    as(0, () => s.downRead());
    as(1, () => s.downRead());
    expect(() => as(1, () => s.downRead())).toThrow(/recursive locking/);
    as(0, () => s.upRead());
    expect(writable()).toBe(false);
    as(0, () => s.downRead());
    as(1, () => s.upRead());
    expect(() => as(1, () => s.upRead())).toThrow(/up_read without down_read/);
    expect(writable()).toBe(false);
    as(1, () => s.downRead());
    as(0, () => s.upRead());
    expect(() => as(0, () => s.upRead())).toThrow(/up_read without down_read/);
    as(1, () => s.upRead());
    expect(writable()).toBe(true);
    for (const t of tasks) expect(k.lockdep.heldBy(t)).toEqual([]);
  });
});
