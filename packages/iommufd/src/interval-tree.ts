/**
 * Interval trees with exact unsigned 64-bit bounds (the kernel's interval_tree over unsigned
 * long), plus the span iterators iommufd walks them with (interval_tree_span_iter and the
 * double span of double_span.h).
 *
 * Keys are bigint so an IOVA interval may end at 2^64 - 1; the page-index trees of iopt_pages use
 * the same structure (their bounds stay far below 2^53, the pfn_reader converts once per span).
 * Nodes may overlap (accesses, areas of several IOASes sharing one iopt_pages). The tree is a
 * treap ordered by (start, insertion sequence) and augmented with the largest `last` of each
 * subtree, so "first node overlapping [a, b] after node n" costs O(log n) plus the overlaps.
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

/** `(v >> 32) - 2^31`, leaving `(v & (2^32 - 1)) - 2^31` in `splitLo`; bigint only above 2^53. */
function splitHi(v: bigint): number {
  const n = Number(v);
  if (n < 2 ** 53) return splitNumber(n);
  splitLo = Number(v & 0xffff_ffffn) - BIAS;
  return Number(v >> 32n) - BIAS;
}

let seqCounter = 0;
/** Deterministic priorities keep runs reproducible (xorshift32). */
let prioState = 0x9e3779b9;
function nextPrio(): number {
  prioState ^= prioState << 13;
  prioState ^= prioState >>> 17;
  prioState ^= prioState << 5;
  return prioState;
}

/**
 * Each tree keeps its nodes in one Int32Array, STRIDE words (64 bytes) a node, and links them
 * by offset into it: a query walks contiguous memory and reads no object but the owners it
 * returns. The fields a query reads come first.
 */
const LMAX_HI = 0; // the left subtree's largest `last`: a child that cannot overlap is pruned unvisited
const LMAX_LO = 1;
const RMAX_HI = 2; // the right subtree's largest `last`, likewise
const RMAX_LO = 3;
const START_HI = 4;
const START_LO = 5;
const LAST_HI = 6;
const LAST_LO = 7;
const LEFT = 8; // offset of the left child, NIL for none; the next free slot on the free list
const RIGHT = 9;
const MAX_HI = 10; // the largest `last` of the subtree
const MAX_LO = 11;
const PRIO = 12;
const SEQ_HI = 13; // the insertion sequence, split like a bound (a tie-break between equal starts)
const SEQ_LO = 14;
const STRIDE = 16;
const NIL = -1;
const FIRST_SLOTS = 1; // 64 bytes: V8 keeps a typed array this small on its heap
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
  /** The tree the node is in, or undefined (RB_EMPTY_NODE). */
  tree: IntervalTree<T> | undefined;

  constructor(readonly owner: T) {}

  get start(): bigint {
    return this.s;
  }

  set start(v: bigint) {
    this.s = v;
    this.startHi = splitHi(v);
    this.startLo = splitLo;
    this.tree?.rewrite(this);
  }

  get last(): bigint {
    return this.l;
  }

  set last(v: bigint) {
    this.l = v;
    this.lastHi = splitHi(v);
    this.lastLo = splitLo;
    this.tree?.rewrite(this);
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

/** Node `a` sorts before node `b`: by start, then insertion sequence. */
function before(f: Int32Array, a: number, b: number): boolean {
  if (f[a + START_HI] !== f[b + START_HI]) return f[a + START_HI]! < f[b + START_HI]!;
  if (f[a + START_LO] !== f[b + START_LO]) return f[a + START_LO]! < f[b + START_LO]!;
  return lt(f[a + SEQ_HI]!, f[a + SEQ_LO]!, f[b + SEQ_HI]!, f[b + SEQ_LO]!);
}

function fix(f: Int32Array, n: number): void {
  const left = f[n + LEFT]!;
  const right = f[n + RIGHT]!;
  let hi = f[n + LAST_HI]!;
  let lo = f[n + LAST_LO]!;
  if (left !== NIL) {
    const lHi = (f[n + LMAX_HI] = f[left + MAX_HI]!);
    const lLo = (f[n + LMAX_LO] = f[left + MAX_LO]!);
    if (lt(hi, lo, lHi, lLo)) {
      hi = lHi;
      lo = lLo;
    }
  }
  if (right !== NIL) {
    const rHi = (f[n + RMAX_HI] = f[right + MAX_HI]!);
    const rLo = (f[n + RMAX_LO] = f[right + MAX_LO]!);
    if (lt(hi, lo, rHi, rLo)) {
      hi = rHi;
      lo = rLo;
    }
  }
  f[n + MAX_HI] = hi;
  f[n + MAX_LO] = lo;
}

function insertAt(f: Int32Array, root: number, n: number): number {
  if (root === NIL) return n;
  if (before(f, n, root)) {
    const l = insertAt(f, f[root + LEFT]!, n);
    f[root + LEFT] = l;
    if (f[l + PRIO]! > f[root + PRIO]!) {
      f[root + LEFT] = f[l + RIGHT]!;
      fix(f, root);
      f[l + RIGHT] = root;
      fix(f, l);
      return l;
    }
  } else {
    const r = insertAt(f, f[root + RIGHT]!, n);
    f[root + RIGHT] = r;
    if (f[r + PRIO]! > f[root + PRIO]!) {
      f[root + RIGHT] = f[r + LEFT]!;
      fix(f, root);
      f[r + LEFT] = root;
      fix(f, r);
      return r;
    }
  }
  fix(f, root);
  return root;
}

function merge(f: Int32Array, a: number, b: number): number {
  if (a === NIL) return b;
  if (b === NIL) return a;
  if (f[a + PRIO]! > f[b + PRIO]!) {
    f[a + RIGHT] = merge(f, f[a + RIGHT]!, b);
    fix(f, a);
    return a;
  }
  f[b + LEFT] = merge(f, a, f[b + LEFT]!);
  fix(f, b);
  return b;
}

function removeAt(f: Int32Array, root: number, n: number): number {
  if (root === NIL) return NIL;
  if (root === n) return merge(f, f[n + LEFT]!, f[n + RIGHT]!);
  if (before(f, n, root)) f[root + LEFT] = removeAt(f, f[root + LEFT]!, n);
  else f[root + RIGHT] = removeAt(f, f[root + RIGHT]!, n);
  fix(f, root);
  return root;
}

/** The first node in (start, seq) order overlapping [lo, hi] and ordered after `after` (or NIL). */
function search(
  f: Int32Array,
  n: number,
  loHi: number,
  loLo: number,
  hiHi: number,
  hiLo: number,
  after: number,
): number {
  while (n !== NIL) {
    if (lt(f[n + MAX_HI]!, f[n + MAX_LO]!, loHi, loLo)) return NIL;
    if (after !== NIL && !before(f, after, n)) {
      n = f[n + RIGHT]!;
      continue;
    }
    const l = search(f, f[n + LEFT]!, loHi, loLo, hiHi, hiLo, after);
    if (l !== NIL) return l;
    if (lt(hiHi, hiLo, f[n + START_HI]!, f[n + START_LO]!)) return NIL;
    if (!lt(f[n + LAST_HI]!, f[n + LAST_LO]!, loHi, loLo)) return n;
    n = f[n + RIGHT]!;
  }
  return NIL;
}

/**
 * Push the owner of every node of `n`'s subtree overlapping [lo, hi], in (start, seq) order.
 * The subtree reaches `lo` (its largest `last` is at least lo); children that do not are
 * skipped on the parent's copy of their maximum, without touching them.
 */
function collect<T>(
  f: Int32Array,
  nodes: readonly (IntervalNode<T> | undefined)[],
  n: number,
  loHi: number,
  loLo: number,
  hiHi: number,
  hiLo: number,
  out: T[],
): void {
  for (;;) {
    const left = f[n + LEFT]!;
    if (left !== NIL && !lt(f[n + LMAX_HI]!, f[n + LMAX_LO]!, loHi, loLo)) {
      collect(f, nodes, left, loHi, loLo, hiHi, hiLo, out);
    }
    if (lt(hiHi, hiLo, f[n + START_HI]!, f[n + START_LO]!)) return;
    if (!lt(f[n + LAST_HI]!, f[n + LAST_LO]!, loHi, loLo)) out.push(nodes[n / STRIDE]!.owner);
    const right = f[n + RIGHT]!;
    if (right === NIL || lt(f[n + RMAX_HI]!, f[n + RMAX_LO]!, loHi, loLo)) return;
    n = right;
  }
}

export class IntervalTree<T> {
  private f = EMPTY;
  /** The node at each slot (offset / STRIDE). */
  private nodes: (IntervalNode<T> | undefined)[] = [];
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
    f[n + PRIO] = nextPrio();
    f[n + SEQ_HI] = splitNumber(++seqCounter);
    f[n + SEQ_LO] = splitLo;
    f[n + MAX_HI] = f[n + LAST_HI]!;
    f[n + MAX_LO] = f[n + LAST_LO]!;
    this.nodes[n / STRIDE] = node;
    node.at = n;
    node.tree = this;
    this.root = insertAt(f, this.root, n);
    this.count++;
  }

  /** interval_tree_remove */
  remove(node: IntervalNode<T>): void {
    if (node.tree !== this) throw new Error("interval node is not in this tree");
    const f = this.f;
    const n = node.at;
    this.root = removeAt(f, this.root, n);
    f[n + LEFT] = this.free;
    this.free = n;
    this.nodes[n / STRIDE] = undefined;
    node.at = NIL;
    node.tree = undefined;
    this.count--;
  }

  /** @internal a node in this tree changed its bounds: the store follows */
  rewrite(node: IntervalNode<T>): void {
    node.store(this.f, node.at);
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
    const hiHi = splitHi(last);
    const n = search(this.f, this.root, loHi, loLo, hiHi, splitLo, after);
    return n === NIL ? undefined : this.nodes[n / STRIDE];
  }

  /**
   * Owners of every node overlapping [start, last], in start order (a snapshot): the
   * iterFirst/iterNext sequence, collected in one in-order pass.
   */
  overlapping(start = 0n, last = U64_MAX): T[] {
    const f = this.f;
    const root = this.root;
    const loHi = splitHi(start);
    const loLo = splitLo;
    const out: T[] = [];
    if (root !== NIL && !lt(f[root + MAX_HI]!, f[root + MAX_LO]!, loHi, loLo)) {
      collect(f, this.nodes, root, loHi, loLo, splitHi(last), splitLo, out);
    }
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
