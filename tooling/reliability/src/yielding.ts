/**
 * The runtime of the race explorer's dual compilation (yielding-transform.ts). A module loaded
 * for exploration keeps every function as written and gives each one a generator twin
 * (`fn[YIELDING]`): the same body with every call `f(a)` turned into `yield* callW(f, this,
 * [a])` and every `o.m(a)` into `yield* callM(o, "m", [a])`. Through these calls a twin
 * delegates into the callee's twin, so a `yield` deep inside (the explorer's lock-boundary
 * hook) suspends the whole path, stack and all, until the scheduler resumes it. A callee with
 * no twin (a builtin, a getter, a constructor, code from outside the packages) is called
 * plainly: it runs to its end without a preemption point.
 *
 * Calls through Function.prototype.call / apply / bind and the array iterations the model uses
 * with callbacks (forEach, map, filter, some, every, find, findIndex) keep their callbacks'
 * twins; any other builtin taking a callback runs it plainly.
 */

/** The property holding a function's generator twin. */
export const YIELDING: unique symbol = Symbol.for("x-iommu.yielding");

type Twin = (this: unknown, ...args: unknown[]) => Generator<unknown, unknown, unknown>;
type Fn = ((this: unknown, ...args: unknown[]) => unknown) & { [YIELDING]?: Twin };

/** The generator twin of `f`, if it has one. */
export function twinOf(f: unknown): Twin | undefined {
  return typeof f === "function" ? (f as Fn)[YIELDING] : undefined;
}

/** Give `f` the twin `twin`; returns `f`. */
export function wrap<F>(f: F, twin: Twin): F {
  (f as Fn)[YIELDING] = twin;
  return f;
}

/** Call `f` as `thisArg`: through its twin when it has one, plainly otherwise. */
export function* callW(f: unknown, thisArg: unknown, args: unknown[]): Generator<unknown> {
  const twin = twinOf(f);
  if (twin) return yield* twin.apply(thisArg, args);
  return Reflect.apply(f as Fn, thisArg, args);
}

const ITERATIONS = new Set(["forEach", "map", "filter", "some", "every", "find", "findIndex"]);

/** `o[k](...args)`, through the method's twin, or a yielding form of call/apply/bind/iteration. */
export function* callM(o: unknown, k: PropertyKey, args: unknown[]): Generator<unknown> {
  const f = (o as Record<PropertyKey, unknown>)[k];
  if (typeof o === "function" && twinOf(o)) {
    const twin = twinOf(o) as Twin;
    if (f === Function.prototype.call) return yield* twin.apply(args[0], args.slice(1));
    if (f === Function.prototype.apply)
      return yield* twin.apply(args[0], (args[1] as unknown[] | undefined) ?? []);
    if (f === Function.prototype.bind) {
      const bound = Reflect.apply(f as Fn, o, args) as Fn;
      bound[YIELDING] = twin.bind(args[0], ...args.slice(1)) as Twin;
      return bound;
    }
  }
  if (Array.isArray(o) && typeof k === "string" && ITERATIONS.has(k) && twinOf(args[0])) {
    return yield* iterate(o, k, args[0] as Fn, args[1]);
  }
  return yield* callW(f, o, args);
}

/** Array.prototype iteration `k` over `a` with a callback that has a twin. */
function* iterate(a: unknown[], k: string, cb: Fn, thisArg: unknown): Generator<unknown> {
  const twin = twinOf(cb) as Twin;
  const out: unknown[] = [];
  const len = a.length;
  for (let i = 0; i < len; i++) {
    if (k !== "map" && !(i in a)) continue;
    const v = a[i];
    const r = yield* twin.call(thisArg, v, i, a);
    if (k === "map") out[i] = r;
    else if (k === "filter" && r) out.push(v);
    else if (k === "some" && r) return true;
    else if (k === "every" && !r) return false;
    else if (k === "find" && r) return v;
    else if (k === "findIndex" && r) return i;
  }
  if (k === "map" || k === "filter") return out;
  if (k === "some") return false;
  if (k === "every") return true;
  if (k === "findIndex") return -1;
  return undefined;
}

const keys = new Map<string, symbol>();

/** The key a method's twin is defined under in its class or object literal, until linked. */
export function key(name: string): symbol {
  let s = keys.get(name);
  if (!s) keys.set(name, (s = Symbol(`yielding ${name}`)));
  return s;
}

/** Move each twin defined under `key(name)` of `target` onto the function at `name`. */
function link(target: object): void {
  for (const name of Object.getOwnPropertyNames(target)) {
    const twinKey = keys.get(name);
    if (!twinKey || !Object.hasOwn(target, twinKey)) continue;
    const value = Object.getOwnPropertyDescriptor(target, name)?.value;
    const twin = (target as Record<symbol, Twin>)[twinKey];
    if (typeof value === "function" && twin) (value as Fn)[YIELDING] = twin;
    delete (target as Record<symbol, Twin>)[twinKey];
  }
}

/** Run from a transformed class's static block: link its methods and static methods. */
export function linkClass(cls: { prototype: object }): void {
  link(cls.prototype);
  link(cls);
}

/** Wraps a transformed object literal with methods: links them; returns the object. */
export function linkObject<T extends object>(o: T): T {
  link(o);
  return o;
}
