/**
 * @x/vfio-pci: PCI functions and their config space, the VFIO device cdev bound to iommufd,
 * the vfio-pci DMA_BUF exporter with its revoke state machine, and the device's interrupts
 * (INTx / MSI / MSI-X / ERR / REQ to eventfds, with the device-side hooks that raise them). The close-ordering switch
 * of `loadVfioPci` (`VfioPciOptions.closeCleanupFirst`) is a test knob and is typed in
 * `@x/vfio-pci/testing`.
 */
export {
  vfioPciDmaRead,
  vfioPciDmaWrite,
} from "./pci-dma.js";
export {
  IRQ_NOTCONNECTED,
  pciIntxAssert,
  pciIntxDeassert,
  pciMsiRaise,
} from "./pci-irq.js";
export { vfioPciAerErrDetected } from "./vfio-pci-intrs.js";
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
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_INFO_SIZE,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_DEVID_NOT_OWNED,
  VFIO_PCI_DEVID_OWNED,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_PCI_REQ_IRQ_INDEX,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_SIZE,
  type VfioInfoCap,
  decodeHotResetInfo,
  decodeInfoCaps,
  encodeDmaBufFeature,
  encodeIrqSet,
  vfio_info_cap_header,
  vfio_irq_info,
  vfio_irq_set,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
  vfio_region_info,
} from "./vfio-uapi.js";
