/**
 * IOMMU_OPTION_HUGE_PAGES off: every page gets its own iommu_map call (batch_iommu_map_small),
 * so each can be unmapped alone; a failure part-way through unmaps the pages this call mapped.
 */
import type { IommuDomain } from "@x/iommu-pgtable";
import { Kernel, KernelError, Libc, MFD_HUGETLB, MFD_HUGE_2MB } from "@x/kernel";
import { describe, expect, it, vi } from "vitest";
import { checkInvariants, totalNpinned } from "../src/testing.js";
import { IoPagetable } from "../src/io-pagetable.js";
import { domainRuns, testDomain, RW, ctx } from "./pages-helpers.js";

const MIB = 1n << 20n;
// 4 MiB of 2 MiB folios at an IOVA whose second half needs new page tables of its own.
const IOVA = (1n << 30n) - 2n * MIB;
const LEN = 4n * MIB;

function world(largePages: boolean) {
  const kernel = new Kernel();
  const libc = new Libc(kernel, kernel.newProcess(1000));
  kernel.current = libc.task;
  const iopt = new IoPagetable(kernel);
  if (!largePages) iopt.disableLargePages();
  const domain = testDomain(kernel);
  iopt.tableAddDomain(domain);
  const mfd = libc.memfdCreate("m", MFD_HUGETLB | MFD_HUGE_2MB);
  libc.ftruncate(mfd, LEN);
  return { kernel, iopt, domain, mfd };
}

function state(kernel: Kernel, iopt: IoPagetable, domain: IommuDomain): string {
  const pages = checkInvariants([iopt]);
  expect(kernel.mem.totalPinned()).toBe(totalNpinned(pages));
  return JSON.stringify({
    areas: iopt.areas().map((a) => `${a.iova}-${a.lastIova}`),
    iotes: domainRuns(domain).map((r) => `${r.iova}:${r.paddr}:${r.length}`),
    pinned: kernel.mem.totalPinned(),
  });
}

describe("map with large pages disabled (one IOPTE per page)", () => {
  it("maps every page in its own call, each unmappable alone; large pages give one call", () => {
    for (const large of [false, true]) {
      const { iopt, domain, mfd } = world(large);
      const calls = vi.spyOn(domain, "mapPfns");
      iopt.mapFilePages(ctx, IOVA, mfd, 0n, LEN, RW, 0);
      const npages = calls.mock.calls.map((c) => c[2]);
      if (large) expect(npages).toEqual([1024]);
      else expect(npages).toEqual(Array(1024).fill(1));
      expect(domainRuns(domain).reduce((n, r) => n + r.length, 0n)).toBe(LEN);
      // A page in the middle of a 2 MiB folio goes alone only when it has its own IOPTE
      // (the page table will not cut a 2 MiB IOPTE: nothing is unmapped).
      const mid = Number((IOVA + 3n * MIB) >> 12n) + 5;
      expect(domain.unmapPfns(mid, 1)).toBe(large ? 0 : 1);
    }
  });

  it("a failure part-way through unmaps what the call mapped: same errno, no trace", () => {
    const { kernel, iopt, domain, mfd } = world(false);
    const fault = kernel.current.fault;
    const calls = vi.spyOn(domain, "mapPfns");
    let midRange = 0;
    for (let nth = 1; ; nth++) {
      const before = state(kernel, iopt, domain);
      calls.mockClear();
      fault.arm(nth);
      let error: unknown;
      try {
        iopt.mapFilePages(ctx, IOVA, mfd, 0n, LEN, RW, 0);
      } catch (e) {
        error = e;
      }
      const consumed = fault.read() === 0;
      fault.disarm();
      if (error === undefined) {
        iopt.unmapIova(IOVA, LEN);
        if (!consumed) break;
        continue;
      }
      expect(error).toBeInstanceOf(KernelError);
      expect(state(kernel, iopt, domain)).toBe(before);
      // Pages mapped by earlier calls of this map, then undone: the page table's ENOMEM.
      if (calls.mock.results.some((r) => r.type === "return")) {
        expect((error as KernelError).errno).toBe(12);
        midRange++;
      }
    }
    expect(midRange).toBeGreaterThan(0);
  });
});
