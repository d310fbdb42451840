import { U64_MAX } from "@x/kernel";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IntervalNode, IntervalTree, bigMin, forEachSpan } from "../src/interval-tree.js";

// Bounds bunched where the (hi, lo) split carries (2^31, 2^62), where doubles round (2^53) and
// at the top of u64, so equal starts, equal halves and exact ties all occur.
const TWO53 = 1n << 53n;
const near = (v: bigint) => fc.bigInt({ min: v - 8n, max: v + 8n });
const bound = fc.oneof(
  fc.bigInt({ min: 0n, max: 64n }),
  near(1n << 31n),
  near(1n << 62n),
  fc.bigInt({ min: TWO53 - 8n, max: TWO53 + 8n }),
  fc.bigInt({ min: (TWO53 << 1n) - 8n, max: (TWO53 << 1n) + 8n }),
  fc.bigInt({ min: U64_MAX - 4100n, max: U64_MAX }),
);

function build(ranges: Array<[bigint, bigint]>) {
  const tree = new IntervalTree<number>();
  const nodes = ranges.map(([a, b], i) => {
    const n = new IntervalNode(i);
    n.start = bigMin(a, b);
    n.last = a + b - n.start;
    tree.insert(n);
    return n;
  });
  return { tree, nodes };
}

/** Brute force: overlapping owners in (start, insertion) order. */
function expected(nodes: IntervalNode<number>[], live: Set<number>, lo: bigint, hi: bigint) {
  return nodes
    .filter((n) => live.has(n.owner) && n.start <= hi && n.last >= lo)
    .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.owner - b.owner))
    .map((n) => n.owner);
}

describe("interval tree with bounds compared as split numbers", () => {
  it("one-pass overlapping() equals brute force and the iterFirst/iterNext walk", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(bound, bound), { maxLength: 60 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.array(fc.tuple(bound, bound), { minLength: 1, maxLength: 8 }),
        (ranges, removals, queries) => {
          const { tree, nodes } = build(ranges);
          const live = new Set(nodes.map((n) => n.owner));
          for (const r of removals) {
            const n = nodes[r % Math.max(1, nodes.length)];
            if (n?.inTree) {
              tree.remove(n);
              live.delete(n.owner);
            }
          }
          for (const [a, b] of queries) {
            const lo = bigMin(a, b);
            const hi = a + b - lo;
            const got = tree.overlapping(lo, hi);
            expect(got).toEqual(expected(nodes, live, lo, hi));
            const walked: number[] = [];
            for (let n = tree.iterFirst(lo, hi); n; n = tree.iterNext(n, lo, hi)) {
              walked.push(n.owner);
            }
            expect(walked).toEqual(got);
          }
          expect(tree.size).toBe(live.size);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("tells apart bounds that round to the same double", () => {
    // 2^53 + 1 rounds to 2^53: only the bigint compare separates them.
    const { tree } = build([
      [TWO53 + 1n, TWO53 + 1n],
      [TWO53, TWO53],
      [TWO53 - 1n, TWO53 - 1n],
    ]);
    expect(tree.overlapping(TWO53 + 1n, TWO53 + 1n)).toEqual([0]);
    expect(tree.overlapping(TWO53, TWO53)).toEqual([1]);
    expect(tree.overlapping(TWO53 - 1n, TWO53)).toEqual([2, 1]);
    expect(tree.overlapping(TWO53 + 2n, U64_MAX)).toEqual([]);
    expect(tree.overlapping()).toEqual([2, 1, 0]);
    // A bound changed after construction keeps its double in step.
    const n = new IntervalNode(7);
    n.start = U64_MAX;
    n.last = U64_MAX;
    n.start = U64_MAX - 1n;
    tree.insert(n);
    expect(tree.overlapping(U64_MAX - 1n, U64_MAX - 1n)).toEqual([7]);
    expect(tree.iterFirst(U64_MAX - 2n, U64_MAX - 2n)).toBeUndefined();
  });

  it("prunes on float32 bounds of the subtree maxima without losing an overlap", () => {
    // A parent keeps each child's largest `last` rounded up to a float32: bounds bunched at
    // float32 grid points (spacing 2^(e-23) at 2^e) and around 2^53 and 2^64, queried from one
    // past and one before each node's last, where a bound rounded the wrong way would prune a
    // subtree that reaches the query.
    const edge = fc
      .tuple(fc.constantFrom(20, 24, 30, 40, 47, 53, 60, 63), fc.integer({ min: 0, max: 3 }))
      .chain(([e, k]) => {
        const g = (1n << BigInt(e)) + BigInt(k) * (e > 23 ? 1n << BigInt(e - 23) : 1n);
        return fc.bigInt({ min: g - 3n, max: g + 3n });
      })
      .map((v) => bigMin(v, U64_MAX));
    fc.assert(
      fc.property(
        fc.array(fc.tuple(edge, edge), { minLength: 1, maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (ranges, removals) => {
          const { tree, nodes } = build(ranges);
          const live = new Set(nodes.map((n) => n.owner));
          for (const r of removals) {
            const n = nodes[r % nodes.length]!;
            if (n.inTree) {
              tree.remove(n);
              live.delete(n.owner);
            }
          }
          for (const n of nodes) {
            for (const lo of [n.last - 1n, n.last, n.last + 1n]) {
              if (lo < 0n || lo > U64_MAX) continue;
              for (const hi of [lo, lo + 2n, U64_MAX]) {
                if (hi > U64_MAX) continue;
                expect(tree.overlapping(lo, hi)).toEqual(expected(nodes, live, lo, hi));
                expect(tree.iterFirst(lo, hi)?.owner).toBe(expected(nodes, live, lo, hi)[0]);
              }
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("reuses the slots of removed nodes: remove / re-insert sequences equal brute force", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(bound, bound), { minLength: 1, maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 120 }),
        fc.tuple(bound, bound),
        (ranges, toggles, [a, b]) => {
          const { tree, nodes } = build(ranges);
          const live = new Set(nodes.map((n) => n.owner));
          for (const t of toggles) {
            const n = nodes[t % nodes.length]!;
            if (n.inTree) {
              tree.remove(n);
              live.delete(n.owner);
            } else {
              tree.insert(n);
              live.add(n.owner);
            }
          }
          const lo = bigMin(a, b);
          const hi = a + b - lo;
          // A re-inserted node sorts after the nodes of equal start inserted before it.
          const order = nodes
            .filter((n) => live.has(n.owner) && n.start <= hi && n.last >= lo)
            .map((n) => n.owner);
          const got = tree.overlapping(lo, hi);
          expect([...got].sort((x, y) => x - y)).toEqual(order.sort((x, y) => x - y));
          for (let i = 1; i < got.length; i++) {
            expect(nodes[got[i - 1]!]!.start <= nodes[got[i]!]!.start).toBe(true);
          }
          expect(tree.size).toBe(live.size);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("a large tree under interleaved inserts, removes and walks equals brute force", () => {
    // Thousands of slots freed and reused, with an iterFirst/iterNext walk that spans a run of
    // inserts and removes.
    let seed = 7;
    const rnd = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    const ranges: Array<[bigint, bigint]> = [];
    for (let i = 0; i < 3000; i++) {
      // Bounds on both sides of 2^53; one node in 8 repeats the previous node's start.
      const a =
        i % 8 === 7 ? ranges[i - 1]![0] : (BigInt(rnd() >>> 3) << 25n) + BigInt(rnd() & 0xfff);
      ranges.push([a, a + BigInt(rnd() & 0xffffff)]);
    }
    const { tree, nodes } = build(ranges);
    const live = new Set(nodes.map((n) => n.owner));
    // Re-inserted nodes sort after earlier ones of equal start: compare the sets and the order
    // by start.
    const same = (got: number[], lo: bigint, hi: bigint) => {
      const want = expected(nodes, live, lo, hi);
      expect([...got].sort((x, y) => x - y)).toEqual(want.sort((x, y) => x - y));
      for (let i = 1; i < got.length; i++) {
        expect(nodes[got[i - 1]!]!.start <= nodes[got[i]!]!.start).toBe(true);
      }
    };
    const check = (lo: bigint, hi: bigint) => same(tree.overlapping(lo, hi), lo, hi);
    for (let round = 0; round < 6; round++) {
      for (let k = 0; k < 1200; k++) {
        const n = nodes[rnd() % nodes.length]!;
        if (n.inTree) {
          tree.remove(n);
          live.delete(n.owner);
        } else {
          tree.insert(n);
          live.add(n.owner);
        }
      }
      for (let q = 0; q < 20; q++) {
        const lo = BigInt(rnd()) << 22n;
        check(lo, lo + (BigInt(rnd()) << 4n));
      }
      check(0n, U64_MAX);
      check(TWO53, TWO53);
      // A walk started before a run of changes and continued after it.
      const lo = BigInt(rnd()) << 22n;
      const hi = lo + (1n << 40n);
      const first = tree.iterFirst(lo, hi);
      const walked: number[] = first ? [first.owner] : [];
      const others = nodes.filter((n) => n !== first && !n.inTree).slice(0, tree.size);
      for (const n of others) tree.insert(n);
      for (const n of others) tree.remove(n);
      for (let n = first && tree.iterNext(first, lo, hi); n; n = tree.iterNext(n, lo, hi)) {
        walked.push(n.owner);
      }
      same(walked, lo, hi);
      expect(walked).toEqual(tree.overlapping(lo, hi));
      expect(tree.size).toBe(live.size);
    }
  });
});

describe("interval tree misuse and span bounds", () => {
  it("a node is inserted once, removed from its own tree, and re-keyed only outside a tree", () => {
    const { tree, nodes } = build([[10n, 20n]]);
    const n = nodes[0]!;
    expect(() => tree.insert(n)).toThrow(/inserted twice/);
    expect(() => new IntervalTree<number>().remove(n)).toThrow(/not in this tree/);
    expect(() => {
      n.start = 5n;
    }).toThrow(/changed while in a tree/);
    expect(() => {
      n.last = 30n;
    }).toThrow(/changed while in a tree/);
    expect([n.start, n.last]).toEqual([10n, 20n]);
    tree.remove(n);
    n.last = 30n;
    tree.insert(n);
    expect(tree.iterFirst(25n, 25n)).toBe(n);
  });

  it("forEachSpan ends every span at the walk's last index (interval_tree_span_iter)", () => {
    const { tree } = build([
      [5n, 20n],
      [21n, 22n],
    ]);
    const spans: Array<[number, bigint, bigint]> = [];
    forEachSpan(tree, 0n, 10n, (s) => {
      spans.push([s.used, s.start, s.last]);
      return false;
    });
    expect(spans).toEqual([
      [0, 0n, 4n],
      [1, 5n, 10n],
    ]);
    spans.length = 0;
    forEachSpan(tree, 6n, 30n, (s) => {
      spans.push([s.used, s.start, s.last]);
      return false;
    });
    expect(spans).toEqual([
      [1, 6n, 22n],
      [0, 23n, 30n],
    ]);
  });
});
