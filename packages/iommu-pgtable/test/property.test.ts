/**
 * Random map / unmap / iova_to_phys / dirty sequences on every format, checked against a naive
 * reference that keeps a list of leaves: same errno, same bytes unmapped (iommupt's whole-entry
 * and stop-at-hole rules), same translations, same leaf sizes, same dirty reports.
 */
import { isKernelError } from "@x/kernel";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  IotlbGather,
  armLpaeDomainAlloc,
  iommuIovaToPhys,
  iommuMap,
  iommuPgsize,
  iommuReadAndClearDirty,
  iommuUnmap,
  iommuptSetDirty,
} from "../src/index.js";
import { IOMMUPT_CFGS, leafCounts, sizesOf } from "./configs.js";

interface Leaf {
  va: bigint;
  size: bigint;
  pa: bigint;
  dirty: boolean;
}

class Reference {
  readonly leaves: Leaf[] = [];

  overlaps(va: bigint, len: bigint): boolean {
    return this.leaves.some((l) => l.va < va + len && va < l.va + l.size);
  }

  map(bitmap: bigint, va: bigint, pa: bigint, len: bigint): void {
    while (len !== 0n) {
      const { pgsize, count } = iommuPgsize(bitmap, va, pa, len);
      for (let i = 0n; i < count; i++) {
        this.leaves.push({ va, size: pgsize, pa, dirty: false });
        va += pgsize;
        pa += pgsize;
        len -= pgsize;
      }
    }
  }

  find(va: bigint): Leaf | undefined {
    return this.leaves.find((l) => l.va <= va && va < l.va + l.size);
  }

  unmap(va: bigint, len: bigint): bigint {
    let at = va;
    while (at < va + len) {
      const leaf = this.find(at);
      if (!leaf || leaf.va !== at) break;
      this.leaves.splice(this.leaves.indexOf(leaf), 1);
      at += leaf.size;
    }
    return at - va;
  }

  phys(va: bigint): bigint {
    const leaf = this.find(va);
    return leaf ? leaf.pa + (va - leaf.va) : 0n;
  }

  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const l of this.leaves) {
      const k = String(l.size.toString(2).length - 1);
      out[k] = (out[k] ?? 0) + 1;
    }
    return out;
  }
}

type Op =
  | { kind: "map"; slot: number; paSlot: number; vaAlign: number; paAlign: number; count: number }
  | { kind: "unmap"; slot: number; count: number; align: number }
  | { kind: "phys"; slot: number }
  | { kind: "dirty"; slot: number }
  | { kind: "read"; noClear: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("map" as const),
      slot: fc.nat(1 << 20),
      paSlot: fc.nat(1 << 20),
      vaAlign: fc.nat(40),
      paAlign: fc.nat(40),
      count: fc.integer({ min: 1, max: 12 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("unmap" as const),
      slot: fc.nat(1 << 20),
      count: fc.integer({ min: 1, max: 12 }),
      align: fc.nat(40),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("phys" as const), slot: fc.nat(1 << 30) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("dirty" as const), slot: fc.nat(1 << 30) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("read" as const), noClear: fc.boolean() }),
  },
);

const RW = IOMMU_READ | IOMMU_WRITE;

/** The item size of the level that holds a leaf of `size` bytes (the largest item <= size). */
function itemBytes(d: IommuDomain, size: bigint): bigint {
  const pt = d.pt!;
  let item = 0n;
  for (let level = 0; level <= pt.topLevel; level++) {
    const bytes = BigInt(pt.itemPages(level)) << BigInt(pt.granuleLg2);
    if (bytes <= size) item = bytes;
  }
  return item;
}

function run(d: IommuDomain, ops: Op[], classic: boolean): void {
  const ref = new Reference();
  const sizes = sizesOf(d.pgsizeBitmap);
  const g = d.pt!.granuleLg2;
  const windowLg2 = Math.min(31, d.pt!.maxVaLg2 - 1, d.pt!.maxOaLg2 - 1);
  const window = 1n << BigInt(windowLg2);
  const usable = sizes.filter((s) => s <= windowLg2 - 5);
  const pick = (n: number) => BigInt(usable[n % usable.length]!);
  const dirtyOk = d.pt!.format.dirtyTracking;
  // Sign-extended tables: every other sequence runs in the upper half.
  const base =
    d.pt!.isSignExtended && ops.length % 2 === 1
      ? (1n << 64n) - (1n << BigInt(d.pt!.maxVaLg2 - 1))
      : 0n;
  /** Classic domains unmap only whole earlier maps (the io-pgtable contract). */
  const maps: { va: bigint; len: bigint }[] = [];
  for (const op of ops) {
    if (op.kind === "map") {
      const va =
        ((BigInt(op.slot) << pick(op.vaAlign)) % window) & ~((1n << pick(op.vaAlign)) - 1n);
      const pa =
        ((BigInt(op.paSlot) << pick(op.paAlign)) % window) & ~((1n << pick(op.paAlign)) - 1n);
      const unit = 1n << BigInt(Math.min(Number(pick(op.vaAlign)), Number(pick(op.paAlign))));
      const len = unit * BigInt(op.count);
      if (va + len > window) continue;
      const clash = ref.overlaps(va, len);
      if (classic && clash) continue;
      let errno = "ok";
      try {
        iommuMap(d, base + va, pa, len, RW);
      } catch (e) {
        if (!isKernelError(e)) throw e;
        errno = e.errnoName;
      }
      expect(errno).toBe(clash ? "EADDRINUSE" : "ok");
      if (!clash) {
        ref.map(d.pgsizeBitmap, va, pa, len);
        maps.push({ va, len });
      }
    } else if (op.kind === "unmap") {
      if (classic) {
        const m = maps.splice(op.slot % Math.max(1, maps.length), 1)[0];
        if (!m) continue;
        expect(iommuUnmap(d, base + m.va, m.len)).toBe(ref.unmap(m.va, m.len));
        continue;
      }
      const unit = 1n << pick(op.align);
      const va = (BigInt(op.slot) * unit) % window;
      const len = unit * BigInt(op.count);
      expect(iommuUnmap(d, base + va, len)).toBe(ref.unmap(va, len));
    } else if (op.kind === "phys") {
      const va = BigInt(op.slot) % window;
      expect(iommuIovaToPhys(d, base + va)).toBe(ref.phys(va));
    } else if (op.kind === "dirty") {
      if (!dirtyOk || ref.leaves.length === 0) continue;
      const leaf = ref.leaves[op.slot % ref.leaves.length]!;
      const va = leaf.va + ((BigInt(op.slot) << BigInt(g)) % leaf.size);
      iommuptSetDirty(d, base + va);
      leaf.dirty = true;
    } else {
      if (!dirtyOk) continue;
      const got: string[] = [];
      iommuReadAndClearDirty(d, base, window, op.noClear ? IOMMU_DIRTY_NO_CLEAR : 0, {
        bitmap: { set: (iova, length) => got.push(`${iova.toString(16)}+${length.toString(16)}`) },
        gather: new IotlbGather(),
      });
      // record_dirty: a contiguous leaf reports up to its last item, so one item less.
      const want = ref.leaves
        .filter((l) => l.dirty)
        .sort((a, b) => (a.va < b.va ? -1 : 1))
        .map((l) => {
          const item = itemBytes(d, l.size);
          const len = l.size === item ? l.size : l.size - item;
          return `${(base + l.va).toString(16)}+${len.toString(16)}`;
        });
      expect(got).toEqual(want);
      if (!op.noClear) for (const l of ref.leaves) l.dirty = false;
    }
    expect(leafCounts(d)).toEqual(ref.counts());
  }
  for (const l of ref.leaves) {
    expect(iommuIovaToPhys(d, base + l.va)).toBe(l.pa);
    expect(iommuIovaToPhys(d, base + l.va + l.size - 1n)).toBe(l.pa + l.size - 1n);
  }
}

describe("random sequences against a naive reference", () => {
  for (const cfg of IOMMUPT_CFGS) {
    it(`iommupt ${cfg.name}`, () => {
      fc.assert(
        fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) =>
          run(cfg.make(), ops, false),
        ),
        { numRuns: 25 },
      );
    });
  }
  for (const granuleLg2 of [12, 14, 16] as const) {
    for (const stage of [1, 2] as const) {
      it(`io-pgtable-arm stage ${stage} ${1 << (granuleLg2 - 10)}K`, () => {
        fc.assert(
          fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) =>
            run(armLpaeDomainAlloc({ stage, granuleLg2, ias: 40, oas: 44 }), ops, true),
          ),
          { numRuns: 15 },
        );
      });
    }
  }
});
