/**
 * The iommufd user ABI as bytes: ioctl numbers and every command structure with the offsets of
 * include/uapi/linux/iommufd.h (x86_64 / arm64: little endian, `__aligned_u64` at 8-aligned
 * offsets), plus the VFIO type1 container structures that /dev/iommu also answers.
 *
 * A structure is a table of (offset, kind) per field; `decode` turns bytes into a plain object
 * (u64 fields as bigint, the rest as number) and `encode` writes one back. The dispatcher,
 * the typed user API and the tests all go through these tables, so one set of offsets serves
 * both entry layers. Tables are data: an older layout can be swapped in by defining another.
 */

import { U64_MAX } from "@x/kernel";

/** Field kinds. `u8x3` is a `__u8[3]` read as one little-endian 24-bit number (zero = all zero). */
export type FieldKind = "u8" | "u16" | "u32" | "s32" | "u64" | "u8x3";

export type FieldSpec = Readonly<Record<string, readonly [offset: number, kind: FieldKind]>>;

type ValueOf<K extends FieldKind> = K extends "u64" ? bigint : number;

/** The decoded form of a structure: one property per field. */
export type Decoded<S extends FieldSpec> = { -readonly [N in keyof S]: ValueOf<S[N][1]> };

const KIND_BYTES: Readonly<Record<FieldKind, number>> = {
  u8: 1,
  u16: 2,
  u32: 4,
  s32: 4,
  u64: 8,
  u8x3: 3,
};

export const U32_MAX = 0xffff_ffff;
export { U64_MAX };
/** `ULONG_MAX` of the modelled 64-bit kernel. */
export const ULONG_MAX = U64_MAX;

/**
 * One C structure. `size` is sizeof(); `minSize` is offsetofend() of the last member a caller
 * must supply (the IOCTL_OP `last` argument), equal to `size` for structures without one.
 */
export class Struct<S extends FieldSpec> {
  readonly fieldNames: readonly (keyof S & string)[];
  /** Each field's offset and kind, in `fieldNames` order (the per-call loops index these). */
  private readonly offsets: readonly number[];
  private readonly kinds: readonly FieldKind[];

  constructor(
    readonly name: string,
    readonly size: number,
    readonly fields: S,
    readonly minSize = size,
  ) {
    this.fieldNames = Object.keys(fields) as (keyof S & string)[];
    for (const [field, [off, kind]] of Object.entries(fields)) {
      if (off + KIND_BYTES[kind] > size) throw new RangeError(`${name}.${field} beyond sizeof`);
      if (kind === "u64" && off % 8 !== 0) throw new RangeError(`${name}.${field} not aligned`);
    }
    this.offsets = this.fieldNames.map((f) => fields[f]![0]);
    this.kinds = this.fieldNames.map((f) => fields[f]![1]);
  }

  /** Byte offset of a field (offsetof). */
  offsetOf(field: keyof S & string): number {
    return this.fields[field]![0];
  }

  /** offsetofend of a field. */
  endOf(field: keyof S & string): number {
    const [off, kind] = this.fields[field]!;
    return off + KIND_BYTES[kind];
  }

  /** Read every field of `buf` (shorter buffers read as zero-filled, like copy_struct_from_user). */
  decode(buf: Uint8Array): Decoded<S> {
    const full = buf.byteLength >= this.size ? buf : this.padded(buf);
    const { fieldNames, offsets, kinds } = this;
    const out: Record<string, number | bigint> = {};
    for (let i = 0; i < fieldNames.length; i++)
      out[fieldNames[i]!] = readField(full, offsets[i]!, kinds[i]!);
    return out as Decoded<S>;
  }

  /** Write the given fields into `out` (a new zeroed struct by default); others are left as is. */
  encode(values: Partial<Decoded<S>>, out = new Uint8Array(this.size)): Uint8Array {
    const { fieldNames, offsets, kinds } = this;
    for (let i = 0; i < fieldNames.length; i++) {
      const name = fieldNames[i]!;
      const v = values[name];
      if (v !== undefined) writeField(out, offsets[i]!, kinds[i]!, v as number | bigint, name);
    }
    return out;
  }

  get<F extends keyof S & string>(buf: Uint8Array, field: F): ValueOf<S[F][1]> {
    const [off, kind] = this.fields[field]!;
    return readField(buf, off, kind) as ValueOf<S[F][1]>;
  }

  set<F extends keyof S & string>(buf: Uint8Array, field: F, value: ValueOf<S[F][1]>): void {
    const [off, kind] = this.fields[field]!;
    writeField(buf, off, kind, value, field);
  }

  private padded(buf: Uint8Array): Uint8Array {
    const full = new Uint8Array(this.size);
    full.set(buf);
    return full;
  }
}

/*
 * Fields are read and written byte by byte, little endian: a DataView over a small on-heap
 * Uint8Array makes V8 move its storage off-heap on every call, which cost more than the ioctl.
 */
/** Little-endian u32 at `off` of `b` (also the leading `size` of every iommufd struct). */
export function getU32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

/** Little-endian u32 at `off` of `b` (the value taken modulo 2^32, as a C store would). */
export function setU32(b: Uint8Array, off: number, v: number): void {
  b[off] = v;
  b[off + 1] = v >>> 8;
  b[off + 2] = v >>> 16;
  b[off + 3] = v >>> 24;
}

/** Little-endian u64 at `off` of `b`. */
export function setU64(b: Uint8Array, off: number, v: bigint): void {
  const u = BigInt.asUintN(64, v);
  setU32(b, off, Number(u & 0xffff_ffffn));
  setU32(b, off + 4, Number(u >> 32n));
}

function readField(b: Uint8Array, off: number, kind: FieldKind): number | bigint {
  switch (kind) {
    case "u8":
      return b[off]!;
    case "u16":
      return b[off]! | (b[off + 1]! << 8);
    case "u32":
      return getU32(b, off);
    case "s32":
      return getU32(b, off) | 0;
    case "u64": {
      const lo = getU32(b, off);
      const hi = getU32(b, off + 4);
      return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
    }
    case "u8x3":
      return b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16);
  }
}

function writeField(
  b: Uint8Array,
  off: number,
  kind: FieldKind,
  v: number | bigint,
  name: string,
): void {
  if ((kind === "u64") !== (typeof v === "bigint")) throw new TypeError(`${name}: wrong type`);
  switch (kind) {
    case "u8":
      b[off] = v as number;
      return;
    case "u16":
      b[off] = v as number;
      b[off + 1] = (v as number) >>> 8;
      return;
    case "u32":
    case "s32":
      setU32(b, off, v as number);
      return;
    case "u64":
      setU64(b, off, v as bigint);
      return;
    case "u8x3":
      b[off] = v as number;
      b[off + 1] = (v as number) >> 8;
      b[off + 2] = (v as number) >> 16;
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// ioctl numbers (asm-generic/ioctl.h: nr bits 0-7, type 8-15, size 16-29, dir 30-31)

export const _IOC_NRBITS = 8;
export const _IOC_TYPEBITS = 8;

/** `_IO(type, nr)`: no direction and no size, which is how every iommufd and VFIO ioctl is built. */
export function _IO(type: number, nr: number): number {
  return ((type & 0xff) << 8) | (nr & 0xff);
}

export function _IOC_NR(cmd: number): number {
  return cmd & 0xff;
}

export const IOMMUFD_TYPE = 0x3b; // ';'
export const IOMMUFD_CMD_BASE = 0x80;

export const IOMMUFD_CMD_DESTROY = 0x80;
export const IOMMUFD_CMD_IOAS_ALLOC = 0x81;
export const IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82;
export const IOMMUFD_CMD_IOAS_COPY = 0x83;
export const IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84;
export const IOMMUFD_CMD_IOAS_MAP = 0x85;
export const IOMMUFD_CMD_IOAS_UNMAP = 0x86;
export const IOMMUFD_CMD_OPTION = 0x87;
export const IOMMUFD_CMD_VFIO_IOAS = 0x88;
export const IOMMUFD_CMD_HWPT_ALLOC = 0x89;
export const IOMMUFD_CMD_GET_HW_INFO = 0x8a;
export const IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8b;
export const IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8c;
export const IOMMUFD_CMD_HWPT_INVALIDATE = 0x8d;
export const IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8e;
export const IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f;
export const IOMMUFD_CMD_VIOMMU_ALLOC = 0x90;
export const IOMMUFD_CMD_VDEVICE_ALLOC = 0x91;
export const IOMMUFD_CMD_IOAS_CHANGE_PROCESS = 0x92;
export const IOMMUFD_CMD_VEVENTQ_ALLOC = 0x93;
export const IOMMUFD_CMD_HW_QUEUE_ALLOC = 0x94;
/** The selftest command sits at CMD_BASE + 32 (iommufd_test.h). */
export const IOMMUFD_CMD_TEST = 0xa0;

export const IOMMU_DESTROY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY);
export const IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC);
export const IOMMU_IOAS_ALLOW_IOVAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
export const IOMMU_IOAS_COPY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY);
export const IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES);
export const IOMMU_IOAS_MAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP);
export const IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP);
export const IOMMU_OPTION = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION);
export const IOMMU_VFIO_IOAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS);
export const IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC);
export const IOMMU_GET_HW_INFO = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO);
export const IOMMU_HWPT_SET_DIRTY_TRACKING = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
export const IOMMU_HWPT_GET_DIRTY_BITMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
export const IOMMU_HWPT_INVALIDATE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE);
export const IOMMU_FAULT_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC);
export const IOMMU_IOAS_MAP_FILE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE);
export const IOMMU_VIOMMU_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC);
export const IOMMU_VDEVICE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC);
export const IOMMU_IOAS_CHANGE_PROCESS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_CHANGE_PROCESS);
export const IOMMU_VEVENTQ_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VEVENTQ_ALLOC);
export const IOMMU_HW_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HW_QUEUE_ALLOC);
export const IOMMU_TEST_CMD = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_TEST);

// VFIO type1 container ioctls (include/uapi/linux/vfio.h): same type byte, nr from VFIO_BASE.
export const VFIO_TYPE = 0x3b;
export const VFIO_BASE = 100;
export const VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0);
export const VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1);
export const VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2);
export const VFIO_IOMMU_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12);
export const VFIO_IOMMU_MAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 13);
export const VFIO_IOMMU_UNMAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 14);
export const VFIO_IOMMU_DIRTY_PAGES = _IO(VFIO_TYPE, VFIO_BASE + 17);

export const VFIO_API_VERSION = 0;
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_SPAPR_TCE_IOMMU = 2;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_DMA_CC_IOMMU = 4;
export const VFIO_EEH = 5;
export const VFIO_TYPE1_NESTING_IOMMU = 6;
export const VFIO_SPAPR_TCE_v2_IOMMU = 7;
export const VFIO_NOIOMMU_IOMMU = 8;
export const VFIO_UNMAP_ALL = 9;
export const VFIO_UPDATE_VADDR = 10;

export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
export const VFIO_DMA_MAP_FLAG_VADDR = 1 << 2;
export const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0;
export const VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;
export const VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2;
export const VFIO_IOMMU_INFO_PGSIZES = 1 << 0;
export const VFIO_IOMMU_INFO_CAPS = 1 << 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;

// ---------------------------------------------------------------------------------------------
// Flags and enums

export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;
export const IOMMU_IOAS_MAP_FLAGS_MASK =
  IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;

export const IOMMU_OPTION_RLIMIT_MODE = 0;
export const IOMMU_OPTION_HUGE_PAGES = 1;
export const IOMMU_OPTION_OP_SET = 0;
export const IOMMU_OPTION_OP_GET = 1;

export const IOMMU_VFIO_IOAS_GET = 0;
export const IOMMU_VFIO_IOAS_SET = 1;
export const IOMMU_VFIO_IOAS_CLEAR = 2;

export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2;
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3;

export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1 << 0;
export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1 << 0;

export const IOMMU_HWPT_DATA_NONE = 0;
export const IOMMU_HWPT_DATA_VTD_S1 = 1;
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2;
export const IOMMU_HWPT_DATA_SELFTEST = 0xdead;

export const IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0;
export const IOMMU_HW_INFO_TYPE_NONE = 0;
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
export const IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV = 3;
export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;
export const IOMMU_HW_CAP_DIRTY_TRACKING = 1n << 0n;
export const IOMMU_HW_CAP_PCI_PASID_EXEC = 1n << 1n;
export const IOMMU_HW_CAP_PCI_PASID_PRIV = 1n << 2n;

// ---------------------------------------------------------------------------------------------
// iommufd structures

export const iommu_destroy = new Struct("iommu_destroy", 8, {
  size: [0, "u32"],
  id: [4, "u32"],
});

export const iommu_ioas_alloc = new Struct("iommu_ioas_alloc", 12, {
  size: [0, "u32"],
  flags: [4, "u32"],
  out_ioas_id: [8, "u32"],
});

export const iommu_iova_range = new Struct("iommu_iova_range", 16, {
  start: [0, "u64"],
  last: [8, "u64"],
});

export const iommu_ioas_iova_ranges = new Struct("iommu_ioas_iova_ranges", 32, {
  size: [0, "u32"],
  ioas_id: [4, "u32"],
  num_iovas: [8, "u32"],
  __reserved: [12, "u32"],
  allowed_iovas: [16, "u64"],
  out_iova_alignment: [24, "u64"],
});

export const iommu_ioas_allow_iovas = new Struct("iommu_ioas_allow_iovas", 24, {
  size: [0, "u32"],
  ioas_id: [4, "u32"],
  num_iovas: [8, "u32"],
  __reserved: [12, "u32"],
  allowed_iovas: [16, "u64"],
});

export const iommu_ioas_map = new Struct("iommu_ioas_map", 40, {
  size: [0, "u32"],
  flags: [4, "u32"],
  ioas_id: [8, "u32"],
  __reserved: [12, "u32"],
  user_va: [16, "u64"],
  length: [24, "u64"],
  iova: [32, "u64"],
});

export const iommu_ioas_map_file = new Struct("iommu_ioas_map_file", 40, {
  size: [0, "u32"],
  flags: [4, "u32"],
  ioas_id: [8, "u32"],
  fd: [12, "s32"],
  start: [16, "u64"],
  length: [24, "u64"],
  iova: [32, "u64"],
});

export const iommu_ioas_copy = new Struct("iommu_ioas_copy", 40, {
  size: [0, "u32"],
  flags: [4, "u32"],
  dst_ioas_id: [8, "u32"],
  src_ioas_id: [12, "u32"],
  length: [16, "u64"],
  dst_iova: [24, "u64"],
  src_iova: [32, "u64"],
});

export const iommu_ioas_unmap = new Struct("iommu_ioas_unmap", 24, {
  size: [0, "u32"],
  ioas_id: [4, "u32"],
  iova: [8, "u64"],
  length: [16, "u64"],
});

export const iommu_option = new Struct("iommu_option", 24, {
  size: [0, "u32"],
  option_id: [4, "u32"],
  op: [8, "u16"],
  __reserved: [10, "u16"],
  object_id: [12, "u32"],
  val64: [16, "u64"],
});

export const iommu_vfio_ioas = new Struct("iommu_vfio_ioas", 12, {
  size: [0, "u32"],
  ioas_id: [4, "u32"],
  op: [8, "u16"],
  __reserved: [10, "u16"],
});

export const iommu_hwpt_alloc = new Struct(
  "iommu_hwpt_alloc",
  48,
  {
    size: [0, "u32"],
    flags: [4, "u32"],
    dev_id: [8, "u32"],
    pt_id: [12, "u32"],
    out_hwpt_id: [16, "u32"],
    __reserved: [20, "u32"],
    data_type: [24, "u32"],
    data_len: [28, "u32"],
    data_uptr: [32, "u64"],
    fault_id: [40, "u32"],
    __reserved2: [44, "u32"],
  },
  24,
);

export const iommu_hw_info = new Struct(
  "iommu_hw_info",
  40,
  {
    size: [0, "u32"],
    flags: [4, "u32"],
    dev_id: [8, "u32"],
    data_len: [12, "u32"],
    data_uptr: [16, "u64"],
    /** `in_data_type` on input with IOMMU_HW_INFO_FLAG_INPUT_TYPE, `out_data_type` on output. */
    data_type: [24, "u32"],
    out_max_pasid_log2: [28, "u8"],
    __reserved: [29, "u8x3"],
    out_capabilities: [32, "u64"],
  },
  32,
);

export const iommu_hwpt_set_dirty_tracking = new Struct("iommu_hwpt_set_dirty_tracking", 16, {
  size: [0, "u32"],
  flags: [4, "u32"],
  hwpt_id: [8, "u32"],
  __reserved: [12, "u32"],
});

export const iommu_hwpt_get_dirty_bitmap = new Struct("iommu_hwpt_get_dirty_bitmap", 48, {
  size: [0, "u32"],
  hwpt_id: [4, "u32"],
  flags: [8, "u32"],
  __reserved: [12, "u32"],
  iova: [16, "u64"],
  length: [24, "u64"],
  page_size: [32, "u64"],
  data: [40, "u64"],
});

export const iommu_hwpt_invalidate = new Struct("iommu_hwpt_invalidate", 32, {
  size: [0, "u32"],
  hwpt_id: [4, "u32"],
  data_uptr: [8, "u64"],
  data_type: [16, "u32"],
  entry_len: [20, "u32"],
  entry_num: [24, "u32"],
  __reserved: [28, "u32"],
});

export const iommu_fault_alloc = new Struct("iommu_fault_alloc", 16, {
  size: [0, "u32"],
  flags: [4, "u32"],
  out_fault_id: [8, "u32"],
  out_fault_fd: [12, "u32"],
});

export const iommu_viommu_alloc = new Struct(
  "iommu_viommu_alloc",
  40,
  {
    size: [0, "u32"],
    flags: [4, "u32"],
    type: [8, "u32"],
    dev_id: [12, "u32"],
    hwpt_id: [16, "u32"],
    out_viommu_id: [20, "u32"],
    data_len: [24, "u32"],
    __reserved: [28, "u32"],
    data_uptr: [32, "u64"],
  },
  24,
);

export const iommu_vdevice_alloc = new Struct("iommu_vdevice_alloc", 24, {
  size: [0, "u32"],
  viommu_id: [4, "u32"],
  dev_id: [8, "u32"],
  out_vdevice_id: [12, "u32"],
  virt_id: [16, "u64"],
});

export const iommu_ioas_change_process = new Struct("iommu_ioas_change_process", 8, {
  size: [0, "u32"],
  __reserved: [4, "u32"],
});

export const iommu_veventq_alloc = new Struct(
  "iommu_veventq_alloc",
  32,
  {
    size: [0, "u32"],
    flags: [4, "u32"],
    viommu_id: [8, "u32"],
    type: [12, "u32"],
    veventq_depth: [16, "u32"],
    out_veventq_id: [20, "u32"],
    out_veventq_fd: [24, "u32"],
    __reserved: [28, "u32"],
  },
  28,
);

export const iommu_hw_queue_alloc = new Struct("iommu_hw_queue_alloc", 40, {
  size: [0, "u32"],
  flags: [4, "u32"],
  viommu_id: [8, "u32"],
  type: [12, "u32"],
  index: [16, "u32"],
  out_hw_queue_id: [20, "u32"],
  nesting_parent_iova: [24, "u64"],
  length: [32, "u64"],
});

/**
 * The fixed part of `struct iommu_test_cmd` (iommufd_test.h). The 48-byte union at offset 16
 * belongs to each op; @x/selftest defines its members over the same 72-byte buffer.
 */
export const iommu_test_cmd = new Struct(
  "iommu_test_cmd",
  72,
  {
    size: [0, "u32"],
    op: [4, "u32"],
    id: [8, "u32"],
    __reserved: [12, "u32"],
    last: [64, "u32"],
  },
  68,
);

// ---------------------------------------------------------------------------------------------
// VFIO type1 structures (carry `argsz` instead of `size`; VFIO's own size rules)

export const vfio_iommu_type1_dma_map = new Struct("vfio_iommu_type1_dma_map", 32, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  vaddr: [8, "u64"],
  iova: [16, "u64"],
  size: [24, "u64"],
});

export const vfio_iommu_type1_dma_unmap = new Struct("vfio_iommu_type1_dma_unmap", 24, {
  argsz: [0, "u32"],
  flags: [4, "u32"],
  iova: [8, "u64"],
  size: [16, "u64"],
});

/** minsz of GET_INFO is offsetofend(iova_pgsizes) = 16. */
export const vfio_iommu_type1_info = new Struct(
  "vfio_iommu_type1_info",
  24,
  {
    argsz: [0, "u32"],
    flags: [4, "u32"],
    iova_pgsizes: [8, "u64"],
    cap_offset: [16, "u32"],
    pad: [20, "u32"],
  },
  16,
);

export const vfio_info_cap_header = new Struct("vfio_info_cap_header", 8, {
  id: [0, "u16"],
  version: [2, "u16"],
  next: [4, "u32"],
});

/** Header of the IOVA-range capability; `vfio_iova_range {start, end}` entries follow at 16. */
export const vfio_iommu_type1_info_cap_iova_range = new Struct(
  "vfio_iommu_type1_info_cap_iova_range",
  16,
  {
    id: [0, "u16"],
    version: [2, "u16"],
    next: [4, "u32"],
    nr_iovas: [8, "u32"],
    reserved: [12, "u32"],
  },
);

export const vfio_iova_range = new Struct("vfio_iova_range", 16, {
  start: [0, "u64"],
  end: [8, "u64"],
});

export const vfio_iommu_type1_info_dma_avail = new Struct("vfio_iommu_type1_info_dma_avail", 12, {
  id: [0, "u16"],
  version: [2, "u16"],
  next: [4, "u32"],
  avail: [8, "u32"],
});

// ---------------------------------------------------------------------------------------------
// ARM SMMUv3 driver data (the array members of the C structs as one field per element)

export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1;
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1;

/** struct iommu_hwpt_arm_smmuv3 { __le64 ste[2] }: the guest's STE words 0 and 1. */
export const iommu_hwpt_arm_smmuv3 = new Struct("iommu_hwpt_arm_smmuv3", 16, {
  ste0: [0, "u64"],
  ste1: [8, "u64"],
});

/** struct iommu_viommu_arm_smmuv3_invalidate { __le64 cmd[2] }: one guest command. */
export const iommu_viommu_arm_smmuv3_invalidate = new Struct(
  "iommu_viommu_arm_smmuv3_invalidate",
  16,
  { cmd0: [0, "u64"], cmd1: [8, "u64"] },
);

/** struct iommu_hw_info_arm_smmuv3: the SMMU's ID registers. */
export const iommu_hw_info_arm_smmuv3 = new Struct("iommu_hw_info_arm_smmuv3", 40, {
  flags: [0, "u32"],
  __reserved: [4, "u32"],
  idr0: [8, "u32"],
  idr1: [12, "u32"],
  idr2: [16, "u32"],
  idr3: [20, "u32"],
  idr4: [24, "u32"],
  idr5: [28, "u32"],
  iidr: [32, "u32"],
  aidr: [36, "u32"],
});

/** struct iommu_vevent_arm_smmuv3 { __le64 evt[4] }: one event record, vSID in place. */
export const iommu_vevent_arm_smmuv3 = new Struct("iommu_vevent_arm_smmuv3", 32, {
  evt0: [0, "u64"],
  evt1: [8, "u64"],
  evt2: [16, "u64"],
  evt3: [24, "u64"],
});
