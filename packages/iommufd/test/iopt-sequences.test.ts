/**
 * Random operation sequences over two IOASes sharing one machine (USER, FILE and DMABUF
 * maps, copies, domain add/remove, access pins, revoke/un-revoke, tiny batches), with the
 * invariant checker and the machine-wide pin count after every step.
 */
import type { IommuDomain } from "@x/iommu-pgtable";
import {
  Kernel,
  KernelError,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
} from "@x/kernel";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ioptAccessPinPages, ioptAccessUnpinPages } from "../src/access-core.js";
import { checkInvariants, totalNpinned } from "../src/testing.js";
import { IOPT_ALLOC_IOVA, IoPagetable, type IoptAccess } from "../src/io-pagetable.js";
import { setTempMemoryLimit } from "../src/testing.js";
import { TestExporter, testDomain, RW, PAGE, ctx } from "./pages-helpers.js";
import { iommufdInit } from "../src/ioctls.js";

type Op =
  | { k: "mapUser"; io: number; first: number; n: number }
  | { k: "mapDmabuf"; io: number; first: number; n: number }
  | { k: "unmap"; io: number; pick: number }
  | { k: "copy"; io: number; pick: number }
  | { k: "domain"; io: number; which: number }
  | { k: "pin"; io: number; pick: number; off: number; n: number }
  | { k: "unpin"; pick: number }
  | { k: "revoke"; on: boolean }
  | { k: "limit"; bytes: number };

const io = fc.integer({ min: 0, max: 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant("mapUser" as const),
    io,
    first: fc.nat(30),
    n: fc.integer({ min: 1, max: 12 }),
  }),
  fc.record({
    k: fc.constant("mapDmabuf" as const),
    io,
    first: fc.nat(20),
    n: fc.integer({ min: 1, max: 12 }),
  }),
  fc.record({ k: fc.constant("unmap" as const), io, pick: fc.nat() }),
  fc.record({ k: fc.constant("copy" as const), io, pick: fc.nat() }),
  fc.record({ k: fc.constant("domain" as const), io, which: fc.nat(2) }),
  fc.record({
    k: fc.constant("pin" as const),
    io,
    pick: fc.nat(),
    off: fc.nat(8),
    n: fc.integer({ min: 1, max: 4 }),
  }),
  fc.record({ k: fc.constant("unpin" as const), pick: fc.nat() }),
  fc.record({ k: fc.constant("revoke" as const), on: fc.boolean() }),
  fc.record({ k: fc.constant("limit" as const), bytes: fc.constantFrom(0, 16, 40, 256) }),
);

function run(ops: Op[]): void {
  const kernel = new Kernel();
  iommufdInit(kernel);
  const libc = new Libc(kernel, kernel.newProcess(1000));
  kernel.current = libc.task;
  const iopts = [new IoPagetable(kernel), new IoPagetable(kernel)];
  const domains: IommuDomain[] = [
    testDomain(kernel),
    testDomain(kernel),
    testDomain(kernel, "mock-huge"),
  ];
  const owner = new Map<IommuDomain, IoPagetable>();
  let exp = new TestExporter(kernel, 32n * PAGE);
  const va = libc.mmap(0n, 48 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (let i = 47; i >= 0; i -= 2) libc.poke(va + BigInt(i) * PAGE, new Uint8Array([i]));
  const pins: Array<{ iopt: IoPagetable; iova: bigint; len: bigint }> = [];
  const accesses = iopts.map(
    (iopt): IoptAccess => ({
      iovaAlignment: PAGE,
      ioptAccessListId: -1,
      notifyUnmap: (iova, len) => {
        for (let i = pins.length - 1; i >= 0; i--) {
          const p = pins[i];
          if (p && p.iopt === iopt && p.iova <= iova + len - 1n && p.iova + p.len - 1n >= iova) {
            ioptAccessUnpinPages(iopt, p.iova, p.len);
            pins.splice(i, 1);
          }
        }
      },
    }),
  );
  for (const [i, iopt] of iopts.entries()) iopt.addAccess(accesses[i] as IoptAccess);
  const area = (iopt: IoPagetable, pick: number) => {
    const areas = iopt.areas();
    return areas.length ? areas[pick % areas.length] : undefined;
  };
  for (const op of ops) {
    const iopt = iopts["io" in op ? op.io : 0] as IoPagetable;
    try {
      switch (op.k) {
        case "mapUser":
          iopt.mapUserPages(
            ctx,
            0n,
            va + BigInt(op.first) * PAGE,
            BigInt(op.n) * PAGE,
            RW,
            IOPT_ALLOC_IOVA,
          );
          break;
        case "mapDmabuf":
          iopt.mapFilePages(
            ctx,
            0n,
            exp.fd(),
            BigInt(op.first) * PAGE,
            BigInt(op.n) * PAGE,
            RW,
            IOPT_ALLOC_IOVA,
          );
          break;
        case "unmap": {
          const a = area(iopt, op.pick);
          if (a) iopt.unmapIova(a.iova, a.length);
          break;
        }
        case "copy": {
          const a = area(iopt, op.pick);
          if (!a) break;
          const list = iopt.getPages(a.iova, a.length);
          try {
            (iopts[1 - op.io] as IoPagetable).mapPages(list, a.length, 0n, RW, IOPT_ALLOC_IOVA);
          } finally {
            iopt.freePagesList(list);
          }
          break;
        }
        case "domain": {
          const d = domains[op.which] as IommuDomain;
          const cur = owner.get(d);
          if (cur) {
            cur.tableRemoveDomain(d);
            owner.delete(d);
          } else {
            iopt.tableAddDomain(d);
            owner.set(d, iopt);
          }
          break;
        }
        case "pin": {
          const a = area(iopt, op.pick);
          if (!a) break;
          const iova = a.iova + BigInt(op.off) * PAGE;
          const len = BigInt(op.n) * PAGE;
          ioptAccessPinPages(iopt, iova, len, new PfnRuns(), 0);
          pins.push({ iopt, iova, len });
          break;
        }
        case "unpin": {
          const p = pins[op.pick % Math.max(1, pins.length)];
          if (!p) break;
          ioptAccessUnpinPages(p.iopt, p.iova, p.len);
          pins.splice(pins.indexOf(p), 1);
          break;
        }
        case "revoke":
          if (op.on || !exp.revoked) exp.setRevoked(op.on);
          else exp = new TestExporter(kernel, 32n * PAGE);
          break;
        case "limit":
          setTempMemoryLimit(kernel, op.bytes);
          break;
      }
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
    }
    const pages = checkInvariants(iopts);
    expect(kernel.mem.totalPinned()).toBe(totalNpinned(pages));
    expect(libc.process.cred.user.lockedVm).toBe(totalNpinned(pages));
  }
  for (const p of [...pins]) ioptAccessUnpinPages(p.iopt, p.iova, p.len);
  for (const iopt of iopts) iopt.unmapAll();
  for (const [d, iopt] of owner) iopt.tableRemoveDomain(d);
  for (const [i, iopt] of iopts.entries()) iopt.removeAccess(accesses[i] as IoptAccess);
  expect(kernel.mem.totalPinned()).toBe(0);
  expect(libc.process.cred.user.lockedVm).toBe(0);
}

describe("random io_pagetable sequences", () => {
  it("keep I1-I11 and exact pin accounting after every step", () => {
    fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 30 }), run), { numRuns: 40 });
  });
});
