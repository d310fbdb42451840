/**
 * The VFIO user API the model implements (include/uapi/linux/vfio.h): ioctl numbers, flags and
 * struct layouts. Every VFIO ioctl is `_IO(';', 100 + k)`: the size travels in `argsz`.
 *
 * Every structure the device fd takes is a `Struct` table like @x/iommufd's (`encode` /
 * `decode`, `size`, `minSize`), shared by the driver, its tests and users such as a VMM; the
 * encoders and decoders below build and read the variable-length ones (capability chains,
 * IRQ data, group fds, dependent devices, dma-buf ranges).
 */
import { Struct, getU32, setU32 } from "@x/iommufd";

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
/** The reply carries a capability chain from `cap_offset`. */
export const VFIO_DEVICE_FLAGS_CAPS = 1 << 7;

export const vfio_device_info = new Struct(
  "vfio_device_info",
  VFIO_DEVICE_INFO_SIZE,
  {
    argsz: [0, "u32"],
    flags: [4, "u32"],
    num_regions: [8, "u32"],
    num_irqs: [12, "u32"],
    cap_offset: [16, "u32"],
    pad: [20, "u32"],
  },
  VFIO_DEVICE_INFO_MINSZ,
);

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
export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
export const VFIO_REGION_INFO_CAP_TYPE = 2;
/** The MSI-X table of this BAR may be mmapped with the rest of it (a header-only capability). */
export const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;

/** struct vfio_region_info_cap_sparse_mmap: header, nr_areas, reserved; areas[] from 16. */
export const vfio_region_info_cap_sparse_mmap = new Struct("vfio_region_info_cap_sparse_mmap", 16, {
  id: [0, "u16"],
  version: [2, "u16"],
  next: [4, "u32"],
  nr_areas: [8, "u32"],
  reserved: [12, "u32"],
});
/** struct vfio_region_sparse_mmap_area: an mmap-able piece of the region. */
export const vfio_region_sparse_mmap_area = new Struct("vfio_region_sparse_mmap_area", 16, {
  offset: [0, "u64"],
  size: [8, "u64"],
});
/** struct vfio_region_info_cap_type: a device-specific region's type and subtype. */
export const vfio_region_info_cap_type = new Struct("vfio_region_info_cap_type", 16, {
  id: [0, "u16"],
  version: [2, "u16"],
  next: [4, "u32"],
  type: [8, "u32"],
  subtype: [12, "u32"],
});

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

/** A region as a GET_REGION_INFO reply describes it, its capabilities decoded. */
export interface VfioRegionInfo {
  readonly flags: number;
  readonly index: number;
  readonly size: bigint;
  /** Offset of the region in the device fd. */
  readonly offset: bigint;
  /** The mmap-able areas of a SPARSE_MMAP capability. */
  readonly sparseMmap?: ReadonlyArray<{ readonly offset: bigint; readonly size: bigint }>;
  /** The TYPE capability of a device-specific region. */
  readonly type?: { readonly type: number; readonly subtype: number };
  /** The MSIX_MAPPABLE capability is present. */
  readonly msixMappable: boolean;
}

/**
 * Read a GET_REGION_INFO reply: the fixed fields, then, with FLAG_CAPS, the capability chain
 * (areas past the end of the buffer are not read).
 */
export function decodeRegionInfo(buf: Uint8Array): VfioRegionInfo {
  const info = vfio_region_info.decode(buf);
  let sparseMmap: { offset: bigint; size: bigint }[] | undefined;
  let type: { type: number; subtype: number } | undefined;
  let msixMappable = false;
  const caps = info.flags & VFIO_REGION_INFO_FLAG_CAPS ? decodeInfoCaps(buf, info.cap_offset) : [];
  for (const cap of caps) {
    const at = buf.subarray(cap.offset);
    if (cap.id === VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
      const { nr_areas } = vfio_region_info_cap_sparse_mmap.decode(at);
      const room = Math.floor((at.length - vfio_region_info_cap_sparse_mmap.size) / 16);
      sparseMmap = [];
      for (let i = 0; i < Math.min(nr_areas, room); i++)
        sparseMmap.push(vfio_region_sparse_mmap_area.decode(at.subarray(16 + 16 * i)));
    } else if (cap.id === VFIO_REGION_INFO_CAP_TYPE) {
      const t = vfio_region_info_cap_type.decode(at);
      type = { type: t.type, subtype: t.subtype };
    } else if (cap.id === VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) msixMappable = true;
  }
  return {
    flags: info.flags,
    index: info.index,
    size: info.size,
    offset: info.offset,
    ...(sparseMmap && { sparseMmap }),
    ...(type && { type }),
    msixMappable,
  };
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
  if (size > vfio_irq_set.size)
    data.forEach((d, i) => {
      if (elem === 4) setU32(buf, vfio_irq_set.size + 4 * i, d);
      else buf[vfio_irq_set.size + i] = d;
    });
  return buf;
}

/** A SET_IRQS buffer read back: the header and its data as numbers (u8 bools or s32 fds). */
export function decodeIrqSet(buf: Uint8Array): {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly start: number;
  readonly count: number;
  readonly data: number[];
} {
  const h = vfio_irq_set.decode(buf);
  const data: number[] = [];
  const payload = buf.subarray(vfio_irq_set.size);
  if (h.flags & VFIO_IRQ_SET_DATA_EVENTFD)
    for (let i = 0; i < h.count && 4 * i + 4 <= payload.length; i++)
      data.push(getU32(payload, 4 * i) | 0);
  else if (h.flags & VFIO_IRQ_SET_DATA_BOOL)
    for (let i = 0; i < h.count && i < payload.length; i++) data.push(payload[i]!);
  return { ...h, data };
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

/**
 * A VFIO_DEVICE_PCI_HOT_RESET buffer: the header and its s32 `group_fds[]` (with the cdev,
 * `count` 0 and no fds: the iommufd proves ownership); `argsz` defaults to the exact size.
 */
export function encodePciHotReset(opts: {
  readonly flags?: number;
  readonly fds?: readonly number[];
  readonly count?: number;
  readonly argsz?: number;
}): Uint8Array {
  const fds = opts.fds ?? [];
  const size = vfio_pci_hot_reset.size + 4 * fds.length;
  const buf = new Uint8Array(size);
  vfio_pci_hot_reset.encode(
    { argsz: opts.argsz ?? size, flags: opts.flags ?? 0, count: opts.count ?? fds.length },
    buf,
  );
  for (const [i, fd] of fds.entries()) setU32(buf, vfio_pci_hot_reset.size + 4 * i, fd);
  return buf;
}

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
export const vfio_device_feature = new Struct("vfio_device_feature", 8, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
});
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
export const vfio_device_feature_dma_buf = new Struct("vfio_device_feature_dma_buf", 16, {
  region_index: [0, "u32"],
  open_flags: [4, "u32"],
  flags: [8, "u32"],
  nr_ranges: [12, "u32"],
});
export const vfio_region_dma_range = new Struct("vfio_region_dma_range", 16, {
  offset: [0, "u64"],
  length: [8, "u64"],
});

/** struct vfio_device_bind_iommufd (sizeof 24, min 16); out_devid is written back. */
export const VFIO_DEVICE_BIND_IOMMUFD_SIZE = 24;
export const VFIO_DEVICE_BIND_IOMMUFD_MINSZ = 16;
export const VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0;
export const vfio_device_bind_iommufd = new Struct(
  "vfio_device_bind_iommufd",
  VFIO_DEVICE_BIND_IOMMUFD_SIZE,
  {
    argsz: [0, "u32"],
    flags: [4, "u32"],
    iommufd: [8, "s32"],
    out_devid: [12, "u32"],
    /** User pointer to the 16-byte VF token, read with VFIO_DEVICE_BIND_FLAG_TOKEN. */
    token_uuid_ptr: [16, "u64"],
  },
  VFIO_DEVICE_BIND_IOMMUFD_MINSZ,
);
/** struct vfio_device_attach_iommufd_pt (sizeof 16, min 12); pt_id is written back. */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ = 12;
export const VFIO_DEVICE_ATTACH_PASID = 1 << 0;
export const vfio_device_attach_iommufd_pt = new Struct(
  "vfio_device_attach_iommufd_pt",
  16,
  { argsz: [0, "u32"], flags: [4, "u32"], pt_id: [8, "u32"], pasid: [12, "u32"] },
  VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ,
);
/** struct vfio_device_detach_iommufd_pt (sizeof 12, min 8). */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ = 8;
export const VFIO_DEVICE_DETACH_PASID = 1 << 0;
export const vfio_device_detach_iommufd_pt = new Struct(
  "vfio_device_detach_iommufd_pt",
  12,
  { argsz: [0, "u32"], flags: [4, "u32"], pasid: [8, "u32"] },
  VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ,
);

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
  const head = vfio_device_feature.size;
  const first = head + vfio_device_feature_dma_buf.size;
  const size = first + vfio_region_dma_range.size * opts.ranges.length;
  const buf = new Uint8Array(size);
  vfio_device_feature.encode(
    {
      argsz: opts.argsz ?? size,
      flags: opts.flags ?? VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
    },
    buf,
  );
  vfio_device_feature_dma_buf.encode(
    {
      region_index: opts.regionIndex,
      open_flags: opts.openFlags,
      flags: opts.dmaBufFlags ?? 0,
      nr_ranges: opts.nrRanges ?? opts.ranges.length,
    },
    buf.subarray(head),
  );
  for (const [i, r] of opts.ranges.entries())
    vfio_region_dma_range.encode(r, buf.subarray(first + vfio_region_dma_range.size * i));
  return buf;
}
