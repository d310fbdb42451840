/**
 * The exported byte codecs of include/uapi/linux/vfio.h: each `Struct` table has the C
 * structure's sizeof, the handler's minsz and every field at the offset the C compiler gives it
 * (the numbers are written out here from the header, not read from the tables), and the
 * variable-length encoders and decoders produce and read the bytes the kernel side uses.
 */
import { describe, expect, it } from "vitest";
import {
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FLAGS_CAPS,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_CAP_TYPE,
  VFIO_REGION_INFO_FLAG_CAPS,
  decodeHotResetInfo,
  decodeIrqSet,
  decodeRegionInfo,
  encodeDmaBufFeature,
  encodeIrqSet,
  encodePciHotReset,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
  vfio_device_feature,
  vfio_device_feature_dma_buf,
  vfio_device_info,
  vfio_info_cap_header,
  vfio_irq_info,
  vfio_irq_set,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
  vfio_region_dma_range,
  vfio_region_info,
  vfio_region_info_cap_sparse_mmap,
  vfio_region_info_cap_type,
  vfio_region_sparse_mmap_area,
} from "../src/index.js";

interface Table {
  readonly size: number;
  readonly minSize: number;
  readonly fieldNames: readonly string[];
  offsetOf(f: string): number;
}

/** [table, sizeof, minsz the handler accepts, { field: offset }] from vfio.h. */
const GOLDEN: ReadonlyArray<readonly [string, Table, number, number, Record<string, number>]> = [
  [
    "vfio_device_info",
    vfio_device_info,
    24,
    16,
    { argsz: 0, flags: 4, num_regions: 8, num_irqs: 12, cap_offset: 16, pad: 20 },
  ],
  [
    "vfio_region_info",
    vfio_region_info,
    32,
    32,
    { argsz: 0, flags: 4, index: 8, cap_offset: 12, size: 16, offset: 24 },
  ],
  ["vfio_info_cap_header", vfio_info_cap_header, 8, 8, { id: 0, version: 2, next: 4 }],
  [
    "vfio_region_info_cap_sparse_mmap",
    vfio_region_info_cap_sparse_mmap,
    16,
    16,
    { id: 0, version: 2, next: 4, nr_areas: 8, reserved: 12 },
  ],
  ["vfio_region_sparse_mmap_area", vfio_region_sparse_mmap_area, 16, 16, { offset: 0, size: 8 }],
  [
    "vfio_region_info_cap_type",
    vfio_region_info_cap_type,
    16,
    16,
    { id: 0, version: 2, next: 4, type: 8, subtype: 12 },
  ],
  ["vfio_irq_info", vfio_irq_info, 16, 16, { argsz: 0, flags: 4, index: 8, count: 12 }],
  ["vfio_irq_set", vfio_irq_set, 20, 20, { argsz: 0, flags: 4, index: 8, start: 12, count: 16 }],
  ["vfio_pci_hot_reset", vfio_pci_hot_reset, 12, 12, { argsz: 0, flags: 4, count: 8 }],
  ["vfio_pci_hot_reset_info", vfio_pci_hot_reset_info, 12, 12, { argsz: 0, flags: 4, count: 8 }],
  // The C field at 0 is group_id; with the cdev (FLAG_DEV_ID) the same u32 is devid.
  [
    "vfio_pci_dependent_device",
    vfio_pci_dependent_device,
    8,
    8,
    { devid: 0, segment: 4, bus: 6, devfn: 7 },
  ],
  ["vfio_device_feature", vfio_device_feature, 8, 8, { argsz: 0, flags: 4 }],
  [
    "vfio_device_feature_dma_buf",
    vfio_device_feature_dma_buf,
    16,
    16,
    { region_index: 0, open_flags: 4, flags: 8, nr_ranges: 12 },
  ],
  ["vfio_region_dma_range", vfio_region_dma_range, 16, 16, { offset: 0, length: 8 }],
  [
    "vfio_device_bind_iommufd",
    vfio_device_bind_iommufd,
    24,
    16,
    { argsz: 0, flags: 4, iommufd: 8, out_devid: 12, token_uuid_ptr: 16 },
  ],
  [
    "vfio_device_attach_iommufd_pt",
    vfio_device_attach_iommufd_pt,
    16,
    12,
    { argsz: 0, flags: 4, pt_id: 8, pasid: 12 },
  ],
  [
    "vfio_device_detach_iommufd_pt",
    vfio_device_detach_iommufd_pt,
    12,
    8,
    { argsz: 0, flags: 4, pasid: 8 },
  ],
];

describe("VFIO codec tables match vfio.h", () => {
  it.each(GOLDEN)("struct %s", (_n, s, size, minsz, fields) => {
    expect(s.size).toBe(size);
    expect(s.minSize).toBe(minsz);
    expect(s.fieldNames).toEqual(Object.keys(fields));
    for (const [f, off] of Object.entries(fields))
      expect({ f, off: s.offsetOf(f) }).toEqual({ f, off });
  });

  it("out fields read back: out_devid, pt_id, num_regions / flags", () => {
    const bind = new Uint8Array(24);
    new DataView(bind.buffer).setUint32(12, 7, true);
    expect(vfio_device_bind_iommufd.decode(bind).out_devid).toBe(7);
    const at = vfio_device_attach_iommufd_pt.encode({ argsz: 12, pt_id: 3 });
    new DataView(at.buffer).setUint32(8, 9, true);
    expect(vfio_device_attach_iommufd_pt.decode(at).pt_id).toBe(9);
    const info = new Uint8Array(24);
    const v = new DataView(info.buffer);
    v.setUint32(4, VFIO_DEVICE_FLAGS_CAPS | 3, true);
    v.setUint32(8, 9, true);
    v.setUint32(12, 5, true);
    expect(vfio_device_info.decode(info)).toMatchObject({
      flags: 0x83,
      num_regions: 9,
      num_irqs: 5,
    });
  });
});

describe("variable-length VFIO buffers", () => {
  it("vfio_irq_set with s32 eventfds and u8 bools after the 20-byte header", () => {
    const fds = encodeIrqSet({
      flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
      index: 2,
      start: 1,
      count: 3,
      data: [5, -1, 7],
    });
    expect(fds.length).toBe(32);
    const v = new DataView(fds.buffer);
    expect([0, 4, 8, 12, 16].map((o) => v.getUint32(o, true))).toEqual([32, 0x24, 2, 1, 3]);
    expect([20, 24, 28].map((o) => v.getInt32(o, true))).toEqual([5, -1, 7]);
    expect(decodeIrqSet(fds)).toEqual({
      argsz: 32,
      flags: 0x24,
      index: 2,
      start: 1,
      count: 3,
      data: [5, -1, 7],
    });
    const bools = encodeIrqSet({
      flags: VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK,
      index: 0,
      count: 3,
      data: [1, 0, 1],
    });
    expect([...bools.subarray(20)]).toEqual([1, 0, 1]);
    expect(decodeIrqSet(bools).data).toEqual([1, 0, 1]);
    const none = encodeIrqSet({
      flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
      index: 1,
      count: 0,
    });
    expect(none.length).toBe(20);
    expect(decodeIrqSet(none).data).toEqual([]);
  });

  it("vfio_pci_hot_reset with s32 group_fds[] at 12", () => {
    const b = encodePciHotReset({ fds: [3, 4] });
    const v = new DataView(b.buffer);
    expect([0, 4, 8].map((o) => v.getUint32(o, true))).toEqual([20, 0, 2]);
    expect([v.getInt32(12, true), v.getInt32(16, true)]).toEqual([3, 4]);
    expect([...encodePciHotReset({})]).toEqual([12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("vfio_pci_hot_reset_info with vfio_pci_dependent_device[] at 12, 8 bytes each", () => {
    const b = new Uint8Array(28);
    const v = new DataView(b.buffer);
    v.setUint32(0, 28, true);
    v.setUint32(4, 3, true);
    v.setUint32(8, 2, true);
    v.setUint32(12, 1, true);
    v.setUint16(16, 0, true);
    b[18] = 0x3;
    b[19] = 0x8;
    v.setUint32(20, 0xffffffff, true);
    v.setUint16(24, 1, true);
    b[26] = 0x4;
    b[27] = 0x10;
    expect(decodeHotResetInfo(b)).toEqual({
      flags: 3,
      count: 2,
      devices: [
        { devid: 1, segment: 0, bus: 3, devfn: 8 },
        { devid: 0xffffffff, segment: 1, bus: 4, devfn: 0x10 },
      ],
    });
  });

  it("vfio_device_feature + vfio_device_feature_dma_buf + vfio_region_dma_range[] at 24", () => {
    const b = encodeDmaBufFeature({
      regionIndex: 2,
      openFlags: 0o2000002,
      ranges: [
        { offset: 0x1000n, length: 0x2000n },
        { offset: 0x10000n, length: 0x1000n },
      ],
    });
    const v = new DataView(b.buffer);
    expect(b.length).toBe(56);
    expect([0, 4, 8, 12, 16, 20].map((o) => v.getUint32(o, true))).toEqual([
      56,
      VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
      2,
      0o2000002,
      0,
      2,
    ]);
    expect([24, 32, 40, 48].map((o) => v.getBigUint64(o, true))).toEqual([
      0x1000n,
      0x2000n,
      0x10000n,
      0x1000n,
    ]);
  });

  it("region info with a capability chain: SPARSE_MMAP, TYPE and MSIX_MAPPABLE", () => {
    // 32-byte info; sparse mmap at 32 (16 + 2 areas of 16); type at 80; msix at 96.
    const b = new Uint8Array(104);
    const v = new DataView(b.buffer);
    v.setUint32(0, 104, true);
    v.setUint32(4, 0x7 | VFIO_REGION_INFO_FLAG_CAPS, true);
    v.setUint32(8, 0, true);
    v.setUint32(12, 32, true);
    v.setBigUint64(16, 0x100000n, true);
    v.setBigUint64(24, 0n, true);
    v.setUint16(32, VFIO_REGION_INFO_CAP_SPARSE_MMAP, true);
    v.setUint16(34, 1, true);
    v.setUint32(36, 80, true);
    v.setUint32(40, 2, true);
    v.setBigUint64(48, 0n, true);
    v.setBigUint64(56, 0x1000n, true);
    v.setBigUint64(64, 0x3000n, true);
    v.setBigUint64(72, 0xfd000n, true);
    v.setUint16(80, VFIO_REGION_INFO_CAP_TYPE, true);
    v.setUint16(82, 1, true);
    v.setUint32(84, 96, true);
    v.setUint32(88, 0x80008086, true);
    v.setUint32(92, 1, true);
    v.setUint16(96, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, true);
    v.setUint16(98, 1, true);
    v.setUint32(100, 0, true);
    expect(decodeRegionInfo(b)).toEqual({
      flags: 0xf,
      index: 0,
      size: 0x100000n,
      offset: 0n,
      sparseMmap: [
        { offset: 0n, size: 0x1000n },
        { offset: 0x3000n, size: 0xfd000n },
      ],
      type: { type: 0x80008086, subtype: 1 },
      msixMappable: true,
    });
    // Without FLAG_CAPS the chain is not followed.
    v.setUint32(4, 0x7, true);
    expect(decodeRegionInfo(b)).toEqual({
      flags: 0x7,
      index: 0,
      size: 0x100000n,
      offset: 0n,
      msixMappable: false,
    });
  });
});
