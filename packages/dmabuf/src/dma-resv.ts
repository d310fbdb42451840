import { type Kernel, WwMutex } from "@x/kernel";

/**
 * The reservation object of a dma-buf (struct dma_resv). Fences are not modelled: what the
 * DMA stack observes of a dma_resv is its lock, a ww_mutex of one global class, so that is all
 * it is here.
 *
 * Lock order: the reservation lock is the outermost lock of an importer's revoke path:
 * `dma_resv -> importer locks` (e.g. iommufd's pages mutex). Exporters take it inside their own
 * device locks (VFIO: memory_lock -> dma_resv).
 */
export type DmaResv = WwMutex;

/** Lockdep class of every reservation lock (reservation_ww_class). */
export const RESERVATION_WW_CLASS = "reservation_ww_class_mutex";

/** @see dma_resv_init */
export function dmaResvInit(kernel: Kernel): DmaResv {
  return new WwMutex(kernel.lockdep, RESERVATION_WW_CLASS);
}
