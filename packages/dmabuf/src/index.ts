/**
 * @x/dmabuf: the dma-buf core (export, fds, attachments, pin and map, move_notify, the
 * reservation lock) and the private interconnect iommufd uses to reach an exporter's physical
 * range. CONFIG_DMABUF_MOVE_NOTIFY is a build option whose Kconfig default (off) is what the
 * model runs; switching it is a test knob, so it lives in `@x/dmabuf/testing`.
 */
export {
  type DmaBufIommufdMap,
  IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
  type PhysVec,
  VFIO_PCI_DMA_BUF_IOMMUFD_MAP,
  dmaBufIommufdMap,
  symDmaBufIommufdMap,
} from "./dma-buf-interconnect.js";
export {
  DmaBuf,
  type DmaBufAttachOps,
  DmaBufAttachment,
  type DmaBufExportInfo,
  type DmaBufOps,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufExport,
  dmaBufFd,
  dmaBufGet,
  dmaBufList,
  dmaBufMapAttachment,
  dmaBufMapAttachmentUnlocked,
  dmaBufMoveNotify,
  dmaBufPin,
  dmaBufPut,
  dmaBufUnmapAttachment,
  dmaBufUnmapAttachmentUnlocked,
  dmaBufUnpin,
  getDmaBuf,
  isDmaBufFile,
  type DmaBufDevice,
} from "./dma-buf.js";
export {
  DMA_BIDIRECTIONAL,
  DMA_TO_DEVICE,
} from "./dma-direction.js";
export {
  RESERVATION_WW_CLASS,
  dmaResvInit,
} from "./dma-resv.js";
export { SgTable } from "./scatterlist.js";
