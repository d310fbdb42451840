import { describe, expect, it } from "vitest";
import {
  Kernel,
  KernelWarning,
  LockOrder,
  LockdepError,
  Mutex,
  RwSem,
  STACK_LOCK_ORDER,
  WwMutex,
} from "../src/index.js";

function machine(): Kernel {
  return new Kernel({ ramBytes: 1n << 30n });
}

describe("the stack's lock order table", () => {
  it("is what every kernel's lockdep checks unless told otherwise", () => {
    expect(machine().lockdep.order).toBe(STACK_LOCK_ORDER);
    expect(new Kernel({ lockOrder: null }).lockdep.order).toBeNull();
  });

  it("accepts an order in the table: the io_pagetable chain down to GUP", () => {
    const k = machine();
    const domains = new RwSem(k.lockdep, "iopt.domains_rwsem");
    const iova = new RwSem(k.lockdep, "iopt.iova_rwsem");
    const pages = new Mutex(k.lockdep, "iopt_pages.mutex");
    const mmap = k.current.process.mm.mmapLock;
    domains.withRead(() => iova.withRead(() => pages.with(() => mmap.withRead(() => undefined))));
    expect(k.lockdep.edges).toEqual([
      ["iopt.domains_rwsem", "iopt.iova_rwsem"],
      ["iopt.domains_rwsem", "iopt_pages.mutex"],
      ["iopt.iova_rwsem", "iopt_pages.mutex"],
      ["iopt.domains_rwsem", "mmap_lock"],
      ["iopt.iova_rwsem", "mmap_lock"],
      ["iopt_pages.mutex", "mmap_lock"],
    ]);
    k.lockdep.assertNoneHeld();
  });

  it("accepts a revoke: memory_lock, the reservation lock, then the DMABUF pages class", () => {
    const k = machine();
    const memoryLock = new RwSem(k.lockdep, "vfio_pci.memory_lock/0000:01:00.0");
    const resv = new WwMutex(k.lockdep, "reservation_ww_class_mutex");
    const pages = new Mutex(k.lockdep, "iopt_pages.mutex/dmabuf");
    memoryLock.withWrite(() => resv.with(() => pages.with(() => undefined)));
    expect(
      k.lockdep.orderRecorded("vfio_pci.memory_lock/0000:01:00.0", "iopt_pages.mutex/dmabuf"),
    ).toBe(true);
  });

  it("reports an order against the table the first time, before the reverse is ever taken", () => {
    const k = machine();
    const domains = new RwSem(k.lockdep, "iopt.domains_rwsem");
    const iova = new RwSem(k.lockdep, "iopt.iova_rwsem");
    iova.downWrite();
    expect(() => domains.downWrite()).toThrow(LockdepError);
    expect(() => domains.downRead()).toThrow(
      /lock order violation: acquiring iopt.domains_rwsem while holding iopt.iova_rwsem/,
    );
    // Refused before it was taken, and no dependency recorded.
    expect(k.lockdep.heldBy().map((h) => h.key)).toEqual(["iopt.iova_rwsem"]);
    expect(k.lockdep.edges).toEqual([]);
    iova.upWrite();
    k.lockdep.assertNoneHeld();
  });

  it("reports the USER pages mutex under the reservation lock (the reason for the DMABUF class)", () => {
    const k = machine();
    const resv = new WwMutex(k.lockdep, "reservation_ww_class_mutex");
    const pages = new Mutex(k.lockdep, "iopt_pages.mutex");
    resv.lock();
    expect(() => pages.lock()).toThrow(
      /the table orders iopt_pages.mutex before reservation_ww_class_mutex/,
    );
    resv.unlock();
  });

  it("checks a might_lock against the table as well", () => {
    const k = machine();
    const resv = new WwMutex(k.lockdep, "reservation_ww_class_mutex");
    resv.with(() =>
      expect(() => k.lockdep.mightLock(k.current.process.mm.mmapLock)).toThrow(LockdepError),
    );
  });

  it("reports a class that is not in the table as soon as it nests with another, either way", () => {
    const k = machine();
    const pages = new Mutex(k.lockdep, "iopt_pages.mutex");
    const stray = new Mutex(k.lockdep, "stray_driver.lock");
    stray.with(() => undefined); // alone it orders nothing
    pages.lock();
    expect(() => stray.lock()).toThrow(
      /lock class stray_driver.lock is not in the lock order table/,
    );
    pages.unlock();
    stray.lock();
    expect(() => pages.lock()).toThrow(/stray_driver.lock is not in the lock order table/);
    stray.unlock();
    expect(k.lockdep.edges).toEqual([]);
  });

  it("ranks subclasses and per-instance classes as their class", () => {
    expect(STACK_LOCK_ORDER.rankOf("iopt_pages.mutex/1")).toBe(
      STACK_LOCK_ORDER.rankOf("iopt_pages.mutex"),
    );
    expect(STACK_LOCK_ORDER.rankOf("vfio_pci.memory_lock/0000:02:00.0")).toBe(
      STACK_LOCK_ORDER.rankOf("vfio_pci.memory_lock"),
    );
    // The DMABUF pages class is a class of its own, not a subclass.
    expect(STACK_LOCK_ORDER.rankOf("iopt_pages.mutex/dmabuf")).toBeGreaterThan(
      STACK_LOCK_ORDER.rankOf("reservation_ww_class_mutex")!,
    );
    expect(STACK_LOCK_ORDER.rankOf("iopt_pages.mutex/dmabuf/1")).toBe(
      STACK_LOCK_ORDER.rankOf("iopt_pages.mutex/dmabuf"),
    );
    expect(STACK_LOCK_ORDER.rankOf("iopt_pages")).toBeUndefined();
  });

  it("keeps the graph's inversion detection between keys of one rank", () => {
    const k = machine();
    const a = new RwSem(k.lockdep, "vfio_pci.memory_lock/0000:01:00.0");
    const b = new RwSem(k.lockdep, "vfio_pci.memory_lock/0000:01:01.0");
    a.withWrite(() => b.withWrite(() => undefined));
    b.downWrite();
    expect(() => a.downWrite()).toThrow(/circular locking/);
    b.upWrite();
  });

  it("a table of a test's own orders its classes the same way", () => {
    const order = new LockOrder(["outer", "inner"]);
    expect(order.violation("outer", "inner")).toBeUndefined();
    expect(order.violation("inner", "outer")).toMatch(/lock order violation/);
    expect(order.violation("outer", "other")).toMatch(/other is not in the lock order table/);
    const k = new Kernel({ ramBytes: 1n << 30n, lockOrder: order });
    const outer = new Mutex(k.lockdep, "outer");
    const inner = new Mutex(k.lockdep, "inner");
    inner.lock();
    let err: unknown;
    try {
      outer.lock();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelWarning);
    inner.unlock();
  });
});
