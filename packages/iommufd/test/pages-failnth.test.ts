/**
 * fail-nth sweeps: every injectable point reached by map, copy, domain add and access pin
 * (USER, FILE and DMABUF) is made to fail in turn; each failure must leave no trace — same
 * areas, IOPTEs, pins, accounting, tracker and dma-buf attachments as before.
 */
import type { IommuDomain } from "@x/iommu-pgtable";
import { Kernel, KernelError, Libc, MFD_HUGETLB, MFD_HUGE_2MB, PfnRuns } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { ioptAccessPinPages, ioptAccessUnpinPages } from "../src/access-core.js";
import { checkInvariants, setTempMemoryLimit, totalNpinned } from "../src/testing.js";
import { IOPT_ALLOC_IOVA, IoPagetable, type IoptAccess } from "../src/io-pagetable.js";
import {
  PAGE,
  RW,
  TestExporter,
  ctx,
  domainRuns,
  scatteredBuffer,
  testDomain,
} from "./pages-helpers.js";
import { iommufdInit } from "../src/ioctls.js";

interface World {
  kernel: Kernel;
  libc: Libc;
  iopts: IoPagetable[];
  domains: IommuDomain[];
  exp: TestExporter;
}

function snapshot(w: World): string {
  const pages = checkInvariants(w.iopts);
  expect(w.kernel.mem.totalPinned()).toBe(totalNpinned(pages));
  return JSON.stringify({
    areas: w.iopts.map((i) => i.areas().map((a) => `${a.iova}-${a.lastIova}`)),
    ndomains: w.iopts.map((i) => i.domainList.length),
    iotes: w.domains.map((d) =>
      domainRuns(d).map((r) => `${r.iova}:${r.paddr}:${r.length}:${r.prot}`),
    ),
    pinned: w.kernel.mem.totalPinned(),
    lockedVm: w.libc.process.cred.user.lockedVm,
    pinnedVm: w.libc.process.mm.pinnedVm,
    trackers: [...pages].map((p) => p.dmabuf?.tracker.length ?? -1),
    attachments: w.exp.dmabuf.resv.with(() => w.exp.dmabuf.attachments.length),
    reserved: w.iopts.map((i) => i.reservedRanges().length),
  });
}

/** Run `op` with fail-nth = 1, 2, ... until it completes without consuming the failure. */
function sweep(w: World, op: () => void, undo: () => void): number {
  const fault = w.kernel.current.fault;
  for (let nth = 1; ; nth++) {
    const before = snapshot(w);
    fault.arm(nth);
    let failed = false;
    let consumed = false;
    try {
      op();
    } catch (e) {
      consumed = fault.read() === 0;
      // Only the injected failure may make the operation fail.
      if (!(e instanceof KernelError) || !consumed) throw e;
      failed = true;
    } finally {
      if (!failed) consumed = fault.read() === 0;
      fault.disarm();
    }
    if (failed) {
      expect(snapshot(w)).toBe(before);
      continue;
    }
    undo();
    if (!consumed) return nth;
  }
}

function world(limit = 0): World {
  const kernel = new Kernel();
  iommufdInit(kernel);
  if (limit) setTempMemoryLimit(kernel, limit);
  const libc = new Libc(kernel, kernel.newProcess(1000));
  kernel.current = libc.task;
  const iopts = [new IoPagetable(kernel), new IoPagetable(kernel)];
  const domains = [testDomain(kernel), testDomain(kernel), testDomain(kernel)];
  const exp = new TestExporter(kernel, 64n * PAGE);
  return { kernel, libc, iopts, domains, exp };
}

describe.each([0, 16])("fail-nth sweeps (temp memory limit %i)", (limit) => {
  it("map USER / FILE / DMABUF into two domains", () => {
    const w = world(limit);
    const [a] = w.iopts as [IoPagetable];
    a.tableAddDomain(w.domains[0] as IommuDomain);
    a.tableAddDomain(w.domains[1] as IommuDomain);
    const va = scatteredBuffer(w.libc, 24);
    const mfd = w.libc.memfdCreate("m", MFD_HUGETLB | MFD_HUGE_2MB);
    w.libc.ftruncate(mfd, 4n << 20n);
    const dfd = w.exp.fd();
    const ops: Array<() => bigint> = [
      () => a.mapUserPages(ctx, 0n, va + PAGE, 20n * PAGE, RW, IOPT_ALLOC_IOVA),
      () => a.mapFilePages(ctx, 0n, mfd, 0n, 4n << 20n, RW, IOPT_ALLOC_IOVA),
      () => a.mapFilePages(ctx, 0n, dfd, 3n * PAGE, 30n * PAGE, RW, IOPT_ALLOC_IOVA),
    ];
    for (const op of ops) {
      let iova = 0n;
      const n = sweep(
        w,
        () => {
          iova = op();
        },
        () => a.unmapIova(iova, a.areas()[0]?.length ?? 1n),
      );
      expect(n).toBeGreaterThan(2);
    }
  });

  it("domain add over USER and DMABUF areas, copy, access pin", () => {
    const w = world(limit);
    const [a, b] = w.iopts as [IoPagetable, IoPagetable];
    a.tableAddDomain(w.domains[0] as IommuDomain);
    b.tableAddDomain(w.domains[2] as IommuDomain);
    const va = scatteredBuffer(w.libc, 16);
    const u = a.mapUserPages(ctx, 0n, va, 16n * PAGE, RW, IOPT_ALLOC_IOVA);
    const d = a.mapFilePages(ctx, 0n, w.exp.fd(), 0n, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
    const d1 = w.domains[1] as IommuDomain;
    sweep(
      w,
      () => a.tableAddDomain(d1),
      () => a.tableRemoveDomain(d1),
    );
    let dst = 0n;
    for (const [src, len] of [
      [u, 16n * PAGE],
      [d, 8n * PAGE],
    ] as const) {
      sweep(
        w,
        () => {
          const list = a.getPages(src, len);
          try {
            dst = b.mapPages(list, len, 0n, RW, IOPT_ALLOC_IOVA);
          } finally {
            a.freePagesList(list);
          }
        },
        () => b.unmapIova(dst, len),
      );
    }
    const acc: IoptAccess = { iovaAlignment: PAGE, ioptAccessListId: -1, notifyUnmap: () => {} };
    a.addAccess(acc);
    sweep(
      w,
      () => ioptAccessPinPages(a, u + 2n * PAGE, 9n * PAGE, new PfnRuns(), 0),
      () => ioptAccessUnpinPages(a, u + 2n * PAGE, 9n * PAGE),
    );
    a.removeAccess(acc);
    w.exp.setRevoked(true);
    sweep(
      w,
      () => b.tableAddDomain(d1),
      () => b.tableRemoveDomain(d1),
    );
    a.unmapAll();
    b.unmapAll();
    expect(w.kernel.mem.totalPinned()).toBe(0);
  });
});

it("a USER map into a domain reaches its injectable points in iopt_map_user_pages' order", () => {
  // iopt_alloc_user_pages, iopt_alloc_area_pages, the pfn_reader's batch and user pfn list,
  // the pin, then (after the domain is filled) pfn_reader_update_pinned's charge.
  const w = world();
  const [a] = w.iopts as [IoPagetable];
  a.tableAddDomain(w.domains[0] as IommuDomain);
  const va = scatteredBuffer(w.libc, 8);
  const fault = w.kernel.current.fault;
  fault.arm(1000);
  try {
    a.mapUserPages(ctx, 0n, va, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
  } finally {
    fault.disarm();
  }
  expect(fault.sitesHit.filter((s) => s.startsWith("iommufd:"))).toEqual([
    "iommufd:alloc_pages",
    "iommufd:area_alloc",
    "iommufd:temp_kmalloc",
    "iommufd:temp_kmalloc",
    "iommufd:pin_pages",
    "iommufd:update_pinned",
  ]);
  expect(fault.sitesHit.lastIndexOf("iommu_alloc_pages")).toBeLessThan(
    fault.sitesHit.indexOf("iommufd:update_pinned"),
  );
});
