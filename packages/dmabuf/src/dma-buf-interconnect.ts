import {
  EOPNOTSUPP,
  type Kernel,
  KernelError,
  type SymbolKey,
  defineSymbol,
  fail,
  isKernelError,
} from "@x/kernel";
import type { DmaBufAttachment } from "./dma-buf.js";

/**
 * The private interconnect between the VFIO PCI exporter and the iommufd importer.
 *
 * iommufd cannot import vfio-pci (vfio-pci already depends on iommufd), so the exporter
 * publishes its map function in the kernel's symbol table under a well-known key and iommufd
 * looks it up by that key at map time, holding the symbol only for the call. This file owns the
 * contract both sides code against:
 *
 * - `DmaBufIommufdMap(attach): PhysVec`. Convention: the kernel's
 *   `int fn(struct dma_buf_attachment *, struct phys_vec *out)` returns its errno and fills
 *   `out`; here the errno is thrown, so the range is the return value: a fresh object the caller
 *   owns (iommufd stores it and zeroes `len` on revoke), and nothing is written on failure.
 * - Precondition: the caller holds the dma-buf's reservation lock.
 * - Checks, in this order: the buffer is not the callee's (its ops are not the callee's table)
 *   → EOPNOTSUPP; the buffer is revoked → ENODEV; it has more than one range → EOPNOTSUPP.
 * - The range is one CPU-physical MMIO range (no struct page, to be mapped uncached), and a
 *   `moveNotify` on the attachment means revoke, never move.
 *
 * The iommufd selftest exporter publishes the same signature under its own name and is asked
 * first, as iommufd asks its built-in test hook before vfio-pci: an EOPNOTSUPP from it means
 * "not mine" and the next symbol is tried.
 */

/** One physical range (struct phys_vec). */
export interface PhysVec {
  paddr: bigint;
  len: bigint;
}

/** @see vfio_pci_dma_buf_iommufd_map */
export type DmaBufIommufdMap = (attach: DmaBufAttachment) => PhysVec;

/** The symbol vfio-pci exports its `DmaBufIommufdMap` under. */
export const VFIO_PCI_DMA_BUF_IOMMUFD_MAP: SymbolKey<DmaBufIommufdMap> = defineSymbol(
  "vfio_pci_dma_buf_iommufd_map",
);

/** The symbol the iommufd selftest exporter exports its `DmaBufIommufdMap` under. */
export const IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP: SymbolKey<DmaBufIommufdMap> = defineSymbol(
  "iommufd_test_dma_buf_iommufd_map",
);

/**
 * Call the map function published under `sym`, holding the symbol for the duration of the
 * call. No such symbol (module not loaded, or built without it) → EOPNOTSUPP.
 * @see sym_vfio_pci_dma_buf_iommufd_map
 */
export function symDmaBufIommufdMap(
  kernel: Kernel,
  attach: DmaBufAttachment,
  sym: SymbolKey<DmaBufIommufdMap> = VFIO_PCI_DMA_BUF_IOMMUFD_MAP,
): PhysVec {
  attach.dmabuf.resv.assertHeld();
  const fn = kernel.symbols.symbolGet(sym);
  if (!fn) fail(EOPNOTSUPP, `${sym.name} is not available`);
  try {
    return fn(attach);
  } finally {
    kernel.symbols.symbolPut(sym);
  }
}

/**
 * Ask each symbol in turn (by default the selftest exporter, then vfio-pci); an EOPNOTSUPP from
 * one ("not my buffer" or "not loaded") passes the attachment to the next, and the last
 * answer stands. This is the importer's whole resolution step.
 */
export function dmaBufIommufdMap(
  kernel: Kernel,
  attach: DmaBufAttachment,
  syms: readonly SymbolKey<DmaBufIommufdMap>[] = [
    IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
    VFIO_PCI_DMA_BUF_IOMMUFD_MAP,
  ],
): PhysVec {
  let last = new KernelError(EOPNOTSUPP, "no dma-buf iommufd map provider");
  for (const sym of syms) {
    try {
      return symDmaBufIommufdMap(kernel, attach, sym);
    } catch (e) {
      if (!isKernelError(e, EOPNOTSUPP)) throw e;
      last = e;
    }
  }
  throw last;
}
