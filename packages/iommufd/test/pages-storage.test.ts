/**
 * iopt_pages lifetime, accounting and storage tiers, checked the way drivers/iommu/iommufd/pages.c
 * defines them: allocation bounds and npages, the reference count and release, the charge of
 * pfn_reader_update_pinned / update_unpinned, unfill cut points against shared pages and
 * accesses, and the DMABUF (area, domain) tracker.
 */
import {
  EINVAL,
  ENOMEM,
  EOVERFLOW,
  type Kernel,
  KernelWarning,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_HUGETLB,
  MFD_HUGE_2MB,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  RLIMIT_MEMLOCK,
  U64_MAX,
} from "@x/kernel";
import { describe, expect, it, vi } from "vitest";
import { ioptAccessPinPages, ioptAccessRw, ioptAccessUnpinPages } from "../src/access-core.js";
import { updatePinnedAccounting } from "../src/accounting.js";
import { IOPT_ALLOC_IOVA, type IoptAccess, IoPagetable } from "../src/io-pagetable.js";
import {
  IoptPages,
  PAGES_DMABUF_MUTEX_CLASS,
  ioptAllocFilePages,
  ioptAllocUserPages,
  ioptAreaAddDomain,
  ioptAreaRemoveDomain,
  ioptPutPages,
} from "../src/pages.js";
import { setTrackerMutant } from "../src/test-options.js";
import { setTempMemoryLimit } from "../src/testing.js";
import {
  PAGE,
  RW,
  TestExporter,
  ctx,
  domainRuns,
  errno,
  mappedBytes,
  testDomain,
  ioptMachine,
} from "./pages-helpers.js";

/** ioptMachine with the process current (USER accounting applies). */
function machine() {
  const m = ioptMachine();
  m.kernel.current = m.libc.task;
  return m;
}

function access(): IoptAccess {
  return { iovaAlignment: PAGE, ioptAccessListId: -1, notifyUnmap: () => {} };
}

/** The injectable sites `fn` reaches (fail-nth armed far away). */
function sitesOf(kernel: Kernel, fn: () => void): string[] {
  const fault = kernel.current.fault;
  fault.arm(100000);
  try {
    fn();
  } finally {
    fault.disarm();
  }
  return fault.sitesHit.filter((s) => s.startsWith("iommufd:"));
}

describe("iopt_alloc_user_pages / iopt_alloc_file_pages", () => {
  it("refuses length 0 and lengths above SIZE_MAX - PAGE_SIZE, uptr + length overflow first", () => {
    const { kernel } = machine();
    expect(errno(() => ioptAllocUserPages(kernel, 0x1000n, 0n, true))).toBe(EINVAL);
    expect(errno(() => ioptAllocUserPages(kernel, 0n, U64_MAX - PAGE + 1n, true))).toBe(EINVAL);
    expect(errno(() => ioptAllocUserPages(kernel, 1n, U64_MAX, true))).toBe(EOVERFLOW);
    // uptr + length == U64_MAX does not overflow; SIZE_MAX - PAGE_SIZE is the largest length.
    const big = ioptAllocUserPages(kernel, PAGE, U64_MAX - PAGE, true);
    expect(big.npages).toBe(2 ** 52 - 1);
    expect(big.uptr).toBe(PAGE);
  });

  it("counts the pages the byte range touches from the page-aligned uptr", () => {
    const { kernel } = machine();
    const cases: Array<[bigint, bigint, number]> = [
      [0x1000n, 0x1000n, 1],
      [0x1800n, 0x800n, 1],
      [0x1800n, 0x1000n, 2],
      [0x1fffn, 0x2n, 2],
    ];
    for (const [uptr, length, npages] of cases) {
      const p = ioptAllocUserPages(kernel, uptr, length, true);
      expect([p.uptr, p.npages]).toEqual([0x1000n, npages]);
    }
  });

  it("FILE pages start at the page holding the first byte and hold a file reference", () => {
    const { kernel, libc, iopt } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 4n * PAGE);
    const va = libc.mmap(0n, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    for (let i = 0; i < 4 * 4096; i += 256) libc.poke(va + BigInt(i), new Uint8Array([i >> 8]));
    const file = kernel.current.process.files.fget(fd);
    const refs = file.refcount;
    const p = ioptAllocFilePages(kernel, file, 0x800n, 0x1800n, 0x2000n, true);
    expect([p.start, p.npages, file.refcount]).toEqual([0x1000n, 3, refs + 1]);
    ioptPutPages(p);
    expect(p.released).toBe(true);
    expect(file.refcount).toBe(refs);
    file.put();
    // The same slice through an io_pagetable reads the file's bytes from offset 0x1800.
    const iova = iopt.mapFilePages(ctx, 0n, fd, 0x1800n, 0x2000n, RW, IOPT_ALLOC_IOVA);
    iopt.addAccess({ ...access(), iovaAlignment: 1n });
    const buf = new Uint8Array(0x2000);
    ioptAccessRw(iopt, iova, buf, 0);
    expect(buf).toEqual(libc.peek(va + 0x1800n, 0x2000));
  });
});

describe("iopt_pages reference count and iopt_release_pages", () => {
  it("WARNs on a get or put after the last put", () => {
    const { kernel } = machine();
    const p = ioptAllocUserPages(kernel, 0x1000n, PAGE, true);
    p.get();
    ioptPutPages(p);
    expect(p.released).toBe(false);
    ioptPutPages(p);
    expect(p.released).toBe(true);
    expect(() => ioptPutPages(p)).toThrow(KernelWarning);
    expect(() => p.get()).toThrow(KernelWarning);
  });

  it("WARNs when released with pins counted or PFNs left in the xarray", () => {
    const { kernel } = machine();
    const a = ioptAllocUserPages(kernel, 0x1000n, PAGE, true);
    a.npinned = 1;
    expect(() => ioptPutPages(a)).toThrow(KernelWarning);
    const b = ioptAllocUserPages(kernel, 0x1000n, PAGE, true);
    b.pinnedPfns.store(0, 1234);
    expect(() => ioptPutPages(b)).toThrow(KernelWarning);
  });

  it("iopt_pages_sub_npinned WARNs on underflow", () => {
    const { kernel } = machine();
    const p = ioptAllocUserPages(kernel, 0x1000n, 2n * PAGE, true);
    p.npinned = 1;
    expect(() => p.subNpinned(2)).toThrow(KernelWarning);
  });
});

describe("pfn_reader_update_pinned / update_unpinned", () => {
  it("charges only the difference to last_npinned, and nothing (no fail point) when equal", () => {
    const { kernel, libc, iopt, check, scattered } = machine();
    const user = libc.process.cred.user;
    const va = scattered(8);
    const iova = iopt.mapUserPages(ctx, 0n, va, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
    expect(user.lockedVm).toBe(0);
    const acc = access();
    iopt.addAccess(acc);
    ioptAccessPinPages(iopt, iova + 2n * PAGE, 2n * PAGE, new PfnRuns(), 0);
    expect(user.lockedVm).toBe(2);
    const d1 = testDomain(kernel);
    iopt.tableAddDomain(d1);
    expect(user.lockedVm).toBe(8);
    expect(libc.process.mm.pinnedVm).toBe(8);
    // Every page is already pinned: the second fill changes no count and skips the charge.
    const d2 = testDomain(kernel);
    expect(sitesOf(kernel, () => iopt.tableAddDomain(d2))).not.toContain("iommufd:update_pinned");
    expect(user.lockedVm).toBe(8);
    check();
    ioptAccessUnpinPages(iopt, iova + 2n * PAGE, 2n * PAGE);
    iopt.removeAccess(acc);
    iopt.unmapAll();
    expect(user.lockedVm).toBe(0);
  });

  it("returns the charge when npinned fell, without a fail point", () => {
    const { kernel, libc } = machine();
    const user = libc.process.cred.user;
    const p = ioptAllocUserPages(kernel, 0x1000n, 4n * PAGE, true);
    updatePinnedAccounting(p, 3, true);
    p.lastNpinned = 3;
    p.npinned = 1;
    expect(sitesOf(kernel, () => p.mutex.with(() => p.updatePinned()))).toEqual([]);
    expect([user.lockedVm, p.lastNpinned]).toEqual([1, 1]);
    p.npinned = 2;
    expect(() => p.updateUnpinned()).toThrow(KernelWarning);
  });

  it("refuses a charge past RLIMIT_MEMLOCK counting only the new pins", () => {
    const { libc, iopt, scattered } = machine();
    libc.process.setRlimit(RLIMIT_MEMLOCK, 8 * 4096);
    const va = scattered(8);
    const iova = iopt.mapUserPages(ctx, 0n, va, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
    iopt.addAccess(access());
    ioptAccessPinPages(iopt, iova, 6n * PAGE, new PfnRuns(), 0);
    // 6 + 8 would pass the limit; the fill adds 2 new pins.
    iopt.tableAddDomain(testDomain(iopt.kernel));
    expect(libc.process.cred.user.lockedVm).toBe(8);
  });
});

describe("__iopt_area_unfill_domain", () => {
  it("unmaps a tail another IOAS's copy keeps pinned", () => {
    const { kernel, iopt, check, scattered } = machine();
    const d1 = testDomain(kernel);
    iopt.tableAddDomain(d1);
    const va = scattered(10);
    const iova = iopt.mapUserPages(ctx, 0n, va, 10n * PAGE, RW, IOPT_ALLOC_IOVA);
    const other = new IoPagetable(kernel);
    other.tableAddDomain(testDomain(kernel));
    const list = iopt.getPages(iova + 8n * PAGE, 2n * PAGE);
    other.mapPages(list, 2n * PAGE, 0n, RW, IOPT_ALLOC_IOVA);
    iopt.freePagesList(list);
    expect(iopt.unmapIova(iova, 10n * PAGE)).toBe(10n * PAGE);
    expect(mappedBytes(d1)).toBe(0n);
    expect(kernel.mem.totalPinned()).toBe(2);
    check(other);
    other.unmapAll();
    expect(kernel.mem.totalPinned()).toBe(0);
  });

  it("reads past a hole only when the batch reached its end, not when the batch was full", () => {
    // A one-run batch (temp memory of 16 bytes) and a hole [0, 22] before an access-held page
    // 23 whose PFN directly follows page 0's: a full batch at page 0 must not take page 23's
    // PFN as page 1's.
    const { kernel, libc, iopt, check } = machine();
    setTempMemoryLimit(kernel, 16);
    const n = 24;
    const va = libc.mmap(0n, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (const i of [0, n - 1, ...Array.from({ length: n - 2 }, (_, k) => n - 2 - k)])
      libc.poke(va + BigInt(i) * PAGE, new Uint8Array([i]));
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    const iova = iopt.mapUserPages(ctx, 0n, va, BigInt(n) * PAGE, RW, IOPT_ALLOC_IOVA);
    const [p0, p23] = [0n, 23n].map((i) => domainRuns(d).find((r) => r.iova === iova + i * PAGE));
    expect(p23?.paddr).toBe((p0?.paddr ?? 0n) + PAGE);
    iopt.addAccess(access());
    const out = new PfnRuns();
    ioptAccessPinPages(iopt, iova + 23n * PAGE, PAGE, out, 0);
    iopt.tableRemoveDomain(d);
    expect(mappedBytes(d)).toBe(0n);
    expect(kernel.mem.totalPinned()).toBe(1);
    check();
    ioptAccessUnpinPages(iopt, iova + 23n * PAGE, PAGE);
    expect(kernel.mem.totalPinned()).toBe(0);
  });

  it("cannot fail: an unmap reaches no injectable point", () => {
    const { kernel, iopt, scattered } = machine();
    iopt.tableAddDomain(testDomain(kernel));
    const va = scattered(8);
    const iova = iopt.mapUserPages(ctx, 0n, va, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
    expect(sitesOf(kernel, () => iopt.unmapIova(iova, 8n * PAGE))).toEqual([]);
    expect(kernel.mem.totalPinned()).toBe(0);
  });

  it("keeps two access ranges inside one huge leaf pinned while the leaf goes whole", () => {
    const { kernel, libc, iopt, check } = machine();
    libc.process.setRlimit(RLIMIT_MEMLOCK, Number.MAX_SAFE_INTEGER);
    const size = 2n << 20n;
    const fd = libc.memfdCreate("guest", MFD_HUGETLB | MFD_HUGE_2MB);
    libc.ftruncate(fd, 2n * size);
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    const iova = iopt.mapFilePages(ctx, size, fd, 0n, 2n * size, RW, 0);
    iopt.addAccess(access());
    for (const at of [100n, 200n])
      ioptAccessPinPages(iopt, iova + at * PAGE, 3n * PAGE, new PfnRuns(), 0);
    expect(kernel.mem.totalPinned()).toBe(1024);
    iopt.tableRemoveDomain(d);
    expect(mappedBytes(d)).toBe(0n);
    expect(kernel.mem.totalPinned()).toBe(6);
    check();
    for (const at of [100n, 200n]) ioptAccessUnpinPages(iopt, iova + at * PAGE, 3n * PAGE);
    expect(kernel.mem.totalPinned()).toBe(0);
  });
});

describe("DMABUF (area, domain) tracker", () => {
  function dmabufWorld() {
    const m = machine();
    const exp = new TestExporter(m.kernel, 16n * PAGE);
    const d1 = testDomain(m.kernel);
    const d2 = testDomain(m.kernel);
    return { ...m, exp, d1, d2 };
  }
  const pairs = (p: IoptPages) => p.dmabuf?.tracker.map((t) => [t.area, t.domain]);

  it("tracks each (area, domain) pair at map: an injectable allocation per pair", () => {
    const { kernel, iopt, exp, d1, d2 } = dmabufWorld();
    iopt.tableAddDomain(d1);
    iopt.tableAddDomain(d2);
    const fd = exp.fd();
    const sites = sitesOf(kernel, () => {
      iopt.mapFilePages(ctx, 0n, fd, 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    });
    expect(sites.filter((s) => s === "iommufd:dmabuf_track")).toHaveLength(2);
    const area = iopt.areas()[0];
    expect(pairs(area?.pages as IoptPages)).toEqual([
      [area, d1],
      [area, d2],
    ]);
  });

  it("a failed second track entry drops the first: ENOMEM, nothing attached", () => {
    const { kernel, iopt, exp, d1, d2 } = dmabufWorld();
    iopt.tableAddDomain(d1);
    iopt.tableAddDomain(d2);
    const fd = exp.fd();
    const fault = kernel.current.fault;
    fault.arm(100000);
    try {
      iopt.unmapIova(iopt.mapFilePages(ctx, 0n, fd, 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA), 4n * PAGE);
    } finally {
      fault.disarm();
    }
    fault.arm(fault.sitesHit.lastIndexOf("iommufd:dmabuf_track") + 1);
    let e = 0;
    try {
      e = errno(() => iopt.mapFilePages(ctx, 0n, fd, 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA));
    } finally {
      fault.disarm();
    }
    expect(e).toBe(ENOMEM);
    expect(iopt.areas()).toHaveLength(0);
    expect(exp.dmabuf.resv.with(() => exp.dmabuf.attachments.length)).toBe(0);
  });

  it("removing a domain unmaps it and drops exactly its pair", () => {
    const { kernel, iopt, exp, d1, d2 } = dmabufWorld();
    iopt.tableAddDomain(d1);
    iopt.tableAddDomain(d2);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    const area = iopt.areas()[0];
    const pages = area?.pages as IoptPages;
    iopt.tableRemoveDomain(d2);
    expect(mappedBytes(d2)).toBe(0n);
    expect(domainRuns(d1).map((r) => [r.paddr, r.length])).toEqual([[exp.base, 4n * PAGE]]);
    expect(pairs(pages)).toEqual([[area, d1]]);
    // Tracking a pair twice is a WARN.
    expect(() => ioptAreaAddDomain(area!, pages, d1)).toThrow(/already tracked/);
    expect(pairs(pages)).toEqual([[area, d1]]);
    // Revoked (nothing to unmap), untracking a pair that was never tracked is a WARN too, and
    // the tracker keeps its entries.
    exp.setRevoked(true);
    expect(mappedBytes(d1)).toBe(0n);
    expect(() => ioptAreaRemoveDomain(area!, pages, testDomain(kernel), d1)).toThrow(
      /untracked pair/,
    );
    expect(pairs(pages)).toEqual([[area, d1]]);
  });

  it.each([true, false])(
    "a domain add failing at its last area undoes the earlier ones (first domain: %s)",
    (first) => {
      // iopt_fill_domain's unwind: every earlier area leaves the new domain, its (area, domain)
      // pair is untracked, and, when it was the only domain, the area leaves domains_itree so
      // its pins go.
      const { kernel, iopt, exp, d1, d2, check, scattered } = dmabufWorld();
      if (!first) iopt.tableAddDomain(d1);
      iopt.mapUserPages(ctx, 0x100000n, scattered(4), 4n * PAGE, RW, 0);
      iopt.mapFilePages(ctx, 0x200000n, exp.fd(), 0n, 4n * PAGE, RW, 0);
      iopt.mapUserPages(ctx, 1n << 32n, scattered(4), 4n * PAGE, RW, 0);
      const dmabufPages = iopt.areas()[1]?.pages as IoptPages;
      const before = () =>
        JSON.stringify([
          kernel.mem.totalPinned(),
          domainRuns(d1).map((r) => `${r.iova}:${r.paddr}:${r.length}`),
          dmabufPages.dmabuf?.tracker.map((t) => t.domain === d1),
          iopt.areas().map((a) => a.storageDomain === d1),
        ]);
      const was = before();
      const fault = kernel.current.fault;
      fault.arm(100000);
      try {
        iopt.tableAddDomain(d2);
      } finally {
        fault.disarm();
      }
      const last = fault.sitesHit.length;
      iopt.tableRemoveDomain(d2);
      expect(before()).toBe(was);
      // A fresh domain reaches the same points (d2 kept its page-table levels).
      const d3 = testDomain(kernel);
      fault.arm(last);
      let e = 0;
      try {
        e = errno(() => iopt.tableAddDomain(d3));
      } finally {
        fault.disarm();
      }
      expect(e).toBe(ENOMEM);
      expect(mappedBytes(d3)).toBe(0n);
      expect(before()).toBe(was);
      check();
      iopt.unmapAll();
      expect(kernel.mem.totalPinned()).toBe(0);
    },
  );

  it("release WARNs when the tracker still holds pairs", () => {
    const { iopt, exp, d1 } = dmabufWorld();
    iopt.tableAddDomain(d1);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    const pages = iopt.areas()[0]?.pages as IoptPages;
    // A pair of some other area, left behind.
    pages.dmabuf?.tracker.push({ area: {} as never, domain: d1 });
    expect(() => iopt.unmapAll()).toThrow(KernelWarning);
  });

  it("the tracker mutant drops pages.mutex between mapping a pair and tracking it; off, never", () => {
    for (const mutant of [false, true]) {
      const { kernel, iopt, exp, d1, d2 } = dmabufWorld();
      setTrackerMutant(kernel, mutant);
      iopt.tableAddDomain(d1);
      const windows: string[] = [];
      const created = vi.spyOn(IoptPages.prototype, "setDmabufClass");
      kernel.lockdep.onBoundary = (kind, lock) => {
        if (kind !== "release" || lock.className !== PAGES_DMABUF_MUTEX_CLASS) return;
        // The area gets its pages only after the fill: take them from their creation.
        const pages = created.mock.contexts[0] as IoptPages | undefined;
        const tracker = pages?.dmabuf?.tracker ?? [];
        for (const [name, d] of [
          ["d1", d1],
          ["d2", d2],
        ] as const)
          if (mappedBytes(d) && !tracker.some((t) => t.domain === d)) windows.push(name);
      };
      try {
        iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
        iopt.tableAddDomain(d2);
      } finally {
        kernel.lockdep.onBoundary = undefined;
        created.mockRestore();
      }
      expect(windows).toEqual(mutant ? ["d1", "d2"] : []);
    }
  });

  it("the tracker mutant still ends with every pair tracked, and leaves USER pages alone", () => {
    const { kernel, iopt, exp, d1, d2, scattered } = dmabufWorld();
    setTrackerMutant(kernel, true);
    iopt.tableAddDomain(d1);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    iopt.mapUserPages(ctx, 0n, scattered(2), 2n * PAGE, RW, IOPT_ALLOC_IOVA);
    const area = iopt.areas().find((a) => a.pages?.dmabuf);
    expect(pairs(area?.pages as IoptPages)).toEqual([[area, d1]]);
    iopt.tableAddDomain(d2);
    expect(pairs(area?.pages as IoptPages)).toEqual([
      [area, d1],
      [area, d2],
    ]);
    iopt.unmapAll();
  });
});
