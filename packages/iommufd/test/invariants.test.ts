/**
 * The invariant checker sees broken states: each test builds a healthy state through the
 * io_pagetable calls (user memory, memfd files, dma-bufs, IOAS_COPY, accesses, attached
 * domains), checks that it passes, then breaks one thing the way a bug in
 * drivers/iommu/iommufd/pages.c or io_pagetable.c would, and expects the KernelWarning to name
 * that invariant (docs/invariants.md). Only the invariant's name is asserted: the rest of the
 * message is a diagnostic.
 */
import { type IommuDomain, iommuIovaToPhys } from "@x/iommu-pgtable";
import { Kernel, KernelWarning, Libc, PfnRuns } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { ioptAccessPinPages, ioptAccessUnpinPages } from "../src/access-core.js";
import { IOPT_PAGES_ACCOUNT_NONE, IOPT_PAGES_ACCOUNT_USER } from "../src/accounting.js";
import { IOPT_ALLOC_IOVA, type IoptAccess, IoPagetable } from "../src/io-pagetable.js";
import type { IoptArea } from "../src/io-pagetable-area.js";
import { iommufdInit } from "../src/ioctls.js";
import { IoptPagesAccess, type IoptPages } from "../src/pages.js";
import { type InvariantOptions, checkInvariants, totalNpinned } from "../src/testing.js";
import { PAGE, RW, TestExporter, ctx, scatteredBuffer, testDomain } from "./pages-helpers.js";

/** An unprivileged process (its pins are charged) mapping into io_pagetables it makes. */
function machine() {
  const kernel = new Kernel();
  iommufdInit(kernel);
  const libc = new Libc(kernel, kernel.newProcess(1000));
  kernel.current = libc.task;
  /** An IOAS without domains; with `largePages` false every page gets its own IOPTE. */
  const ioas = (largePages = false): IoPagetable => {
    const iopt = new IoPagetable(kernel);
    if (!largePages) iopt.disableLargePages();
    return iopt;
  };
  /** An IOAS with `n` attached AMDv1 domains. */
  const withDomains = (n = 1): { iopt: IoPagetable; domains: IommuDomain[] } => {
    const iopt = ioas();
    const domains = Array.from({ length: n }, () => testDomain(kernel));
    for (const d of domains) iopt.tableAddDomain(d);
    return { iopt, domains };
  };
  /** Anonymous memory, faulted last page first so no two pages are physically adjacent. */
  const buffer = (npages: number): bigint => scatteredBuffer(libc, npages);
  /** Map `npages` of fresh user memory; returns the area. */
  const mapUser = (iopt: IoPagetable, npages: number): IoptArea => {
    const iova = iopt.mapUserPages(
      ctx,
      0n,
      buffer(npages),
      BigInt(npages) * PAGE,
      RW,
      IOPT_ALLOC_IOVA,
    );
    return areaAt(iopt, iova);
  };
  /** IOAS_COPY of [iova, iova + length) of `src` into `dst`; returns the new area. */
  const copy = (src: IoPagetable, iova: bigint, length: bigint, dst: IoPagetable): IoptArea => {
    const list = src.getPages(iova, length);
    const to = dst.mapPages(list, length, 0n, RW, IOPT_ALLOC_IOVA);
    src.freePagesList(list);
    return areaAt(dst, to);
  };
  /** A dma-buf of `npages` mapped whole into `iopt`. */
  const mapDmabuf = (iopt: IoPagetable, npages = 8): { area: IoptArea; exp: TestExporter } => {
    const len = BigInt(npages) * PAGE;
    const exp = new TestExporter(kernel, len);
    const iova = iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, len, RW, IOPT_ALLOC_IOVA);
    return { area: areaAt(iopt, iova), exp };
  };
  /** An in-kernel access on `iopt` (iommufd_access_create with an unmap op). */
  const access = (iopt: IoPagetable): void => {
    const acc: IoptAccess = { iovaAlignment: PAGE, ioptAccessListId: -1, notifyUnmap: () => {} };
    iopt.addAccess(acc);
  };
  const pin = (iopt: IoPagetable, iova: bigint, length: bigint): void =>
    ioptAccessPinPages(iopt, iova, length, new PfnRuns(), 0);
  /** The checker passes and iommufd's pins are all the machine's pins. */
  const healthy = (iopts: IoPagetable[], opts?: InvariantOptions): Set<IoptPages> => {
    const seen = checkInvariants(iopts, opts);
    expect(totalNpinned(seen)).toBe(kernel.mem.totalPinned());
    return seen;
  };
  return {
    kernel,
    libc,
    ioas,
    withDomains,
    buffer,
    mapUser,
    copy,
    mapDmabuf,
    access,
    pin,
    healthy,
  };
}

function areaAt(iopt: IoPagetable, iova: bigint): IoptArea {
  const area = iopt.areas(iova, iova)[0];
  if (!area) throw new Error(`no area at ${iova.toString(16)}`);
  return area;
}

function pagesOf(area: IoptArea): IoptPages {
  if (!area.pages) throw new Error("area without pages");
  return area.pages;
}

/** The checker throws a KernelWarning naming invariant `inv` (I1 is not I10 or I11). */
function expectBroken(inv: string, iopts: IoPagetable[], opts?: InvariantOptions): void {
  let err: unknown;
  try {
    checkInvariants(iopts, opts);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(KernelWarning);
  expect((err as Error).message).toMatch(new RegExp(`invariant ${inv}\\b`));
}

const pfn = (iova: bigint): number => Number(iova >> 12n);

/** An IOPTE of one page removed behind the area's back. */
function dropIopte(d: IommuDomain, iova: bigint): void {
  expect(d.unmapPfns(pfn(iova), 1)).toBe(1);
}

/** An IOPTE of one page pointed at another physical page. */
function moveIopte(d: IommuDomain, iova: bigint, paddr: bigint): void {
  dropIopte(d, iova);
  d.mapPfns(pfn(iova), pfn(paddr), 1, RW);
}

/** The page of the area at page `k` (pages are not adjacent: see `buffer`). */
const pageIova = (area: IoptArea, k: number): bigint => area.iova + BigInt(k) * PAGE;

describe("healthy states pass", () => {
  it("user memory, a memfd and a dma-buf, copied, pinned by an access, in two domains", () => {
    const m = machine();
    const { iopt } = m.withDomains(2);
    const other = m.ioas();
    const user = m.mapUser(iopt, 16);
    const mfd = m.libc.memfdCreate("guest", 0);
    m.libc.ftruncate(mfd, 8n * PAGE);
    const file = areaAt(iopt, iopt.mapFilePages(ctx, 0n, mfd, 0n, 8n * PAGE, RW, IOPT_ALLOC_IOVA));
    const { area: dmabuf } = m.mapDmabuf(iopt);
    const copied = m.copy(iopt, user.iova, 16n * PAGE, other);
    m.copy(iopt, dmabuf.iova, 8n * PAGE, other);
    m.access(other);
    m.pin(other, copied.iova, 4n * PAGE);
    const seen = m.healthy([iopt, other]);
    expect(seen).toEqual(new Set([pagesOf(user), pagesOf(file), pagesOf(dmabuf)]));
    expect(m.kernel.mem.totalPinned()).toBe(24);
  });

  it("counts pins over domain spans that start before, cover, and touch the access spans", () => {
    const m = machine();
    const b = m.ioas();
    const { iopt: a } = m.withDomains();
    const area = m.mapUser(b, 16);
    // Access spans [3, 5] and [7, 12]; the copy fills pages [0, 9] in a's domain: the domain
    // span sorts first, holds [3, 5] wholly and overlaps [7, 12]. 13 pages pinned once each.
    m.access(b);
    m.pin(b, pageIova(area, 3), 3n * PAGE);
    m.pin(b, pageIova(area, 7), 6n * PAGE);
    m.copy(b, area.iova, 10n * PAGE, a);
    m.healthy([a, b]);
    expect(pagesOf(area).npinned).toBe(13);
    // A second pages object: domain span [0, 4] and access span [4, 9] share exactly page 4.
    const area2 = m.mapUser(b, 10);
    m.pin(b, pageIova(area2, 4), 6n * PAGE);
    m.copy(b, area2.iova, 5n * PAGE, a);
    m.healthy([a, b]);
    expect(pagesOf(area2).npinned).toBe(10);
  });

  it("an area at a page index past 0 (a copy of a later part) compares its own pages", () => {
    const m = machine();
    const b = m.ioas();
    const { iopt: a, domains } = m.withDomains();
    const src = m.mapUser(b, 100);
    const area = m.copy(b, pageIova(src, 80), 10n * PAGE, a);
    expect([area.index, area.lastIndex]).toEqual([80, 89]);
    m.healthy([a, b]);
    // 10 pages (at most fullCheckPages): every page is compared, so a middle page is seen.
    dropIopte(domains[0] as IommuDomain, pageIova(area, 5));
    expectBroken("I5", [a, b]);
  });
});

describe("I5: a user page's IOPTE changed or removed behind the area's back", () => {
  it("a hole in the only domain (the storage domain has the same hole)", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains();
    const area = m.mapUser(iopt, 8);
    m.healthy([iopt]);
    dropIopte(domains[0] as IommuDomain, pageIova(area, 3));
    expectBroken("I5", [iopt]);
  });

  it("a hole in the domain that is not the storage domain", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains(2);
    const area = m.mapUser(iopt, 8);
    const other = domains.find((d) => d !== area.storageDomain) as IommuDomain;
    m.healthy([iopt]);
    dropIopte(other, pageIova(area, 7));
    expectBroken("I5", [iopt]);
  });

  it("an IOPTE pointing at the neighbour page in the domain that is not the storage domain", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains(2);
    const area = m.mapUser(iopt, 8);
    const other = domains.find((d) => d !== area.storageDomain) as IommuDomain;
    m.healthy([iopt]);
    moveIopte(other, pageIova(area, 2), iommuIovaToPhys(other, pageIova(area, 3)));
    expectBroken("I5", [iopt]);
  });
});

describe("I5: an access-pinned page's IOPTE against the xarray", () => {
  it("the only domain's IOPTE moved off the frame the access pinned", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains();
    const area = m.mapUser(iopt, 8);
    m.access(iopt);
    m.pin(iopt, pageIova(area, 2), PAGE);
    const d = domains[0] as IommuDomain;
    m.healthy([iopt]);
    moveIopte(d, pageIova(area, 2), iommuIovaToPhys(d, pageIova(area, 3)));
    expectBroken("I5", [iopt]);
  });

  it("a copy starting inside a pinned page maps that frame plus the offset", () => {
    const m = machine();
    const b = m.ioas();
    const a = m.ioas(true);
    const d = testDomain(m.kernel, "mock");
    a.tableAddDomain(d);
    const src = m.mapUser(b, 4);
    m.access(b);
    m.pin(b, src.iova, PAGE);
    const area = m.copy(b, src.iova + 0x800n, 2n * PAGE, a);
    expect(area.pageOffset).toBe(0x800);
    m.healthy([a, b]);
    expect(iommuIovaToPhys(d, area.iova) & 0xfffn).toBe(0x800n);
  });
});

describe("which pages are compared (fullCheckPages)", () => {
  /** One domain, one area of `npages`, with page `k` of the domain removed. */
  function broken(npages: number, k: number) {
    const m = machine();
    const { iopt, domains } = m.withDomains();
    const area = m.mapUser(iopt, npages);
    m.healthy([iopt]);
    dropIopte(domains[0] as IommuDomain, pageIova(area, k));
    return iopt;
  }

  it("by default (64) every page of a 64-page area", () => {
    expectBroken("I5", [broken(64, 31)]);
  });

  it("by default only the first and last page of a 65-page area", () => {
    expect(() => checkInvariants([broken(65, 32)])).not.toThrow();
    expectBroken("I5", [broken(65, 0)]);
    expectBroken("I5", [broken(65, 64)]);
  });

  it("every page of an area of exactly fullCheckPages pages, the ends of one more", () => {
    expectBroken("I5", [broken(4, 2)], { fullCheckPages: 4 });
    expectBroken("I5", [broken(4, 1)], { fullCheckPages: 4 });
    expect(() => checkInvariants([broken(5, 2)], { fullCheckPages: 4 })).not.toThrow();
    expectBroken("I5", [broken(5, 0)], { fullCheckPages: 4 });
    expectBroken("I5", [broken(5, 4)], { fullCheckPages: 4 });
  });

  it("with fullCheckPages 0, the page of a one-page area and both of a two-page one", () => {
    expectBroken("I5", [broken(1, 0)], { fullCheckPages: 0 });
    expectBroken("I5", [broken(2, 0)], { fullCheckPages: 0 });
    expectBroken("I5", [broken(2, 1)], { fullCheckPages: 0 });
  });
});

describe("I1 / I2: dma-buf areas", () => {
  it("I2: the storage domain's IOPTE moved off the dma-buf's page, or removed", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains();
    const { area, exp } = m.mapDmabuf(iopt);
    const d = domains[0] as IommuDomain;
    m.healthy([iopt]);
    moveIopte(d, pageIova(area, 5), exp.base + 6n * PAGE);
    expectBroken("I2", [iopt]);
    dropIopte(d, pageIova(area, 5));
    expectBroken("I2", [iopt]);
  });

  it("I1: a revoked area mapped again in one domain", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains(2);
    const { area, exp } = m.mapDmabuf(iopt);
    exp.setRevoked(true);
    m.healthy([iopt]);
    (domains[1] as IommuDomain).mapPfns(pfn(pageIova(area, 7)), pfn(exp.base + 7n * PAGE), 1, RW);
    expectBroken("I1", [iopt]);
  });

  it("I2: a tracker entry dropped, or one domain tracked twice and the other not", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains(2);
    const { area } = m.mapDmabuf(iopt);
    const tracker = pagesOf(area).dmabuf?.tracker ?? [];
    m.healthy([iopt]);
    const first = tracker[0];
    tracker[1] = { area, domain: first?.domain as IommuDomain };
    expectBroken("I2", [iopt]);
    tracker.pop();
    expectBroken("I2", [iopt]);
    expect(domains).toHaveLength(2);
  });

  it("I2: an entry left for a domain the IOAS no longer has", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains(2);
    const { area } = m.mapDmabuf(iopt);
    const gone = domains[1] as IommuDomain;
    iopt.tableRemoveDomain(gone);
    m.healthy([iopt]);
    pagesOf(area).dmabuf?.tracker.push({ area, domain: gone });
    expectBroken("I2", [iopt]);
  });

  it("I2: an entry in the tracker of another dma-buf's pages", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains();
    const { area: a1 } = m.mapDmabuf(iopt);
    const { area: a2 } = m.mapDmabuf(iopt, 4);
    m.healthy([iopt]);
    pagesOf(a1).dmabuf?.tracker.push({ area: a2, domain: domains[0] as IommuDomain });
    expectBroken("I2", [iopt]);
  });

  it("I2: an entry left for an area dropped from the IOVA tree without its teardown", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const { area } = m.mapDmabuf(iopt);
    const lost = m.copy(iopt, area.iova, 8n * PAGE, iopt);
    expect(lost.pages).toBe(area.pages);
    m.healthy([iopt]);
    iopt.areaItree.remove(lost.node);
    expectBroken("I2", [iopt]);
  });

  it("I5 / I6 / I10: dma-buf pages with a pin, a charge or an access", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const pages = pagesOf(m.mapDmabuf(iopt).area);
    m.healthy([iopt]);
    pages.npinned = pages.lastNpinned = 1;
    expectBroken("I5", [iopt]);
    pages.npinned = pages.lastNpinned = 0;
    pages.accountMode = IOPT_PAGES_ACCOUNT_USER;
    expectBroken("I6", [iopt]);
    pages.accountMode = IOPT_PAGES_ACCOUNT_NONE;
    m.healthy([iopt]);
    pages.accessItree.insert(new IoptPagesAccess(0, 1).node);
    expectBroken("I10", [iopt]);
  });
});

describe("I7: storage domain", () => {
  it("a filled area missing from its pages' domains tree", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const area = m.mapUser(iopt, 4);
    m.healthy([iopt]);
    pagesOf(area).domainsItree.remove(area.pagesNode);
    expectBroken("I7", [iopt]);
  });

  it("a storage domain that is not attached to the area's IOAS", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const area = m.mapUser(iopt, 4);
    m.healthy([iopt]);
    area.storageDomain = testDomain(m.kernel);
    expectBroken("I7", [iopt]);
  });

  it("a storage domain left after the last domain went", () => {
    const m = machine();
    const { iopt, domains } = m.withDomains();
    m.mapUser(iopt, 4);
    m.healthy([iopt]);
    iopt.domainList.splice(0, 1);
    expect(domains).toHaveLength(1);
    expectBroken("I7", [iopt]);
  });

  it("a domain attached without filling the areas", () => {
    const m = machine();
    const iopt = m.ioas();
    m.mapUser(iopt, 4);
    m.healthy([iopt]);
    iopt.domainList.push(testDomain(m.kernel));
    expectBroken("I7", [iopt]);
  });
});

describe("I9 / I11 / I8: areas", () => {
  it("I9: an area without pages at a quiescent point", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const area = m.mapUser(iopt, 4);
    m.healthy([iopt]);
    area.pages = undefined;
    expectBroken("I9", [iopt]);
  });

  it("I11: an area whose IOVA, length or first-page offset is off iova_alignment", () => {
    const m = machine();
    const map = (iova: bigint, offset: bigint, length: bigint, align: bigint) => {
      const iopt = m.ioas(true);
      const uptr = m.buffer(4) + offset;
      expect(iopt.mapUserPages(ctx, iova, uptr, length, RW, 0)).toBe(iova);
      m.healthy([iopt]);
      iopt.iovaAlignment = align;
      return iopt;
    };
    // Only the IOVA, only the length, only the offset inside the first page.
    expectBroken("I11", [map(0x101000n, 0n, 2n * PAGE, 2n * PAGE)]);
    expectBroken("I11", [map(0x100000n, 0n, PAGE, 2n * PAGE)]);
    expectBroken("I11", [map(0x100000n, 0x800n, PAGE, PAGE)]);
    expect(() => checkInvariants([map(0x100000n, 0n, 2n * PAGE, 2n * PAGE)])).not.toThrow();
  });

  it("I8: an area referencing released pages", () => {
    const m = machine();
    const iopt = m.ioas();
    const area = m.mapUser(iopt, 4);
    m.healthy([iopt]);
    pagesOf(area).released = true;
    expectBroken("I8", [iopt]);
  });
});

describe("I5 / I6: pins and charges of user pages", () => {
  it("I6: pins not reconciled with the charge (npinned != last_npinned)", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const pages = pagesOf(m.mapUser(iopt, 4));
    m.healthy([iopt]);
    pages.lastNpinned--;
    expectBroken("I6", [iopt]);
  });

  it("I5: a pin added or dropped (and charged accordingly)", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const pages = pagesOf(m.mapUser(iopt, 4));
    m.healthy([iopt]);
    pages.npinned = pages.lastNpinned = 5;
    expectBroken("I5", [iopt]);
    pages.npinned = pages.lastNpinned = 3;
    expectBroken("I5", [iopt]);
  });

  it("I5: an access span left behind after its unpin", () => {
    const m = machine();
    const iopt = m.ioas();
    const area = m.mapUser(iopt, 8);
    m.access(iopt);
    m.pin(iopt, pageIova(area, 2), 2n * PAGE);
    ioptAccessUnpinPages(iopt, pageIova(area, 2), 2n * PAGE);
    m.healthy([iopt]);
    expect(pagesOf(area).npinned).toBe(0);
    pagesOf(area).accessItree.insert(new IoptPagesAccess(2, 3).node);
    expectBroken("I5", [iopt]);
  });

  it("I5: an access span left behind over pages a domain pins (the xarray does not hold them)", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const area = m.mapUser(iopt, 8);
    m.access(iopt);
    m.pin(iopt, pageIova(area, 1), PAGE);
    m.healthy([iopt]);
    expect(pagesOf(area).pinnedPfns.count).toBe(1);
    pagesOf(area).accessItree.insert(new IoptPagesAccess(4, 5).node);
    expectBroken("I5", [iopt]);
  });

  it("I5: a pinned PFN stored for a page no access covers", () => {
    const m = machine();
    const { iopt } = m.withDomains();
    const area = m.mapUser(iopt, 8);
    m.healthy([iopt]);
    const pages = pagesOf(area);
    pages.pinnedPfns.store(6, pfn(iommuIovaToPhys(area.storageDomain as IommuDomain, area.iova)));
    expectBroken("I5", [iopt]);
  });
});
