/**
 * @x/vfio-pci: PCI functions and their config space, the VFIO device cdev bound to iommufd,
 * and the vfio-pci DMA_BUF exporter with its revoke state machine. The close-ordering switch
 * of `loadVfioPci` (`VfioPciOptions.closeCleanupFirst`) is a test knob and is typed in
 * `@x/vfio-pci/testing`.
 */
export {
  vfioPciDmaRead,
  vfioPciDmaWrite,
} from "./pci-dma.js";
export {
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_D3hot,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
} from "./pci-regs.js";
export {
  type PciBarSpec,
  PciBus,
  PciDev,
  pciRoot,
  type PciDevSpec,
} from "./pci.js";
export {
  vfioDeviceFops,
  vfioDeviceFromFile,
} from "./vfio-main.js";
export { VfioPciCoreDevice } from "./vfio-pci-core.js";
export {
  VfioPciDmaBuf,
  vfioPciDmaBufOps,
} from "./vfio-pci-dmabuf.js";
export {
  VfioPciModule,
  loadVfioPci,
} from "./vfio-pci.js";
export {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_REGION_INFO_SIZE,
  encodeDmaBufFeature,
} from "./vfio-uapi.js";
