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
 * Every bound is also kept as a double, and comparisons look at the doubles first: bigint
 * compares are calls into the runtime, double compares are one instruction. Rounding to double
 * is monotonic, so a strict order between the doubles is the exact order of the bigints; equal
 * doubles below 2^53 are equal bigints, and only equal doubles at or above 2^53 (rounded) need
 * the bigint compare. Page-index trees and IOVAs below 8 PiB never reach it.
 */

export const U64_MAX = (1n << 64n) - 1n;

/** The smaller of two bigints (Math.min is for numbers). */
export function bigMin(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
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
  private s = 0n;
  private l = 0n;
  /** @internal `start` as a double (rounded at or above 2^53). */ startN = 0;
  /** @internal `last` as a double. */ lastN = 0;
  /** @internal */ left: IntervalNode<T> | null = null;
  /** @internal */ right: IntervalNode<T> | null = null;
  /** @internal */ maxLast = 0n;
  /** @internal `maxLast` as a double. */ maxLastN = 0;
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
    this.startN = Number(v);
  }

  get last(): bigint {
    return this.l;
  }

  set last(v: bigint) {
    this.l = v;
    this.lastN = Number(v);
  }

  get inTree(): boolean {
    return this.tree !== undefined;
  }
}

const EXACT = 2 ** 53;

/** `a < b` for a bound held both as a double (`an`) and exactly (`a`). */
function lt(an: number, a: bigint, bn: number, b: bigint): boolean {
  return an < bn || (an === bn && an >= EXACT && a < b);
}

function before<T>(a: IntervalNode<T>, b: IntervalNode<T>): boolean {
  if (a.startN !== b.startN) return a.startN < b.startN;
  if (a.startN < EXACT || a.start === b.start) return a.seq < b.seq;
  return a.start < b.start;
}

function fix<T>(n: IntervalNode<T>): void {
  let m = n.last;
  let mn = n.lastN;
  const { left, right } = n;
  if (left && lt(mn, m, left.maxLastN, left.maxLast)) {
    m = left.maxLast;
    mn = left.maxLastN;
  }
  if (right && lt(mn, m, right.maxLastN, right.maxLast)) {
    m = right.maxLast;
    mn = right.maxLastN;
  }
  n.maxLast = m;
  n.maxLastN = mn;
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
  lo: bigint,
  loN: number,
  hi: bigint,
  hiN: number,
  after: IntervalNode<T> | undefined,
): IntervalNode<T> | undefined {
  while (n) {
    if (lt(n.maxLastN, n.maxLast, loN, lo)) return undefined;
    if (after && !before(after, n)) {
      n = n.right;
      continue;
    }
    const l = search(n.left, lo, loN, hi, hiN, after);
    if (l) return l;
    if (lt(hiN, hi, n.startN, n.start)) return undefined;
    if (!lt(n.lastN, n.last, loN, lo)) return n;
    n = n.right;
  }
  return undefined;
}

/** Push the owner of every node of `n`'s subtree overlapping [lo, hi], in (start, seq) order. */
function collect<T>(
  n: IntervalNode<T> | null,
  lo: bigint,
  loN: number,
  hi: bigint,
  hiN: number,
  out: T[],
): void {
  while (n && !lt(n.maxLastN, n.maxLast, loN, lo)) {
    collect(n.left, lo, loN, hi, hiN, out);
    if (lt(hiN, hi, n.startN, n.start)) return;
    if (!lt(n.lastN, n.last, loN, lo)) out.push(n.owner);
    n = n.right;
  }
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
    node.maxLast = node.last;
    node.maxLastN = node.lastN;
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
    return search(this.root, start, Number(start), last, Number(last), undefined);
  }

  /** interval_tree_iter_next: the next node after `node` overlapping [start, last]. */
  iterNext(node: IntervalNode<T>, start: bigint, last: bigint): IntervalNode<T> | undefined {
    return search(this.root, start, Number(start), last, Number(last), node);
  }

  /**
   * Owners of every node overlapping [start, last], in start order (a snapshot): the
   * iterFirst/iterNext sequence, collected in one in-order pass.
   */
  overlapping(start = 0n, last = U64_MAX): T[] {
    const out: T[] = [];
    collect(this.root, start, Number(start), last, Number(last), out);
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
