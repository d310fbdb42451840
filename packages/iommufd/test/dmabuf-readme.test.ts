/**
 * The "Revoke protocol" example of the README, runnable: a revocable dma-buf exporter, a map
 * through IOMMU_IOAS_MAP_FILE's core, a revoke, and the unmap / remap user space must do.
 */
import {
  IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
  dmaBufExport,
  dmaBufFd,
  dmaBufMoveNotify,
} from "@x/dmabuf";
import {
  PT_FEAT_DYNAMIC_TOP,
  amdv1Format,
  iommuIovaToPhys,
  iommuptDomainAlloc,
} from "@x/iommu-pgtable";
import { ENODEV, EOPNOTSUPP, Kernel, O_CLOEXEC, fail } from "@x/kernel";
import { expect, it } from "vitest";
import {
  IOMMU_CACHE,
  IOMMU_READ,
  IOMMU_WRITE,
  IOPT_PAGES_ACCOUNT_USER,
  IoPagetable,
} from "../src/index.js";

it("README: revoke protocol", () => {
  const kernel = new Kernel();
  // An exporter with one 2 MiB BAR whose dma-buf can be revoked (like vfio-pci's).
  const bar = kernel.mem.addMmioRegion("bar0", 2n << 20n);
  const state = { revoked: false };
  const ops = { mapDmaBuf: () => fail(EOPNOTSUPP), unmapDmaBuf: () => {}, release: () => {} };
  const dmabuf = dmaBufExport(kernel, { expName: "demo", ops, size: bar.size, priv: state });
  kernel.symbols.exportSymbol(IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP, () => {
    if (state.revoked) fail(ENODEV);
    return { paddr: bar.base, len: bar.size };
  });
  const revoke = (revoked: boolean) =>
    dmabuf.resv.with(() => {
      state.revoked = revoked;
      dmaBufMoveNotify(dmabuf);
    });

  // The IOAS of a VMM with one attached domain; map the BAR for P2P at a fixed IOVA.
  const iopt = new IoPagetable(kernel);
  const domain = iommuptDomainAlloc({
    format: amdv1Format,
    features: 1 << PT_FEAT_DYNAMIC_TOP,
    startingLevel: 2,
  });
  iopt.tableAddDomain(domain);
  const ctx = { accountMode: IOPT_PAGES_ACCOUNT_USER } as const;
  const fd = dmaBufFd(kernel, dmabuf, O_CLOEXEC);
  const IOVA = 1n << 32n;
  const prot = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE;
  iopt.mapFilePages(ctx, IOVA, fd, 0n, bar.size, prot, 0);
  expect(iommuIovaToPhys(domain, IOVA + 0x1234n)).toBe(bar.base + 0x1234n);

  // The exporter revokes (FLR, memory decode off, ...): iommufd unmaps at once. No remap ever.
  revoke(true);
  expect(iommuIovaToPhys(domain, IOVA)).toBe(0n);
  revoke(false);
  expect(iommuIovaToPhys(domain, IOVA)).toBe(0n); // the old mapping stays dead

  // User space unmaps the dead area (succeeds, nothing left to unmap) and maps the fd again.
  expect(iopt.unmapIova(IOVA, bar.size)).toBe(bar.size);
  iopt.mapFilePages(ctx, IOVA, fd, 0n, bar.size, prot, 0);
  expect(iommuIovaToPhys(domain, IOVA)).toBe(bar.base);

  // Mapping while revoked is refused.
  revoke(true);
  iopt.unmapIova(IOVA, bar.size);
  expect(() => iopt.mapFilePages(ctx, IOVA, fd, 0n, bar.size, prot, 0)).toThrow(/^ENODEV/);
});
