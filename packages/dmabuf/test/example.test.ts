// The README example, kept runnable (same code, plus the assertions its comments state).
import { ENODEV, EOPNOTSUPP, Kernel, Mutex, O_CLOEXEC, O_RDWR, fail } from "@x/kernel";
import { expect, it } from "vitest";
import {
  type DmaBufIommufdMap,
  type DmaBufOps,
  type PhysVec,
  RESERVATION_WW_CLASS,
  VFIO_PCI_DMA_BUF_IOMMUFD_MAP,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufExport,
  dmaBufFd,
  dmaBufGet,
  dmaBufIommufdMap,
  dmaBufMoveNotify,
  dmaBufPut,
} from "../src/index.js";

it("an exporter and an importer meet through the private interconnect", () => {
  // The importer lock here is a plain iopt_pages.mutex taken under the reservation lock; iommufd
  // gives DMABUF pages a class of their own for that (lockdep_set_class in
  // drivers/iommu/iommufd/pages.c), so this example checks the recorded graph alone.
  const kernel = new Kernel({ lockOrder: null });

  // ---- exporter (what vfio-pci does) ----
  const bar = { paddr: 0xf000_0000n, len: 0x10_0000n, revoked: false };
  const barOps: DmaBufOps = {
    mapDmaBuf: () => fail(EOPNOTSUPP, "only the private interconnect"),
    unmapDmaBuf: () => {},
    release: () => {},
  };
  const barMap: DmaBufIommufdMap = (attach) => {
    attach.dmabuf.resv.assertHeld();
    if (attach.dmabuf.ops !== barOps) fail(EOPNOTSUPP);
    if (bar.revoked) fail(ENODEV);
    return { paddr: bar.paddr, len: bar.len };
  };
  kernel.symbols.exportSymbol(VFIO_PCI_DMA_BUF_IOMMUFD_MAP, barMap, "vfio-pci");
  const exported = dmaBufExport(kernel, {
    expName: "vfio-pci",
    ops: barOps,
    size: bar.len,
    flags: O_RDWR,
    priv: bar,
  });
  const fd = dmaBufFd(kernel, exported, O_CLOEXEC); // user space gets the fd

  // ---- importer (what iommufd does) ----
  const pagesMutex = new Mutex(kernel.lockdep, "iopt_pages.mutex");
  const pages = { phys: { paddr: 0n, len: 0n } as PhysVec };
  const dmabuf = dmaBufGet(kernel, fd); // the importer's own reference
  const attach = dmaBufDynamicAttach(
    kernel,
    dmabuf,
    { name: "iommufd-global-device" },
    {
      allowPeer2peer: true,
      moveNotify: () => pagesMutex.with(() => (pages.phys.len = 0n)), // revoke: stop DMA
    },
    pages,
  );
  dmabuf.resv.with(() => {
    pages.phys = dmaBufIommufdMap(kernel, attach); // resolved by name, never imported
  });
  expect(pages.phys).toEqual({ paddr: 0xf000_0000n, len: 0x10_0000n });

  kernel.current.process.files.close(fd); // the importer's reference keeps the buffer
  expect(dmabuf.released).toBe(false);

  // The exporter revokes under the reservation lock (records dma_resv -> iopt_pages.mutex).
  dmabuf.resv.with(() => {
    bar.revoked = true;
    dmaBufMoveNotify(dmabuf);
  });
  expect(pages.phys.len).toBe(0n);
  expect(kernel.lockdep.orderRecorded(RESERVATION_WW_CLASS, "iopt_pages.mutex")).toBe(true);
  expect(() => dmabuf.resv.with(() => dmaBufIommufdMap(kernel, attach))).toThrow(
    expect.objectContaining({ errno: ENODEV }),
  );

  dmaBufDetach(dmabuf, attach);
  dmaBufPut(dmabuf); // last reference: barOps.release runs
  expect(dmabuf.released).toBe(true);
});
