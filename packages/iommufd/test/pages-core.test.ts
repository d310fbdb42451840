import {
  EFAULT,
  EINVAL,
  ENOMEM,
  EPERM,
  Kernel,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MFD_HUGETLB,
  MFD_HUGE_1GB,
  MFD_HUGE_2MB,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  RLIMIT_MEMLOCK,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_ACCESS_RW_WRITE,
  __IOMMUFD_ACCESS_RW_SLOW_PATH,
  ioptAccessPinPages,
  ioptAccessRw,
  ioptAccessUnpinPages,
} from "../src/access-core.js";
import {
  IOPT_PAGES_ACCOUNT_MM,
  accountingSourceOf,
  updatePinnedAccounting,
} from "../src/accounting.js";
import { IOPT_ALLOC_IOVA, type IoptAccess, IoPagetable } from "../src/io-pagetable.js";
import { IOMMU_READ } from "../src/iommu-domain.js";
import { BATCH_CPU_MEMORY, BATCH_MMIO, MAX_NPFNS, PfnBatch } from "../src/pfn-batch.js";
import { checkInvariants, setTempMemoryLimit } from "../src/testing.js";
import {
  PAGE,
  RW,
  ctx,
  domainRuns,
  errno,
  mappedBytes,
  testDomain,
  ioptMachine,
} from "./pages-helpers.js";
import { iommufdInit } from "../src/ioctls.js";

const machine = ioptMachine;

function access(iopt: IoPagetable, onUnmap?: (iova: bigint, len: bigint) => void): IoptAccess {
  return {
    iovaAlignment: PAGE,
    ioptAccessListId: -1,
    notifyUnmap: (iova, len) => {
      onUnmap?.(iova, len);
      void iopt;
    },
  };
}

describe("pfn_batch", () => {
  it("merges runs, refuses a kind change when non-empty, carries a tail", () => {
    const kernel = new Kernel();
    const b = PfnBatch.create(kernel, 100);
    expect(b.add(10, 2)).toBe(true);
    expect(b.add(12, 3)).toBe(true);
    expect(b.end).toBe(1);
    expect(b.add(100, 1, BATCH_MMIO)).toBe(false);
    expect(b.add(20, 1)).toBe(true);
    expect(b.totalPfns).toBe(6);
    b.clearCarry(1);
    expect([b.end, b.pfns[0], b.totalPfns]).toEqual([1, 20, 1]);
    b.skipCarry(1);
    expect(b.totalPfns).toBe(0);
    b.clear();
    expect(b.add(7, 1, BATCH_MMIO)).toBe(true);
    expect(b.kind).toBe(BATCH_MMIO);
    expect(b.add(8, 1, BATCH_CPU_MEMORY)).toBe(false);
  });

  it("takes its capacity from the temp memory limit and splits runs at MAX_NPFNS", () => {
    const kernel = new Kernel();
    iommufdInit(kernel);
    setTempMemoryLimit(kernel, 16);
    const tiny = PfnBatch.create(kernel, 1000);
    expect(tiny.arraySize).toBe(1);
    setTempMemoryLimit(kernel, 0);
    expect(PfnBatch.create(kernel, 1 << 20).arraySize).toBe(Math.floor(65536 / 12));
    const b = PfnBatch.create(kernel, 4);
    expect(b.addRun(0, MAX_NPFNS)).toBe(MAX_NPFNS);
    expect(b.addRun(MAX_NPFNS, 10)).toBe(10);
    expect(b.end).toBe(2);
  });
});

describe.each([0, 16])("USER pages with temp memory limit %i", (limit) => {
  it("pins each PFN once across domains and accesses; unmap strictly before unpin", () => {
    const { kernel, iopt, run, scattered, check } = machine();
    if (limit) setTempMemoryLimit(kernel, limit);
    run(() => {
      const d1 = testDomain(kernel);
      iopt.tableAddDomain(d1);
      const va = scattered(40);
      const iova = iopt.mapUserPages(ctx, 0n, va, 40n * PAGE, RW, IOPT_ALLOC_IOVA);
      check();
      expect(kernel.mem.totalPinned()).toBe(40);
      const acc = access(iopt);
      iopt.addAccess(acc);
      const out = new PfnRuns();
      ioptAccessPinPages(iopt, iova + 5n * PAGE, 10n * PAGE, out, 0);
      expect(out.totalPages).toBe(10);
      check();
      expect(kernel.mem.totalPinned()).toBe(40);
      // Remove the only domain: the access keeps its 10 pages pinned through the xarray.
      iopt.tableRemoveDomain(d1);
      check();
      expect(kernel.mem.totalPinned()).toBe(10);
      const d2 = testDomain(kernel);
      iopt.tableAddDomain(d2);
      check();
      expect(kernel.mem.totalPinned()).toBe(40);
      expect(mappedBytes(d2)).toBe(40n * PAGE);
      ioptAccessUnpinPages(iopt, iova + 5n * PAGE, 10n * PAGE);
      check();
      iopt.removeAccess(acc);
      iopt.unmapAll();
      iopt.tableRemoveDomain(d2);
      check();
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });
});

describe("huge IOPTEs are never cut", () => {
  it.each([
    ["2M", MFD_HUGE_2MB, 2n << 20n],
    ["1G", MFD_HUGE_1GB, 1n << 30n],
  ] as const)(
    "keeps access-held pages of a %s folio pinned while the leaf goes whole",
    (_n, huge, size) => {
      const { kernel, libc, iopt, run, check } = machine();
      run(() => {
        kernel.current.process.setRlimit(RLIMIT_MEMLOCK, Number.MAX_SAFE_INTEGER);
        const fd = libc.memfdCreate("guest", MFD_HUGETLB | huge);
        expect(libc.ftruncate(fd, 2n * size)).toBe(0);
        const d = testDomain(kernel);
        iopt.tableAddDomain(d);
        const iova = iopt.mapFilePages(ctx, size, fd, 0n, 2n * size, RW, 0);
        const runs = domainRuns(d);
        expect(runs.every((r) => r.length >= size)).toBe(true);
        const acc = access(iopt);
        iopt.addAccess(acc);
        const out = new PfnRuns();
        ioptAccessPinPages(iopt, iova + size / 2n, 3n * PAGE, out, 0);
        const pagesPerLeaf = Number(size / PAGE);
        expect(kernel.mem.totalPinned()).toBe(2 * pagesPerLeaf);
        iopt.tableRemoveDomain(d);
        expect(mappedBytes(d)).toBe(0n);
        expect(kernel.mem.totalPinned()).toBe(3);
        check();
        ioptAccessUnpinPages(iopt, iova + size / 2n, 3n * PAGE);
        iopt.removeAccess(acc);
        iopt.unmapAll();
        expect(kernel.mem.totalPinned()).toBe(0);
      });
    },
  );
});

describe("shared pages", () => {
  it("unfilling one IOAS keeps pages another IOAS's copy still maps, without cutting leaves", () => {
    const { kernel, libc, iopt, run, check } = machine(0);
    run(() => {
      const fd = libc.memfdCreate("guest", MFD_HUGETLB | MFD_HUGE_2MB);
      libc.ftruncate(fd, 8n << 20n);
      const d1 = testDomain(kernel);
      iopt.tableAddDomain(d1);
      const iova = iopt.mapFilePages(ctx, 0n, fd, 0n, 8n << 20n, RW, IOPT_ALLOC_IOVA);
      expect(domainRuns(d1).every((r) => r.length >= 2n << 20n)).toBe(true);
      const other = new IoPagetable(kernel);
      const d2 = testDomain(kernel);
      other.tableAddDomain(d2);
      const list = iopt.getPages(iova + (3n << 20n) + 5n * PAGE, 7n * PAGE);
      other.mapPages(list, 7n * PAGE, 0n, RW, IOPT_ALLOC_IOVA);
      other.freePagesList(list);
      check(other);
      expect(kernel.mem.totalPinned()).toBe(2048);
      iopt.tableRemoveDomain(d1);
      expect(mappedBytes(d1)).toBe(0n);
      expect(kernel.mem.totalPinned()).toBe(7);
      check(other);
      iopt.unmapAll();
      other.unmapAll();
      expect(kernel.mem.totalPinned()).toBe(0);
    });
  });

  it("IOAS_CHANGE_PROCESS moves the charge of FILE pages", () => {
    const { kernel, libc, iopt, run, check } = machine();
    const other = kernel.newProcess(2000);
    run(() => {
      const fd = libc.memfdCreate("m", 0);
      libc.ftruncate(fd, 16n * PAGE);
      iopt.tableAddDomain(testDomain(kernel));
      iopt.mapFilePages(ctx, 0n, fd, 0n, 16n * PAGE, RW, IOPT_ALLOC_IOVA);
      const pages = iopt.areas()[0]?.pages;
      if (!pages) throw new Error("no pages");
      expect(libc.process.cred.user.lockedVm).toBe(16);
      updatePinnedAccounting(accountingSourceOf(other, pages.accountMode), pages.npinned, true);
      pages.changeSource(other, true);
      expect(libc.process.cred.user.lockedVm).toBe(0);
      expect(other.cred.user.lockedVm).toBe(16);
      check();
      iopt.unmapAll();
      expect(other.cred.user.lockedVm).toBe(0);
    });
  });
});

describe("accounting", () => {
  it("charges user locked_vm, refuses past RLIMIT_MEMLOCK with ENOMEM and no trace", () => {
    const { kernel, libc, iopt, run, scattered, check } = machine();
    run(() => {
      libc.process.setRlimit(RLIMIT_MEMLOCK, 8 * 4096);
      const user = libc.process.cred.user;
      const d = testDomain(kernel);
      iopt.tableAddDomain(d);
      const va = scattered(12);
      iopt.mapUserPages(ctx, 0n, va, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
      expect(user.lockedVm).toBe(8);
      expect(libc.process.mm.pinnedVm).toBe(8);
      expect(
        errno(() => iopt.mapUserPages(ctx, 0n, va + 8n * PAGE, 4n * PAGE, RW, IOPT_ALLOC_IOVA)),
      ).toBe(ENOMEM);
      expect(user.lockedVm).toBe(8);
      expect(iopt.areas()).toHaveLength(1);
      expect(mappedBytes(d)).toBe(8n * PAGE);
      check();
      iopt.unmapAll();
      expect(user.lockedVm).toBe(0);
      expect(libc.process.mm.pinnedVm).toBe(0);
    });
  });

  it("charges mm locked_vm in MM mode and nothing with CAP_IPC_LOCK", () => {
    for (const uid of [1000, 0]) {
      const { kernel, libc, iopt, run, scattered } = machine(uid);
      run(() => {
        const d = testDomain(kernel);
        iopt.tableAddDomain(d);
        const va = scattered(4);
        iopt.mapUserPages(
          { accountMode: IOPT_PAGES_ACCOUNT_MM },
          0n,
          va,
          4n * PAGE,
          RW,
          IOPT_ALLOC_IOVA,
        );
        expect(libc.process.mm.lockedVm).toBe(uid ? 4 : 0);
        expect(libc.process.cred.user.lockedVm).toBe(0);
        expect(libc.process.mm.pinnedVm).toBe(4);
        iopt.unmapAll();
        expect(libc.process.mm.lockedVm).toBe(0);
      });
    }
  });
});

describe("accesses", () => {
  it("asks accesses to unpin on unmap and retries; prevents new pins meanwhile", () => {
    const { kernel, iopt, run, scattered, check } = machine();
    run(() => {
      const va = scattered(8);
      const iova = iopt.mapUserPages(ctx, 0n, va, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
      const seen: bigint[] = [];
      const acc = access(iopt, (i, len) => {
        seen.push(i, len);
        ioptAccessUnpinPages(iopt, iova, 2n * PAGE);
      });
      iopt.addAccess(acc);
      ioptAccessPinPages(iopt, iova, 2n * PAGE, new PfnRuns(), 0);
      expect(kernel.mem.totalPinned()).toBe(2);
      check();
      expect(iopt.unmapIova(iova, 8n * PAGE)).toBe(8n * PAGE);
      expect(seen).toEqual([iova, 8n * PAGE]);
      expect(kernel.mem.totalPinned()).toBe(0);
      iopt.removeAccess(acc);
      check();
    });
  });

  it("reads and writes through the fast and the slow path; checks prot and holes", () => {
    const { libc, iopt, run, scattered } = machine();
    run(() => {
      const va = scattered(4);
      const iova = iopt.mapUserPages(ctx, 0n, va + 100n, 3n * PAGE, RW, IOPT_ALLOC_IOVA);
      const data = new Uint8Array(5000).map((_, i) => i & 0xff);
      ioptAccessRw(iopt, iova + 10n, data, IOMMUFD_ACCESS_RW_WRITE);
      expect(libc.peek(va + 110n, 5000)).toEqual(data);
      const back = new Uint8Array(5000);
      ioptAccessRw(iopt, iova + 10n, back, __IOMMUFD_ACCESS_RW_SLOW_PATH);
      expect(back).toEqual(data);
      const ro = iopt.mapUserPages(ctx, 0n, va, PAGE, IOMMU_READ, IOPT_ALLOC_IOVA);
      expect(errno(() => ioptAccessRw(iopt, ro, new Uint8Array(4), IOMMUFD_ACCESS_RW_WRITE))).toBe(
        EPERM,
      );
      expect(errno(() => ioptAccessRw(iopt, iova + 3n * PAGE, new Uint8Array(4), 0))).not.toBe(0);
      expect(errno(() => ioptAccessPinPages(iopt, iova, PAGE, new PfnRuns(), 0))).toBe(EINVAL);
      iopt.unmapAll();
    });
  });

  it("pin of an unmapped user range is EFAULT with nothing left", () => {
    const { kernel, libc, iopt, run } = machine();
    run(() => {
      const va = libc.mmap(
        0n,
        4 * 4096,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
        -1,
        0,
      );
      libc.munmap(va + 2n * PAGE, 2 * 4096);
      const iova = iopt.mapUserPages(ctx, 0n, va, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
      iopt.addAccess(access(iopt));
      expect(errno(() => ioptAccessPinPages(iopt, iova, 4n * PAGE, new PfnRuns(), 0))).toBe(EFAULT);
      expect(kernel.mem.totalPinned()).toBe(0);
      const d = testDomain(kernel);
      expect(errno(() => iopt.tableAddDomain(d))).toBe(EFAULT);
      expect(mappedBytes(d)).toBe(0n);
      expect(kernel.mem.totalPinned()).toBe(0);
      checkInvariants([iopt]);
    });
  });
});

describe("vfio compat split", () => {
  it("splits only without large pages, and keeps the domains tree exact", () => {
    const { kernel, iopt, run, scattered, check } = machine();
    run(() => {
      const va = scattered(8);
      iopt.disableLargePages();
      const d = testDomain(kernel);
      iopt.tableAddDomain(d);
      iopt.mapUserPages(ctx, 0x100000n, va, 8n * PAGE, RW, 0);
      iopt.cutIova([0x100000n + 2n * PAGE - 1n, 0x100000n + 4n * PAGE - 1n]);
      expect(iopt.areas()).toHaveLength(3);
      check();
      expect(iopt.unmapIova(0x100000n + 2n * PAGE, 2n * PAGE)).toBe(2n * PAGE);
      check();
      expect(kernel.mem.totalPinned()).toBe(6);
      iopt.unmapAll();
      iopt.tableRemoveDomain(d);
      iopt.enableLargePages();
      expect(iopt.iovaAlignment).toBe(1n);
    });
  });
});
