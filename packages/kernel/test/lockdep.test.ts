import { describe, expect, it } from "vitest";
import { Kernel, LockdepError, Mutex, RwSem, WwAcquireCtx, WwMutex } from "../src/index.js";

function setup(): { k: Kernel } {
  // Classes of the tests' own: the recorded graph alone, without the stack's table.
  return { k: new Kernel({ ramBytes: 1n << 30n, lockOrder: null }) };
}

describe("lockdep", () => {
  it("records the order A -> B and catches the inversion on first use, without a deadlock", () => {
    const { k } = setup();
    const a = new Mutex(k.lockdep, "iopt.domains_rwsem");
    const b = new Mutex(k.lockdep, "iopt_pages.mutex");
    a.with(() => b.with(() => undefined));
    expect(k.lockdep.orderRecorded("iopt.domains_rwsem", "iopt_pages.mutex")).toBe(true);
    expect(k.lockdep.edges).toEqual([["iopt.domains_rwsem", "iopt_pages.mutex"]]);
    b.lock();
    expect(() => a.lock()).toThrow(LockdepError);
    expect(() => a.lock()).toThrow(/circular locking/);
    expect(a.locked).toBe(false);
    b.unlock();
    k.lockdep.assertNoneHeld();
  });

  it("catches a transitive inversion A -> B -> C then C -> A", () => {
    const { k } = setup();
    const [a, b, c] = ["A", "B", "C"].map((n) => new Mutex(k.lockdep, n)) as [Mutex, Mutex, Mutex];
    a.with(() => b.with(() => undefined));
    b.with(() => c.with(() => undefined));
    c.lock();
    expect(() => a.lock()).toThrow(/circular/);
    c.unlock();
  });

  it("the order is per class: another instance of the same classes inverts too", () => {
    const { k } = setup();
    const a1 = new Mutex(k.lockdep, "A");
    const b1 = new Mutex(k.lockdep, "B");
    a1.with(() => b1.with(() => undefined));
    const a2 = new Mutex(k.lockdep, "A");
    const b2 = new Mutex(k.lockdep, "B");
    b2.lock();
    expect(() => a2.lock()).toThrow(LockdepError);
    b2.unlock();
  });

  it("catches recursive acquisition of a lock and of a class without a nesting annotation", () => {
    const { k } = setup();
    const m = new Mutex(k.lockdep, "M");
    m.lock();
    expect(() => m.lock()).toThrow(/recursive locking/);
    const other = new Mutex(k.lockdep, "M");
    expect(() => other.lock()).toThrow(/recursive locking of class/);
    other.lock(1); // mutex_lock_nested with a subclass is allowed
    other.unlock();
    m.unlock();
  });

  it("catches release by a task that does not hold the lock", () => {
    const { k } = setup();
    const m = new Mutex(k.lockdep, "M");
    expect(() => m.unlock()).toThrow(/does not hold it/);
    m.lock();
    const other = k.newTask(k.current.process);
    expect(() => k.runAs(other, () => m.unlock())).toThrow(LockdepError);
    expect(m.isHeld).toBe(true);
    m.unlock();
  });

  it("trylocks are recorded as held but add no order and skip the same-class check", () => {
    const { k } = setup();
    const a = new Mutex(k.lockdep, "A");
    const b = new Mutex(k.lockdep, "B");
    const b2 = new Mutex(k.lockdep, "B");
    b.lock();
    expect(a.tryLock()).toBe(true); // B then A by trylock: no edge B -> A
    expect(b2.tryLock()).toBe(true); // a second B without a nesting annotation
    expect(k.lockdep.orderRecorded("B", "A")).toBe(false);
    b2.unlock();
    a.unlock();
    b.unlock();
    a.with(() => b.with(() => undefined)); // A -> B is still fine
    expect(k.lockdep.orderRecorded("A", "B")).toBe(true);
  });

  it("assertHeld and assertHeldWrite", () => {
    const { k } = setup();
    const m = new Mutex(k.lockdep, "M");
    expect(() => m.assertHeld()).toThrow(/not held/);
    m.with(() => m.assertHeld());
    const s = new RwSem(k.lockdep, "S");
    s.withRead(() => {
      s.assertHeld();
      expect(() => s.assertHeldWrite()).toThrow(/not held for write/);
    });
    s.withWrite(() => s.assertHeldWrite());
    expect(() => s.upRead()).toThrow(LockdepError);
    expect(() => s.upWrite()).toThrow(LockdepError);
  });

  it("contention from another task is a deadlock unless a scheduler handles it", () => {
    const { k } = setup();
    const m = new Mutex(k.lockdep, "M");
    m.lock();
    const t2 = k.newTask(k.current.process);
    expect(() => k.runAs(t2, () => m.lock())).toThrow(/deadlock/);
    expect(k.runAs(t2, () => m.tryLock())).toBe(false);
    const s = new RwSem(k.lockdep, "S");
    s.downRead();
    expect(k.runAs(t2, () => s.tryDownWrite())).toBe(false);
    s.upRead();
    m.unlock();
    const seen: string[] = [];
    k.lockdep.onContended = (lock) => {
      seen.push(lock.className);
      k.runAs(t2, () => m.unlock());
    };
    k.runAs(t2, () => m.lock());
    m.lock();
    expect(seen).toEqual(["M"]);
    m.unlock();
  });

  it("ww_mutex: several of one class under one context, EALREADY for a repeat", () => {
    const { k } = setup();
    const ctx = new WwAcquireCtx();
    const r1 = new WwMutex(k.lockdep, "dma_resv");
    const r2 = new WwMutex(k.lockdep, "dma_resv");
    expect(r1.lock(ctx)).toBe(0);
    expect(r2.lock(ctx)).toBe(0);
    expect(r1.lock(ctx)).toBe(-114);
    expect(ctx.held.size).toBe(2);
    r2.unlock();
    r1.unlock();
    expect(ctx.held.size).toBe(0);
    r1.lock();
    expect(() => r2.lock()).toThrow(/recursive locking of class/);
    r1.unlock();
    expect(r1.tryLock()).toBe(true);
    r1.unlock();
    expect(r1.with(() => r1.locked)).toBe(true);
  });
});
