import { EALREADY } from "./errno.js";
import { KernelWarning } from "./error.js";
import { type LockOrder, STACK_LOCK_ORDER } from "./lockdep-order.js";

/**
 * Locks with lockdep. Each lock belongs to a class (a name, like a lock_class_key); acquiring
 * class B while holding class A records the edge A -> B, and an acquisition that would close a
 * cycle in that graph is an order inversion and throws at once — on the first run that takes
 * the locks in the wrong order, without needing the deadlock to happen. Each new edge is also
 * checked against the stack's declared lock order (lockdep-order.ts): an edge against the table,
 * or with a class missing from it, throws even if the reverse was never taken. Recursive acquisition,
 * release by a task that does not hold the lock, and `assertHeld` failures throw too.
 *
 * The model is synchronous: a lock held by another task cannot be waited for. Such contention
 * is reported to `onContended` (the race explorer schedules around it); with no handler it is a
 * deadlock and throws.
 *
 * Lock boundaries (before a task takes a lock, after it released one) are where the kernel may
 * preempt it in ways another path can observe; `onBoundary` sees each of them (the race
 * explorer runs other paths there). Unset, they cost one branch.
 */
export class LockdepError extends KernelWarning {}

interface LockTask {
  readonly tid: number;
}

interface Held {
  readonly lock: LockBase;
  readonly key: string;
  readonly read: boolean;
}

export class Lockdep {
  /** class key -> classes acquired while it was held */
  private readonly after = new Map<string, Set<string>>();
  /** Held locks per task id, innermost last; a task's list is kept (empty) between uses. */
  private readonly held = new Map<number, Held[]>();
  /** The last task looked up and its list: nearly every lock operation is the same task's. */
  private lastTask: LockTask | undefined;
  private lastList: Held[] = [];
  /** Order of first observation of each edge, for reports. */
  readonly edges: Array<[string, string]> = [];
  onContended: ((lock: LockBase, task: LockTask) => void) | undefined;
  onBoundary: ((kind: "acquire" | "release", lock: LockBase, task: LockTask) => void) | undefined;

  /** `order` null: the recorded graph alone (for classes of a test's own). */
  constructor(
    readonly current: () => LockTask,
    readonly order: LockOrder | null = STACK_LOCK_ORDER,
  ) {}

  heldBy(task: LockTask = this.current()): readonly Held[] {
    return this.held.get(task.tid) ?? [];
  }

  private listOf(task: LockTask): Held[] {
    if (task === this.lastTask) return this.lastList;
    let list = this.held.get(task.tid);
    if (!list) this.held.set(task.tid, (list = []));
    this.lastTask = task;
    this.lastList = list;
    return list;
  }

  /** Has the edge a -> b (directly or transitively) been recorded? */
  orderRecorded(a: string, b: string): boolean {
    return this.reaches(a, b);
  }

  private reaches(from: string, to: string): boolean {
    const seen = new Set<string>();
    const stack = [from];
    while (stack.length) {
      const k = stack.pop()!;
      if (k === to) return true;
      if (seen.has(k)) continue;
      seen.add(k);
      for (const n of this.after.get(k) ?? []) stack.push(n);
    }
    return false;
  }

  /**
   * @internal called by the lock types before they take ownership. A trylock cannot deadlock
   * (it never waits), so, as in the kernel's lockdep, it is only recorded as held: no order or
   * same-class check and no new dependency; locks taken after it still depend on it.
   */
  acquire(lock: LockBase, read: boolean, subclass: number, nestOk: boolean, trylock = false): void {
    const list = this.listOf(this.current());
    const held = lock.heldRecord(read, subclass);
    if (!trylock) this.checkOrder(lock, held.key, nestOk, list);
    list.push(held);
  }

  /**
   * might_lock / might_lock_read: the checks and dependencies of taking `lock` now, without
   * taking it, for paths that take it only sometimes (a user copy faults only on a missing
   * page). Boundaries before and after, like a take and release.
   */
  mightLock(lock: LockBase): void {
    this.boundary("acquire", lock);
    this.checkOrder(lock, lock.className, false, this.listOf(this.current()));
    this.boundary("release", lock);
  }

  /** Same-lock, same-class and order checks of acquiring `key`; records the new edges. */
  private checkOrder(lock: LockBase, key: string, nestOk: boolean, list: Held[]): void {
    for (const h of list) {
      if (h.lock === lock) {
        throw new LockdepError(
          `recursive locking: ${lock.className} already held by task ${this.current().tid}`,
        );
      }
      if (h.key === key && !nestOk) {
        throw new LockdepError(
          `possible recursive locking of class ${key} (missing nesting annotation)`,
        );
      }
    }
    let learns = false;
    for (const h of list) {
      if (h.key === key) continue;
      // A recorded edge h -> key means no path key -> h can exist (it would have been refused
      // when added), so only new edges need the graph search.
      if (this.after.get(h.key)?.has(key)) continue;
      learns = true;
      const violation = this.order?.violation(h.key, key);
      if (violation) throw new LockdepError(violation);
      if (this.reaches(key, h.key)) {
        throw new LockdepError(
          `possible circular locking: acquiring ${key} while holding ${h.key}, but ${key} -> ${h.key} was recorded`,
        );
      }
    }
    // Every edge already recorded: nothing to add (the usual case once a path has run).
    if (!learns) return;
    for (const h of list) {
      if (h.key === key) continue;
      let s = this.after.get(h.key);
      if (!s) this.after.set(h.key, (s = new Set()));
      if (!s.has(key)) {
        s.add(key);
        this.edges.push([h.key, key]);
      }
    }
  }

  /** @internal */
  release(lock: LockBase): void {
    const task = this.current();
    const list = this.listOf(task);
    let i = list.length - 1;
    while (i >= 0 && list[i]!.lock !== lock) i--;
    if (i < 0)
      throw new LockdepError(
        `${lock.className} released by task ${task.tid}, which does not hold it`,
      );
    // Locks are nearly always released innermost first.
    if (i === list.length - 1) list.pop();
    else list.splice(i, 1);
  }

  holds(lock: LockBase, task: LockTask = this.current()): boolean {
    const list = task === this.lastTask ? this.lastList : this.held.get(task.tid);
    if (list) for (const h of list) if (h.lock === lock) return true;
    return false;
  }

  /** Throws unless the current task holds no lock at all (a syscall boundary). */
  assertNoneHeld(): void {
    const task = this.current();
    const list = task === this.lastTask ? this.lastList : this.heldBy(task);
    if (list.length)
      throw new LockdepError(`locks still held: ${list.map((h) => h.key).join(", ")}`);
  }

  /** @internal called by the lock types before an acquisition and after a release. */
  boundary(kind: "acquire" | "release", lock: LockBase): void {
    if (this.onBoundary) this.onBoundary(kind, lock, this.current());
  }

  contended(lock: LockBase): void {
    const task = this.current();
    if (this.onContended) this.onContended(lock, task);
    else
      throw new LockdepError(
        `deadlock: task ${task.tid} waits for ${lock.className}, held by another task`,
      );
  }
}

export abstract class LockBase {
  /** Held-lock records by `subclass * 2 + read`, made once (they never change). */
  private readonly records: Array<Held | undefined> = [];

  constructor(
    readonly lockdep: Lockdep,
    readonly className: string,
  ) {}

  /** @internal the record lockdep keeps while this lock is held; its class key names the subclass. */
  heldRecord(read: boolean, subclass: number): Held {
    const i = subclass * 2 + (read ? 1 : 0);
    let h = this.records[i];
    if (!h) {
      const key = subclass ? `${this.className}/${subclass}` : this.className;
      this.records[i] = h = { lock: this, key, read };
    }
    return h;
  }

  /** lockdep_assert_held */
  assertHeld(): void {
    if (!this.lockdep.holds(this)) throw new LockdepError(`${this.className} not held`);
  }

  get isHeld(): boolean {
    return this.lockdep.holds(this);
  }
}

/** The single-owner part shared by Mutex and WwMutex. */
abstract class OwnedLock extends LockBase {
  protected owner: number | undefined;

  get locked(): boolean {
    return this.owner !== undefined;
  }

  /** Wait for the lock (a held lock of the same task goes to lockdep as recursion), then own it. */
  protected take(subclass: number, nestOk: boolean): void {
    this.lockdep.boundary("acquire", this);
    while (this.owner !== undefined && this.owner !== this.lockdep.current().tid)
      this.lockdep.contended(this);
    this.lockdep.acquire(this, false, subclass, nestOk);
    this.owner = this.lockdep.current().tid;
  }

  tryLock(): boolean {
    this.lockdep.boundary("acquire", this);
    if (this.owner !== undefined) return false;
    this.lockdep.acquire(this, false, 0, false, true);
    this.owner = this.lockdep.current().tid;
    return true;
  }

  unlock(): void {
    this.lockdep.release(this);
    this.owner = undefined;
    this.released();
    this.lockdep.boundary("release", this);
  }

  /** What a lock type forgets on unlock besides its owner. */
  protected released(): void {}
}

/** struct mutex */
export class Mutex extends OwnedLock {
  /** mutex_lock / mutex_lock_nested(subclass) */
  lock(subclass = 0): void {
    this.take(subclass, subclass !== 0);
  }

  /** Run `fn` with the mutex held (guard(mutex) in the kernel). */
  with<T>(fn: () => T, subclass = 0): T {
    this.lock(subclass);
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }
}

/** struct rw_semaphore */
export class RwSem extends LockBase {
  private writer: number | undefined;
  /** Read holds: one task's count in fields (the usual case), further readers in the map. */
  private reader = -1;
  private readDepth = 0;
  private readonly readers = new Map<number, number>();

  private get readHeld(): boolean {
    return this.readDepth !== 0 || this.readers.size !== 0;
  }

  downRead(): void {
    this.lockdep.boundary("acquire", this);
    while (this.writer !== undefined) this.lockdep.contended(this);
    this.lockdep.acquire(this, true, 0, false);
    const tid = this.lockdep.current().tid;
    if (this.readDepth === 0 || this.reader === tid) {
      this.reader = tid;
      this.readDepth++;
    } else this.readers.set(tid, (this.readers.get(tid) ?? 0) + 1);
  }

  upRead(): void {
    const tid = this.lockdep.current().tid;
    const inFields = this.readDepth !== 0 && this.reader === tid;
    const n = inFields ? this.readDepth : (this.readers.get(tid) ?? 0);
    if (n === 0) throw new LockdepError(`${this.className}: up_read without down_read`);
    this.lockdep.release(this);
    if (inFields) this.readDepth--;
    else if (n === 1) this.readers.delete(tid);
    else this.readers.set(tid, n - 1);
    this.lockdep.boundary("release", this);
  }

  downWrite(): void {
    this.lockdep.boundary("acquire", this);
    while (this.writer !== undefined || this.readHeld) this.lockdep.contended(this);
    this.lockdep.acquire(this, false, 0, false);
    this.writer = this.lockdep.current().tid;
  }

  tryDownWrite(): boolean {
    this.lockdep.boundary("acquire", this);
    if (this.writer !== undefined || this.readHeld) return false;
    this.lockdep.acquire(this, false, 0, false, true);
    this.writer = this.lockdep.current().tid;
    return true;
  }

  upWrite(): void {
    if (this.writer !== this.lockdep.current().tid)
      throw new LockdepError(`${this.className}: up_write by non-owner`);
    this.lockdep.release(this);
    this.writer = undefined;
    this.lockdep.boundary("release", this);
  }

  /** Held for write by the current task (lockdep_assert_held_write). */
  assertHeldWrite(): void {
    if (this.writer !== this.lockdep.current().tid)
      throw new LockdepError(`${this.className} not held for write`);
  }

  withRead<T>(fn: () => T): T {
    this.downRead();
    try {
      return fn();
    } finally {
      this.upRead();
    }
  }

  withWrite<T>(fn: () => T): T {
    this.downWrite();
    try {
      return fn();
    } finally {
      this.upWrite();
    }
  }
}

/** ww_acquire_ctx: lets one task hold several locks of the same ww class. */
export class WwAcquireCtx {
  readonly held = new Set<WwMutex>();
  done = false;
}

/**
 * struct ww_mutex, as used by dma_resv. Several instances of one class may be held together
 * only under one acquire context; locking one the context already holds is EALREADY.
 */
export class WwMutex extends OwnedLock {
  private ctx: WwAcquireCtx | undefined;

  /** ww_mutex_lock: returns 0, or -EALREADY when `ctx` already holds this lock. */
  lock(ctx?: WwAcquireCtx): number {
    if (ctx && this.ctx === ctx) return -EALREADY;
    this.take(0, ctx !== undefined && ctx.held.size > 0);
    if (ctx) {
      this.ctx = ctx;
      ctx.held.add(this);
    }
    return 0;
  }

  protected override released(): void {
    this.ctx?.held.delete(this);
    this.ctx = undefined;
  }

  with<T>(fn: () => T): T {
    this.lock();
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }
}
