import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  FOLL_LONGTERM,
  FOLL_WRITE,
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  pinUserPages,
  unpinUserPageRuns,
} from "../src/index.js";

const PAGES = 6;

type Op =
  | { kind: "poke"; proc: number; page: number; value: number }
  | { kind: "fork"; proc: number }
  | { kind: "pin"; proc: number; page: number; write: boolean }
  | { kind: "dma"; pin: number; value: number }
  | { kind: "exit"; proc: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("poke" as const),
    proc: fc.nat(3),
    page: fc.nat(PAGES - 1),
    value: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({ kind: fc.constant("fork" as const), proc: fc.nat(3) }),
  fc.record({
    kind: fc.constant("pin" as const),
    proc: fc.nat(3),
    page: fc.nat(PAGES - 1),
    write: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant("dma" as const),
    pin: fc.nat(5),
    value: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({ kind: fc.constant("exit" as const), proc: fc.nat(3) }),
);

describe("copy-on-write against a model (property)", () => {
  it("every process sees only its own writes and the device writes through its own pins", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const k = new Kernel({ ramBytes: 1n << 30n });
        const root = new Libc(k);
        const va = root.mmap(
          0n,
          BigInt(PAGES * 4096),
          PROT_READ | PROT_WRITE,
          MAP_PRIVATE | MAP_ANONYMOUS,
          -1,
          0,
        );
        const procs: Array<{ libc: Libc; view: number[] } | undefined> = [
          { libc: root, view: new Array(PAGES).fill(0) },
        ];
        const pins: Array<{ owner: (typeof procs)[number]; page: number; runs: PfnRuns }> = [];
        for (const o of ops) {
          if (o.kind === "dma") {
            const p = pins[o.pin];
            if (!p) continue;
            k.mem.writePhys(BigInt(p.runs.pfn(0)) * 4096n, new Uint8Array([o.value]));
            if (p.owner && procs.includes(p.owner)) p.owner.view[p.page] = o.value;
            continue;
          }
          const proc = procs[o.proc];
          if (!proc) continue;
          if (o.kind === "poke") {
            proc.libc.poke(va + BigInt(o.page * 4096), new Uint8Array([o.value]));
            proc.view[o.page] = o.value;
          } else if (o.kind === "fork") {
            const free = procs.findIndex((p, i) => i > 0 && p === undefined);
            const slot = free < 0 ? procs.length : free;
            if (slot > 3) continue;
            procs[slot] = { libc: proc.libc.fork(), view: [...proc.view] };
          } else if (o.kind === "pin") {
            const runs = new PfnRuns();
            const flags = FOLL_LONGTERM | (o.write ? FOLL_WRITE : 0);
            pinUserPages(k, proc.libc.process.mm, va + BigInt(o.page * 4096), 1, flags, runs);
            pins.push({ owner: proc, page: o.page, runs });
          } else if (o.kind === "exit" && o.proc !== 0) {
            proc.libc.exit();
            procs[o.proc] = undefined;
          }
          for (const p of procs) {
            if (!p) continue;
            const seen = Array.from(
              { length: PAGES },
              (_, i) => p.libc.peek(va + BigInt(i * 4096), 1)[0],
            );
            expect(seen).toEqual(p.view);
          }
        }
        for (const p of pins) unpinUserPageRuns(k, p.runs, true);
        for (const p of procs) p?.libc.exit();
        expect(k.mem.allocatedPages()).toBe(0);
        expect(k.mem.totalPinned()).toBe(0);
      }),
      { numRuns: 80 },
    );
  });
});
