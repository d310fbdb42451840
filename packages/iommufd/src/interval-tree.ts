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
 * Comparisons never touch the bigints: every bound is also kept split as (hi, lo) = (bits 31
 * and up, bits 0-30), two exact numbers compared hi first. Below 2^62 both are small integers
 * V8 stores inside the node, so a visited node costs no pointer chase to a bigint or a boxed
 * double and no runtime call to compare.
 */

import { U64_MAX } from "@x/kernel";

/** The smaller of two bigints (Math.min is for numbers). */
export function bigMin(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

/** Bounds are compared as (v >> 31, v & (2^31 - 1)): small integers below 2^62. */
const LO_BITS = 31n;
const LO_MASK = (1n << LO_BITS) - 1n;
const LO_RANGE = 2 ** 31;

/** The low half of the last `splitHi` (a second return value without an allocation). */
let splitLo = 0;

/** `v >> 31`, leaving `v & (2^31 - 1)` in `splitLo`; without bigint arithmetic below 2^53. */
function splitHi(v: bigint): number {
  const n = Number(v);
  if (n < 2 ** 53) {
    const hi = Math.floor(n / LO_RANGE);
    splitLo = n - hi * LO_RANGE;
    return hi;
  }
  splitLo = Number(v & LO_MASK);
  return Number(v >> LO_BITS);
}

let seqCounter = 0;
/** Deterministic priorities keep runs reproducible (xorshift32). */
let prioState = 0x9e3779b9;
function nextPrio(): number {
  prioState ^= prioState << 13;
  prioState ^= prioState >>> 17;
  prioState ^= prioState << 5;
  return prioState >>> 0;
}

/** struct interval_tree_node: `[start, last]` inclusive, owned by `owner`. */
export class IntervalNode<T> {
  // The fields a query reads come first, so a visited node touches as few cache lines as it can.
  /** @internal the largest `last` of the subtree, split as (hi, lo) */ maxHi = 0;
  /** @internal */ maxLo = 0;
  /** @internal the left subtree's largest `last` ((-1, 0) when empty): pruned without a visit */
  lmaxHi = -1;
  /** @internal */ lmaxLo = 0;
  /** @internal the right subtree's largest `last`, likewise */ rmaxHi = -1;
  /** @internal */ rmaxLo = 0;
  /** @internal */ left: IntervalNode<T> | null = null;
  /** @internal `start` split as (hi, lo) */ startHi = 0;
  /** @internal */ startLo = 0;
  /** @internal `last` split as (hi, lo) */ lastHi = 0;
  /** @internal */ lastLo = 0;
  /** @internal */ right: IntervalNode<T> | null = null;
  private s = 0n;
  private l = 0n;
  /** @internal */ prio = 0;
  /** @internal */ seq = 0;
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
  }

  get last(): bigint {
    return this.l;
  }

  set last(v: bigint) {
    this.l = v;
    this.lastHi = splitHi(v);
    this.lastLo = splitLo;
  }

  get inTree(): boolean {
    return this.tree !== undefined;
  }
}

/** `(aHi, aLo) < (bHi, bLo)`: the exact order of the bounds they split. */
function lt(aHi: number, aLo: number, bHi: number, bLo: number): boolean {
  return aHi < bHi || (aHi === bHi && aLo < bLo);
}

function before<T>(a: IntervalNode<T>, b: IntervalNode<T>): boolean {
  if (a.startHi !== b.startHi) return a.startHi < b.startHi;
  if (a.startLo !== b.startLo) return a.startLo < b.startLo;
  return a.seq < b.seq;
}

function fix<T>(n: IntervalNode<T>): void {
  const { left, right } = n;
  n.lmaxHi = left ? left.maxHi : -1;
  n.lmaxLo = left ? left.maxLo : 0;
  n.rmaxHi = right ? right.maxHi : -1;
  n.rmaxLo = right ? right.maxLo : 0;
  let hi = n.lastHi;
  let lo = n.lastLo;
  if (lt(hi, lo, n.lmaxHi, n.lmaxLo)) {
    hi = n.lmaxHi;
    lo = n.lmaxLo;
  }
  if (lt(hi, lo, n.rmaxHi, n.rmaxLo)) {
    hi = n.rmaxHi;
    lo = n.rmaxLo;
  }
  n.maxHi = hi;
  n.maxLo = lo;
}

function insertAt<T>(root: IntervalNode<T> | null, n: IntervalNode<T>): IntervalNode<T> {
  if (!root) return n;
  if (before(n, root)) {
    root.left = insertAt(root.left, n);
    if (root.left.prio > root.prio) {
      const l = root.left;
      root.left = l.right;
      fix(root);
      l.right = root;
      fix(l);
      return l;
    }
  } else {
    root.right = insertAt(root.right, n);
    if (root.right.prio > root.prio) {
      const r = root.right;
      root.right = r.left;
      fix(root);
      r.left = root;
      fix(r);
      return r;
    }
  }
  fix(root);
  return root;
}

function merge<T>(a: IntervalNode<T> | null, b: IntervalNode<T> | null): IntervalNode<T> | null {
  if (!a) return b;
  if (!b) return a;
  if (a.prio > b.prio) {
    a.right = merge(a.right, b);
    fix(a);
    return a;
  }
  b.left = merge(a, b.left);
  fix(b);
  return b;
}

function removeAt<T>(root: IntervalNode<T> | null, n: IntervalNode<T>): IntervalNode<T> | null {
  if (!root) return null;
  if (root === n) return merge(n.left, n.right);
  if (before(n, root)) root.left = removeAt(root.left, n);
  else root.right = removeAt(root.right, n);
  fix(root);
  return root;
}

/** The first node in (start, seq) order overlapping [lo, hi] and ordered after `after`. */
function search<T>(
  n: IntervalNode<T> | null,
  q: Query,
  after: IntervalNode<T> | undefined,
): IntervalNode<T> | undefined {
  while (n) {
    if (lt(n.maxHi, n.maxLo, q.loHi, q.loLo)) return undefined;
    if (after && !before(after, n)) {
      n = n.right;
      continue;
    }
    const l = search(n.left, q, after);
    if (l) return l;
    if (lt(q.hiHi, q.hiLo, n.startHi, n.startLo)) return undefined;
    if (!lt(n.lastHi, n.lastLo, q.loHi, q.loLo)) return n;
    n = n.right;
  }
  return undefined;
}

/**
 * Push the owner of every node of `n`'s subtree overlapping [lo, hi], in (start, seq) order.
 * The subtree reaches `lo` (its largest `last` is at least lo); children that do not are
 * skipped on the parent's copy of their maximum, without touching them.
 */
function collect<T>(
  n: IntervalNode<T>,
  loHi: number,
  loLo: number,
  hiHi: number,
  hiLo: number,
  out: T[],
): void {
  for (;;) {
    if (!lt(n.lmaxHi, n.lmaxLo, loHi, loLo)) collect(n.left!, loHi, loLo, hiHi, hiLo, out);
    if (lt(hiHi, hiLo, n.startHi, n.startLo)) return;
    if (!lt(n.lastHi, n.lastLo, loHi, loLo)) out.push(n.owner);
    if (lt(n.rmaxHi, n.rmaxLo, loHi, loLo)) return;
    n = n.right!;
  }
}

/** A query window [lo, hi], split. */
interface Query {
  loHi: number;
  loLo: number;
  hiHi: number;
  hiLo: number;
}

function query(lo: bigint, hi: bigint): Query {
  const loHi = splitHi(lo);
  const loLo = splitLo;
  return { loHi, loLo, hiHi: splitHi(hi), hiLo: splitLo };
}

export class IntervalTree<T> {
  private root: IntervalNode<T> | null = null;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get isEmpty(): boolean {
    return this.root === null;
  }

  /** interval_tree_insert: the node's start/last must be set. */
  insert(node: IntervalNode<T>): void {
    if (node.tree) throw new Error("interval node inserted twice");
    node.left = node.right = null;
    node.prio = nextPrio();
    node.seq = ++seqCounter;
    node.maxHi = node.lastHi;
    node.maxLo = node.lastLo;
    node.lmaxHi = node.rmaxHi = -1;
    node.tree = this;
    this.root = insertAt(this.root, node);
    this.count++;
  }

  /** interval_tree_remove */
  remove(node: IntervalNode<T>): void {
    if (node.tree !== this) throw new Error("interval node is not in this tree");
    this.root = removeAt(this.root, node);
    node.left = node.right = null;
    node.tree = undefined;
    this.count--;
  }

  /** interval_tree_iter_first */
  iterFirst(start: bigint, last: bigint): IntervalNode<T> | undefined {
    return search(this.root, query(start, last), undefined);
  }

  /** interval_tree_iter_next: the next node after `node` overlapping [start, last]. */
  iterNext(node: IntervalNode<T>, start: bigint, last: bigint): IntervalNode<T> | undefined {
    return search(this.root, query(start, last), node);
  }

  /**
   * Owners of every node overlapping [start, last], in start order (a snapshot): the
   * iterFirst/iterNext sequence, collected in one in-order pass.
   */
  overlapping(start = 0n, last = U64_MAX): T[] {
    const out: T[] = [];
    const loHi = splitHi(start);
    const loLo = splitLo;
    const root = this.root;
    if (root && !lt(root.maxHi, root.maxLo, loHi, loLo)) {
      collect(root, loHi, loLo, splitHi(last), splitLo, out);
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
export function spanAt<T>(
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
