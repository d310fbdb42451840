/**
 * io_pagetable operations at their edges, as drivers/iommu/iommufd/io_pagetable.c has them:
 * iopt_alloc_iova's alignment and its PAGE_SIZE .. ULONG_MAX - PAGE_SIZE window, the checks of
 * iopt_check_iova / iopt_insert_area in their order, iopt_unmap_iova_range's refusals and the
 * access-unmap retry, the allowed / reserved trees, domain add / remove with their apertures
 * and iova_alignment, large pages, iopt_area_split and the access list.
 */
import {
  EADDRINUSE,
  EBADF,
  EBUSY,
  EEXIST,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  ENOSPC,
  EOVERFLOW,
  EPERM,
  Kernel,
  KernelWarning,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  U64_MAX,
} from "@x/kernel";
import {
  IOMMU_RESV_DIRECT_RELAXABLE,
  IOMMU_RESV_MSI,
  IOMMU_RESV_RESERVED,
  IOMMU_RESV_SW_MSI,
} from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import { IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_USER } from "../src/accounting.js";
import { ioptAccessPinPages, ioptAccessUnpinPages } from "../src/access-core.js";
import { IOPT_ALLOC_IOVA, type IoptAccess, IoPagetable } from "../src/io-pagetable.js";
import { IOMMU_READ, domainIovaToPhys } from "../src/iommu-domain.js";
import { iommufdInit } from "../src/ioctls.js";
import { PAGE, RW, TestExporter, ctx, errno, mappedBytes, testDomain } from "./pages-helpers.js";

/** An unprivileged process (its pins are charged) mapping into a fresh io_pagetable. */
function setup() {
  const kernel = new Kernel();
  iommufdInit(kernel);
  const libc = new Libc(kernel, kernel.newProcess(1000));
  kernel.current = libc.task;
  const iopt = new IoPagetable(kernel);
  /** Anonymous memory whose address is aligned to 4 MiB (so only the length sets the IOVA's). */
  const anon = (pages: number): bigint => {
    const raw = libc.mmap(
      0n,
      pages * 4096 + (4 << 20),
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS,
      -1,
      0,
    );
    return (raw + (4n << 20n) - 1n) & ~((4n << 20n) - 1n);
  };
  return { kernel, libc, iopt, anon };
}

/** An in-kernel access with the given alignment that records the unmaps it is told of. */
function access(iovaAlignment = PAGE, onUnmap?: (iova: bigint, length: bigint) => void) {
  const calls: Array<[bigint, bigint]> = [];
  const acc: IoptAccess = {
    iovaAlignment,
    ioptAccessListId: -1,
    notifyUnmap: (iova, length) => {
      calls.push([iova, length]);
      onUnmap?.(iova, length);
    },
  };
  return { acc, calls };
}

const spans = (iopt: IoPagetable) => iopt.areas().map((a) => [a.iova, a.lastIova]);

describe("iopt_alloc_iova", () => {
  it("is EOVERFLOW from a length of ULONG_MAX / 2 on, before any search", () => {
    const { iopt, anon } = setup();
    const va = anon(1);
    iopt.mapUserPages(ctx, 0x100000n, va, PAGE, RW, 0);
    const list = iopt.getPages(0x100000n, PAGE);
    expect(errno(() => iopt.mapPages(list, U64_MAX / 2n, 0n, RW, IOPT_ALLOC_IOVA))).toBe(EOVERFLOW);
    expect(list).toHaveLength(1);
    iopt.freePagesList(list);
    expect(spans(iopt)).toEqual([[0x100000n, 0x100fffn]]);
    iopt.unmapAll();
  });

  it("draws from PAGE_SIZE .. ULONG_MAX - PAGE_SIZE of the allowed ranges only", () => {
    const { iopt, anon } = setup();
    const va = anon(2);
    const alloc = () => iopt.mapUserPages(ctx, 0n, va, PAGE, RW, IOPT_ALLOC_IOVA);
    iopt.setAllowIova([{ start: 0n, last: PAGE - 1n }]);
    expect(errno(alloc)).toBe(ENOSPC);
    iopt.setAllowIova([{ start: U64_MAX - PAGE + 1n, last: U64_MAX }]);
    expect(errno(alloc)).toBe(ENOSPC);
    // The first allowed page above 0 is taken, exactly.
    iopt.setAllowIova([{ start: 0n, last: 2n * PAGE - 1n }]);
    expect(alloc()).toBe(PAGE);
    expect(errno(alloc)).toBe(ENOSPC);
    iopt.unmapAll();
    // The last page below ULONG_MAX - PAGE_SIZE fits exactly.
    iopt.setAllowIova([{ start: U64_MAX - 2n * PAGE + 1n, last: U64_MAX }]);
    expect(alloc()).toBe(U64_MAX - 2n * PAGE + 1n);
    expect(errno(alloc)).toBe(ENOSPC);
    iopt.unmapAll();
    // Two allowed ranges: the first too small for two pages, the second takes them.
    iopt.setAllowIova([
      { start: 0x10000n, last: 0x10fffn },
      { start: 0x40000n, last: 0x4ffffn },
    ]);
    expect(iopt.mapUserPages(ctx, 0n, va, 2n * PAGE, RW, IOPT_ALLOC_IOVA)).toBe(0x40000n);
    expect(alloc()).toBe(0x10000n);
    iopt.unmapAll();
    iopt.setAllowIova([]);
  });

  it("aligns to the length rounded up to a power of two, capped at 2 MiB, or the origin's", () => {
    const { kernel, iopt } = setup();
    const exp = new TestExporter(kernel, 16n << 20n);
    const at = (start: bigint, length: bigint) =>
      iopt.mapFilePages(ctx, 0n, exp.fd(), start, length, RW, IOPT_ALLOC_IOVA);
    // Origin 0: roundup_pow_of_two(0x3000) = 0x4000.
    expect(at(0n, 0x3000n)).toBe(0x4000n);
    iopt.unmapAll();
    // Origin 0x1000: min(0x4000, 1 << __ffs(0x1000)) = 0x1000, the first page above 0.
    expect(at(0x1000n, 0x4000n)).toBe(0x1000n);
    // Origin 0x2000 keeps 8 KiB alignment past that area.
    expect(at(0x2000n, 0x2000n)).toBe(0x6000n);
    iopt.unmapAll();
    // 4 MiB rounds to 4 MiB, capped at HPAGE_SIZE: the first 2 MiB boundary.
    expect(at(0n, 4n << 20n)).toBe(2n << 20n);
    iopt.unmapAll();
  });

  it("is EINVAL when the alignment it can keep is below iova_alignment", () => {
    const { kernel, iopt } = setup();
    const exp = new TestExporter(kernel, 1n << 20n);
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    expect(iopt.iovaAlignment).toBe(PAGE);
    const e = (() => {
      try {
        iopt.mapFilePages(ctx, 0n, exp.fd(), 0x800n, PAGE, RW, IOPT_ALLOC_IOVA);
      } catch (err) {
        return err;
      }
    })();
    expect(e).not.toBeInstanceOf(KernelWarning);
    expect((e as { errno: number }).errno).toBe(EINVAL);
    expect(iopt.areas()).toHaveLength(0);
    iopt.tableRemoveDomain(d);
  });
});

describe("iopt_check_iova and iopt_insert_area", () => {
  it("checks alignment before overflow, overflow before the reserved tree", () => {
    const { iopt, anon } = setup();
    const { acc } = access(PAGE);
    iopt.addAccess(acc);
    const va = anon(2);
    const map = (iova: bigint, length: bigint) => () =>
      iopt.mapUserPages(ctx, iova, va, length, RW, 0);
    expect(errno(map(U64_MAX - 0x7ffn, 2n * PAGE))).toBe(EINVAL);
    iopt.reserveIova(U64_MAX - PAGE + 1n, U64_MAX, "top");
    expect(errno(map(U64_MAX - PAGE + 1n, 2n * PAGE))).toBe(EOVERFLOW);
    expect(errno(map(U64_MAX - PAGE + 1n, PAGE))).toBe(EINVAL);
    expect(errno(map(U64_MAX - 2n * PAGE + 1n, 2n * PAGE))).toBe(EINVAL);
    expect(map(U64_MAX - 2n * PAGE + 1n, PAGE)()).toBe(U64_MAX - 2n * PAGE + 1n);
    expect(errno(map(U64_MAX - 3n * PAGE + 1n, 2n * PAGE))).toBe(EEXIST);
    expect(iopt.areas()).toHaveLength(1);
    iopt.unmapAll();
    iopt.removeReservedIova("top");
    iopt.removeAccess(acc);
  });

  it("refuses write to read-only pages (EPERM) before the page offset's alignment (EINVAL)", () => {
    const { kernel, iopt: src, anon } = setup();
    const va = anon(2);
    // Read-only pages that start 0x800 into their page, in a table of alignment 1.
    src.mapUserPages(ctx, 0x10800n, va + 0x800n, PAGE, IOMMU_READ, 0);
    const dst = new IoPagetable(kernel);
    const { acc } = access(PAGE);
    dst.addAccess(acc);
    const list = src.getPages(0x10800n, PAGE);
    expect(errno(() => dst.mapPages(list, PAGE, 0x20000n, RW, 0))).toBe(EPERM);
    expect(errno(() => dst.mapPages(list, PAGE, 0x20000n, IOMMU_READ, 0))).toBe(EINVAL);
    expect(dst.areas()).toHaveLength(0);
    src.freePagesList(list);
    // Fixed IOVA: the page offset 0x800 is refused by iopt_insert_area.
    expect(errno(() => dst.mapUserPages(ctx, 0x20000n, va + 0x800n, PAGE, RW, 0))).toBe(EINVAL);
    expect(dst.areas()).toHaveLength(0);
    dst.removeAccess(acc);
    src.unmapAll();
  });

  it("sets the area's page index range from start_byte (iopt_area_index / _last_index)", () => {
    const { iopt, anon } = setup();
    const va = anon(8);
    iopt.mapUserPages(ctx, 0x100000n, va + 0x800n, 5n * PAGE, RW, 0);
    const list = iopt.getPages(0x100000n + 2n * PAGE, 2n * PAGE);
    const iova = iopt.mapPages(list, 2n * PAGE, 0x200000n, RW, 0);
    const area = iopt.areas(iova, iova)[0];
    // start_byte 0x2800: pages 2 .. 4 of the pages object, 0x800 into page 2.
    expect([area?.pagesNode.start, area?.pagesNode.last, area?.pageOffset]).toEqual([
      2n,
      4n,
      0x800,
    ]);
    expect(area?.startByte(iova)).toBe(0x2800n);
    iopt.unmapAll();
  });
});

describe("iopt_unmap_iova_range", () => {
  it("unmaps whole areas only: ENOENT for a range cutting one, EBUSY first for a locked one", () => {
    const { iopt, anon } = setup();
    const va = anon(8);
    iopt.mapUserPages(ctx, 0x10000n, va, 4n * PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x20000n, va, 2n * PAGE, RW, 0);
    expect(errno(() => iopt.unmapIova(0x11000n, 3n * PAGE))).toBe(ENOENT);
    expect(errno(() => iopt.unmapIova(0x10000n, 3n * PAGE))).toBe(ENOENT);
    expect(errno(() => iopt.unmapIova(0x10000n, 0n))).toBe(EINVAL);
    expect(errno(() => iopt.unmapIova(U64_MAX, 2n))).toBe(EOVERFLOW);
    const { acc } = access(PAGE);
    iopt.addAccess(acc);
    ioptAccessPinPages(iopt, 0x20000n, PAGE, new PfnRuns(), 0, true);
    // Locked and cut by the range: the lock is seen first.
    expect(errno(() => iopt.unmapIova(0x20000n, PAGE))).toBe(EBUSY);
    expect(spans(iopt)).toHaveLength(2);
    ioptAccessUnpinPages(iopt, 0x20000n, PAGE, true);
    // A range over both, with room on either side: both whole areas, their bytes summed.
    const progress = { unmapped: 0n };
    expect(iopt.unmapIova(0x8000n, 0x20000n, progress)).toBe(6n * PAGE);
    expect(progress.unmapped).toBe(6n * PAGE);
    expect(iopt.areas()).toHaveLength(0);
    iopt.removeAccess(acc);
  });

  it("asks accesses to unpin the whole area, blocks new pins meanwhile, then retries", () => {
    const { kernel, iopt, anon } = setup();
    const va = anon(4);
    iopt.mapUserPages(ctx, 0x10000n, va, 4n * PAGE, RW, 0);
    let repin = 0;
    let cut = 0;
    const { acc, calls } = access(PAGE, (iova) => {
      repin = errno(() => ioptAccessPinPages(iopt, iova, PAGE, new PfnRuns(), 0));
      cut = errno(() => iopt.cutIova([iova + PAGE - 1n]));
      ioptAccessUnpinPages(iopt, 0x11000n, PAGE);
    });
    iopt.addAccess(acc);
    ioptAccessPinPages(iopt, 0x11000n, PAGE, new PfnRuns(), 0);
    expect(kernel.mem.totalPinned()).toBe(1);
    expect(iopt.unmapIova(0x8000n, 0x10000n)).toBe(4n * PAGE);
    expect(calls).toEqual([[0x10000n, 4n * PAGE]]);
    // prevent_access: a new pin is EINVAL and a split EBUSY while the unmap waits.
    expect([repin, cut]).toEqual([EINVAL, EBUSY]);
    expect(kernel.mem.totalPinned()).toBe(0);
    iopt.removeAccess(acc);
  });

  it("gives up with a WARN after 100 retries of one area, counting afresh for the next", () => {
    const { iopt, anon } = setup();
    const va = anon(4);
    iopt.mapUserPages(ctx, 0x10000n, va, PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x20000n, va, PAGE, RW, 0);
    // Each area is let go on its 60th request: 120 requests in all, 60 per area.
    const held = new Map([
      [0x10000n, 60],
      [0x20000n, 60],
    ]);
    const { acc, calls } = access(PAGE, (iova) => {
      const left = (held.get(iova) ?? 0) - 1;
      held.set(iova, left);
      if (left === 0) ioptAccessUnpinPages(iopt, iova, PAGE);
    });
    iopt.addAccess(acc);
    ioptAccessPinPages(iopt, 0x10000n, PAGE, new PfnRuns(), 0);
    ioptAccessPinPages(iopt, 0x20000n, PAGE, new PfnRuns(), 0);
    expect(iopt.unmapAll()).toBe(2n * PAGE);
    expect(calls).toHaveLength(120);
    // An access that never lets go: the 101st request is a WARN.
    iopt.mapUserPages(ctx, 0x10000n, va, PAGE, RW, 0);
    ioptAccessPinPages(iopt, 0x10000n, PAGE, new PfnRuns(), 0);
    held.set(0x10000n, 1000);
    calls.length = 0;
    expect(() => iopt.unmapIova(0x10000n, PAGE)).toThrow(KernelWarning);
    expect(calls).toHaveLength(101);
    ioptAccessUnpinPages(iopt, 0x10000n, PAGE);
    expect(iopt.unmapAll()).toBe(PAGE);
    iopt.removeAccess(acc);
  });
});

describe("allowed and reserved IOVA", () => {
  it("iopt_set_allow_iova replaces all ranges or, on EADDRINUSE, none", () => {
    const { iopt } = setup();
    iopt.setAllowIova([{ start: 0x1000n, last: 0x1fffn }]);
    iopt.reserveIova(0x8000n, 0x8fffn, "r");
    expect(
      errno(() =>
        iopt.setAllowIova([
          { start: 0x2000n, last: 0x2fffn },
          { start: 0x8fffn, last: 0x9fffn },
        ]),
      ),
    ).toBe(EADDRINUSE);
    expect(iopt.allowedRanges()).toEqual([{ start: 0x1000n, last: 0x1fffn }]);
    iopt.setAllowIova([
      { start: 0x2000n, last: 0x2fffn },
      { start: 0x9000n, last: 0x9fffn },
    ]);
    expect(iopt.allowedRanges()).toEqual([
      { start: 0x2000n, last: 0x2fffn },
      { start: 0x9000n, last: 0x9fffn },
    ]);
    iopt.setAllowIova([]);
    expect(iopt.allowedRanges()).toEqual([]);
    iopt.removeReservedIova("r");
  });

  it("iopt_reserve_iova refuses a mapped range; removal takes the owner's ranges only", () => {
    const { iopt, anon } = setup();
    iopt.mapUserPages(ctx, 0x10000n, anon(1), PAGE, RW, 0);
    expect(errno(() => iopt.reserveIova(0xf000n, 0x10000n, "a"))).toBe(EADDRINUSE);
    iopt.reserveIova(0x1000n, 0x1fffn, "a");
    iopt.reserveIova(0x3000n, 0x3fffn, "b");
    iopt.reserveIova(0x5000n, 0x5fffn, "a");
    iopt.removeReservedIova("a");
    expect(iopt.reservedRanges()).toEqual([{ start: 0x3000n, last: 0x3fffn, owner: "b" }]);
    iopt.removeReservedIova("b");
    iopt.unmapAll();
  });

  it("iopt_table_enforce_group_resv_regions: all but DIRECT_RELAXABLE, SW_MSI's start, all or nothing", () => {
    const { iopt, anon } = setup();
    const owner = {};
    const swMsi = iopt.enforceGroupResvRegions(owner, [
      { start: 0x1000n, length: 0x1000n, type: IOMMU_RESV_DIRECT_RELAXABLE },
      { start: 0x8000000n, length: 0x100000n, type: IOMMU_RESV_SW_MSI },
      { start: 0x4000n, length: 0x2000n, type: IOMMU_RESV_RESERVED },
    ]);
    expect(swMsi).toBe(0x8000000n);
    expect(iopt.reservedRanges()).toEqual([
      { start: 0x4000n, last: 0x5fffn, owner },
      { start: 0x8000000n, last: 0x80fffffn, owner },
    ]);
    iopt.removeReservedIova(owner);
    expect(iopt.enforceGroupResvRegions(owner, [])).toBeUndefined();
    // A region over a mapping: EADDRINUSE and the ones already reserved are dropped.
    iopt.mapUserPages(ctx, 0x10000n, anon(1), PAGE, RW, 0);
    const clash = [
      { start: 0x4000n, length: 0x1000n, type: IOMMU_RESV_RESERVED },
      { start: 0x10000n, length: 0x1000n, type: IOMMU_RESV_MSI },
    ];
    expect(errno(() => iopt.enforceGroupResvRegions(owner, clash))).toBe(EADDRINUSE);
    expect(iopt.reservedRanges()).toEqual([]);
    // Drivers must not offer SW and HW MSI together, nor two SW MSI windows.
    for (const bad of [
      [
        { start: 0x4000n, length: 0x1000n, type: IOMMU_RESV_SW_MSI },
        { start: 0x6000n, length: 0x1000n, type: IOMMU_RESV_MSI },
      ],
      [
        { start: 0x4000n, length: 0x1000n, type: IOMMU_RESV_SW_MSI },
        { start: 0x6000n, length: 0x1000n, type: IOMMU_RESV_SW_MSI },
      ],
    ]) {
      expect(() => iopt.enforceGroupResvRegions(owner, bad)).toThrow(KernelWarning);
      expect(iopt.reservedRanges()).toEqual([]);
    }
    iopt.unmapAll();
  });
});

describe("domains", () => {
  it("iopt_table_add_domain: EINVAL above PAGE_SIZE, EADDRINUSE for a misaligned area", () => {
    const { kernel, iopt, anon } = setup();
    const big = testDomain(kernel);
    big.pgsizeBitmap = (2n << 20n) | (1n << 30n);
    expect(errno(() => iopt.tableAddDomain(big))).toBe(EINVAL);
    const va = anon(4);
    for (const [iova, uptr, length] of [
      [0x10800n, va, PAGE],
      [0x10000n, va, PAGE + 0x800n],
      [0x10000n, va + 0x800n, PAGE],
    ] as const) {
      iopt.mapUserPages(ctx, iova, uptr, length, RW, 0);
      const d = testDomain(kernel);
      expect(errno(() => iopt.tableAddDomain(d))).toBe(EADDRINUSE);
      expect([iopt.domainList.length, iopt.iovaAlignment, iopt.reservedRanges()]).toEqual([
        0,
        1n,
        [],
      ]);
      expect(iopt.unmapAll()).toBe(length);
    }
  });

  it("reserves outside the aperture, all or nothing, and keeps iova_alignment the largest minimum", () => {
    const { kernel, iopt, anon } = setup();
    const va = anon(4);
    const mock = testDomain(kernel, "mock");
    // Below the aperture: the first reservation fails.
    iopt.mapUserPages(ctx, 0x1000n, va, PAGE, RW, 0);
    expect(errno(() => iopt.tableAddDomain(mock))).toBe(EADDRINUSE);
    expect(iopt.reservedRanges()).toEqual([]);
    iopt.unmapAll();
    // Above it: the second fails and the first is dropped again.
    iopt.mapUserPages(ctx, 1n << 31n, va, PAGE, RW, 0);
    expect(errno(() => iopt.tableAddDomain(mock))).toBe(EADDRINUSE);
    expect(iopt.reservedRanges()).toEqual([]);
    iopt.unmapAll();
    iopt.mapUserPages(ctx, 1n << 24n, va, 0x800n, RW, 0);
    iopt.tableAddDomain(mock);
    expect(iopt.reservedRanges()).toEqual([
      { start: 0n, last: (1n << 24n) - 1n, owner: mock },
      { start: 1n << 31n, last: U64_MAX, owner: mock },
    ]);
    expect(iopt.iovaAlignment).toBe(0x800n);
    const amd = testDomain(kernel);
    // The 2 KiB area does not conform to the AMD domain's 4 KiB.
    expect(errno(() => iopt.tableAddDomain(amd))).toBe(EADDRINUSE);
    expect(iopt.reservedRanges()).toHaveLength(2);
    iopt.unmapAll();
    iopt.tableAddDomain(amd);
    expect(iopt.iovaAlignment).toBe(PAGE);
    expect(() => iopt.tableAddDomain(amd)).toThrow(KernelWarning);
    iopt.tableRemoveDomain(amd);
    expect(iopt.iovaAlignment).toBe(0x800n);
    iopt.tableRemoveDomain(mock);
    expect([iopt.iovaAlignment, iopt.reservedRanges()]).toEqual([1n, []]);
    iopt.destroyTable();
  });

  it("iopt_table_remove_domain moves the tail into the hole and storage to domain 0", () => {
    const { kernel, iopt, anon } = setup();
    const [d1, d2, d3] = [testDomain(kernel), testDomain(kernel), testDomain(kernel)];
    for (const d of [d1, d2, d3]) iopt.tableAddDomain(d);
    iopt.mapUserPages(ctx, 0x10000n, anon(2), 2n * PAGE, RW, 0);
    const area = iopt.areas()[0];
    expect(area?.storageDomain).toBe(d1);
    iopt.tableRemoveDomain(d1);
    expect(iopt.domainList).toEqual([d3, d2]);
    expect(area?.storageDomain).toBe(d3);
    expect([mappedBytes(d1), mappedBytes(d2), mappedBytes(d3)]).toEqual([0n, 2n * PAGE, 2n * PAGE]);
    expect(kernel.mem.totalPinned()).toBe(2);
    iopt.tableRemoveDomain(d2);
    expect(iopt.domainList).toEqual([d3]);
    iopt.tableRemoveDomain(d3);
    expect(kernel.mem.totalPinned()).toBe(0);
    expect(area?.storageDomain).toBeUndefined();
    iopt.unmapAll();
  });
});

describe("large pages", () => {
  it("iopt_disable_large_pages: EINVAL once domains hold areas, unless already disabled", () => {
    const { kernel, iopt, anon } = setup();
    const d = testDomain(kernel, "mock");
    iopt.tableAddDomain(d);
    expect(iopt.iovaAlignment).toBe(0x800n);
    iopt.disableLargePages();
    expect(iopt.iovaAlignment).toBe(PAGE);
    iopt.mapUserPages(ctx, 1n << 24n, anon(1), PAGE, RW, 0);
    iopt.disableLargePages();
    iopt.enableLargePages();
    expect(iopt.iovaAlignment).toBe(0x800n);
    expect(errno(() => iopt.disableLargePages())).toBe(EINVAL);
    expect([iopt.largePagesDisabled, iopt.iovaAlignment]).toEqual([false, 0x800n]);
    iopt.unmapAll();
    iopt.tableRemoveDomain(d);
  });

  it("leaves large pages on when an area does not conform to PAGE_SIZE (EADDRINUSE)", () => {
    const { iopt, anon } = setup();
    iopt.mapUserPages(ctx, 0x10000n, anon(1), 0x800n, RW, 0);
    expect(errno(() => iopt.disableLargePages())).toBe(EADDRINUSE);
    expect([iopt.largePagesDisabled, iopt.iovaAlignment]).toEqual([false, 1n]);
    iopt.unmapAll();
    iopt.disableLargePages();
    expect([iopt.largePagesDisabled, iopt.iovaAlignment]).toEqual([true, PAGE]);
    iopt.enableLargePages();
    expect([iopt.largePagesDisabled, iopt.iovaAlignment]).toEqual([false, 1n]);
  });
});

describe("iopt_cut_iova / iopt_area_split", () => {
  it("splits at aligned points only, never at an area's ends, and shares the pages", () => {
    const { kernel, iopt, anon } = setup();
    iopt.disableLargePages();
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    iopt.mapUserPages(ctx, 0x10000n, anon(4), 4n * PAGE, RW, 0);
    const pages = iopt.areas()[0]?.pages;
    // Ends of the area, and an IOVA with no area: nothing to do.
    iopt.cutIova([0x10000n, 0x13fffn, 0x30000n]);
    expect(spans(iopt)).toEqual([[0x10000n, 0x13fffn]]);
    expect(errno(() => iopt.cutIova([0x107ffn]))).toBe(EINVAL);
    expect(spans(iopt)).toHaveLength(1);
    iopt.cutIova([0x10fffn, 0x11fffn]);
    expect(spans(iopt)).toEqual([
      [0x10000n, 0x10fffn],
      [0x11000n, 0x11fffn],
      [0x12000n, 0x13fffn],
    ]);
    expect(iopt.areas().map((a) => [a.pagesNode.start, a.pagesNode.last])).toEqual([
      [0n, 0n],
      [1n, 1n],
      [2n, 3n],
    ]);
    expect(iopt.areas().every((a) => a.pages === pages && a.storageDomain === d)).toBe(true);
    expect(iopt.areas().every((a) => a.iommuProt === RW)).toBe(true);
    expect(pages?.refs).toBe(3);
    expect(iopt.unmapIova(0x11000n, PAGE)).toBe(PAGE);
    expect([mappedBytes(d), kernel.mem.totalPinned()]).toEqual([3n * PAGE, 3]);
    expect(iopt.unmapAll()).toBe(3n * PAGE);
    iopt.tableRemoveDomain(d);
  });

  it("is EINVAL for an area an access holds or one a domain may map with huge IOPTEs", () => {
    const { kernel, iopt, anon } = setup();
    iopt.mapUserPages(ctx, 0x10000n, anon(4), 4n * PAGE, RW, 0);
    const { acc } = access(PAGE);
    iopt.addAccess(acc);
    ioptAccessPinPages(iopt, 0x10000n, PAGE, new PfnRuns(), 0);
    expect(errno(() => iopt.cutIova([0x11fffn]))).toBe(EINVAL);
    ioptAccessUnpinPages(iopt, 0x10000n, PAGE);
    iopt.removeAccess(acc);
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    expect(errno(() => iopt.cutIova([0x11fffn]))).toBe(EINVAL);
    expect(spans(iopt)).toEqual([[0x10000n, 0x13fffn]]);
    iopt.tableRemoveDomain(d);
    // Without a domain nothing can hold huge IOPTEs: the split goes ahead.
    iopt.cutIova([0x11fffn]);
    expect(spans(iopt)).toEqual([
      [0x10000n, 0x11fffn],
      [0x12000n, 0x13fffn],
    ]);
    iopt.unmapAll();
  });
});

describe("accesses", () => {
  it("take the lowest free id and join iova_alignment; a misaligned area refuses them", () => {
    const { iopt, anon } = setup();
    const a = access(PAGE).acc;
    const b = access(PAGE).acc;
    const c = access(2n * PAGE).acc;
    iopt.addAccess(a);
    iopt.addAccess(b);
    expect([a.ioptAccessListId, b.ioptAccessListId, iopt.iovaAlignment]).toEqual([0, 1, PAGE]);
    iopt.removeAccess(a);
    iopt.addAccess(c);
    expect([c.ioptAccessListId, iopt.iovaAlignment]).toEqual([0, 2n * PAGE]);
    iopt.removeAccess(c);
    expect(iopt.iovaAlignment).toBe(PAGE);
    iopt.mapUserPages(ctx, 0x11000n, anon(1), PAGE, RW, 0);
    const d = access(2n * PAGE).acc;
    expect(errno(() => iopt.addAccess(d))).toBe(EADDRINUSE);
    expect([d.ioptAccessListId, [...iopt.accessList.values()], iopt.iovaAlignment]).toEqual([
      -1,
      [b],
      PAGE,
    ]);
    iopt.removeAccess(b);
    expect(iopt.iovaAlignment).toBe(1n);
    iopt.unmapAll();
  });
});

describe("iopt_fill_domain unwind", () => {
  it("takes back the areas already filled when a later one fails, as they were", () => {
    const { kernel, libc, iopt, anon } = setup();
    const good = anon(2);
    const bad = anon(2);
    libc.munmap(bad + PAGE, 4096);
    iopt.mapUserPages(ctx, 0x10000n, good, 2n * PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x20000n, bad, 2n * PAGE, RW, 0);
    const [a1] = iopt.areas();
    // The first domain: the filled area loses its storage domain again.
    const d1 = testDomain(kernel);
    expect(errno(() => iopt.tableAddDomain(d1))).toBe(EFAULT);
    expect([mappedBytes(d1), kernel.mem.totalPinned(), a1?.storageDomain]).toEqual([
      0n,
      0,
      undefined,
    ]);
    expect(iopt.domainList).toEqual([]);
    iopt.unmapIova(0x20000n, 2n * PAGE);
    // With a domain holding both areas, a second domain failing at any of its allocations is
    // left empty and the first keeps its areas, pins and storage role.
    iopt.tableAddDomain(d1);
    iopt.mapUserPages(ctx, 0x20000n, anon(2), 2n * PAGE, RW, 0);
    const fault = kernel.current.fault;
    let failures = 0;
    for (let nth = 1; ; nth++) {
      const d2 = testDomain(kernel);
      fault.arm(nth);
      const rc = errno(() => iopt.tableAddDomain(d2));
      const consumed = fault.read() === 0;
      fault.disarm();
      if (rc === 0) {
        expect(mappedBytes(d2)).toBe(4n * PAGE);
        iopt.tableRemoveDomain(d2);
        if (consumed) continue;
        break;
      }
      failures++;
      expect(rc).toBe(ENOMEM);
      expect([mappedBytes(d2), mappedBytes(d1), kernel.mem.totalPinned()]).toEqual([
        0n,
        4n * PAGE,
        4,
      ]);
      expect(iopt.areas().map((a) => a.storageDomain)).toEqual([d1, d1]);
      expect([iopt.domainList, iopt.reservedRanges()]).toEqual([[d1], []]);
    }
    expect(failures).toBeGreaterThan(1);
    iopt.unmapAll();
    iopt.tableRemoveDomain(d1);
    expect(kernel.mem.totalPinned()).toBe(0);
  });
});

describe("iopt_map_file_pages", () => {
  it("checks length and overflow before the fd, puts the dma-buf when its pages fail", () => {
    const { kernel, libc, iopt } = setup();
    const exp = new TestExporter(kernel, 4n * PAGE);
    const map = (fd: number, start: bigint, length: bigint) => () =>
      iopt.mapFilePages(ctx, 0x10000n, fd, start, length, RW, 0);
    expect(errno(map(999, 0n, 0n))).toBe(EINVAL);
    expect(errno(map(999, U64_MAX, 2n))).toBe(EOVERFLOW);
    expect(errno(map(999, 0n, PAGE))).toBe(EBADF);
    const fd = exp.fd();
    const refs = exp.dmabuf.file.refcount;
    expect(errno(map(fd, 0n, 5n * PAGE))).toBe(EINVAL);
    expect(exp.dmabuf.file.refcount).toBe(refs);
    expect(iopt.areas()).toHaveLength(0);
    // A memfd: the area starts start % PAGE_SIZE into its first page.
    const mfd = libc.memfdCreate("m", 0);
    expect(libc.ftruncate(mfd, 4n * PAGE)).toBe(0);
    expect(map(mfd, 0x1800n, PAGE)()).toBe(0x10000n);
    const area = iopt.areas()[0];
    expect([area?.pageOffset, area?.startByte(0x10000n), area?.pages?.start]).toEqual([
      0x800,
      0x800n,
      0x1000n,
    ]);
    iopt.unmapAll();
  });

  it("a context in RLIMIT_MODE mm turns a user-charged pages object into an mm-charged one", () => {
    const { iopt, anon } = setup();
    const va = anon(1);
    iopt.mapUserPages({ accountMode: IOPT_PAGES_ACCOUNT_MM }, 0x10000n, va, PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x20000n, va, PAGE, RW, 0);
    expect(iopt.areas().map((a) => a.pages?.accountMode)).toEqual([
      IOPT_PAGES_ACCOUNT_MM,
      IOPT_PAGES_ACCOUNT_USER,
    ]);
    iopt.unmapAll();
  });
});

describe("IOAS_COPY: iopt_get_pages and iopt_map_pages", () => {
  it("slices contiguous areas, maps the slices back to back, and refuses holes", () => {
    const { kernel, iopt, anon } = setup();
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    iopt.mapUserPages(ctx, 0x10000n, anon(4), 4n * PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x14000n, anon(4), 4n * PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x20000n, anon(1), PAGE, RW, 0);
    const [a1, a2] = iopt.areas();
    expect(errno(() => iopt.getPages(0x10000n, 0n))).toBe(EINVAL);
    expect(errno(() => iopt.getPages(U64_MAX, 2n))).toBe(EOVERFLOW);
    // 0x14000 .. 0x20fff runs into the hole at 0x18000: every reference taken is dropped.
    expect(errno(() => iopt.getPages(0x14000n, 0xd000n))).toBe(ENOENT);
    expect([a1?.pages?.refs, a2?.pages?.refs]).toEqual([1, 1]);
    const list = iopt.getPages(0x12000n, 4n * PAGE);
    expect(list.map((e) => [e.startByte, e.length])).toEqual([
      [2n * PAGE, 2n * PAGE],
      [0n, 2n * PAGE],
    ]);
    expect([a1?.pages?.refs, a2?.pages?.refs]).toEqual([2, 2]);
    const dst = new IoPagetable(kernel);
    const d2 = testDomain(kernel);
    dst.tableAddDomain(d2);
    expect(dst.mapPages(list, 4n * PAGE, 0x100000n, RW, 0)).toBe(0x100000n);
    expect(list.every((e) => e.pages === undefined && e.area === undefined)).toBe(true);
    iopt.freePagesList(list);
    expect(spans(dst)).toEqual([
      [0x100000n, 0x101fffn],
      [0x102000n, 0x103fffn],
    ]);
    for (let i = 0n; i < 4n; i++) {
      expect(domainIovaToPhys(d2, 0x100000n + i * PAGE)).toBe(
        domainIovaToPhys(d, 0x12000n + i * PAGE),
      );
    }
    expect(kernel.mem.totalPinned()).toBe(9);
    expect(dst.unmapAll()).toBe(4n * PAGE);
    dst.tableRemoveDomain(d2);
    dst.destroyTable();
    iopt.unmapAll();
    iopt.tableRemoveDomain(d);
    expect(kernel.mem.totalPinned()).toBe(0);
  });

  it("a copy failing at any allocation leaves no area or IOPTE and the list its references", () => {
    const { kernel, iopt, anon } = setup();
    iopt.mapUserPages(ctx, 0x10000n, anon(4), 4n * PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x14000n, anon(4), 4n * PAGE, RW, 0);
    const dst = new IoPagetable(kernel);
    const d = testDomain(kernel);
    dst.tableAddDomain(d);
    const fault = kernel.current.fault;
    let failures = 0;
    for (let nth = 1; ; nth++) {
      const list = iopt.getPages(0x12000n, 4n * PAGE);
      fault.arm(nth);
      const rc = errno(() => dst.mapPages(list, 4n * PAGE, 0x100000n, RW, 0));
      const consumed = fault.read() === 0;
      fault.disarm();
      if (rc === 0) {
        // An injection the operation absorbs (a page fault retried): go on to the next one.
        if (!consumed) break;
        dst.unmapAll();
        iopt.freePagesList(list);
        continue;
      }
      failures++;
      // Allocations fail with ENOMEM, an injected pin_user_pages failure with EFAULT.
      expect([ENOMEM, EFAULT]).toContain(rc);
      expect([dst.areas(), mappedBytes(d), kernel.mem.totalPinned()]).toEqual([[], 0n, 0]);
      expect(list.map((e) => [e.pages?.refs, e.area])).toEqual([
        [2, undefined],
        [2, undefined],
      ]);
      iopt.freePagesList(list);
    }
    // Both areas' allocations and pins failed in turn, the second's after the first was filled.
    expect(failures).toBeGreaterThan(7);
    expect(mappedBytes(d)).toBe(4n * PAGE);
    dst.unmapAll();
    dst.tableRemoveDomain(d);
    iopt.unmapAll();
  });

  it("iopt_destroy_table WARNs for anything left but allowed ranges and NULL-owned reservations", () => {
    const { kernel, iopt, anon } = setup();
    iopt.setAllowIova([{ start: 0x10000n, last: 0x1ffffn }]);
    iopt.reserveIova(0x1000n, 0x1fffn, undefined);
    iopt.destroyTable();
    expect([iopt.allowedRanges(), iopt.reservedRanges()]).toEqual([[], []]);
    iopt.reserveIova(0x1000n, 0x1fffn, "owner");
    expect(() => iopt.destroyTable()).toThrow(KernelWarning);
    iopt.removeReservedIova("owner");
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    expect(() => iopt.destroyTable()).toThrow(KernelWarning);
    iopt.tableRemoveDomain(d);
    const { acc } = access(PAGE);
    iopt.addAccess(acc);
    expect(() => iopt.destroyTable()).toThrow(KernelWarning);
    iopt.removeAccess(acc);
    iopt.mapUserPages(ctx, 0x10000n, anon(1), PAGE, RW, 0);
    expect(() => iopt.destroyTable()).toThrow(KernelWarning);
    iopt.unmapAll();
    iopt.destroyTable();
  });
});

describe("edges of the u64 space and of the allowed ranges", () => {
  it("an allowed range ending at ULONG_MAX: ALIGN up to exactly ULONG_MAX does not overflow", () => {
    const { iopt, anon } = setup();
    iopt.setAllowIova([{ start: U64_MAX - 0x3fffn, last: U64_MAX }]);
    // 0x3000 bytes aligned to 0x4000 end at ULONG_MAX - PAGE_SIZE, the allocator's last IOVA.
    expect(iopt.mapUserPages(ctx, 0n, anon(3), 0x3000n, RW, IOPT_ALLOC_IOVA)).toBe(
      U64_MAX - 0x3fffn,
    );
    iopt.unmapAll();
    iopt.setAllowIova([]);
  });

  it("takes the first allowed range that fits, passing over one an area fills", () => {
    const { iopt, anon } = setup();
    const va = anon(16);
    iopt.setAllowIova([
      { start: 0x10000n, last: 0x1ffffn },
      { start: 0x40000n, last: 0x4ffffn },
    ]);
    expect(iopt.mapUserPages(ctx, 0n, va, PAGE, RW, IOPT_ALLOC_IOVA)).toBe(0x10000n);
    iopt.unmapAll();
    iopt.mapUserPages(ctx, 0x10000n, va, 0x10000n, RW, 0);
    expect(iopt.mapUserPages(ctx, 0n, va, PAGE, RW, IOPT_ALLOC_IOVA)).toBe(0x40000n);
    iopt.unmapAll();
    iopt.setAllowIova([]);
  });

  it("maps, copies and unmaps the last page of the u64 space", () => {
    const { iopt, anon } = setup();
    const top = U64_MAX - PAGE + 1n;
    iopt.mapUserPages(ctx, top, anon(1), PAGE, RW, 0);
    const list = iopt.getPages(top, PAGE);
    expect(list.map((e) => e.length)).toEqual([PAGE]);
    iopt.freePagesList(list);
    expect(iopt.unmapIova(top, PAGE)).toBe(PAGE);
  });

  it("the alignment hint is the user VA, or the file offset, of the first byte", () => {
    const { kernel, libc, iopt, anon } = setup();
    // A VA aligned to 4 KiB only: 16 KiB get a 4 KiB aligned IOVA.
    expect(iopt.mapUserPages(ctx, 0n, anon(5) + PAGE, 4n * PAGE, RW, IOPT_ALLOC_IOVA)).toBe(
      0x1000n,
    );
    iopt.unmapAll();
    const mfd = libc.memfdCreate("m", 0);
    expect(libc.ftruncate(mfd, 8n * PAGE)).toBe(0);
    expect(iopt.mapFilePages(ctx, 0n, mfd, PAGE, 4n * PAGE, RW, IOPT_ALLOC_IOVA)).toBe(0x1000n);
    iopt.unmapAll();
    const exp = new TestExporter(kernel, 8n * PAGE);
    expect(iopt.mapFilePages(ctx, 0n, exp.fd(), PAGE, 4n * PAGE, RW, IOPT_ALLOC_IOVA)).toBe(
      0x1000n,
    );
    iopt.unmapAll();
  });

  it("iopt_alloc_area_pages: a length of 0 or off iova_alignment is EINVAL", () => {
    const { iopt, anon } = setup();
    const va = anon(2);
    iopt.mapUserPages(ctx, 0x10000n, va, PAGE, RW, 0);
    const list = iopt.getPages(0x10000n, PAGE);
    expect(errno(() => iopt.mapPages(list, 0n, 0x20000n, RW, 0))).toBe(EINVAL);
    const { acc } = access(PAGE);
    iopt.addAccess(acc);
    expect(errno(() => iopt.mapUserPages(ctx, 0x20000n, va, 0x800n, RW, 0))).toBe(EINVAL);
    expect(spans(iopt)).toEqual([[0x10000n, 0x10fffn]]);
    iopt.freePagesList(list);
    iopt.removeAccess(acc);
    iopt.unmapAll();
  });

  it("MAP_FILE: a range ending at ULONG_MAX is no overflow; the file reference is dropped", () => {
    const { kernel, libc, iopt } = setup();
    expect(errno(() => iopt.mapFilePages(ctx, 0n, 999, U64_MAX - PAGE + 1n, PAGE, RW, 0))).toBe(
      EBADF,
    );
    const mfd = libc.memfdCreate("m", 0);
    expect(libc.ftruncate(mfd, 4n * PAGE)).toBe(0);
    const file = kernel.current.process.files.fget(mfd);
    const refs = file.refcount;
    iopt.mapFilePages(ctx, 0x10000n, mfd, 0n, PAGE, RW, 0);
    expect(file.refcount).toBe(refs + 1);
    iopt.unmapAll();
    expect(file.refcount).toBe(refs);
    file.put();
  });
});

describe("alignment over several domains and accesses", () => {
  it("iopt_calculate_iova_alignment takes the largest of all, whatever their order", () => {
    const { kernel, iopt } = setup();
    const amd = testDomain(kernel);
    const mock = testDomain(kernel, "mock");
    const third = testDomain(kernel, "mock");
    for (const d of [amd, mock, third]) iopt.tableAddDomain(d);
    iopt.tableRemoveDomain(third);
    expect(iopt.iovaAlignment).toBe(PAGE);
    iopt.tableRemoveDomain(amd);
    expect(iopt.iovaAlignment).toBe(0x800n);
    iopt.tableRemoveDomain(mock);
    const big = access(2n * PAGE).acc;
    const small = access(PAGE).acc;
    iopt.addAccess(big);
    iopt.addAccess(small);
    expect(iopt.iovaAlignment).toBe(2n * PAGE);
    iopt.removeAccess(small);
    iopt.removeAccess(big);
    expect(iopt.iovaAlignment).toBe(1n);
  });

  it("removing a domain or an access that is not there WARNs", () => {
    const { kernel, iopt } = setup();
    const d = testDomain(kernel);
    expect(() => iopt.tableRemoveDomain(d)).toThrow(KernelWarning);
    const { acc } = access(PAGE);
    acc.ioptAccessListId = 0;
    expect(() => iopt.removeAccess(acc)).toThrow(KernelWarning);
  });
});

describe("fault-injection sites of the io_pagetable", () => {
  it("are named and reached in the kernel's order, and a failure there changes nothing", () => {
    const { kernel, iopt, anon } = setup();
    const fault = kernel.current.fault;
    const sites = (fn: () => unknown) => {
      fault.arm(1000);
      try {
        fn();
      } finally {
        fault.disarm();
      }
      return fault.sitesHit.filter((s) => s.startsWith("iommufd:"));
    };
    const failAt = (nth: number, fn: () => unknown) => {
      fault.arm(nth);
      try {
        return errno(fn);
      } finally {
        fault.disarm();
      }
    };
    iopt.mapUserPages(ctx, 0x10000n, anon(4), 4n * PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0x14000n, anon(4), 4n * PAGE, RW, 0);
    // iopt_get_pages: one list element per area.
    let list: ReturnType<IoPagetable["getPages"]> = [];
    expect(sites(() => (list = iopt.getPages(0x12000n, 4n * PAGE)))).toEqual([
      "iommufd:pages_list",
      "iommufd:pages_list",
    ]);
    iopt.freePagesList(list);
    expect(failAt(2, () => iopt.getPages(0x12000n, 4n * PAGE))).toBe(ENOMEM);
    expect(iopt.areas().map((a) => a.pages?.refs)).toEqual([1, 1]);
    // iopt_reserve_iova and iopt_table_enforce_group_resv_regions.
    expect(sites(() => iopt.reserveIova(0x1000n, 0x1fffn, "r"))).toEqual([
      "iommufd:reserved_alloc",
    ]);
    iopt.removeReservedIova("r");
    expect(failAt(1, () => iopt.reserveIova(0x1000n, 0x1fffn, "r"))).toBe(ENOMEM);
    const regions = [{ start: 0x1000n, length: PAGE, type: IOMMU_RESV_RESERVED }];
    expect(sites(() => iopt.enforceGroupResvRegions("g", regions))).toEqual([
      "iommufd:resv_regions",
      "iommufd:reserved_alloc",
    ]);
    iopt.removeReservedIova("g");
    expect(failAt(1, () => iopt.enforceGroupResvRegions("g", regions))).toBe(EINVAL);
    expect(iopt.reservedRanges()).toEqual([]);
    // iopt_table_add_domain: the domains slot after the aperture's reservations.
    const d = testDomain(kernel, "mock");
    iopt.unmapAll();
    expect(sites(() => iopt.tableAddDomain(d)).slice(0, 3)).toEqual([
      "iommufd:reserved_alloc",
      "iommufd:reserved_alloc",
      "iommufd:domains_xa",
    ]);
    iopt.tableRemoveDomain(d);
    expect(failAt(3, () => iopt.tableAddDomain(d))).toBe(ENOMEM);
    expect([iopt.domainList, iopt.reservedRanges()]).toEqual([[], []]);
    // iopt_area_split: lhs then rhs.
    iopt.mapUserPages(ctx, 0x10000n, anon(4), 4n * PAGE, RW, 0);
    for (const nth of [1, 2]) {
      expect(failAt(nth, () => iopt.cutIova([0x11fffn]))).toBe(ENOMEM);
      expect(spans(iopt)).toEqual([[0x10000n, 0x13fffn]]);
    }
    expect(sites(() => iopt.cutIova([0x11fffn]))).toEqual([
      "iommufd:area_alloc",
      "iommufd:area_alloc",
    ]);
    expect(spans(iopt)).toHaveLength(2);
    iopt.unmapAll();
  });
});

describe("iopt_alloc_iova's holes", () => {
  it("checks each hole again after aligning its start, down to a hole of one byte", () => {
    const { kernel, iopt, anon } = setup();
    const exp = new TestExporter(kernel, 1n << 20n);
    const va = anon(2);
    // The hole 0x6000..0x9fff holds 0x4000 bytes, but not from its 0x4000-aligned start.
    iopt.mapUserPages(ctx, 0x4000n, va, 2n * PAGE, RW, 0);
    iopt.mapUserPages(ctx, 0xa000n, va, PAGE, RW, 0);
    expect(iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 0x4000n, RW, IOPT_ALLOC_IOVA)).toBe(0xc000n);
    iopt.unmapAll();
    // A hole of one byte at 0x1fff takes a one-byte mapping.
    iopt.mapUserPages(ctx, 0x1000n, va, 0xfffn, RW, 0);
    iopt.mapUserPages(ctx, 0x2000n, va, PAGE, RW, 0);
    expect(iopt.mapUserPages(ctx, 0n, va, 1n, RW, IOPT_ALLOC_IOVA)).toBe(0x1fffn);
    iopt.unmapAll();
  });

  it("an allowed range whose aligned start passes ULONG_MAX has no room (ENOSPC)", () => {
    const { iopt, anon } = setup();
    iopt.setAllowIova([{ start: U64_MAX - 0x1fffn, last: U64_MAX }]);
    expect(errno(() => iopt.mapUserPages(ctx, 0n, anon(3), 0x3000n, RW, IOPT_ALLOC_IOVA))).toBe(
      ENOSPC,
    );
    iopt.setAllowIova([]);
  });

  it("read-only file pages cannot be mapped writable by IOAS_COPY (EPERM)", () => {
    const { libc, iopt } = setup();
    const mfd = libc.memfdCreate("m", 0);
    expect(libc.ftruncate(mfd, PAGE)).toBe(0);
    iopt.mapFilePages(ctx, 0x10000n, mfd, 0n, PAGE, IOMMU_READ, 0);
    const list = iopt.getPages(0x10000n, PAGE);
    expect(errno(() => iopt.mapPages(list, PAGE, 0x20000n, RW, 0))).toBe(EPERM);
    iopt.freePagesList(list);
    iopt.unmapAll();
  });
});
