import { describe, expect, it } from "vitest";
import { Kernel, LockdepError, Mutex, RwSem, WwAcquireCtx, WwMutex } from "../src/index.js";

function setup(): Kernel {
  // Classes of the tests' own: the recorded graph alone, without the stack's table.
  return new Kernel({ ramBytes: 1n << 30n, lockOrder: null });
}

describe("lockdep classes, subclasses and read holds (kernel/locking/lockdep.c)", () => {
  it("mutex_lock_nested: a subclass lets a second lock of the class in; the same lock under a subclass is still recursion", () => {
    const k = setup();
    const a1 = new Mutex(k.lockdep, "a");
    const a2 = new Mutex(k.lockdep, "a");
    a1.lock();
    a2.lock(1);
    expect(k.lockdep.heldBy().map((h) => [h.key, h.read])).toEqual([
      ["a", false],
      ["a/1", false],
    ]);
    a2.unlock();
    expect(() => a1.lock(1)).toThrow(/recursive locking: a already held/);
    // might_lock of another lock of the held class: check_deadlock without a nesting annotation.
    expect(() => k.lockdep.mightLock(a2)).toThrow(/possible recursive locking of class a/);
    a1.unlock();
  });

  it("holds is per lock; edges are recorded once each and a class keeps all its successors", () => {
    const k = setup();
    const [a, b, c] = ["a", "b", "c"].map((n) => new Mutex(k.lockdep, n)) as [Mutex, Mutex, Mutex];
    a.lock();
    expect(b.isHeld).toBe(false);
    b.with(() => undefined);
    b.with(() => undefined);
    c.with(() => undefined);
    a.unlock();
    expect(k.lockdep.edges).toEqual([
      ["a", "b"],
      ["a", "c"],
    ]);
    expect(k.lockdep.orderRecorded("a", "b")).toBe(true);
    expect(k.lockdep.orderRecorded("a", "c")).toBe(true);
  });

  it("rw_semaphore: readers are read holds, writers wait for readers and readers for the writer", () => {
    const k = setup();
    const s = new RwSem(k.lockdep, "s");
    const s2 = new RwSem(k.lockdep, "s");
    const t2 = k.newTask(k.current.process);
    s.downRead();
    expect(k.lockdep.heldBy().map((h) => [h.key, h.read])).toEqual([["s", true]]);
    // Another rwsem of the class, read too: no nesting annotation, so recursive locking.
    expect(() => s2.downRead()).toThrow(/possible recursive locking of class s/);
    expect(() => s2.downWrite()).toThrow(/possible recursive locking of class s/);
    expect(k.runAs(t2, () => s.tryDownWrite())).toBe(false);
    expect(() => k.runAs(t2, () => s.downWrite())).toThrow(/deadlock/);
    s.upRead();
    k.runAs(t2, () => s.downWrite());
    expect(k.lockdep.heldBy(t2).map((h) => [h.key, h.read])).toEqual([["s", false]]);
    expect(() => s.downRead()).toThrow(/deadlock/);
    // A writer makes another task's down_write wait and its down_write_trylock fail.
    expect(() => s.downWrite()).toThrow(/deadlock/);
    expect(s.tryDownWrite()).toBe(false);
    expect(() => s.upWrite()).toThrow(/up_write by non-owner/);
    k.runAs(t2, () => s.upWrite());
  });

  it("the read hold of a second task is its own: released first, the first task's stays", () => {
    const k = setup();
    const s = new RwSem(k.lockdep, "s");
    const t2 = k.newTask(k.current.process);
    s.downRead();
    k.runAs(t2, () => s.downRead());
    k.runAs(t2, () => s.upRead());
    expect(() => k.runAs(t2, () => s.upRead())).toThrow(/up_read without down_read/);
    expect(k.runAs(t2, () => s.tryDownWrite())).toBe(false);
    s.upRead();
    expect(s.tryDownWrite()).toBe(true);
    s.upWrite();
  });

  it("a trylock is a boundary and records a write hold but no order", () => {
    const k = setup();
    const s = new RwSem(k.lockdep, "s");
    const m = new Mutex(k.lockdep, "m");
    const kinds: string[] = [];
    s.withWrite(() => m.with(() => undefined));
    k.lockdep.onBoundary = (kind) => kinds.push(kind);
    m.lock();
    // s -> m was recorded; a trylock of s under m cannot deadlock and is not an inversion.
    expect(s.tryDownWrite()).toBe(true);
    expect(k.lockdep.heldBy().map((h) => [h.key, h.read])).toEqual([
      ["m", false],
      ["s", false],
    ]);
    s.upWrite();
    expect(m.tryLock()).toBe(false);
    m.unlock();
    expect(m.tryLock()).toBe(true);
    expect(k.lockdep.heldBy().map((h) => h.read)).toEqual([false]);
    m.unlock();
    kinds.length = 0;
    s.tryDownWrite();
    s.upWrite();
    m.tryLock();
    m.unlock();
    k.lockdep.mightLock(m);
    expect(kinds).toEqual(["acquire", "release", "acquire", "release", "acquire", "release"]);
  });

  it("ww_mutex: an empty context gives no nesting; locks under one context record no self-edge", () => {
    const k = setup();
    const w1 = new WwMutex(k.lockdep, "w");
    const w2 = new WwMutex(k.lockdep, "w");
    const ctx = new WwAcquireCtx();
    w1.lock();
    expect(() => w2.lock(ctx)).toThrow(/possible recursive locking of class w/);
    w1.unlock();
    expect(w1.lock(ctx)).toBe(0);
    expect(w2.lock(ctx)).toBe(0);
    expect(k.lockdep.edges).toEqual([]);
    w2.unlock();
    w1.unlock();
    expect(() => w1.unlock()).toThrow(LockdepError);
  });
});
