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
      expect(mem.folioNrPages(pfn + 2 ** order - 1)).toBe(2 ** order);
    }
    expect(mem.allocatedPages()).toBe(1 + 512 + PAGES_1G);
  });

  it("hands out the lowest free frame of a split first; a freed one comes back before them", () => {
    // A split leaves its other 511 frames free in address order, on every level; a machine's
    // seeding leaves every frame of its top level so.
    const mem = new PhysMem({ ramBytes: 4n * GiB });
    const first = [0, 1, 2].map(() => mem.allocFolio(0));
    expect(first).toEqual([256, 257, 258]);
    mem.folioPut(257);
    expect(mem.allocFolio(0)).toBe(257);
    expect(mem.allocFolio(0)).toBe(259);
    // The rest of the 2 MiB frame, then the next one: 260..511, 512, 513.
    const more = Array.from({ length: 254 }, () => mem.allocFolio(0));
    expect(more[0]).toBe(260);
    expect(more.at(-3)).toBe(511);
    expect(more.slice(-2)).toEqual([512, 513]);
    expect([0, 1].map(() => mem.allocFolio(9))).toEqual([1024, 1536]);
    expect([0, 1].map(() => mem.allocFolio(18))).toEqual([PAGES_1G, 2 * PAGES_1G]);
    const small = new PhysMem({ ramBytes: 2n << 20n });
    expect(small.allocFolio(0)).toBe(RESERVED_LOW_PAGES);
    expect(small.allocFolio(0)).toBe(RESERVED_LOW_PAGES + 1);
    // Freed frames come back last-freed first, more of them than the stack first holds.
    const freed = more.slice(0, 40);
    for (const pfn of freed) mem.folioPut(pfn);
    expect(Array.from({ length: 41 }, () => mem.allocFolio(0))).toEqual([...freed.reverse(), 514]);
    // Under 2 MiB of RAM the 4 KiB frames are the top level: no split.
    const tiny = new PhysMem({ ramBytes: 384 * PAGE_SIZE });
    expect([0, 1].map(() => tiny.allocFolio(0))).toEqual([256, 257]);
    expect(tiny.metadataSections()).toBe(1);
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
    // Every level is empty now: the split that finds no parent leaves the metadata alone.
    const sections = mem.metadataSections();
    expectErrno(() => mem.allocFolio(0), ENOMEM);
    expect(mem.metadataSections()).toBe(sections);
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
    k.current.fault.arm(1);
    expectErrno(() => k.mem.allocFolio(9), ENOMEM);
    expect(k.current.fault.failedSite).toBe("alloc_pages");
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
  it("RAM is 2 TiB unless told, rounded down to pages, at most 8 TiB", () => {
    const def = new PhysMem();
    expect(def.ramBytes).toBe(2n << 40n);
    expect(def.ramPages).toBe(2 ** 29);
    const odd = new PhysMem({ ramBytes: GiB + 4095n });
    expect(odd.ramBytes).toBe(GiB);
    expect(odd.ramPages).toBe(PAGES_1G);
    expect(new PhysMem({ ramBytes: 8n << 40n }).ramPages).toBe(2 ** 31);
    expectErrno(() => new PhysMem({ ramBytes: (8n << 40n) + 1n }), EINVAL);
    expectErrno(() => new PhysMem({ ramBytes: -1n }), EINVAL);
  });

  it("starts the MMIO window at the end of RAM rounded up to 1 GiB", () => {
    expect(new PhysMem({ ramBytes: GiB }).mmioBase).toBe(GiB);
    expect(new PhysMem({ ramBytes: 3n * GiB - 4096n }).mmioBase).toBe(3n * GiB);
    expect(new PhysMem({ ramBytes: 0n }).mmioBase).toBe(0n);
  });

  it("allocates nothing with no RAM or no more than the reserved 1 MiB; the last byte of RAM is reachable", () => {
    for (const ramBytes of [0n, 4096n, 512n << 10n, 1n << 20n]) {
      const mem = new PhysMem({ ramBytes });
      expectErrno(() => mem.allocFolio(0), ENOMEM);
      expect(mem.allocatedPages()).toBe(0);
    }
    const mem = new PhysMem({ ramBytes: (1n << 20n) + 8192n });
    expect(mem.allocFolio(0)).toBe(RESERVED_LOW_PAGES);
    expect(mem.allocFolio(0)).toBe(RESERVED_LOW_PAGES + 1);
    expectErrno(() => mem.allocFolio(0), ENOMEM);
    expectErrno(() => mem.allocFolio(9), ENOMEM);
    mem.writePhys(mem.ramBytes - 4n, new Uint8Array([1, 2, 3, 4]));
    const out = new Uint8Array(4);
    mem.readPhys(mem.ramBytes - 4n, out);
    expect([...out]).toEqual([1, 2, 3, 4]);
    expectErrno(() => mem.readPhys(mem.ramBytes - 4n, new Uint8Array(5)), EFAULT);
  });

  it("merges a 2 MiB frame back only once none of its 4 KiB folios is in use", () => {
    // 4 MiB of RAM: the first 2 MiB frame holds the reserved 1 MiB, so the second is the only
    // 2 MiB folio there can be, and one 4 KiB folio past the first frame's splits it.
    const mem = new PhysMem({ ramBytes: 4n << 20n });
    for (let i = 0; i < 512 - RESERVED_LOW_PAGES; i++) mem.allocFolio(0);
    expect(mem.allocFolio(0)).toBe(512);
    expectErrno(() => mem.allocFolio(9), ENOMEM);
    // emptied, then used again before a merge: it stays split
    mem.folioPut(512);
    expect(mem.allocFolio(0)).toBe(512);
    expectErrno(() => mem.allocFolio(9), ENOMEM);
    mem.folioPut(512);
    expect(mem.allocFolio(9)).toBe(512);
    expect(mem.folioOrder(512 + 511)).toBe(9);
    // the merged frame's 4 KiB frames left on the free list are not handed out again
    expectErrno(() => mem.allocFolio(0), ENOMEM);
  });

  it("counts the 4 KiB folios in use per 2 MiB frame: a frame merges only when all are free", () => {
    // 6 MiB of RAM: 2 MiB frames 0 (the reserved 1 MiB and 256 folios), 1 (512 folios), 2 (two)
    const mem = new PhysMem({ ramBytes: 6n << 20n });
    for (let i = 0; i < 256 + 512 + 2; i++) mem.allocFolio(0);
    expect(mem.isAllocated(1025)).toBe(true);
    mem.folioPut(1025);
    expectErrno(() => mem.allocFolio(9), ENOMEM);
    mem.folioPut(1024);
    expect(mem.allocFolio(9)).toBe(1024);
  });

  it("keeps metadata only for the frames in use: a fresh machine has one section per split level", () => {
    // the reserved 1 MiB splits the first 1 GiB and 2 MiB frames
    expect(new PhysMem().metadataSections()).toBe(3);
    expect(new PhysMem({ ramBytes: 64n << 20n }).metadataSections()).toBe(2);
    expect(new PhysMem({ ramBytes: 0n }).metadataSections()).toBe(0);
  });

  it("puts no folio at a fractional, negative or out-of-RAM frame number (pfn_valid)", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const p = mem.allocFolio(0);
    expect(mem.isAllocated(p)).toBe(true);
    expect(mem.isAllocated(p + 0.5)).toBe(false);
    expect(mem.pfnValid(p + 0.5)).toBe(false);
    expect(mem.isAllocated(-1)).toBe(false);
    expect(mem.pfnValid(-1)).toBe(false);
    expect(mem.pfnValid(mem.ramPages - 1)).toBe(true);
    expect(mem.pfnValid(mem.ramPages)).toBe(false);
    expect(() => mem.folioHead(p + 0.5)).toThrow(KernelWarning);
  });

  it("never frees a pinned folio: a put of its last reference WARNs", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const p = mem.allocFolio(0);
    mem.pinPages(p, 1);
    expect(() => mem.folioPut(p, 2)).toThrow(KernelWarning);
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
  it("pins or unpins 0 pages as a no-op; a negative or fractional count WARNs", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const p = mem.allocFolio(0);
    expect(mem.allocFolio(0)).toBe(p + 1);
    mem.pinPages(p, 0);
    mem.unpinPages(p, 0);
    expect(mem.pinCount(p)).toBe(0);
    expect(mem.refCount(p)).toBe(1);
    expect(() => mem.pinPages(p, 1.5)).toThrow(KernelWarning);
    expect(() => mem.pinPages(p, -1)).toThrow(KernelWarning);
    expect(mem.pinCount(p)).toBe(0);
    expect(mem.totalPinned()).toBe(0);
  });

  it("puts back what a large folio gained when a run WARNs past it", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const big = mem.allocFolio(9);
    expect(mem.isAllocated(big + 512)).toBe(false);
    expect(() => mem.pinPages(big + 500, 13)).toThrow(KernelWarning);
    expect(mem.pinCount(big)).toBe(0);
    expect(mem.refCount(big)).toBe(1);
    expect(mem.totalPinned()).toBe(0);
    mem.pinPages(big, 3);
    expect(() => mem.unpinPages(big, 4)).toThrow(KernelWarning);
    expect(mem.pinCount(big)).toBe(3);
    expect(mem.refCount(big)).toBe(4);
    expect(mem.totalPinned()).toBe(3);
  });

  it("frees a large folio at the unpin that drops its last reference", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const big = mem.allocFolio(9);
    mem.writePhys(BigInt(big + 3) * 4096n, new Uint8Array([5]));
    mem.writePhys(BigInt(big + 4) * 4096n, new Uint8Array([6]));
    mem.pinPages(big + 1, 2);
    mem.folioPut(big);
    mem.unpinPages(big + 1, 1);
    expect(mem.isAllocated(big)).toBe(true);
    mem.unpinPages(big + 2, 1);
    expect(mem.isAllocated(big)).toBe(false);
    expect(mem.allocatedPages()).toBe(0);
    expect(mem.allocFolio(9)).toBe(big);
    const out = new Uint8Array(4097);
    mem.readPhys(BigInt(big + 3) * 4096n, out);
    expect(out.every((x) => x === 0)).toBe(true);
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
  it("drops a freed 4 KiB folio's contents too", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const p = mem.allocFolio(0);
    mem.writePhys(BigInt(p) * 4096n + 7n, new Uint8Array([9]));
    mem.folioPut(p);
    expect(mem.allocFolio(0)).toBe(p);
    const out = new Uint8Array(1);
    mem.readPhys(BigInt(p) * 4096n + 7n, out);
    expect(out[0]).toBe(0);
  });

  it("copyFolio WARNs unless the source is a head as well", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const h1 = mem.allocFolio(9);
    const h2 = mem.allocFolio(9);
    expect(() => mem.copyFolio(h2, h1 + 1)).toThrow(KernelWarning);
    mem.copyFolio(h2, h1);
  });

  it("readPfn / writePfn copy exactly n bytes, short and long", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const p = mem.allocFolio(0);
    for (const n of [4, 64, 65, 200]) {
      const data = Uint8Array.from({ length: n + 8 }, (_, i) => i + 1);
      mem.writePfn(p, 100, data, 2, n);
      const out = new Uint8Array(n + 8).fill(0xee);
      mem.readPfn(p, 99, out, 3, n + 2);
      expect(out[2]).toBe(0xee);
      expect(out[3]).toBe(0);
      expect([...out.subarray(4, 4 + n)]).toEqual([...data.subarray(2, 2 + n)]);
      expect(out[4 + n]).toBe(0);
      expect(out[5 + n]).toBe(0xee);
      mem.writePfn(p, 99, new Uint8Array(n + 2), 0, n + 2);
    }
  });

  it("writes nothing when a later page of the range is free RAM, whatever the data", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    const pa = BigInt(a) * 4096n;
    expect(() => mem.writePhys(pa + 4000n, new Uint8Array(200).fill(0xab))).toThrow(KernelWarning);
    const out = new Uint8Array(96);
    mem.readPhys(pa + 4000n, out);
    expect(out.every((x) => x === 0)).toBe(true);
  });

  it("copies a range of written pages across page boundaries, long chunks included", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const a = mem.allocFolio(0);
    expect(mem.allocFolio(0)).toBe(a + 1);
    expect(mem.allocFolio(0)).toBe(a + 2);
    const pa = BigInt(a) * 4096n;
    const data = Uint8Array.from({ length: 4300 }, (_, i) => (i * 7) & 0xff);
    mem.writePhys(pa + 4000n, data);
    const out = new Uint8Array(4300);
    mem.readPhys(pa + 4000n, out);
    expect(out).toEqual(data);
    const tail = new Uint8Array(200);
    mem.readPhys(pa + 8100n, tail);
    expect(tail).toEqual(data.subarray(4100, 4300));
  });

  it("fills the caller's buffer with zeroes for a page never written", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const p = mem.allocFolio(0);
    const out = new Uint8Array(300).fill(0xee);
    mem.readPhys(BigInt(p) * 4096n + 10n, out.subarray(5, 205));
    expect(out.subarray(5, 205).every((x) => x === 0)).toBe(true);
    expect(out[4]).toBe(0xee);
    expect(out[205]).toBe(0xee);
  });

  it("is EFAULT for a frame with neither RAM nor a BAR behind it", () => {
    const mem = new PhysMem({ ramBytes: GiB });
    const r = mem.addMmioRegion("bar", 4096n);
    expectErrno(() => mem.readPfn(r.basePfn + 1, 0, new Uint8Array(1), 0, 1), EFAULT);
    expectErrno(() => mem.writePfn(r.basePfn + 1, 0, new Uint8Array(1), 0, 1), EFAULT);
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
  it("aligns a BAR to its size up to 1 GiB and starts the next after its last page", () => {
    const mem = new PhysMem({ ramBytes: 2n * GiB });
    const a = mem.addMmioRegion("a", 100n);
    expect(a.base).toBe(2n * GiB);
    expect(a.npages).toBe(1);
    expect(a.removed).toBe(false);
    // the window's first frame is the one just past RAM
    expect(a.basePfn).toBe(mem.ramPages);
    mem.writePhys(a.base + 1n, new Uint8Array([3, 4]));
    mem.writePhys(a.base + 3n, new Uint8Array([5]));
    const out = new Uint8Array(4);
    mem.readPhys(a.base, out);
    expect([...out]).toEqual([0, 3, 4, 5]);
    mem.readPhys(a.base + 96n, out);
    expectErrno(() => mem.readPhys(a.base + 96n, new Uint8Array(5)), EFAULT);
    expect(mem.mmioRegionAt(a.base)).toBe(a);
    expect(mem.mmioRegionAt(a.base + 99n)).toBe(a);
    expect(mem.mmioRegionAt(a.base + 100n)).toBeUndefined();
    const d = mem.addMmioRegion("d", 4096n);
    expect(d.base).toBe(2n * GiB + 4096n);
    // past a BAR's end into the next one is EFAULT, with nothing written to either
    expectErrno(() => mem.writePhys(a.base + 4094n, new Uint8Array([7, 7, 7, 7])), EFAULT);
    mem.readPhys(d.base, out);
    expect([...out]).toEqual([0, 0, 0, 0]);
    const b = mem.addMmioRegion("b", 4097n);
    expect(b.base).toBe(2n * GiB + 8192n);
    expect(b.npages).toBe(2);
    expect(b.basePfn).toBe(Number((2n * GiB + 8192n) / 4096n));
    const c = mem.addMmioRegion("c", 4096n);
    expect(c.base).toBe(2n * GiB + 16384n);
    // a 2 GiB BAR goes on the next 1 GiB boundary, not the next 2 GiB one
    const huge = mem.addMmioRegion("huge", 2n * GiB);
    expect(huge.base).toBe(3n * GiB);
    expect(mem.addMmioRegion("next", 4096n).base).toBe(5n * GiB);
    expect(mem.addMmioRegion("e", 4095n).npages).toBe(1);
    expectErrno(() => mem.readPhys(c.base + 4096n, new Uint8Array(1)), EFAULT);
  });
});
