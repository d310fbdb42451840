/**
 * The VFIO user API the model implements (include/uapi/linux/vfio.h): ioctl numbers, flags and
 * struct layouts. Every VFIO ioctl is `_IO(';', 100 + k)`: the size travels in `argsz`.
 *
 * The structures a VMM fills byte by byte (region info and its capability chain, IRQ info,
 * IRQ set, hot-reset info) are `Struct` tables like @x/iommufd's, shared by the driver, its
 * tests and users; the encoders and decoders below build the variable-length ones.
 */
import { Struct } from "@x/iommufd";

const VFIO_TYPE = 0x3b;
const VFIO_BASE = 100;
const vfioIo = (k: number): number => (VFIO_TYPE << 8) | (VFIO_BASE + k);

export const VFIO_DEVICE_GET_INFO = vfioIo(7);
export const VFIO_DEVICE_GET_REGION_INFO = vfioIo(8);
export const VFIO_DEVICE_GET_IRQ_INFO = vfioIo(9);
export const VFIO_DEVICE_SET_IRQS = vfioIo(10);
export const VFIO_DEVICE_RESET = vfioIo(11);
export const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = vfioIo(12);
export const VFIO_DEVICE_PCI_HOT_RESET = vfioIo(13);
export const VFIO_DEVICE_FEATURE = vfioIo(17);
export const VFIO_DEVICE_BIND_IOMMUFD = vfioIo(18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = vfioIo(19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = vfioIo(20);

/** struct vfio_device_info: argsz, flags, num_regions, num_irqs, cap_offset, pad. */
export const VFIO_DEVICE_INFO_SIZE = 24;
export const VFIO_DEVICE_INFO_MINSZ = 16;
export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;

/** struct vfio_region_info: argsz, flags, index, cap_offset, u64 size @16, u64 offset @24. */
export const VFIO_REGION_INFO_SIZE = 32;
export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;
export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;

export const vfio_region_info = new Struct("vfio_region_info", 32, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  index: [8, "u32"],
  cap_offset: [12, "u32"],
  size: [16, "u64"],
  offset: [24, "u64"],
});

/** struct vfio_info_cap_header: `next` is a byte offset from the start of the info struct. */
export const vfio_info_cap_header = new Struct("vfio_info_cap_header", 8, {
  id: [0, "u16"],
  version: [2, "u16"],
  next: [4, "u32"],
});
/** The MSI-X table of this BAR may be mmapped with the rest of it (a header-only capability). */
export const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;

/** One capability of an info struct's chain, as found in the user's buffer. */
export interface VfioInfoCap {
  readonly id: number;
  readonly version: number;
  /** Offset of the capability inside the info buffer. */
  readonly offset: number;
}

/** Walk the capability chain of a region / device info buffer returned with FLAG_CAPS. */
export function decodeInfoCaps(buf: Uint8Array, capOffset: number): VfioInfoCap[] {
  const caps: VfioInfoCap[] = [];
  for (let off = capOffset; off !== 0; ) {
    if (off + vfio_info_cap_header.size > buf.length || caps.length > buf.length / 8)
      throw new RangeError(`capability chain leaves the buffer at ${off}`);
    const h = vfio_info_cap_header.decode(buf.subarray(off));
    caps.push({ id: h.id, version: h.version, offset: off });
    off = h.next;
  }
  return caps;
}

/** struct vfio_irq_info */
export const vfio_irq_info = new Struct("vfio_irq_info", 16, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  index: [8, "u32"],
  count: [12, "u32"],
});
export const VFIO_IRQ_INFO_EVENTFD = 1 << 0;
export const VFIO_IRQ_INFO_MASKABLE = 1 << 1;
export const VFIO_IRQ_INFO_AUTOMASKED = 1 << 2;
export const VFIO_IRQ_INFO_NORESIZE = 1 << 3;

/** struct vfio_irq_set header; `data[]` follows at offset 20. */
export const vfio_irq_set = new Struct("vfio_irq_set", 20, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  index: [8, "u32"],
  start: [12, "u32"],
  count: [16, "u32"],
});
export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
export const VFIO_IRQ_SET_DATA_BOOL = 1 << 1;
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
export const VFIO_IRQ_SET_ACTION_MASK = 1 << 3;
export const VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4;
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;
export const VFIO_IRQ_SET_DATA_TYPE_MASK =
  VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD;
export const VFIO_IRQ_SET_ACTION_TYPE_MASK =
  VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER;

/** IRQ indexes of a vfio-pci device. */
export const VFIO_PCI_INTX_IRQ_INDEX = 0;
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
export const VFIO_PCI_ERR_IRQ_INDEX = 3;
export const VFIO_PCI_REQ_IRQ_INDEX = 4;

/**
 * A VFIO_DEVICE_SET_IRQS buffer: header plus `data` as u8 booleans (DATA_BOOL) or s32 fds
 * (DATA_EVENTFD); `argsz` defaults to the exact size.
 */
export function encodeIrqSet(opts: {
  readonly flags: number;
  readonly index: number;
  readonly start?: number;
  readonly count: number;
  readonly data?: readonly number[];
  readonly argsz?: number;
}): Uint8Array {
  const data = opts.data ?? [];
  const elem = opts.flags & VFIO_IRQ_SET_DATA_EVENTFD ? 4 : 1;
  const size = vfio_irq_set.size + (opts.flags & VFIO_IRQ_SET_DATA_NONE ? 0 : elem * data.length);
  const buf = new Uint8Array(size);
  vfio_irq_set.encode(
    {
      argsz: opts.argsz ?? size,
      flags: opts.flags,
      index: opts.index,
      start: opts.start ?? 0,
      count: opts.count,
    },
    buf,
  );
  const v = new DataView(buf.buffer);
  if (size > vfio_irq_set.size)
    data.forEach((d, i) => {
      if (elem === 4) v.setInt32(vfio_irq_set.size + 4 * i, d, true);
      else v.setUint8(vfio_irq_set.size + i, d);
    });
  return buf;
}

export const VFIO_PCI_ROM_REGION_INDEX = 6;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
export const VFIO_PCI_VGA_REGION_INDEX = 8;
export const VFIO_PCI_NUM_REGIONS = 9;
export const VFIO_PCI_NUM_IRQS = 5;
/** Region i lives at file offset i << 40 of the device fd. */
export const VFIO_PCI_OFFSET_SHIFT = 40n;
export const VFIO_PCI_OFFSET_MASK = (1n << VFIO_PCI_OFFSET_SHIFT) - 1n;

/** struct vfio_pci_hot_reset: argsz, flags, count, s32 group_fds[]. */
export const VFIO_PCI_HOT_RESET_MINSZ = 12;
export const vfio_pci_hot_reset = new Struct("vfio_pci_hot_reset", 12, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  count: [8, "u32"],
});

/** struct vfio_pci_hot_reset_info header; `devices[]` of vfio_pci_dependent_device follows. */
export const vfio_pci_hot_reset_info = new Struct("vfio_pci_hot_reset_info", 12, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  count: [8, "u32"],
});
/** struct vfio_pci_dependent_device: group_id or devid, segment, bus, devfn. */
export const vfio_pci_dependent_device = new Struct("vfio_pci_dependent_device", 8, {
  devid: [0, "u32"],
  segment: [4, "u16"],
  bus: [6, "u8"],
  devfn: [7, "u8"],
});
export const VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1 << 0;
export const VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1 << 1;
/** devid values of a dependent device that is not bound to the caller's iommufd. */
export const VFIO_PCI_DEVID_OWNED = 0;
export const VFIO_PCI_DEVID_NOT_OWNED = 0xffffffff;

/** A GET_PCI_HOT_RESET_INFO reply: header fields and the dependent devices it holds. */
export function decodeHotResetInfo(buf: Uint8Array): {
  readonly flags: number;
  readonly count: number;
  readonly devices: ReadonlyArray<{ devid: number; segment: number; bus: number; devfn: number }>;
} {
  const h = vfio_pci_hot_reset_info.decode(buf);
  const room = Math.floor((buf.length - vfio_pci_hot_reset_info.size) / 8);
  const devices = [];
  for (let i = 0; i < Math.min(h.count, room); i++)
    devices.push(vfio_pci_dependent_device.decode(buf.subarray(12 + 8 * i, 20 + 8 * i)));
  return { flags: h.flags, count: h.count, devices };
}

/** struct vfio_device_feature: argsz, flags, data[]. */
export const VFIO_DEVICE_FEATURE_MINSZ = 8;
export const VFIO_DEVICE_FEATURE_MASK = 0xffff;
export const VFIO_DEVICE_FEATURE_GET = 1 << 16;
export const VFIO_DEVICE_FEATURE_SET = 1 << 17;
export const VFIO_DEVICE_FEATURE_PROBE = 1 << 18;

export const VFIO_DEVICE_FEATURE_MIGRATION = 1;
export const VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2;
export const VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3;
export const VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4;
export const VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8;
export const VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9;
export const VFIO_DEVICE_FEATURE_DMA_BUF = 11;

/** struct vfio_device_low_power_entry_with_wakeup: s32 wakeup_eventfd, u32 reserved. */
export const VFIO_LOW_POWER_ENTRY_WITH_WAKEUP_SIZE = 8;

/** struct vfio_device_feature_dma_buf header; then nr_ranges × struct vfio_region_dma_range. */
export const VFIO_DEVICE_FEATURE_DMA_BUF_SIZE = 16;
export const VFIO_REGION_DMA_RANGE_SIZE = 16;

/** struct vfio_device_bind_iommufd (sizeof 24, min 16). */
export const VFIO_DEVICE_BIND_IOMMUFD_SIZE = 24;
export const VFIO_DEVICE_BIND_IOMMUFD_MINSZ = 16;
export const VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0;
/** struct vfio_device_attach_iommufd_pt (sizeof 16, min 12). */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ = 12;
export const VFIO_DEVICE_ATTACH_PASID = 1 << 0;
/** struct vfio_device_detach_iommufd_pt (sizeof 12, min 8). */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ = 8;
export const VFIO_DEVICE_DETACH_PASID = 1 << 0;

/** A VFIO_DEVICE_FEATURE buffer for DMA_BUF: header, payload, ranges (for tests and users). */
export function encodeDmaBufFeature(opts: {
  readonly flags?: number;
  readonly regionIndex: number;
  readonly openFlags: number;
  readonly dmaBufFlags?: number;
  readonly ranges: ReadonlyArray<{ readonly offset: bigint; readonly length: bigint }>;
  readonly nrRanges?: number;
  readonly argsz?: number;
}): Uint8Array {
  const size =
    VFIO_DEVICE_FEATURE_MINSZ +
    VFIO_DEVICE_FEATURE_DMA_BUF_SIZE +
    VFIO_REGION_DMA_RANGE_SIZE * opts.ranges.length;
  const buf = new Uint8Array(size);
  const v = new DataView(buf.buffer);
  v.setUint32(0, opts.argsz ?? size, true);
  v.setUint32(4, opts.flags ?? VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, true);
  v.setUint32(8, opts.regionIndex, true);
  v.setUint32(12, opts.openFlags, true);
  v.setUint32(16, opts.dmaBufFlags ?? 0, true);
  v.setUint32(20, opts.nrRanges ?? opts.ranges.length, true);
  opts.ranges.forEach((r, i) => {
    v.setBigUint64(24 + 16 * i, BigInt.asUintN(64, r.offset), true);
    v.setBigUint64(32 + 16 * i, BigInt.asUintN(64, r.length), true);
  });
  return buf;
}
