/**
 * The selftest dma-buf exporter (iommufd_test_dma_buf): a zeroed, physically contiguous buffer
 * of RAM exported as a dma-buf that no ordinary importer can map (map_dma_buf refuses with
 * EOPNOTSUPP), so only iommufd's private interconnect reaches it. Its `DmaBufIommufdMap` is
 * published under IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP, the name iommufd asks before vfio-pci's.
 * Although it is RAM, iommufd treats the range it gets as MMIO, like any interconnect range.
 *
 * DMABUF_GET allocates and exports; DMABUF_REVOKE flips the exporter's `revoked` flag under the
 * reservation lock and always notifies the importers (for un-revoke too); MD_CHECK_DMABUF
 * compares a mock domain's translations with the buffer's memory.
 */
import {
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufOps,
  IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
  type PhysVec,
  dmaBufExport,
  dmaBufFd,
  dmaBufGet,
  dmaBufMoveNotify,
  dmaBufPut,
} from "@x/dmabuf";
import {
  EINVAL,
  ENODEV,
  ENOMEM,
  EOPNOTSUPP,
  type Kernel,
  PAGE_SHIFT,
  PAGE_SIZE,
  PMD_ORDER,
  U64_MAX,
  fail,
} from "@x/kernel";
import { type IommuDomain, iommuIovaToPhys } from "@x/iommu-pgtable";
import { MOCK_DMABUF_MAX_PAGES } from "./iommufd-test.js";

/** struct iommufd_test_dma_buf */
interface IommufdTestDmaBuf {
  readonly kernel: Kernel;
  /** Head PFN of the folio holding the memory. */
  readonly pfn: number;
  readonly length: bigint;
  revoked: boolean;
}

const iommufdTestDmabufOps: DmaBufOps = {
  // Any device may attach: the buffer is only reachable through the private interconnect.
  attach() {},
  detach() {},
  mapDmaBuf() {
    return fail(EOPNOTSUPP, "selftest dma-buf has no sg_table path");
  },
  unmapDmaBuf() {},
  release(dmabuf: DmaBuf) {
    const priv = dmabuf.priv as IommufdTestDmaBuf;
    priv.kernel.mem.folioPut(priv.pfn);
  },
};

/** Is `dmabuf` one of ours (its ops are this exporter's table)? */
export function isIommufdTestDmabuf(dmabuf: DmaBuf): boolean {
  return dmabuf.ops === iommufdTestDmabufOps;
}

/**
 * IOMMU_TEST_OP_DMABUF_GET: the new dma-buf's fd (installed with `openFlags`, which also give
 * the file its access mode). Decision: when installing the fd fails (EMFILE) the buffer is put
 * again, so a failed call leaves nothing behind (the C code returns dma_buf_fd()'s error and
 * would keep the buffer).
 * @see iommufd_test_dmabuf_get
 */
export function iommufdTestDmabufGet(kernel: Kernel, openFlags: number, length: number): number {
  const len = BigInt(Math.ceil(length / PAGE_SIZE) * PAGE_SIZE);
  if (len === 0n || len > BigInt(PAGE_SIZE * MOCK_DMABUF_MAX_PAGES)) fail(EINVAL, "dmabuf length");
  if (kernel.shouldFail("iommufd_test_dmabuf_priv")) fail(ENOMEM, "dmabuf priv");
  // Decision: the physically contiguous kzalloc() is one PMD-order folio (the allocator's
  // orders are 0, PMD and PUD); 512 pages is exactly PMD order, so every legal length fits.
  const pfn = kernel.mem.allocFolio(PMD_ORDER, "iommufd_test_dmabuf_memory");
  const priv: IommufdTestDmaBuf = { kernel, pfn, length: len, revoked: false };
  let dmabuf: DmaBuf;
  try {
    dmabuf = dmaBufExport(kernel, {
      expName: "iommufd",
      ops: iommufdTestDmabufOps,
      size: len,
      flags: openFlags,
      priv,
    });
  } catch (e) {
    kernel.mem.folioPut(pfn);
    throw e;
  }
  try {
    return dmaBufFd(kernel, dmabuf, openFlags);
  } catch (e) {
    dmaBufPut(dmabuf);
    throw e;
  }
}

/**
 * IOMMU_TEST_OP_DMABUF_REVOKE: set the exporter's flag and notify every importer.
 * @see iommufd_test_dmabuf_revoke
 */
export function iommufdTestDmabufRevoke(kernel: Kernel, fd: number, revoked: boolean): void {
  const dmabuf = dmaBufGet(kernel, fd);
  try {
    if (!isIommufdTestDmabuf(dmabuf)) fail(EOPNOTSUPP, "not a selftest dma-buf");
    const priv = dmabuf.priv as IommufdTestDmaBuf;
    dmabuf.resv.with(() => {
      priv.revoked = revoked;
      dmaBufMoveNotify(dmabuf);
    });
  } finally {
    dmaBufPut(dmabuf);
  }
}

/**
 * The private interconnect hook: the buffer's one physical range, ENODEV while revoked,
 * EOPNOTSUPP for a buffer that is not ours (iommufd then asks vfio-pci).
 * @see iommufd_test_dma_buf_iommufd_map
 */
export function iommufdTestDmaBufIommufdMap(attach: DmaBufAttachment): PhysVec {
  const dmabuf = attach.dmabuf;
  dmabuf.resv.assertHeld();
  if (!isIommufdTestDmabuf(dmabuf)) fail(EOPNOTSUPP, "not a selftest dma-buf");
  const priv = dmabuf.priv as IommufdTestDmaBuf;
  if (priv.revoked) fail(ENODEV, "selftest dma-buf revoked");
  return { paddr: BigInt(priv.pfn) << BigInt(PAGE_SHIFT), len: priv.length };
}

/**
 * IOMMU_TEST_OP_MD_CHECK_DMABUF, past the mock-domain look-up: every IO page of
 * [iova, iova + length) in `domain` translates to the dma-buf's memory at `offset` onwards. The
 * fd must be a dma-buf (dma_buf_get's EBADF / EINVAL) of this exporter (EINVAL); the range must
 * be aligned to the domain's smallest page and end inside the buffer (EINVAL); a translation
 * that differs is EINVAL.
 * Decision: the op comes from the later multi-range series ("iommufd/selftest: Check
 * multi-phys DMA-buf scenarios"), whose buffer is an array of pages; this exporter keeps the
 * initial series' one contiguous allocation, so the expected address is its start plus the
 * offset, and DMABUF_GET still rounds the length up to pages.
 * @see iommufd_test_md_check_dmabuf
 */
export function iommufdTestMdCheckDmabuf(
  kernel: Kernel,
  domain: IommuDomain,
  cmd: { readonly dmabuf_fd: number; iova: bigint; length: bigint; offset: bigint },
): void {
  const dmabuf = dmaBufGet(kernel, cmd.dmabuf_fd);
  try {
    if (!isIommufdTestDmabuf(dmabuf)) fail(EINVAL, "not a selftest dma-buf");
    const priv = dmabuf.priv as IommufdTestDmaBuf;
    const bitmap = domain.pgsizeBitmap;
    const pageSize = bitmap & -bitmap;
    const { iova, length, offset } = cmd;
    const end = offset + length;
    if (iova % pageSize || length % pageSize || offset % pageSize || end > U64_MAX)
      fail(EINVAL, "check_dmabuf alignment");
    if (end > priv.length) fail(EINVAL, "check_dmabuf range past the buffer");
    const base = (BigInt(priv.pfn) << BigInt(PAGE_SHIFT)) + offset;
    for (let i = 0n; i < length; i += pageSize)
      if (iommuIovaToPhys(domain, iova + i) !== base + i)
        fail(EINVAL, `iova 0x${(iova + i).toString(16)} mismatch`);
  } finally {
    dmaBufPut(dmabuf);
  }
}

/** Publish the hook (module load of the selftest). */
export function registerMockDmabufHook(kernel: Kernel): void {
  kernel.symbols.exportSymbol(
    IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
    iommufdTestDmaBufIommufdMap,
    "iommufd_test",
  );
}
