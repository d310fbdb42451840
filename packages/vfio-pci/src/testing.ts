/**
 * @x/vfio-pci/testing: build choices a test flips and a product never does.
 * `VfioPciOptions.closeCleanupFirst` selects the close ordering that revokes the dma-bufs
 * before the device is disabled (drivers/vfio/pci/vfio_pci_core.c, vfio_pci_core_close_device)
 * instead of the baseline one; pass it to `loadVfioPci`.
 */
export type { VfioPciOptions } from "./vfio-pci.js";
