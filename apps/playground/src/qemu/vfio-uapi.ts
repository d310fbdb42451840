/**
 * The VFIO device uAPI as QEMU fills it (include/uapi/linux/vfio.h): the IRQ, hot-reset and
 * region-info-capability layouts the QEMU model writes byte by byte. All fields little-endian.
 */
import { Struct, VFIO_BASE, VFIO_TYPE, _IO } from "@x/iommufd";

export const VFIO_DEVICE_GET_IRQ_INFO = _IO(VFIO_TYPE, VFIO_BASE + 9);
export const VFIO_DEVICE_SET_IRQS = _IO(VFIO_TYPE, VFIO_BASE + 10);
export const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12);
export const VFIO_DEVICE_PCI_HOT_RESET = _IO(VFIO_TYPE, VFIO_BASE + 13);

export const VFIO_PCI_INTX_IRQ_INDEX = 0;
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
export const VFIO_PCI_ERR_IRQ_INDEX = 3;
export const VFIO_PCI_REQ_IRQ_INDEX = 4;

export const VFIO_IRQ_INFO_EVENTFD = 1 << 0;
export const VFIO_IRQ_INFO_MASKABLE = 1 << 1;
export const VFIO_IRQ_INFO_AUTOMASKED = 1 << 2;
export const VFIO_IRQ_INFO_NORESIZE = 1 << 3;

export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
export const VFIO_IRQ_SET_DATA_BOOL = 1 << 1;
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
export const VFIO_IRQ_SET_ACTION_MASK = 1 << 3;
export const VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4;
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;

export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;
export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
export const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;

export const VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1 << 0;
export const VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1 << 1;
/** A dependent function bound to the caller's iommufd without a devid of its own. */
export const VFIO_PCI_DEVID_OWNED = 0;

export const vfio_device_info = new Struct("vfio_device_info", 24, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  num_regions: [8, "u32"],
  num_irqs: [12, "u32"],
  cap_offset: [16, "u32"],
  pad: [20, "u32"],
});

export const vfio_region_info = new Struct("vfio_region_info", 32, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  index: [8, "u32"],
  cap_offset: [12, "u32"],
  size: [16, "u64"],
  offset: [24, "u64"],
});

export const vfio_irq_info = new Struct("vfio_irq_info", 16, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  index: [8, "u32"],
  count: [12, "u32"],
});

/** The 20-byte header of struct vfio_irq_set; `data[]` follows. */
export const VFIO_IRQ_SET_HDR = 20;

/** struct vfio_irq_set with one s32 eventfd per vector (or none for DATA_NONE). */
export function encodeIrqSet(
  flags: number,
  index: number,
  start: number,
  count: number,
  fds: readonly number[] = [],
): Uint8Array {
  const argsz = VFIO_IRQ_SET_HDR + 4 * fds.length;
  const buf = new Uint8Array(argsz);
  const v = new DataView(buf.buffer);
  v.setUint32(0, argsz, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, index, true);
  v.setUint32(12, start, true);
  v.setUint32(16, count, true);
  fds.forEach((fd, i) => {
    v.setInt32(VFIO_IRQ_SET_HDR + 4 * i, fd, true);
  });
  return buf;
}

/** The 12-byte header of struct vfio_pci_hot_reset_info; 8-byte dependent devices follow. */
export const VFIO_PCI_HOT_RESET_INFO_HDR = 12;

export interface DependentDevice {
  readonly devid: number;
  readonly segment: number;
  readonly bus: number;
  readonly devfn: number;
}

export function decodeHotResetDevices(buf: Uint8Array, count: number): DependentDevice[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: DependentDevice[] = [];
  for (let i = 0; i < count; i++) {
    const at = VFIO_PCI_HOT_RESET_INFO_HDR + 8 * i;
    out.push({
      devid: v.getUint32(at, true),
      segment: v.getUint16(at + 4, true),
      bus: v.getUint8(at + 6),
      devfn: v.getUint8(at + 7),
    });
  }
  return out;
}

/** An mmap-able piece of a region, as VFIO_REGION_INFO_CAP_SPARSE_MMAP lists them. */
export interface MmapArea {
  readonly offset: bigint;
  readonly size: bigint;
}

/** The areas of a region-info reply's SPARSE_MMAP capability, or undefined without one. */
export function sparseMmapAreas(buf: Uint8Array): MmapArea[] | undefined {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = v.getUint32(12, true), n = 0; off && off + 16 <= buf.length && n < 16; n++) {
    if (v.getUint16(off, true) === VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
      const nr = v.getUint32(off + 8, true);
      const areas: MmapArea[] = [];
      for (let i = 0; i < nr && off + 32 + 16 * i <= buf.length; i++)
        areas.push({
          offset: v.getBigUint64(off + 16 + 16 * i, true),
          size: v.getBigUint64(off + 24 + 16 * i, true),
        });
      return areas;
    }
    off = v.getUint32(off + 4, true);
  }
  return undefined;
}

/** The capability ids chained from `cap_offset` in a region-info reply. */
export function regionInfoCapIds(buf: Uint8Array): number[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const ids: number[] = [];
  for (let off = v.getUint32(12, true); off && off + 8 <= buf.length && ids.length < 16; ) {
    ids.push(v.getUint16(off, true));
    off = v.getUint32(off + 4, true);
  }
  return ids;
}
