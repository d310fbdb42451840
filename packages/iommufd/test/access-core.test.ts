/**
 * The io_pagetable side of in-kernel accesses (drivers/iommu/iommufd/pages.c
 * iopt_area_add_access / iopt_area_remove_access / iopt_pages_rw_access, device.c
 * iommufd_access_pin_pages / iommufd_access_unpin_pages / iommufd_access_rw), driven directly on
 * an IoPagetable: the PFNs handed out, the pins and charges taken, the errno order.
 */
import {
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  EOVERFLOW,
  EPERM,
  KernelWarning,
  Libc,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_ACCESS_RW_WRITE,
  __IOMMUFD_ACCESS_RW_SLOW_PATH,
  ioptAccessPinPages,
  ioptAccessRw,
  ioptAccessUnpinPages,
} from "../src/access-core.js";
import { IoPagetable } from "../src/io-pagetable.js";
import { IOMMU_READ, IOMMU_WRITE } from "../src/iommu-domain.js";
import { PAGE, RW, ctx, errno, testDomain, ioptMachine } from "./pages-helpers.js";

const BASE = 0x100000n;

/** ioptMachine, and the PFN behind each page of [va, va + npages pages). */
function machine() {
  const m = ioptMachine();
  const pfns = (va: bigint, npages: number): number[] =>
    Array.from({ length: npages }, (_, i) => m.libc.process.mm.lookup(Number(va / PAGE) + i));
  return { ...m, buffer: m.scattered, pfns };
}

/** PFNs of `runs`, one per page. */
function flat(runs: PfnRuns): number[] {
  const out: number[] = [];
  runs.forEach((pfn, n) => {
    for (let k = 0; k < n; k++) out.push(pfn + k);
  });
  return out;
}

describe("iommufd_access_pin_pages / iommufd_access_unpin_pages", () => {
  it("hands out the user pages' PFNs in IOVA order, pinned and charged once per page", () => {
    const { kernel, libc, iopt, run, buffer, pfns, check } = machine();
    run(() => {
      const va = buffer(8);
      iopt.mapUserPages(ctx, BASE, va, 8n * PAGE, RW, 0);
      const a = new PfnRuns();
      ioptAccessPinPages(iopt, BASE + PAGE, 4n * PAGE, a, IOMMUFD_ACCESS_RW_WRITE);
      expect(flat(a)).toEqual(pfns(va + PAGE, 4));
      expect(kernel.mem.totalPinned()).toBe(4);
      expect(libc.process.cred.user.lockedVm).toBe(4);
      // The same range again: the exact access node gains a user, nothing more is pinned.
      const b = new PfnRuns();
      ioptAccessPinPages(iopt, BASE + PAGE, 4n * PAGE, b, 0);
      expect(flat(b)).toEqual(pfns(va + PAGE, 4));
      expect(kernel.mem.totalPinned()).toBe(4);
      // An overlapping range pins only its new pages.
      const c = new PfnRuns();
      ioptAccessPinPages(iopt, BASE + 3n * PAGE, 4n * PAGE, c, 0);
      expect(flat(c)).toEqual(pfns(va + 3n * PAGE, 4));
      expect(kernel.mem.totalPinned()).toBe(6);
      expect(libc.process.cred.user.lockedVm).toBe(6);
      expect(iopt.areas()[0]!.numAccesses).toBe(3);
      check();
      // Each unpin undoes one pin; pages stay while another access covers them.
      ioptAccessUnpinPages(iopt, BASE + PAGE, 4n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(6);
      ioptAccessUnpinPages(iopt, BASE + PAGE, 4n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(4);
      expect(pfns(va + 3n * PAGE, 4).map((p) => kernel.mem.pinCount(p))).toEqual([1, 1, 1, 1]);
      check();
      ioptAccessUnpinPages(iopt, BASE + 3n * PAGE, 4n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(0);
      expect(libc.process.cred.user.lockedVm).toBe(0);
      expect(iopt.areas()[0]!.numAccesses).toBe(0);
      check();
    });
  });

  it("copies PFNs from a domain without new pins, and keeps them when the domain goes", () => {
    const { kernel, libc, iopt, run, buffer, pfns, check } = machine();
    run(() => {
      const va = buffer(8);
      const d = testDomain(kernel);
      iopt.tableAddDomain(d);
      iopt.mapUserPages(ctx, BASE, va, 8n * PAGE, RW, 0);
      expect(kernel.mem.totalPinned()).toBe(8);
      const a = new PfnRuns();
      ioptAccessPinPages(iopt, BASE + 2n * PAGE, 3n * PAGE, a, IOMMUFD_ACCESS_RW_WRITE);
      expect(flat(a)).toEqual(pfns(va + 2n * PAGE, 3));
      expect(kernel.mem.totalPinned()).toBe(8);
      expect(libc.process.cred.user.lockedVm).toBe(8);
      check();
      // Unpinning pages a domain holds only forgets them.
      ioptAccessUnpinPages(iopt, BASE + 2n * PAGE, 3n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(8);
      check();
      ioptAccessPinPages(iopt, BASE + 2n * PAGE, 3n * PAGE, new PfnRuns(), 0);
      iopt.tableRemoveDomain(d);
      expect(kernel.mem.totalPinned()).toBe(3);
      expect(libc.process.cred.user.lockedVm).toBe(3);
      check();
      // A new domain takes the access's pages from the xarray: the same PFNs, no new pin for them.
      const d2 = testDomain(kernel);
      iopt.tableAddDomain(d2);
      expect(kernel.mem.totalPinned()).toBe(8);
      const b = new PfnRuns();
      ioptAccessPinPages(iopt, BASE, 8n * PAGE, b, 0);
      expect(flat(b)).toEqual(pfns(va, 8));
      expect(kernel.mem.totalPinned()).toBe(8);
      check();
      ioptAccessUnpinPages(iopt, BASE, 8n * PAGE);
      ioptAccessUnpinPages(iopt, BASE + 2n * PAGE, 3n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(8);
      iopt.tableRemoveDomain(d2);
      expect(kernel.mem.totalPinned()).toBe(0);
      expect(libc.process.cred.user.lockedVm).toBe(0);
      check();
    });
  });

  it("checks length, overflow, alignment, protection, then holes; a failure leaves nothing", () => {
    const { kernel, libc, iopt, run, buffer, check } = machine();
    run(() => {
      const va = buffer(8);
      // Area 1 ends 904 bytes into a page; area 2 starts page aligned right after it.
      iopt.mapUserPages(ctx, BASE, va, PAGE + 904n, RW, 0);
      iopt.mapUserPages(ctx, BASE + PAGE + 904n, va + 4n * PAGE, 2n * PAGE, RW, 0);
      const pin = (iova: bigint, len: bigint, flags = 0) =>
        errno(() => ioptAccessPinPages(iopt, iova, len, new PfnRuns(), flags));
      expect(pin(BASE, 0n)).toBe(EINVAL);
      expect(pin(2n ** 64n - PAGE, 2n * PAGE)).toBe(EOVERFLOW);
      expect(pin(2n ** 64n - PAGE, PAGE)).toBe(ENOENT);
      // iopt_area_contig_is_aligned: a start inside a page, and a middle area ending mid-page.
      expect(pin(BASE + 8n, PAGE)).toBe(EINVAL);
      expect(pin(BASE, 2n * PAGE + 904n)).toBe(EINVAL);
      // The last area may end mid-page: only the first area's end is checked when it is last.
      const out = new PfnRuns();
      ioptAccessPinPages(iopt, BASE, PAGE + 904n, out, 0);
      expect(out.totalPages).toBe(2);
      ioptAccessUnpinPages(iopt, BASE, PAGE + 904n);
      expect(pin(BASE + PAGE + 904n, PAGE + 1n)).toBe(0);
      ioptAccessUnpinPages(iopt, BASE + PAGE + 904n, PAGE + 1n);
      // A hole after a good area: ENOENT, the good area's pin undone.
      expect(pin(BASE + PAGE + 904n, 3n * PAGE)).toBe(ENOENT);
      expect(kernel.mem.totalPinned()).toBe(0);
      expect(iopt.areas().map((a) => a.numAccesses)).toEqual([0, 0]);
      expect(libc.process.cred.user.lockedVm).toBe(0);
      check();
    });
  });

  it("refuses a write pin of a read-only area and a read pin of a write-only one (EPERM)", () => {
    const { kernel, iopt, run, buffer, check } = machine();
    run(() => {
      const va = buffer(6);
      iopt.mapUserPages(ctx, BASE, va, 2n * PAGE, RW, 0);
      iopt.mapUserPages(ctx, BASE + 2n * PAGE, va + 2n * PAGE, 2n * PAGE, IOMMU_READ, 0);
      iopt.mapUserPages(ctx, BASE + 4n * PAGE, va + 4n * PAGE, 2n * PAGE, IOMMU_WRITE, 0);
      const pin = (iova: bigint, len: bigint, flags: number) =>
        errno(() => ioptAccessPinPages(iopt, iova, len, new PfnRuns(), flags));
      // The RW area is pinned first and unpinned again when the read-only one refuses.
      expect(pin(BASE, 4n * PAGE, IOMMUFD_ACCESS_RW_WRITE)).toBe(EPERM);
      expect(kernel.mem.totalPinned()).toBe(0);
      expect(pin(BASE + 2n * PAGE, 2n * PAGE, 0)).toBe(0);
      ioptAccessUnpinPages(iopt, BASE + 2n * PAGE, 2n * PAGE);
      expect(pin(BASE + 4n * PAGE, 2n * PAGE, 0)).toBe(EPERM);
      expect(pin(BASE + 4n * PAGE, 2n * PAGE, IOMMUFD_ACCESS_RW_WRITE)).toBe(0);
      ioptAccessUnpinPages(iopt, BASE + 4n * PAGE, 2n * PAGE);
      // EPERM from the area comes before the hole past it.
      expect(pin(BASE + 2n * PAGE, 8n * PAGE, IOMMUFD_ACCESS_RW_WRITE)).toBe(EPERM);
      expect(kernel.mem.totalPinned()).toBe(0);
      expect(iopt.areas().map((a) => a.numAccesses)).toEqual([0, 0, 0]);
      check();
    });
  });

  it("unpin WARNs for a length of 0, a wrapping range, a hole and a range never pinned", () => {
    const { iopt, run, buffer } = machine();
    run(() => {
      const va = buffer(4);
      iopt.mapUserPages(ctx, BASE, va, 4n * PAGE, RW, 0);
      ioptAccessPinPages(iopt, BASE, 2n * PAGE, new PfnRuns(), 0);
      expect(() => ioptAccessUnpinPages(iopt, BASE, 0n)).toThrow(KernelWarning);
      expect(() => ioptAccessUnpinPages(iopt, 2n ** 64n - PAGE, 2n * PAGE)).toThrow(KernelWarning);
      expect(() => ioptAccessUnpinPages(iopt, BASE, PAGE)).toThrow(KernelWarning);
      expect(() => ioptAccessUnpinPages(iopt, BASE - PAGE, PAGE)).toThrow(KernelWarning);
      ioptAccessUnpinPages(iopt, BASE, 2n * PAGE);
      expect(() => ioptAccessUnpinPages(iopt, BASE, 2n * PAGE)).toThrow(KernelWarning);
    });
  });
});

describe("iommufd_access_rw", () => {
  const pattern = (n: number, seed: number) =>
    new Uint8Array(n).map((_, i) => (i * 7 + seed) & 0xff);

  it.each([
    ["the fast path", 0],
    ["the slow path", __IOMMUFD_ACCESS_RW_SLOW_PATH],
  ])("copies across areas at their byte offsets through %s", (_name, slow) => {
    const { libc, iopt, run, buffer } = machine();
    run(() => {
      const va = buffer(8);
      // Area 1: 2 pages from 100 bytes into the buffer; area 2 right after it in IOVA,
      // backed by pages 4.. of the buffer from 300 bytes in.
      iopt.mapUserPages(ctx, BASE + 100n, va + 100n, 2n * PAGE, RW, 0);
      iopt.mapUserPages(ctx, BASE + 100n + 2n * PAGE, va + 4n * PAGE + 300n, 2n * PAGE, RW, 0);
      const data = pattern(3 * 4096, 3);
      ioptAccessRw(iopt, BASE + 1000n, data, IOMMUFD_ACCESS_RW_WRITE | slow);
      const split = 2 * 4096 + 100 - 1000;
      // Compared with a fresh copy: a write that reads instead would have overwritten `data`.
      const want = pattern(3 * 4096, 3);
      expect(libc.peek(va + 1000n, split)).toEqual(want.subarray(0, split));
      expect(libc.peek(va + 4n * PAGE + 300n, want.length - split)).toEqual(want.subarray(split));
      // Bytes around the written range are untouched.
      expect(libc.peek(va + 999n, 1)).toEqual(new Uint8Array([0]));
      const back = new Uint8Array(data.length);
      ioptAccessRw(iopt, BASE + 1000n, back, slow);
      expect(back).toEqual(data);
      // A short read in the middle of a page.
      const mid = new Uint8Array(10);
      ioptAccessRw(iopt, BASE + 1000n + 4100n, mid, slow);
      expect(mid).toEqual(data.subarray(4100, 4110));
    });
  });

  it("takes the slow path for another process's mm and for file pages", () => {
    const { kernel, libc, iopt, run, buffer } = machine();
    const data = pattern(6000, 5);
    const va = run(() => {
      const v = buffer(4);
      iopt.mapUserPages(ctx, BASE, v, 4n * PAGE, RW, 0);
      const fd = libc.memfdCreate("guest", 0);
      libc.ftruncate(fd, 4n * PAGE);
      iopt.mapFilePages(ctx, BASE + 4n * PAGE, fd, 0n, 4n * PAGE, RW, 0);
      return v;
    });
    // Another process: the user VA of the pages means nothing in its mm.
    const other = new Libc(kernel, kernel.newProcess(1001));
    kernel.runAs(other.task, () => {
      ioptAccessRw(iopt, BASE + 50n, data, IOMMUFD_ACCESS_RW_WRITE);
      const back = new Uint8Array(6000);
      ioptAccessRw(iopt, BASE + 50n, back, 0);
      expect(back).toEqual(data);
    });
    run(() => {
      expect(libc.peek(va + 50n, 6000)).toEqual(data);
      ioptAccessRw(iopt, BASE + 4n * PAGE + 4000n, data, IOMMUFD_ACCESS_RW_WRITE);
      const back = new Uint8Array(6000);
      ioptAccessRw(iopt, BASE + 4n * PAGE + 4000n, back, 0);
      expect(back).toEqual(data);
      // Written and read through IOVAs straddling the two areas.
      const both = pattern(3 * 4096, 9);
      ioptAccessRw(iopt, BASE + 3n * PAGE, both, IOMMUFD_ACCESS_RW_WRITE);
      expect(libc.peek(va + 3n * PAGE, 4096)).toEqual(both.subarray(0, 4096));
      const back2 = new Uint8Array(both.length);
      ioptAccessRw(iopt, BASE + 3n * PAGE, back2, __IOMMUFD_ACCESS_RW_SLOW_PATH);
      expect(back2).toEqual(both);
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });

  it("checks length, overflow, then per area protection (EPERM) before a hole (ENOENT)", () => {
    const { kernel, iopt, run, buffer } = machine();
    run(() => {
      const va = buffer(6);
      iopt.mapUserPages(ctx, BASE, va, 2n * PAGE, RW, 0);
      iopt.mapUserPages(ctx, BASE + 2n * PAGE, va + 2n * PAGE, 2n * PAGE, IOMMU_READ, 0);
      iopt.mapUserPages(ctx, BASE + 4n * PAGE, va + 4n * PAGE, 2n * PAGE, IOMMU_WRITE, 0);
      const rw = (iova: bigint, len: number, flags: number) =>
        errno(() => ioptAccessRw(iopt, iova, new Uint8Array(len), flags));
      expect(rw(BASE, 0, 0)).toBe(EINVAL);
      expect(rw(2n ** 64n - 1n, 2, 0)).toBe(EOVERFLOW);
      expect(rw(2n ** 64n - 2n, 2, 0)).toBe(ENOENT);
      expect(rw(BASE + 3n * PAGE, 8, IOMMUFD_ACCESS_RW_WRITE)).toBe(EPERM);
      expect(rw(BASE + 3n * PAGE, 8, 0)).toBe(0);
      expect(rw(BASE + 4n * PAGE, 8, 0)).toBe(EPERM);
      expect(rw(BASE + 4n * PAGE, 8, IOMMUFD_ACCESS_RW_WRITE)).toBe(0);
      expect(rw(BASE + 5n * PAGE, 2 * 4096, IOMMUFD_ACCESS_RW_WRITE)).toBe(ENOENT);
      expect(rw(BASE + 5n * PAGE, 2 * 4096, 0)).toBe(EPERM);
      expect(rw(BASE - 1n, 8, 0)).toBe(ENOENT);
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });

  it("refuses pins and rw of an area being unmapped (EINVAL), from the unmap notifier", () => {
    const { kernel, iopt, run, buffer, check } = machine();
    run(() => {
      const va = buffer(4);
      iopt.mapUserPages(ctx, BASE, va, 4n * PAGE, RW, 0);
      const seen: number[] = [];
      iopt.addAccess({
        iovaAlignment: PAGE,
        ioptAccessListId: -1,
        notifyUnmap: (iova, len) => {
          seen.push(errno(() => ioptAccessRw(iopt, BASE + 3n * PAGE, new Uint8Array(4), 0)));
          seen.push(
            errno(() => ioptAccessPinPages(iopt, BASE + 3n * PAGE, PAGE, new PfnRuns(), 0)),
          );
          ioptAccessUnpinPages(iopt, iova, len);
        },
      });
      ioptAccessPinPages(iopt, BASE, 4n * PAGE, new PfnRuns(), 0);
      expect(iopt.unmapIova(BASE, 4n * PAGE)).toBe(4n * PAGE);
      expect(seen).toEqual([EINVAL, EINVAL]);
      expect(kernel.mem.totalPinned()).toBe(0);
      check();
    });
  });
});

describe("access nodes, unwinds and fault injection", () => {
  it("matches an access node only by its exact start and last", () => {
    const { kernel, iopt, run, buffer, pfns, check } = machine();
    run(() => {
      const va = buffer(8);
      iopt.mapUserPages(ctx, BASE, va, 8n * PAGE, RW, 0);
      const pin = (first: bigint, n: bigint) => {
        const out = new PfnRuns();
        ioptAccessPinPages(iopt, BASE + first * PAGE, n * PAGE, out, 0);
        expect(flat(out)).toEqual(pfns(va + first * PAGE, Number(n)));
      };
      const unpin = (first: bigint, n: bigint) =>
        ioptAccessUnpinPages(iopt, BASE + first * PAGE, n * PAGE);
      pin(2n, 3n);
      pin(1n, 4n); // same last, another start
      pin(1n, 2n); // same start, another last
      expect(kernel.mem.totalPinned()).toBe(4);
      unpin(1n, 4n);
      expect(kernel.mem.totalPinned()).toBe(4);
      unpin(2n, 3n);
      expect(kernel.mem.totalPinned()).toBe(2);
      expect(pfns(va + PAGE, 2).map((p) => kernel.mem.pinCount(p))).toEqual([1, 1]);
      unpin(1n, 2n);
      expect(kernel.mem.totalPinned()).toBe(0);
      check();
    });
  });

  it("stores each span's own PFNs in the xarray when a pin mixes pinned and new pages", () => {
    const { kernel, iopt, run, buffer, pfns, check } = machine();
    run(() => {
      const va = buffer(8);
      iopt.mapUserPages(ctx, BASE, va, 8n * PAGE, RW, 0);
      const pinAt = (first: bigint, n: bigint) => {
        const out = new PfnRuns();
        ioptAccessPinPages(iopt, BASE + first * PAGE, n * PAGE, out, 0);
        return flat(out);
      };
      expect(pinAt(2n, 2n)).toEqual(pfns(va + 2n * PAGE, 2));
      expect(pinAt(0n, 7n)).toEqual(pfns(va, 7));
      // Read back from the xarray only (every page is under an access now).
      expect(pinAt(1n, 5n)).toEqual(pfns(va + PAGE, 5));
      expect(kernel.mem.totalPinned()).toBe(7);
      // A domain added now is filled from the xarray: the same PFNs, no new pin for them.
      const d = testDomain(kernel);
      iopt.tableAddDomain(d);
      expect(kernel.mem.totalPinned()).toBe(8);
      for (const [f, n] of [
        [2n, 2n],
        [0n, 7n],
        [1n, 5n],
      ] as const)
        ioptAccessUnpinPages(iopt, BASE + f * PAGE, n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(8);
      iopt.tableRemoveDomain(d);
      expect(kernel.mem.totalPinned()).toBe(0);
      check();
    });
  });

  it("undoes every span of a pin that faults part-way, keeping other accesses' pages", () => {
    const { kernel, libc, iopt, run, buffer, pfns, check } = machine();
    run(() => {
      const va = buffer(6);
      iopt.mapUserPages(ctx, BASE, va, 6n * PAGE, RW, 0);
      ioptAccessPinPages(iopt, BASE + 2n * PAGE, 2n * PAGE, new PfnRuns(), 0);
      const held = pfns(va, 6);
      libc.munmap(va + 5n * PAGE, 4096);
      // Spans: [0,1] from the mm, [2,3] from the xarray, [4,5] from the mm faulting at page 5.
      expect(errno(() => ioptAccessPinPages(iopt, BASE, 6n * PAGE, new PfnRuns(), 0))).toBe(EFAULT);
      expect(held.slice(0, 5).map((p) => kernel.mem.pinCount(p))).toEqual([0, 0, 1, 1, 0]);
      expect(kernel.mem.totalPinned()).toBe(2);
      expect(libc.process.cred.user.lockedVm).toBe(2);
      expect(iopt.areas()[0]!.numAccesses).toBe(1);
      check();
      ioptAccessUnpinPages(iopt, BASE + 2n * PAGE, 2n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });

  it("under fail-nth every injected failure of a pin leaves the pins as before", () => {
    const { kernel, libc, iopt, run, buffer, check } = machine();
    run(() => {
      const va = buffer(6);
      iopt.mapUserPages(ctx, BASE, va, 6n * PAGE, RW, 0);
      ioptAccessPinPages(iopt, BASE + 2n * PAGE, 2n * PAGE, new PfnRuns(), 0);
      const fault = kernel.current.fault;
      const sites: string[] = [];
      for (let nth = 1; ; nth++) {
        fault.arm(nth);
        let err: number;
        try {
          err = errno(() => ioptAccessPinPages(iopt, BASE, 6n * PAGE, new PfnRuns(), 0));
        } finally {
          fault.disarm();
        }
        if (err === 0) break;
        sites.push(fault.failedSite!);
        // An allocation refused inside GUP's fault is EFAULT; iommufd's own ones are ENOMEM.
        // The pin from the mm fails as GUP does; iommufd's allocations and charge with ENOMEM.
        if (fault.failedSite !== "iommufd:pin_pages") expect(err).toBe(ENOMEM);
        expect(kernel.mem.totalPinned()).toBe(2);
        expect(libc.process.cred.user.lockedVm).toBe(2);
        expect(iopt.areas()[0]!.numAccesses).toBe(1);
        check();
      }
      // The node first, then per span from the mm: pin, xarray store; the charge last.
      expect(sites).toEqual([
        "iommufd:access_node",
        "iommufd:pin_pages",
        "iommufd:xarray_store",
        "iommufd:pin_pages",
        "iommufd:xarray_store",
        "iommufd:update_pinned",
      ]);
      expect(kernel.mem.totalPinned()).toBe(6);
      // A pin of a range already pinned exactly allocates nothing.
      fault.arm(1);
      try {
        ioptAccessPinPages(iopt, BASE, 6n * PAGE, new PfnRuns(), 0);
      } finally {
        fault.disarm();
      }
      expect(fault.failedSite).toBeUndefined();
      ioptAccessUnpinPages(iopt, BASE, 6n * PAGE);
      ioptAccessUnpinPages(iopt, BASE, 6n * PAGE);
      ioptAccessUnpinPages(iopt, BASE + 2n * PAGE, 2n * PAGE);
      expect(kernel.mem.totalPinned()).toBe(0);
      check();
    });
  });

  it("locks areas only for a locking pin, and a failed pin leaves no lock", () => {
    const { kernel, iopt, run, buffer } = machine();
    run(() => {
      const va = buffer(4);
      iopt.mapUserPages(ctx, BASE, va, 2n * PAGE, RW, 0);
      iopt.mapUserPages(ctx, BASE + 2n * PAGE, va + 2n * PAGE, 2n * PAGE, IOMMU_READ, 0);
      const pin = (lock: boolean) =>
        errno(() =>
          ioptAccessPinPages(iopt, BASE, 4n * PAGE, new PfnRuns(), IOMMUFD_ACCESS_RW_WRITE, lock),
        );
      expect(pin(false)).toBe(EPERM);
      expect(pin(true)).toBe(EPERM);
      expect(iopt.areas().map((a) => a.numLocks)).toEqual([0, 0]);
      ioptAccessPinPages(iopt, BASE, 4n * PAGE, new PfnRuns(), 0, true);
      expect(iopt.areas().map((a) => a.numLocks)).toEqual([1, 1]);
      // An unlocking unpin of a pin that took no lock WARNs.
      ioptAccessPinPages(iopt, BASE, PAGE, new PfnRuns(), 0);
      ioptAccessUnpinPages(iopt, BASE, 4n * PAGE, true);
      expect(iopt.areas().map((a) => a.numLocks)).toEqual([0, 0]);
      expect(() => ioptAccessUnpinPages(iopt, BASE, PAGE, true)).toThrow(KernelWarning);
      expect(kernel.mem.totalPinned()).toBe(0);
      expect(iopt.unmapAll()).toBe(4n * PAGE);
    });
  });

  it("an unpin past the end of the address space WARNs before it unpins anything", () => {
    const { kernel, iopt, run, buffer } = machine();
    run(() => {
      const va = buffer(1);
      const top = 2n ** 64n - PAGE;
      iopt.mapUserPages(ctx, top, va, PAGE, RW, 0);
      ioptAccessPinPages(iopt, top, PAGE, new PfnRuns(), 0);
      expect(() => ioptAccessUnpinPages(iopt, top, 2n * PAGE)).toThrow(KernelWarning);
      expect(() => ioptAccessUnpinPages(iopt, top, 0n)).toThrow(KernelWarning);
      expect(kernel.mem.totalPinned()).toBe(1);
      ioptAccessUnpinPages(iopt, top, PAGE);
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });
});

describe("iommufd_access_rw paths", () => {
  it("the fast path copies at the user VA today, the slow path the pages pinned at map", () => {
    const { kernel, libc, iopt, run, buffer } = machine();
    run(() => {
      const va = buffer(2);
      iopt.tableAddDomain(testDomain(kernel));
      iopt.mapUserPages(ctx, BASE, va, 2n * PAGE, RW, 0);
      libc.poke(va + 10n, new Uint8Array([0xaa]));
      // Replace the VA's memory: the domain still holds the old pages.
      libc.mmap(
        va,
        2 * 4096,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
        -1,
        0,
      );
      libc.poke(va + 10n, new Uint8Array([0x55]));
      const b = new Uint8Array(1);
      ioptAccessRw(iopt, BASE + 10n, b, 0);
      expect(b[0]).toBe(0x55);
      ioptAccessRw(iopt, BASE + 10n, b, __IOMMUFD_ACCESS_RW_SLOW_PATH);
      expect(b[0]).toBe(0xaa);
      // The last whole page of the area through the slow path.
      const page = new Uint8Array(4096);
      ioptAccessRw(iopt, BASE + PAGE, page, __IOMMUFD_ACCESS_RW_SLOW_PATH);
      libc.munmap(va, 2 * 4096);
      // The fast path faults on the missing VA: EFAULT.
      expect(errno(() => ioptAccessRw(iopt, BASE, new Uint8Array(4), 0))).toBe(EFAULT);
      expect(
        errno(() => ioptAccessRw(iopt, BASE, new Uint8Array(4), IOMMUFD_ACCESS_RW_WRITE)),
      ).toBe(EFAULT);
      iopt.unmapAll();
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });

  it("checks the area's protection even where the pages are writable (a read-only copy)", () => {
    const { kernel, iopt, run, buffer } = machine();
    run(() => {
      const va = buffer(2);
      iopt.mapUserPages(ctx, BASE, va, 2n * PAGE, RW, 0);
      const list = iopt.getPages(BASE, 2n * PAGE);
      iopt.mapPages(list, 2n * PAGE, BASE + 4n * PAGE, IOMMU_READ, 0);
      expect(
        errno(() =>
          ioptAccessRw(iopt, BASE + 4n * PAGE, new Uint8Array(4), IOMMUFD_ACCESS_RW_WRITE),
        ),
      ).toBe(EPERM);
      expect(
        errno(() =>
          ioptAccessPinPages(iopt, BASE + 4n * PAGE, PAGE, new PfnRuns(), IOMMUFD_ACCESS_RW_WRITE),
        ),
      ).toBe(EPERM);
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });
});

describe("iopt_pages_fill_from_domain", () => {
  it("reads a domain area's first page back without its page offset", () => {
    const { kernel, iopt, run, buffer, pfns, check } = machine();
    run(() => {
      const va = buffer(4);
      iopt.mapUserPages(ctx, BASE, va, 4n * PAGE, RW, 0);
      // The same pages mapped from 0x800 into their first page, in an io_pagetable whose mock
      // domain has 2 KiB IO pages: that area's first index carries page_offset 0x800.
      const other = new IoPagetable(kernel);
      other.tableAddDomain(testDomain(kernel, "mock"));
      const list = iopt.getPages(BASE + 0x800n, 3n * PAGE);
      other.mapPages(list, 3n * PAGE, (1n << 24n) + 0x800n, RW, 0);
      expect(other.areas()[0]!.pageOffset).toBe(0x800);
      expect(kernel.mem.totalPinned()).toBe(4);
      // The access's pages come from that domain: index 0 through the offset, the rest whole.
      const out = new PfnRuns();
      ioptAccessPinPages(iopt, BASE, 3n * PAGE, out, 0);
      expect(flat(out)).toEqual(pfns(va, 3));
      expect(kernel.mem.totalPinned()).toBe(4);
      ioptAccessUnpinPages(iopt, BASE, 3n * PAGE);
      other.unmapAll();
      expect(kernel.mem.totalPinned()).toBe(0);
      check();
    });
  });
});
