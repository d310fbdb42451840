/**
 * The VFIO user API the model implements (include/uapi/linux/vfio.h): ioctl numbers, flags and
 * struct layouts. Every VFIO ioctl is `_IO(';', 100 + k)`: the size travels in `argsz`.
 */

const VFIO_TYPE = 0x3b;
const VFIO_BASE = 100;
const vfioIo = (k: number): number => (VFIO_TYPE << 8) | (VFIO_BASE + k);

export const VFIO_DEVICE_GET_INFO = vfioIo(7);
export const VFIO_DEVICE_GET_REGION_INFO = vfioIo(8);
export const VFIO_DEVICE_RESET = vfioIo(11);
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
