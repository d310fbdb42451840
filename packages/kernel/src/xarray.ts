import { KmemCache } from "./kmem-cache.js";

/**
 * A sparse map from a page index to a number in [0, 2^32 - 1) (a pfn, or a PTE), stored as
 * 512-entry Uint32Array leaves created on first store (the shape of a page-table level or an
 * xarray node). The page cache of a file and the page tables of an mm use it, so only
 * touched ranges cost memory. Empty slots read as -1. 32-bit slots keep the values small
 * integers for the JIT, so walking millions of entries allocates nothing.
 */
const XA_LEAF_SHIFT = 9;
/** Returned by an `update` callback to end the walk. */
export const XA_STOP = -2;
const LEAF = 1 << XA_LEAF_SHIFT;
const MASK = LEAF - 1;

const MAX_VALUE = 0xffff_fffe;

/**
 * Leaves of every XArray (xas_alloc): 512 slots and a count of present entries, 16 leaves to a
 * slab.
 */
const leafCache = new KmemCache(Uint32Array, 4 * (LEAF + 1), 16);

function checkValue(v: number): void {
  if (!(Number.isInteger(v) && v >= 0 && v <= MAX_VALUE))
    // Stryker disable next-line StringLiteral: the RangeError's text only
    throw new RangeError(`xarray value ${v} outside 0..${MAX_VALUE}`);
}

export class XArray {
  private readonly leaves = new Map<number, Uint32Array>();
  private n = 0;

  /** Number of present entries. */
  get count(): number {
    return this.n;
  }

  load(index: number): number {
    const leaf = this.leaves.get(Math.floor(index / LEAF));
    return leaf ? leaf[index & MASK]! - 1 : -1;
  }

  /**
   * Hand the entries from `lo` (up to `n` of them) to `fn` as stretches in which each value is
   * the previous one plus `step`: fn(first value, count), called in index order; a stretch
   * ends at a leaf boundary too. Stops at the first empty slot, or at a stretch `fn` refuses
   * (returns false). Returns how many entries `fn` took. Reads the leaves in place: no copy,
   * no call per entry.
   */
  scanRuns(
    lo: number,
    n: number,
    step: number,
    fn: (value: number, count: number) => boolean,
  ): number {
    let i = 0;
    while (i < n) {
      const index = lo + i;
      const leaf = this.leaves.get(Math.floor(index / LEAF));
      if (!leaf) return i;
      const first = index & MASK;
      const end = Math.min(LEAF, first + (n - i));
      // Stored values are value + 1, so "plus step" compares the same on them; 0 is empty.
      for (let s = first; s < end; ) {
        const v = leaf[s]!;
        if (v === 0) return i + (s - first);
        let t = s + 1;
        while (t < end && leaf[t] === leaf[t - 1]! + step) t++;
        if (!fn(v - 1, t - s)) return i + (s - first);
        s = t;
      }
      i += end - first;
    }
    return i;
  }

  store(index: number, value: number): void {
    checkValue(value);
    const key = Math.floor(index / LEAF);
    let leaf = this.leaves.get(key);
    if (!leaf) this.leaves.set(key, (leaf = leafCache.zalloc()));
    const slot = index & MASK;
    if (leaf[slot] === 0) {
      this.n++;
      leaf[LEAF]!++;
    }
    leaf[slot] = value + 1;
  }

  /** Remove an entry; returns its value or -1. Empty leaves are freed. */
  erase(index: number): number {
    const key = Math.floor(index / LEAF);
    const leaf = this.leaves.get(key);
    if (!leaf) return -1;
    const slot = index & MASK;
    const old = leaf[slot]! - 1;
    if (old < 0) return -1;
    leaf[slot] = 0;
    this.n--;
    if (--leaf[LEAF]! === 0) this.leaves.delete(key);
    return old;
  }

  /** Visit present entries with lo <= index < hi in ascending order. */
  forEachInRange(lo: number, hi: number, fn: (index: number, value: number) => void): void {
    this.walk(lo, hi, fn, false);
  }

  /**
   * Rewrite entries lo, lo+1, ... in order: `fn` gets the index and current value (-1 when
   * empty) and returns the new value (-1 to leave or make it empty), or XA_STOP to end the
   * walk there. One leaf lookup per 512 entries; the fast path for filling a range.
   */
  update(lo: number, hi: number, fn: (index: number, value: number) => number): void {
    let i = lo;
    while (i < hi) {
      const key = Math.floor(i / LEAF);
      let leaf = this.leaves.get(key);
      if (!leaf) this.leaves.set(key, (leaf = leafCache.zalloc()));
      const stop = Math.min(hi, (key + 1) * LEAF);
      try {
        for (; i < stop; i++) {
          const slot = i & MASK;
          const old = leaf[slot]! - 1;
          const v = fn(i, old);
          if (v === XA_STOP) return;
          if (v === old) continue;
          if (v >= 0) checkValue(v);
          if (old < 0) {
            this.n++;
            leaf[LEAF]!++;
          } else if (v < 0) {
            this.n--;
            leaf[LEAF]!--;
          }
          leaf[slot] = v < 0 ? 0 : v + 1;
        }
      } finally {
        if (leaf[LEAF] === 0) this.leaves.delete(key);
      }
    }
  }

  /** Remove every entry in [lo, hi), calling `fn` on each removed one first. */
  eraseRange(lo: number, hi: number, fn?: (index: number, value: number) => void): void {
    this.walk(lo, hi, fn, true);
  }

  private walk(
    lo: number,
    hi: number,
    fn: ((index: number, value: number) => void) | undefined,
    erase: boolean,
  ): void {
    if (hi <= lo) return;
    const first = Math.floor(lo / LEAF);
    const last = Math.floor((hi - 1) / LEAF);
    const keys =
      last - first < this.leaves.size
        ? null
        : [...this.leaves.keys()].filter((k) => k >= first && k <= last).sort((a, b) => a - b);
    if (keys) for (const k of keys) this.walkLeaf(k, lo, hi, fn, erase);
    else for (let k = first; k <= last; k++) this.walkLeaf(k, lo, hi, fn, erase);
  }

  /** `walk` over the leaf `key`: a method, so that a walk makes no closure. */
  private walkLeaf(
    key: number,
    lo: number,
    hi: number,
    fn: ((index: number, value: number) => void) | undefined,
    erase: boolean,
  ): void {
    const leaf = this.leaves.get(key);
    if (!leaf) return;
    const base = key * LEAF;
    const from = Math.max(lo - base, 0);
    const to = Math.min(hi - base, LEAF);
    for (let s = from; s < to; s++) {
      const v = leaf[s]!;
      if (v === 0) continue;
      fn?.(base + s, v - 1);
      if (!erase) continue;
      leaf[s] = 0;
      this.n--;
      leaf[LEAF]!--;
    }
    if (erase && leaf[LEAF] === 0) this.leaves.delete(key);
  }

  clear(): void {
    this.leaves.clear();
    this.n = 0;
  }
}
