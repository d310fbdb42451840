import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  EFAULT,
  EINVAL,
  ENOMEM,
  Kernel,
  KernelWarning,
  PAGE_SIZE,
  PhysMem,
  RESERVED_LOW_PAGES,
  isKernelError,
} from "../src/index.js";
import { expectErrno } from "./helpers.js";

const GiB = 1n << 30n;
const PAGES_1G = 1 << 18;

describe("folio allocator", () => {
  it("allocates naturally aligned folios of order 0, 9 and 18 with refcount 1", () => {
    const mem = new PhysMem({ ramBytes: 4n * GiB });
    for (const order of [0, 9, 18]) {
      const pfn = mem.allocFolio(order);
      expect(pfn % 2 ** order).toBe(0);
      expect(mem.folioOrder(pfn)).toBe(order);
      expect(mem.refCount(pfn)).toBe(1);
      expect(mem.pinCount(pfn)).toBe(0);
      expect(mem.folioHead(pfn + 2 ** order - 1)).toBe(pfn);
    }
    expect(mem.allocatedPages()).toBe(1 + 512 + PAGES_1G);
  });

  it("rejects orders other than 0, 9, 18 with EINVAL", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    expectErrno(() => mem.allocFolio(3), EINVAL);
    expect(mem.allocatedPages()).toBe(0);
  });

  it("reserves the first 1 MiB: pfn 0 is never handed out", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    expect(mem.allocFolio(0)).toBe(RESERVED_LOW_PAGES);
    expect(mem.allocatedPages()).toBe(1);
    expect(mem.pfnValid(0)).toBe(true);
    expect(mem.isAllocated(0)).toBe(false);
    expect(() => mem.pinPages(0, 1)).toThrow(KernelWarning);
    expect(() => mem.readPhys(0n, new Uint8Array(1))).toThrow(KernelWarning);
    const small = new PhysMem({ ramBytes: 64n << 20n });
    expect(small.allocFolio(0)).toBe(RESERVED_LOW_PAGES);
    expect(small.allocFolio(9)).toBe(512);
  });

  it("is ENOMEM when RAM is exhausted, and the failure changes nothing", () => {
    const mem = new PhysMem({ ramBytes: 2n * GiB });
    expect(mem.allocFolio(18)).toBe(PAGES_1G); // the first GiB holds the reserved 1 MiB
    mem.allocFolio(0);
    expectErrno(() => mem.allocFolio(18), ENOMEM);
    expect(mem.allocatedPages()).toBe(PAGES_1G + 1);
    // the rest of the first GiB is still usable as 2 MiB folios
    for (let i = 0; i < 511; i++) mem.allocFolio(9);
    expectErrno(() => mem.allocFolio(9), ENOMEM);
    for (let i = 0; i < 512 - RESERVED_LOW_PAGES - 1; i++) mem.allocFolio(0);
    expectErrno(() => mem.allocFolio(0), ENOMEM);
    expect(mem.allocatedPages()).toBe(2 * PAGES_1G - RESERVED_LOW_PAGES);
  });

  it("uses a RAM tail shorter than 1 GiB for smaller folios", () => {
    const mem = new PhysMem({ ramBytes: 2n * GiB + (4n << 20n) + 8192n });
    expect(mem.allocFolio(18)).toBe(PAGES_1G);
    const drain = (order: number) => {
      const got: number[] = [];
      for (;;) {
        try {
          got.push(mem.allocFolio(order));
        } catch (e) {
          if (isKernelError(e, ENOMEM)) return got;
          throw e;
        }
      }
    };
    const huge = drain(9);
    expect(huge.length).toBe(511 + 2);
    expect(huge).toContain(2 * PAGES_1G);
    expect(huge).toContain(2 * PAGES_1G + 512);
    const small = drain(0);
    expect(small.length).toBe(512 - RESERVED_LOW_PAGES + 2);
    expect(small).toContain(2 * PAGES_1G + 1024);
    expect(small).toContain(2 * PAGES_1G + 1025);
  });

  it("fails an injected allocation with ENOMEM and no state change", () => {
    const k = new Kernel({ ramBytes: GiB });
    const sections = k.mem.metadataSections();
    k.current.fault.arm(1);
    expectErrno(() => k.mem.allocFolio(0, "test_site"), ENOMEM);
    expect(k.current.fault.failedSite).toBe("test_site");
    expect(k.current.fault.read()).toBe(0);
    expect(k.mem.allocatedPages()).toBe(0);
    expect(k.mem.metadataSections()).toBe(sections);
  });

  it("frees at refcount zero and merges split frames back", () => {
    const mem = new PhysMem({ ramBytes: 2n * GiB });
    const p = mem.allocFolio(0);
    mem.folioGet(p, 2);
    expect(mem.refCount(p)).toBe(3);
    mem.folioPut(p, 2);
    mem.folioPut(p);
    expect(mem.isAllocated(p)).toBe(false);
    // the 512th 2 MiB folio splits the second GiB; freeing it lets a 1 GiB folio form again
    let last = 0;
    for (let i = 0; i < 512; i++) last = mem.allocFolio(9);
    expect(last).toBe(PAGES_1G);
    mem.folioPut(last);
    expect(mem.allocFolio(18)).toBe(PAGES_1G);
  });

  it("WARNs on a refcount underflow and on a free page's metadata", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const p = mem.allocFolio(9);
    expect(() => mem.folioPut(p, 2)).toThrow(KernelWarning);
    expect(mem.refCount(p)).toBe(1);
    expect(() => mem.folioHead(p + 512)).toThrow(KernelWarning);
  });

  it("keeps folios disjoint and accounting exact under random alloc/free (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ order: fc.constantFrom(0, 0, 0, 9, 18), free: fc.nat(40) }), {
          maxLength: 60,
        }),
        (ops) => {
          const mem = new PhysMem({ ramBytes: 3n * GiB + (6n << 20n) });
          const live: Array<[number, number]> = [];
          for (const op of ops) {
            if (op.free % 3 === 0 && live.length) {
              const [pfn] = live.splice(op.free % live.length, 1)[0]!;
              mem.folioPut(pfn);
              continue;
            }
            let pfn: number;
            try {
              pfn = mem.allocFolio(op.order);
            } catch (e) {
              if (isKernelError(e, ENOMEM)) continue;
              throw e;
            }
            const size = 2 ** op.order;
            expect(pfn % size).toBe(0);
            for (const [q, n] of live) expect(pfn + size <= q || q + n <= pfn).toBe(true);
            live.push([pfn, size]);
          }
          expect(mem.allocatedPages()).toBe(live.reduce((s, [, n]) => s + n, 0));
          for (const [pfn, n] of live) {
            expect(mem.folioHead(pfn + n - 1)).toBe(pfn);
            mem.folioPut(pfn);
          }
          // Everything merged back: all but the reserved first GiB is 1 GiB folios again.
          for (let i = 0; i < 2; i++) mem.allocFolio(18);
          for (let i = 0; i < 511 + 3; i++) mem.allocFolio(9);
          expectErrno(() => mem.allocFolio(9), ENOMEM);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe("pins", () => {
  it("pins a run across folios: per folio pincount and refcount rise by its pages", () => {
    const mem = new PhysMem({ ramBytes: 2n * GiB });
    const big = mem.allocFolio(9);
    const pages = [mem.allocFolio(0), mem.allocFolio(0)];
    expect(pages[1]).toBe(pages[0]! + 1);
    mem.pinPages(pages[0]!, 2);
    mem.pinPages(big + 10, 100);
    expect(mem.pinCount(big + 300)).toBe(100);
    expect(mem.refCount(big)).toBe(101);
    expect(mem.pinCount(pages[1]!)).toBe(1);
    expect(mem.totalPinned()).toBe(102);
    mem.unpinPages(big + 10, 100);
    mem.unpinPages(pages[0]!, 2);
    expect(mem.totalPinned()).toBe(0);
    expect(mem.refCount(big)).toBe(1);
  });

  it("WARNs on unpin below zero and leaves every count as it was", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    const b = mem.allocFolio(0);
    mem.pinPages(a, 1);
    expect(() => mem.unpinPages(a, 2)).toThrow(KernelWarning);
    expect(mem.pinCount(a)).toBe(1);
    expect(mem.pinCount(b)).toBe(0);
    expect(mem.totalPinned()).toBe(1);
  });

  it("WARNs when pinning free memory or MMIO, with nothing pinned", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    expect(() => mem.pinPages(a, 2)).toThrow(KernelWarning);
    expect(mem.pinCount(a)).toBe(0);
    const r = mem.addMmioRegion("bar", 1n << 20n);
    expect(() => mem.pinPages(r.basePfn, 1)).toThrow(KernelWarning);
    expect(mem.totalPinned()).toBe(0);
  });

  it("refuses to free a pinned folio", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    mem.pinPages(a, 1);
    mem.folioPut(a); // the pin's reference keeps it
    expect(mem.isAllocated(a)).toBe(true);
    mem.unpinPages(a, 1);
    expect(mem.isAllocated(a)).toBe(false);
  });

  it("a 1 GiB folio is pinned in one update and touches one metadata section", () => {
    const mem = new PhysMem({ ramBytes: 4n * GiB });
    const sections = mem.metadataSections();
    const f = mem.allocFolio(18);
    mem.pinPages(f, PAGES_1G);
    expect(mem.pinCount(f + 12345)).toBe(PAGES_1G);
    expect(mem.metadataSections() - sections).toBeLessThanOrEqual(1);
  });

  it("pin counts match a model under random pin/unpin runs (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            start: fc.nat(2000),
            len: fc.integer({ min: 1, max: 700 }),
            pin: fc.boolean(),
          }),
          {
            maxLength: 40,
          },
        ),
        (ops) => {
          const mem = new PhysMem({ ramBytes: GiB });
          const heads = [
            mem.allocFolio(9),
            ...Array.from({ length: 600 }, () => mem.allocFolio(0)),
          ];
          const base = Math.min(...heads);
          const span = heads.length - 1 + 512;
          const model = new Map<number, number>();
          const headOf = (p: number) => mem.folioHead(p);
          let total = 0;
          for (const op of ops) {
            const start = base + (op.start % span);
            const len = Math.min(op.len, base + span - start);
            if (op.pin) {
              mem.pinPages(start, len);
              for (let p = start; p < start + len; p++)
                model.set(headOf(p), (model.get(headOf(p)) ?? 0) + 1);
              total += len;
            } else {
              let ok = true;
              const need = new Map<number, number>();
              for (let p = start; p < start + len; p++)
                need.set(headOf(p), (need.get(headOf(p)) ?? 0) + 1);
              for (const [h, n] of need) if ((model.get(h) ?? 0) < n) ok = false;
              if (ok) {
                mem.unpinPages(start, len);
                for (const [h, n] of need) model.set(h, model.get(h)! - n);
                total -= len;
              } else expect(() => mem.unpinPages(start, len)).toThrow(KernelWarning);
            }
          }
          expect(mem.totalPinned()).toBe(total);
          for (const [h, n] of model) {
            expect(mem.pinCount(h)).toBe(n);
            expect(mem.refCount(h)).toBe(1 + n);
          }
        },
      ),
      { numRuns: 30 },
    );
  });
});

describe("contents", () => {
  it("reads zero until written, across page and folio boundaries", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    const b = mem.allocFolio(0);
    expect(b).toBe(a + 1);
    const pa = BigInt(a) * BigInt(PAGE_SIZE);
    const out = new Uint8Array(16);
    mem.readPhys(pa + 4090n, out);
    expect(out.every((x) => x === 0)).toBe(true);
    mem.writePhys(
      pa + 4090n,
      Uint8Array.from({ length: 16 }, (_, i) => i + 1),
    );
    mem.readPhys(pa + 4090n, out);
    expect([...out]).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
  });

  it("drops contents on free, so a reused folio reads zero", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const big = mem.allocFolio(9);
    const pa = BigInt(big + 7) * 4096n;
    mem.writePhys(pa, new Uint8Array([9]));
    mem.folioPut(big);
    const again = mem.allocFolio(9);
    expect(again).toBe(big);
    const out = new Uint8Array(1);
    mem.readPhys(pa, out);
    expect(out[0]).toBe(0);
  });

  it("copyFolio duplicates the written pages of a folio of the same order", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    const b = mem.allocFolio(0);
    mem.writePhys(BigInt(a) * 4096n, new Uint8Array([1, 2]));
    mem.copyFolio(b, a);
    const out = new Uint8Array(2);
    mem.readPhys(BigInt(b) * 4096n, out);
    expect([...out]).toEqual([1, 2]);
    const h1 = mem.allocFolio(9);
    const h2 = mem.allocFolio(9);
    mem.writePhys(BigInt(h1 + 300) * 4096n + 5n, new Uint8Array([7]));
    mem.copyFolio(h2, h1);
    mem.readPhys(BigInt(h2 + 300) * 4096n + 5n, out.subarray(0, 1));
    expect(out[0]).toBe(7);
    expect(() => mem.copyFolio(h2, a)).toThrow(KernelWarning);
    expect(() => mem.copyFolio(h2 + 1, h1)).toThrow(KernelWarning);
  });

  it("WARNs on access to free RAM (use after free) and writes nothing", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    const pa = BigInt(a) * 4096n;
    expect(() => mem.writePhys(pa + 4000n, new Uint8Array(200))).toThrow(KernelWarning);
    const out = new Uint8Array(96);
    mem.readPhys(pa + 4000n, out);
    expect(out.every((x) => x === 0)).toBe(true);
    expect(() => mem.readPhys(pa + 4096n, out)).toThrow(KernelWarning);
  });

  it("is EFAULT for unbacked physical addresses", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    expectErrno(() => mem.readPhys(GiB - 2n, new Uint8Array(4)), EFAULT);
    expectErrno(() => mem.readPhys(mem.mmioBase + 4096n, new Uint8Array(1)), EFAULT);
    expectErrno(() => mem.writePhys(-1n, new Uint8Array(1)), EFAULT);
  });
});

describe("MMIO regions", () => {
  it("places BARs above RAM, aligned to their size, without struct page", () => {
    const mem = new PhysMem({ ramBytes: GiB + 4096n });
    expect(mem.mmioBase).toBe(2n * GiB);
    const a = mem.addMmioRegion("bar0", 0x4000n);
    const b = mem.addMmioRegion("bar2", 1n << 24n);
    expect(a.base).toBe(2n * GiB);
    expect(b.base % (1n << 24n)).toBe(0n);
    expect(b.base).toBeGreaterThanOrEqual(a.base + a.size);
    expect(mem.pfnValid(a.basePfn)).toBe(false);
    expect(mem.pfnValid(0)).toBe(true);
    expect(mem.mmioRegionAt(b.base + 5n)).toBe(b);
    expect(mem.mmioRegionAt(a.base + a.size)).toBeUndefined();
  });

  it("reads and writes BAR contents by physical address, sparse, until removed", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const r = mem.addMmioRegion("bar", 0x10000n);
    const out = new Uint8Array(4);
    mem.readPhys(r.base + 0x100n, out);
    expect([...out]).toEqual([0, 0, 0, 0]);
    mem.writePhys(r.base + 0xffeen, new Uint8Array([1, 2, 3, 4]).subarray(0, 2));
    expectErrno(() => mem.writePhys(r.base + 0xfffen, new Uint8Array(4)), EFAULT);
    mem.removeMmioRegion(r);
    expect(r.removed).toBe(true);
    expectErrno(() => mem.readPhys(r.base, out), EFAULT);
    expect(() => mem.removeMmioRegion(r)).toThrow(KernelWarning);
    const again = mem.addMmioRegion("bar", 0x10000n);
    expect(again.base).not.toBe(r.base);
    expectErrno(() => mem.addMmioRegion("empty", 0n), EINVAL);
  });
});
