import type { PciDev } from "./pci.js";

/**
 * struct p2pdma_provider: what a peer needs to reach one memory BAR. `busOffset` is the PCI bus
 * address minus the CPU physical address; a peer behind the same switch uses the bus address,
 * traffic through the host bridge uses the CPU physical address. Declared apart from p2pdma.ts,
 * as include/linux/pci-p2pdma.h is, so that pci.ts can hold one per BAR without importing the
 * code that reads it.
 * @see pcim_p2pdma_provider
 */
export interface P2pdmaProvider {
  readonly owner: PciDev;
  readonly busOffset: bigint;
}

/** enum pci_p2pdma_map_type */
export const PCI_P2PDMA_MAP_NOT_SUPPORTED = 1;
export const PCI_P2PDMA_MAP_BUS_ADDR = 2;
export const PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = 3;
