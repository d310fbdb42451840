import { ENOSPC, EINVAL, EOVERFLOW, EADDRINUSE, Kernel, U64_MAX } from "@x/kernel";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  IntervalNode,
  IntervalTree,
  forEachDoubleSpan,
  forEachSpan,
  bigMin,
} from "../src/interval-tree.js";
import { IOPT_ALLOC_IOVA, IoPagetable } from "../src/io-pagetable.js";
import { RW, TestExporter, ctx, errno } from "./pages-helpers.js";

describe("interval tree", () => {
  it("finds exactly the overlapping nodes, in order, with u64 bounds", () => {
    const big = fc.bigInt({ min: 0n, max: U64_MAX });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(big, big), { maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.tuple(big, big),
        (ranges, removals, [q1, q2]) => {
          const tree = new IntervalTree<number>();
          const nodes = ranges.map(([a, b], i) => {
            const n = new IntervalNode(i);
            n.start = bigMin(a, b);
            n.last = a + b - n.start;
            tree.insert(n);
            return n;
          });
          const live = new Set(nodes);
          for (const r of removals) {
            const n = nodes[r % Math.max(1, nodes.length)];
            if (n && live.has(n)) {
              tree.remove(n);
              live.delete(n);
            }
          }
          const qs = bigMin(q1, q2);
          const ql = q1 + q2 - qs;
          const want = [...live]
            .filter((n) => n.start <= ql && n.last >= qs)
            .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))
            .map((n) => n.start);
          const got = tree.overlapping(qs, ql).map((i) => (nodes[i] as IntervalNode<number>).start);
          expect(got).toEqual(want);
          expect(tree.size).toBe(live.size);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("walks spans and double spans as the kernel's iterators", () => {
    const mk = (ranges: Array<[bigint, bigint]>) => {
      const t = new IntervalTree<undefined>();
      for (const [s, l] of ranges) {
        const n = new IntervalNode<undefined>(undefined);
        n.start = s;
        n.last = l;
        t.insert(n);
      }
      return t;
    };
    const a = mk([
      [2n, 3n],
      [4n, 5n],
      [10n, 12n],
    ]);
    const b = mk([
      [0n, 6n],
      [11n, 20n],
    ]);
    const spans: string[] = [];
    forEachSpan(a, 0n, 15n, (s) => {
      spans.push(`${s.used}:${s.start}-${s.last}`);
      return false;
    });
    expect(spans).toEqual(["0:0-1", "1:2-5", "0:6-9", "1:10-12", "0:13-15"]);
    const dbl: string[] = [];
    forEachDoubleSpan(a, b, 0n, 22n, (s) => {
      dbl.push(`${s.used}:${s.start}-${s.last}`);
      return false;
    });
    expect(dbl).toEqual(["2:0-1", "1:2-5", "2:6-6", "0:7-9", "1:10-12", "2:13-20", "0:21-22"]);
  });
});

describe("automatic IOVA allocation", () => {
  function mapAt(
    iopt: IoPagetable,
    exp: TestExporter,
    start: bigint,
    len: bigint,
    iova = 0n,
    flags = IOPT_ALLOC_IOVA,
  ) {
    return iopt.mapFilePages(ctx, iova, exp.fd(), start, len, RW, flags);
  }

  it("never returns 0, aligns to the length and keeps the origin's alignment up to 2 MiB", () => {
    const kernel = new Kernel();
    const iopt = new IoPagetable(kernel);
    const exp = new TestExporter(kernel, 64n << 20n);
    const a = mapAt(iopt, exp, 0n, 4096n);
    expect(a).toBe(4096n);
    const b = mapAt(iopt, exp, 0n, 16n << 20n);
    expect(b % (2n << 20n)).toBe(0n);
    const c = mapAt(iopt, exp, 0x3000n, 0x1000n);
    expect(c % 0x1000n).toBe(0n);
    const d = mapAt(iopt, exp, 0x1234n, 0x100n);
    expect(d % 0x1000n).toBe(0x234n);
    expect(d & 0x3fn).toBe(0x34n);
    iopt.unmapAll();
  });

  it("draws only from allowed ranges and skips reserved ones; ENOSPC when full", () => {
    const kernel = new Kernel();
    const iopt = new IoPagetable(kernel);
    const exp = new TestExporter(kernel, 1n << 20n);
    iopt.reserveIova(0x100000n, 0x1fffffn, "r");
    expect(errno(() => iopt.setAllowIova([{ start: 0x180000n, last: 0x280000n }]))).toBe(
      EADDRINUSE,
    );
    iopt.setAllowIova([{ start: 0x200000n, last: 0x203fffn }]);
    expect(errno(() => iopt.reserveIova(0x200000n, 0x200fffn, "x"))).toBe(EADDRINUSE);
    expect(mapAt(iopt, exp, 0n, 0x2000n)).toBe(0x200000n);
    expect(mapAt(iopt, exp, 0n, 0x2000n)).toBe(0x202000n);
    expect(errno(() => mapAt(iopt, exp, 0n, 0x1000n))).toBe(ENOSPC);
    expect(errno(() => mapAt(iopt, exp, 0n, U64_MAX / 2n + 1n))).toBe(EINVAL);
    iopt.unmapAll();
    iopt.setAllowIova([]);
    iopt.removeReservedIova("r");
  });

  it("finds room near the top of the u64 space with fixed IOVAs and reports holes", () => {
    const kernel = new Kernel();
    const iopt = new IoPagetable(kernel);
    const exp = new TestExporter(kernel, 1n << 20n);
    const top = U64_MAX - 0xfffn;
    expect(mapAt(iopt, exp, 0n, 0x1000n, top, 0)).toBe(top);
    expect(errno(() => mapAt(iopt, exp, 0n, 0x2000n, top, 0))).toBe(EOVERFLOW);
    iopt.reserveIova(0n, 0xfffn, "low");
    expect(iopt.reservedHoles()).toEqual([[0x1000n, U64_MAX]]);
    expect(iopt.unmapAll()).toBe(0x1000n);
    iopt.removeReservedIova("low");
  });
});
