import { dmaBufExport, dmaBufFd, dmaBufPut, getDmaBuf } from "@x/dmabuf";
import {
  EADDRINUSE,
  EBADF,
  EINVAL,
  ENODEV,
  EOPNOTSUPP,
  Kernel,
  LockdepError,
  Mutex,
  PfnRuns,
} from "@x/kernel";
import { type IommuDomain, iommuIovaToPhys } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import { ioptAccessPinPages, ioptAccessRw } from "../src/access-core.js";
import { ioptAllocDmabufPages } from "../src/dmabuf-import.js";
import { setDmabufPinImporter } from "../src/testing.js";
import { IOPT_ALLOC_IOVA, IoPagetable } from "../src/io-pagetable.js";
import { IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE } from "../src/iommu-domain.js";
import { checkInvariants } from "../src/testing.js";
import { PAGES_DMABUF_MUTEX_CLASS } from "../src/pages.js";
import { setDmabufReadbackKind } from "../src/testing.js";
import {
  TestExporter,
  domainRuns,
  mappedBytes,
  syncCount,
  testDomain,
  RW,
  PAGE,
  ctx,
  errno,
} from "./pages-helpers.js";
import { iommufdInit } from "../src/ioctls.js";

function setup(ndomains: number, size = 16n * PAGE) {
  const kernel = new Kernel();
  iommufdInit(kernel);
  const iopt = new IoPagetable(kernel);
  const domains = Array.from({ length: ndomains }, () => testDomain(kernel));
  for (const d of domains) iopt.tableAddDomain(d);
  const exp = new TestExporter(kernel, size);
  const check = (...more: IoPagetable[]) => checkInvariants([iopt, ...more]);
  return { kernel, iopt, domains, exp, check };
}

function attachments(exp: TestExporter): number {
  return exp.dmabuf.resv.with(() => exp.dmabuf.attachments.length);
}

describe.each([0, 1, 2])("DMABUF map and revoke with %i domains", (n) => {
  it("maps MMIO without CACHE into every domain, tracks each pair, revokes all", () => {
    const { iopt, domains, exp, check } = setup(n);
    const fd = exp.fd();
    const iova = iopt.mapFilePages(ctx, 0n, fd, 0n, 16n * PAGE, RW, IOPT_ALLOC_IOVA);
    check();
    const area = iopt.areas()[0];
    const pages = area?.pages;
    expect(pages?.isDmabuf).toBe(true);
    expect(pages?.dmabuf?.tracker.length).toBe(n);
    expect(pages?.npinned).toBe(0);
    for (const d of domains) {
      expect(domainRuns(d)).toHaveLength(1);
      expect(domainRuns(d)[0]?.prot).toBe(IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO);
      expect(iommuIovaToPhys(d, iova + 5n * PAGE)).toBe(exp.base + 5n * PAGE);
    }
    exp.setRevoked(true);
    check();
    expect(pages?.dmabuf?.phys.len).toBe(0n);
    for (const d of domains) expect(mappedBytes(d)).toBe(0n);
    // Un-revoke: the old area stays dead.
    exp.setRevoked(false);
    check();
    for (const d of domains) expect(mappedBytes(d)).toBe(0n);
    const unmapsBefore = domains.map((d) => syncCount(d));
    expect(iopt.unmapIova(iova, 16n * PAGE)).toBe(16n * PAGE);
    expect(domains.map((d) => syncCount(d))).toEqual(unmapsBefore);
    expect(attachments(exp)).toBe(0);
    // Map again at the same fixed IOVA.
    expect(iopt.mapFilePages(ctx, iova, fd, 0n, 16n * PAGE, RW, 0)).toBe(iova);
    for (const d of domains) expect(mappedBytes(d)).toBe(16n * PAGE);
    check();
    iopt.unmapAll();
    check();
  });

  it("refuses a map while revoked with ENODEV and leaves nothing", () => {
    const { iopt, exp, check } = setup(n);
    const fd = exp.fd();
    exp.setRevoked(true);
    expect(errno(() => iopt.mapFilePages(ctx, 0n, fd, 0n, PAGE, RW, IOPT_ALLOC_IOVA))).toBe(ENODEV);
    expect(iopt.areas()).toHaveLength(0);
    expect(attachments(exp)).toBe(0);
    check();
  });

  it("copies share the pages and the tracker; revoke unmaps both IOASes", () => {
    const { kernel, iopt, domains, exp, check } = setup(n);
    const iopt2 = new IoPagetable(kernel);
    const d2 = testDomain(kernel);
    iopt2.tableAddDomain(d2);
    const iova = iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 8n * PAGE, RW, IOPT_ALLOC_IOVA);
    const list = iopt.getPages(iova, 8n * PAGE);
    const dst = iopt2.mapPages(list, 8n * PAGE, 0n, RW, IOPT_ALLOC_IOVA);
    iopt2.freePagesList(list);
    check(iopt2);
    const pages = iopt.areas()[0]?.pages;
    expect(iopt2.areas()[0]?.pages).toBe(pages);
    expect(pages?.dmabuf?.tracker.length).toBe(n + 1);
    expect(iommuIovaToPhys(d2, dst)).toBe(exp.base);
    exp.setRevoked(true);
    check(iopt2);
    expect(mappedBytes(d2)).toBe(0n);
    for (const d of domains) expect(mappedBytes(d)).toBe(0n);
    iopt.unmapAll();
    iopt2.unmapAll();
    expect(attachments(exp)).toBe(0);
  });
});

describe("DMABUF details", () => {
  it("a revoke between pages creation and fill: the map succeeds, tracked, nothing mapped", () => {
    const { kernel, iopt, domains, exp, check } = setup(2);
    const dmabuf = exp.dmabuf;
    getDmaBuf(dmabuf);
    const pages = ioptAllocDmabufPages(kernel, dmabuf, 0n, 0n, 4n * PAGE, true);
    exp.setRevoked(true);
    const list = [{ pages, area: undefined, startByte: 0n, length: 4n * PAGE }];
    const iova = iopt.mapPages(list, 4n * PAGE, 0n, RW, IOPT_ALLOC_IOVA);
    iopt.freePagesList(list);
    check();
    expect(pages.dmabuf?.tracker.length).toBe(2);
    for (const d of domains) expect(mappedBytes(d)).toBe(0n);
    expect(iopt.unmapIova(iova, 4n * PAGE)).toBe(4n * PAGE);
  });

  it("after a revoke no IOPTE of any domain points into the BAR (I1)", () => {
    const { kernel, iopt, domains, exp } = setup(2);
    const iopt2 = new IoPagetable(kernel);
    const d3 = testDomain(kernel);
    iopt2.tableAddDomain(d3);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 16n * PAGE, RW, IOPT_ALLOC_IOVA);
    iopt2.mapFilePages(ctx, 0n, exp.fd(), 4n * PAGE, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    exp.setRevoked(true);
    for (const d of [...domains, d3]) {
      for (const r of domainRuns(d)) {
        expect(r.paddr + r.length <= exp.base || r.paddr >= exp.base + exp.size).toBe(true);
      }
    }
    iopt.unmapAll();
    iopt2.unmapAll();
  });

  it("takes domains_rwsem -> iova_rwsem -> pages.mutex in that order", () => {
    const { kernel, iopt, exp } = setup(1);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, PAGE, RW, IOPT_ALLOC_IOVA);
    iopt.tableAddDomain(testDomain(kernel));
    const l = kernel.lockdep;
    expect(l.orderRecorded("iopt.domains_rwsem", "iopt.iova_rwsem")).toBe(true);
    expect(l.orderRecorded("iopt.iova_rwsem", PAGES_DMABUF_MUTEX_CLASS)).toBe(true);
    iopt.unmapAll();
  });

  it("adds a domain while revoked: tracked, nothing mapped; removal unmaps nothing", () => {
    const { kernel, iopt, exp, check } = setup(1);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    exp.setRevoked(true);
    const d = testDomain(kernel);
    iopt.tableAddDomain(d);
    check();
    expect(mappedBytes(d)).toBe(0n);
    expect(iopt.areas()[0]?.pages?.dmabuf?.tracker.length).toBe(2);
    iopt.tableRemoveDomain(d);
    expect(syncCount(d)).toBe(0);
    check();
    // A copy of the revoked area shares the pages: tracked in the new IOAS, nothing mapped.
    const iopt2 = new IoPagetable(kernel);
    const d2 = testDomain(kernel);
    iopt2.tableAddDomain(d2);
    const src = iopt.areas()[0];
    const list = iopt.getPages(src?.iova ?? 0n, 4n * PAGE);
    iopt2.mapPages(list, 4n * PAGE, 0n, RW, IOPT_ALLOC_IOVA);
    iopt.freePagesList(list);
    check(iopt2);
    expect(mappedBytes(d2)).toBe(0n);
    expect(src?.pages?.dmabuf?.tracker).toHaveLength(2);
    iopt2.unmapAll();
    iopt.unmapAll();
  });

  it("closing the user's fd changes nothing; the last unmap releases the buffer", () => {
    const { kernel, iopt, domains, exp, check } = setup(1);
    const fd = exp.fd();
    const iova = iopt.mapFilePages(ctx, 0n, fd, 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    kernel.current.process.files.close(fd);
    dmaBufPut(exp.dmabuf);
    expect(exp.dmabuf.released).toBe(false);
    expect(mappedBytes(domains[0] as IommuDomain)).toBe(4n * PAGE);
    check();
    iopt.unmapIova(iova, 4n * PAGE);
    expect(exp.dmabuf.released).toBe(true);
  });

  it("applies sub-page start offsets, with and without a 2 KiB-granule domain", () => {
    const kernel = new Kernel();
    const iopt = new IoPagetable(kernel);
    const exp = new TestExporter(kernel, 16n * PAGE);
    const fd = exp.fd();
    // No domain: any offset.
    const a = iopt.mapFilePages(ctx, 0n, fd, PAGE + 100n, 1000n, RW, IOPT_ALLOC_IOVA);
    expect(a % PAGE).toBe(100n);
    checkInvariants([iopt]);
    iopt.unmapAll();
    const d = testDomain(kernel, "mock");
    iopt.tableAddDomain(d);
    expect(errno(() => iopt.mapFilePages(ctx, 0n, fd, 100n, 4096n, RW, IOPT_ALLOC_IOVA))).toBe(
      EINVAL,
    );
    const iova = iopt.mapFilePages(ctx, 0x1000800n, fd, 2n * PAGE + 2048n, 2n * PAGE, RW, 0);
    expect(iommuIovaToPhys(d, iova)).toBe(exp.base + 2n * PAGE + 2048n);
    expect(iommuIovaToPhys(d, iova + PAGE)).toBe(exp.base + 3n * PAGE + 2048n);
    checkInvariants([iopt]);
    exp.setRevoked(true);
    checkInvariants([iopt]);
    iopt.unmapAll();
  });

  it("checks bounds: beyond the buffer is EINVAL, length 0 EINVAL", () => {
    const { iopt, exp } = setup(1, 4n * PAGE);
    const fd = exp.fd();
    expect(errno(() => iopt.mapFilePages(ctx, 0n, fd, 0n, 0n, RW, IOPT_ALLOC_IOVA))).toBe(EINVAL);
    expect(
      errno(() => iopt.mapFilePages(ctx, 0n, fd, 4n * PAGE, 4n * PAGE, RW, IOPT_ALLOC_IOVA)),
    ).toBe(EINVAL);
    expect(
      errno(() => iopt.mapFilePages(ctx, 0n, fd, 0n, 4n * PAGE + 1n, RW, IOPT_ALLOC_IOVA)),
    ).toBe(EINVAL);
    expect(iopt.areas()).toHaveLength(0);
  });

  it("refuses a run longer than MAX_NPFNS pages, a bad fd, and a domain that raises alignment", () => {
    const kernel = new Kernel();
    const iopt = new IoPagetable(kernel);
    const big = new TestExporter(kernel, 1n << 45n);
    const fd = big.fd();
    expect(
      errno(() => iopt.mapFilePages(ctx, 0n, fd, 0n, 0xffffffffn * PAGE, RW, IOPT_ALLOC_IOVA)),
    ).toBe(EINVAL);
    expect(errno(() => iopt.mapFilePages(ctx, 0n, 999, 0n, PAGE, RW, IOPT_ALLOC_IOVA))).toBe(EBADF);
    iopt.mapFilePages(ctx, 0n, fd, 100n, PAGE, RW, IOPT_ALLOC_IOVA);
    const d = testDomain(kernel);
    expect(errno(() => iopt.tableAddDomain(d))).toBe(EADDRINUSE);
    expect(iopt.domainList).toHaveLength(0);
    expect(iopt.reservedRanges()).toHaveLength(0);
    expect(iopt.areas()[0]?.pages?.dmabuf?.tracker).toHaveLength(0);
    checkInvariants([iopt]);
    iopt.unmapAll();
  });

  it("refuses multi-range and foreign buffers with EOPNOTSUPP", () => {
    const { kernel, iopt, exp } = setup(1);
    exp.nrRanges = 2;
    expect(errno(() => iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, PAGE, RW, IOPT_ALLOC_IOVA))).toBe(
      EOPNOTSUPP,
    );
    expect(attachments(exp)).toBe(0);
    // A buffer of another exporter, with no vfio-pci loaded to claim it.
    const ops = { mapDmaBuf: () => null, unmapDmaBuf: () => {}, release: () => {} };
    const foreign = dmaBufExport(kernel, { expName: "gpu", ops, size: 4n * PAGE, priv: {} });
    const ffd = dmaBufFd(kernel, foreign, 0);
    expect(errno(() => iopt.mapFilePages(ctx, 0n, ffd, 0n, PAGE, RW, IOPT_ALLOC_IOVA))).toBe(
      EOPNOTSUPP,
    );
    expect(foreign.resv.with(() => foreign.attachments.length)).toBe(0);
    expect(iopt.areas()).toHaveLength(0);
  });

  it("refuses split, access rw and access pin", () => {
    const { iopt, exp } = setup(0);
    const iova = iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    expect(errno(() => iopt.cutIova([iova + PAGE - 1n]))).toBe(EOPNOTSUPP);
    expect(errno(() => ioptAccessRw(iopt, iova, new Uint8Array(8), 0))).toBe(EINVAL);
    expect(errno(() => ioptAccessPinPages(iopt, iova, PAGE, new PfnRuns(), 0))).toBe(EINVAL);
    iopt.unmapAll();
  });

  it("records dma_resv -> pages.mutex and catches the inverse", () => {
    const { kernel, iopt, exp } = setup(1);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, PAGE, RW, IOPT_ALLOC_IOVA);
    expect(
      kernel.lockdep.orderRecorded("reservation_ww_class_mutex", PAGES_DMABUF_MUTEX_CLASS),
    ).toBe(true);
    const m = new Mutex(kernel.lockdep, PAGES_DMABUF_MUTEX_CLASS);
    m.lock();
    expect(() => exp.dmabuf.resv.lock()).toThrow(LockdepError);
    m.unlock();
    iopt.unmapAll();
  });

  it("reads domain-held PFNs back with CPU kind by default, MMIO with the option", () => {
    for (const kind of ["cpu", "mmio"] as const) {
      const { kernel, iopt, exp } = setup(1);
      setDmabufReadbackKind(kernel, kind);
      iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
      const d = testDomain(kernel);
      const { records } = kernel.trace.record(() => iopt.tableAddDomain(d));
      const prot = domainRuns(d)[0]?.prot ?? 0;
      if (kind === "cpu") {
        expect(prot).toBe(RW);
        expect(records.some((r) => r.name === "iommufd:dmabuf_cpu_kind_readback")).toBe(true);
      } else {
        expect(prot).toBe(IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO);
        expect(records).toHaveLength(0);
      }
      exp.setRevoked(true);
      expect(mappedBytes(d)).toBe(0n);
      iopt.unmapAll();
    }
  });

  it("pins the buffer as a pinning importer only with the option", () => {
    for (const pin of [false, true]) {
      const kernel = new Kernel();
      iommufdInit(kernel);
      setDmabufPinImporter(kernel, pin);
      const iopt = new IoPagetable(kernel);
      const exp = new TestExporter(kernel, 4n * PAGE, true);
      iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, PAGE, RW, IOPT_ALLOC_IOVA);
      expect(exp.pins).toBe(pin ? 1 : 0);
      iopt.unmapAll();
      expect(exp.pins).toBe(0);
    }
  });
});

describe("iopt_map_dmabuf unwind and the revoke trace", () => {
  it("a map the exporter refuses unpins again exactly what the pinning importer pinned", () => {
    for (const pin of [false, true]) {
      const kernel = new Kernel();
      iommufdInit(kernel);
      setDmabufPinImporter(kernel, pin);
      const iopt = new IoPagetable(kernel);
      const exp = new TestExporter(kernel, 4n * PAGE, true);
      exp.setRevoked(true);
      const fd = exp.fd();
      expect(errno(() => iopt.mapFilePages(ctx, 0n, fd, 0n, PAGE, RW, IOPT_ALLOC_IOVA))).toBe(
        ENODEV,
      );
      expect(exp.pins).toBe(0);
      expect(attachments(exp)).toBe(0);
      expect(iopt.areas()).toEqual([]);
    }
  });

  it("a revoke is traced with its tracked pairs; the un-revoke's notify finds it revoked", () => {
    const { kernel, iopt, exp } = setup(2);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, 4n * PAGE, RW, IOPT_ALLOC_IOVA);
    const events = (revoked: boolean) =>
      kernel.trace
        .record(() => exp.setRevoked(revoked))
        .records.filter((r) => r.name === "iommufd:dmabuf_revoke")
        .map((r) => r.data);
    expect(events(true)).toEqual([{ npairs: 2, alreadyRevoked: false }]);
    expect(events(false)).toEqual([{ npairs: 2, alreadyRevoked: true }]);
    iopt.unmapAll();
  });
});
