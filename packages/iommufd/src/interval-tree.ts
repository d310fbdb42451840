/**
 * Interval trees with exact unsigned 64-bit bounds (the kernel's interval_tree over unsigned
 * long), plus the span iterators iommufd walks them with (interval_tree_span_iter and the
 * double span of double_span.h).
 *
 * Keys are bigint so an IOVA interval may end at 2^64 - 1; the page-index trees of iopt_pages use
 * the same structure (their bounds stay far below 2^53, the pfn_reader converts once per span).
 * Nodes may overlap (accesses, areas of several IOASes sharing one iopt_pages). The tree is a
 * treap ordered by (start, insertion sequence), each node augmented with a bound on the largest
 * `last` of each child's subtree, so "first node overlapping [a, b] after node n" costs
 * O(log n) plus the overlaps.
 *
 * Comparisons never touch the bigints: every bound is also kept split as (hi, lo) = (bits 32
 * and up, bits 0-31), two exact int32 (each less 2^31) compared hi first, held with the links in a typed
 * array per tree, so a visited node costs no pointer chase and no runtime call to compare.
 */

import { U64_MAX } from "@x/kernel";

/** The smaller of two bigints (Math.min is for numbers). */
export function bigMin(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

/**
 * Bounds are compared as (v >> 32, v & (2^32 - 1)), each half stored less 2^31 so it fits an
 * int32 and keeps its order.
 */
const HALF = 2 ** 32;
const BIAS = 2 ** 31;

/** The low half of the last `splitHi` (a second return value without an allocation). */
let splitLo = 0;

/** `splitHi` of a number below 2^53. */
function splitNumber(n: number): number {
  const hi = Math.floor(n / HALF);
  splitLo = n - hi * HALF - BIAS;
  return hi - BIAS;
}

/** Number() of the last `splitHi`'s bound: the double nearest it. */
let splitNear = 0;

/** `(v >> 32) - 2^31`, leaving `(v & (2^32 - 1)) - 2^31` in `splitLo`; bigint only above 2^53. */
function splitHi(v: bigint): number {
  const n = Number(v);
  splitNear = n;
  if (n < 2 ** 53) return splitNumber(n);
  splitLo = Number(v & 0xffff_ffffn) - BIAS;
  return Number(v >> 32n) - BIAS;
}

/**
 * A subtree's largest `last` is kept in its parent as a float32 key: the bound rounded to the
 * nearest double (as Number() of a bigint does) and that to the nearest float32, as the float's
 * bit pattern (for non-negative floats the patterns order as the values do, so a pruning test is
 * one int32 compare and a maximum one word instead of two). Rounding to nearest is monotone,
 * v <= w gives key(v) <= key(w), so key(max) < key(lo) proves max < lo: a child is pruned only
 * when it cannot reach the query, and rounding can add a visit, never lose an overlap. -1
 * (below the pattern of +0) stands for "no child".
 */
const F32 = new Float32Array(1);
const F32_BITS = new Int32Array(F32.buffer);
const NO_MAX = -1;

/** The key of the u64 `(hi, lo)` split as above: (hi + 2^31)·2^32 is exact, the sum rounds. */
function splitKey(hi: number, lo: number): number {
  F32[0] = (hi + BIAS) * HALF + (lo + BIAS);
  return F32_BITS[0]!;
}

/** The key of a query's `start` (given as Number() of it), what the children's maxima are compared with. */
function boundKey(near: number): number {
  F32[0] = near;
  return F32_BITS[0]!;
}

let seqCounter = 0;

/**
 * The treap priority of a slot (a 32-bit integer hash of its index): random-looking and
 * independent of the keys, as a treap needs, deterministic, and recomputed rather than stored
 * so a node fits half a cache line. A reused slot gets the same priority, still unrelated to
 * the key it now holds.
 */
function prio(n: number): number {
  let x = Math.imul(n ^ 0x9e3779b9, 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return x ^ (x >>> 16);
}

/**
 * Each tree keeps its nodes in one Int32Array, STRIDE words (32 bytes: two nodes a cache line)
 * a node, and links them by offset into it: a query walks contiguous memory and reads no
 * object but the owners it returns. Everything a query reads is in the node; the insertion
 * sequence, read only between equal starts, stays on the node object.
 */
const LMAX = 0; // the key of the left subtree's largest `last`: a child that cannot overlap is pruned unvisited
const RMAX = 1; // the right subtree's, likewise
const START_HI = 2;
const START_LO = 3;
const LAST_HI = 4;
const LAST_LO = 5;
const LEFT = 6; // offset of the left child, NIL for none; the next free slot on the free list
const RIGHT = 7;
const STRIDE = 8;
const SHIFT = 3; // offset >> SHIFT is the slot
const NIL = -1;
const FIRST_SLOTS = 2; // 64 bytes: V8 keeps a typed array this small on its heap
/** The store of every tree that never held a node (never written: the first insert grows). */
const EMPTY = new Int32Array(0);

/** struct interval_tree_node: `[start, last]` inclusive, owned by `owner`. */
export class IntervalNode<T> {
  private s = 0n;
  private l = 0n;
  private startHi = 0;
  private startLo = 0;
  private lastHi = 0;
  private lastLo = 0;
  /** @internal offset of the node in its tree's store */ at = NIL;
  /** @internal insertion sequence: the order between equal starts */ seq = 0;
  /** The tree the node is in, or undefined (RB_EMPTY_NODE). */
  tree: IntervalTree<T> | undefined;

  constructor(readonly owner: T) {}

  get start(): bigint {
    return this.s;
  }

  set start(v: bigint) {
    this.checkDetached();
    this.s = v;
    this.startHi = splitHi(v);
    this.startLo = splitLo;
  }

  get last(): bigint {
    return this.l;
  }

  set last(v: bigint) {
    this.checkDetached();
    this.l = v;
    this.lastHi = splitHi(v);
    this.lastLo = splitLo;
  }

  /** A node's bounds are its key: the kernel removes a node before changing them, and so must we. */
  private checkDetached(): void {
    if (this.tree) throw new Error("interval node changed while in a tree");
  }

  get inTree(): boolean {
    return this.tree !== undefined;
  }

  /** @internal copy the split bounds into the store at `at` */
  store(f: Int32Array, at: number): void {
    f[at + START_HI] = this.startHi;
    f[at + START_LO] = this.startLo;
    f[at + LAST_HI] = this.lastHi;
    f[at + LAST_LO] = this.lastLo;
  }
}

/** `(aHi, aLo) < (bHi, bLo)`: the exact order of the bounds they split. */
function lt(aHi: number, aLo: number, bHi: number, bLo: number): boolean {
  return aHi < bHi || (aHi === bHi && aLo < bLo);
}

/** The node at each slot of a store (offset >> SHIFT). */
type Slots = readonly (IntervalNode<unknown> | undefined)[];

/** Node `a` sorts before node `b`: by start, then insertion sequence. */
function before(f: Int32Array, nodes: Slots, a: number, b: number): boolean {
  if (f[a + START_HI] !== f[b + START_HI]) return f[a + START_HI]! < f[b + START_HI]!;
  if (f[a + START_LO] !== f[b + START_LO]) return f[a + START_LO]! < f[b + START_LO]!;
  return nodes[a >> SHIFT]!.seq < nodes[b >> SHIFT]!.seq;
}

/** The key of the largest `last` in `n`'s subtree, from its own bounds and its children's. */
function subtreeMax(f: Int32Array, n: number): number {
  const own = splitKey(f[n + LAST_HI]!, f[n + LAST_LO]!);
  return Math.max(own, f[n + LMAX]!, f[n + RMAX]!);
}

/** Refresh `n`'s copy of its left subtree's maximum (the right one is untouched). */
function fixLeft(f: Int32Array, n: number): void {
  const c = f[n + LEFT]!;
  f[n + LMAX] = c === NIL ? NO_MAX : subtreeMax(f, c);
}

function fixRight(f: Int32Array, n: number): void {
  const c = f[n + RIGHT]!;
  f[n + RMAX] = c === NIL ? NO_MAX : subtreeMax(f, c);
}

/**
 * Insert `n` under `root`, returning the subtree's new root. Only the child on the path
 * changed, so only its maximum is refreshed; a rotation moves a subtree with its maximum.
 */
function insertAt(f: Int32Array, nodes: Slots, root: number, n: number): number {
  if (root === NIL) return n;
  if (before(f, nodes, n, root)) {
    const l = insertAt(f, nodes, f[root + LEFT]!, n);
    if (prio(l) > prio(root)) {
      f[root + LEFT] = f[l + RIGHT]!;
      f[root + LMAX] = f[l + RMAX]!;
      f[l + RIGHT] = root;
      f[l + RMAX] = subtreeMax(f, root);
      return l;
    }
    f[root + LEFT] = l;
    f[root + LMAX] = subtreeMax(f, l);
  } else {
    const r = insertAt(f, nodes, f[root + RIGHT]!, n);
    if (prio(r) > prio(root)) {
      f[root + RIGHT] = f[r + LEFT]!;
      f[root + RMAX] = f[r + LMAX]!;
      f[r + LEFT] = root;
      f[r + LMAX] = subtreeMax(f, root);
      return r;
    }
    f[root + RIGHT] = r;
    f[root + RMAX] = subtreeMax(f, r);
  }
  return root;
}

/** Join `a` and `b`, every node of `a` before every node of `b`. */
function merge(f: Int32Array, a: number, b: number): number {
  if (a === NIL) return b;
  if (b === NIL) return a;
  if (prio(a) > prio(b)) {
    f[a + RIGHT] = merge(f, f[a + RIGHT]!, b);
    fixRight(f, a);
    return a;
  }
  f[b + LEFT] = merge(f, a, f[b + LEFT]!);
  fixLeft(f, b);
  return b;
}

function removeAt(f: Int32Array, nodes: Slots, root: number, n: number): number {
  if (root === NIL) return NIL;
  if (root === n) return merge(f, f[n + LEFT]!, f[n + RIGHT]!);
  if (before(f, nodes, n, root)) {
    f[root + LEFT] = removeAt(f, nodes, f[root + LEFT]!, n);
    fixLeft(f, root);
  } else {
    f[root + RIGHT] = removeAt(f, nodes, f[root + RIGHT]!, n);
    fixRight(f, root);
  }
  return root;
}

/**
 * The first node of `n`'s subtree in (start, seq) order overlapping [lo, hi] and ordered after
 * `after` (or NIL). `loKey` is boundKey(lo), what the children's maxima are compared with.
 */
function search(
  f: Int32Array,
  nodes: Slots,
  n: number,
  loKey: number,
  loHi: number,
  loLo: number,
  hiHi: number,
  hiLo: number,
  after: number,
): number {
  while (n !== NIL) {
    if (after === NIL || before(f, nodes, after, n)) {
      if (f[n + LMAX]! >= loKey) {
        const l = search(f, nodes, f[n + LEFT]!, loKey, loHi, loLo, hiHi, hiLo, after);
        if (l !== NIL) return l;
      }
      if (lt(hiHi, hiLo, f[n + START_HI]!, f[n + START_LO]!)) return NIL;
      if (!lt(f[n + LAST_HI]!, f[n + LAST_LO]!, loHi, loLo)) return n;
    }
    // n, and its left subtree with it, is done: on to the right subtree, if it may reach lo.
    if (f[n + RMAX]! < loKey) return NIL;
    n = f[n + RIGHT]!;
  }
  return NIL;
}

/**
 * Push the owner of every node of `n`'s subtree overlapping [lo, hi], in (start, seq) order.
 * Children whose maximum cannot reach `lo` are skipped on the parent's copy of it, without
 * touching them.
 */
function collect<T>(
  f: Int32Array,
  owners: readonly T[],
  n: number,
  loKey: number,
  loHi: number,
  loLo: number,
  hiHi: number,
  hiLo: number,
  out: T[],
): void {
  for (;;) {
    if (f[n + LMAX]! >= loKey) collect(f, owners, f[n + LEFT]!, loKey, loHi, loLo, hiHi, hiLo, out);
    if (lt(hiHi, hiLo, f[n + START_HI]!, f[n + START_LO]!)) return;
    if (!lt(f[n + LAST_HI]!, f[n + LAST_LO]!, loHi, loLo)) out.push(owners[n >> SHIFT]!);
    if (f[n + RMAX]! < loKey) return;
    n = f[n + RIGHT]!;
  }
}

export class IntervalTree<T> {
  private f = EMPTY;
  /** The node and its owner at each slot (offset >> SHIFT). */
  private nodes: (IntervalNode<T> | undefined)[] = [];
  private owners: (T | undefined)[] = [];
  private free = NIL;
  private root = NIL;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get isEmpty(): boolean {
    return this.root === NIL;
  }

  /** interval_tree_insert: the node's start/last must be set. */
  insert(node: IntervalNode<T>): void {
    if (node.tree) throw new Error("interval node inserted twice");
    if (this.free === NIL) this.grow();
    const f = this.f;
    const n = this.free;
    this.free = f[n + LEFT]!;
    node.store(f, n);
    f[n + LEFT] = f[n + RIGHT] = NIL;
    f[n + LMAX] = f[n + RMAX] = NO_MAX;
    node.seq = ++seqCounter;
    this.nodes[n >> SHIFT] = node;
    this.owners[n >> SHIFT] = node.owner;
    node.at = n;
    node.tree = this;
    this.root = insertAt(f, this.nodes, this.root, n);
    this.count++;
  }

  /** interval_tree_remove */
  remove(node: IntervalNode<T>): void {
    if (node.tree !== this) throw new Error("interval node is not in this tree");
    const f = this.f;
    const n = node.at;
    this.root = removeAt(f, this.nodes, this.root, n);
    f[n + LEFT] = this.free;
    this.free = n;
    this.nodes[n >> SHIFT] = undefined;
    this.owners[n >> SHIFT] = undefined;
    node.at = NIL;
    node.tree = undefined;
    this.count--;
  }

  /** Double the store, threading the new slots onto the free list. */
  private grow(): void {
    const slots = Math.max(FIRST_SLOTS, (this.f.length / STRIDE) * 2);
    const f = new Int32Array(slots * STRIDE);
    f.set(this.f);
    for (let n = slots * STRIDE - STRIDE; n >= this.f.length; n -= STRIDE) {
      f[n + LEFT] = this.free;
      this.free = n;
    }
    this.f = f;
  }

  /** interval_tree_iter_first */
  iterFirst(start: bigint, last: bigint): IntervalNode<T> | undefined {
    return this.find(start, last, NIL);
  }

  /** interval_tree_iter_next: the next node after `node` overlapping [start, last]. */
  iterNext(node: IntervalNode<T>, start: bigint, last: bigint): IntervalNode<T> | undefined {
    return this.find(start, last, node.at);
  }

  private find(start: bigint, last: bigint, after: number): IntervalNode<T> | undefined {
    const loHi = splitHi(start);
    const loLo = splitLo;
    const loKey = boundKey(splitNear);
    const hiHi = splitHi(last);
    const n = search(this.f, this.nodes, this.root, loKey, loHi, loLo, hiHi, splitLo, after);
    return n === NIL ? undefined : this.nodes[n >> SHIFT];
  }

  /**
   * Owners of every node overlapping [start, last], in start order (a snapshot): the
   * iterFirst/iterNext sequence, collected in one in-order pass.
   */
  overlapping(start = 0n, last = U64_MAX): T[] {
    const out: T[] = [];
    const root = this.root;
    if (root === NIL) return out;
    const loHi = splitHi(start);
    const loLo = splitLo;
    const loKey = boundKey(splitNear);
    const hiHi = splitHi(last);
    collect(this.f, this.owners as T[], root, loKey, loHi, loLo, hiHi, splitLo, out);
    return out;
  }
}

/** One span of a walk: `[start, last]`, either used by the tree(s) or a hole. */
export interface Span {
  /** 0 = hole; 1 = used by the (first) tree; 2 = used by the second tree only. */
  used: 0 | 1 | 2;
  start: bigint;
  last: bigint;
}

/**
 * The span at `pos` within `[pos, bound]`: the union of touching or overlapping nodes that
 * covers `pos`, or the hole up to the next node (interval_tree_span_iter semantics).
 */
function spanAt<T>(
  tree: IntervalTree<T>,
  pos: bigint,
  bound: bigint,
): { used: boolean; last: bigint } {
  const first = tree.iterFirst(pos, bound);
  if (!first) return { used: false, last: bound };
  if (first.start > pos) return { used: false, last: first.start - 1n };
  let last = first.last;
  // Grow over nodes that overlap or touch the span so far.
  while (last < bound) {
    const n = tree.iterFirst(last + 1n, last + 1n);
    if (!n) break;
    last = n.last;
  }
  return { used: true, last: last < bound ? last : bound };
}

/**
 * Walk `[first, last]` as spans of one tree. The callback returns true to stop early.
 * @see interval_tree_for_each_span
 */
export function forEachSpan<T>(
  tree: IntervalTree<T>,
  first: bigint,
  last: bigint,
  fn: (span: Span) => boolean | undefined,
): void {
  let pos = first;
  for (;;) {
    const s = spanAt(tree, pos, last);
    if (fn({ used: s.used ? 1 : 0, start: pos, last: s.last })) return;
    if (s.last >= last) return;
    pos = s.last + 1n;
  }
}

/**
 * The double span at `pos`: used by tree `a` wins (to the end of a's used span); else used by
 * `b`, clipped where a's hole ends; else the hole common to both.
 * @see interval_tree_double_span_iter_update
 */
export function doubleSpanAt<A, B>(
  a: IntervalTree<A>,
  b: IntervalTree<B>,
  pos: bigint,
  bound: bigint,
): Span {
  const sa = spanAt(a, pos, bound);
  if (sa.used) return { used: 1, start: pos, last: sa.last };
  const sb = spanAt(b, pos, bound);
  if (sb.used) return { used: 2, start: pos, last: bigMin(sb.last, sa.last) };
  return { used: 0, start: pos, last: bigMin(sb.last, sa.last) };
}

/** @see interval_tree_for_each_double_span */
export function forEachDoubleSpan<A, B>(
  a: IntervalTree<A>,
  b: IntervalTree<B>,
  first: bigint,
  last: bigint,
  fn: (span: Span) => boolean | undefined,
): void {
  let pos = first;
  for (;;) {
    const s = doubleSpanAt(a, b, pos, last);
    if (fn(s)) return;
    if (s.last >= last) return;
    pos = s.last + 1n;
  }
}
