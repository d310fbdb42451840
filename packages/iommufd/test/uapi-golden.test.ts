/**
 * Golden layouts: every structure of the iommufd uAPI and the VFIO type1 structures /dev/iommu
 * answers, pinned field by field to the offsets the C compiler gives the kernel's headers
 * (include/uapi/linux/iommufd.h, include/uapi/linux/vfio.h; x86_64/arm64, `__aligned_u64` on 8).
 * Every number below is written out from the header, never read back from the codec's tables,
 * so a moved or swapped field in src/uapi.ts fails here.
 */
import { describe, expect, it } from "vitest";
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_TEST_CMD,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VIOMMU_ALLOC,
  type Struct,
  VFIO_CHECK_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  iommu_destroy,
  iommu_fault_alloc,
  iommu_hw_info,
  iommu_hw_queue_alloc,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_change_process,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_iova_range,
  iommu_option,
  iommu_test_cmd,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_vfio_ioas,
  iommu_viommu_alloc,
  vfio_info_cap_header,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_dma_avail,
  vfio_iova_range,
} from "../src/uapi.js";

// biome-ignore lint/suspicious/noExplicitAny: any layout
type AnyStruct = Struct<any>;

/** [layout, sizeof, { field: offsetof }] with every member of the C struct, in C order. */
const GOLDEN: ReadonlyArray<readonly [AnyStruct, number, Record<string, number>]> = [
  [iommu_destroy, 8, { size: 0, id: 4 }],
  [iommu_ioas_alloc, 12, { size: 0, flags: 4, out_ioas_id: 8 }],
  [iommu_iova_range, 16, { start: 0, last: 8 }],
  [
    iommu_ioas_iova_ranges,
    32,
    {
      size: 0,
      ioas_id: 4,
      num_iovas: 8,
      __reserved: 12,
      allowed_iovas: 16,
      out_iova_alignment: 24,
    },
  ],
  [
    iommu_ioas_allow_iovas,
    24,
    { size: 0, ioas_id: 4, num_iovas: 8, __reserved: 12, allowed_iovas: 16 },
  ],
  [
    iommu_ioas_map,
    40,
    { size: 0, flags: 4, ioas_id: 8, __reserved: 12, user_va: 16, length: 24, iova: 32 },
  ],
  [
    iommu_ioas_map_file,
    40,
    { size: 0, flags: 4, ioas_id: 8, fd: 12, start: 16, length: 24, iova: 32 },
  ],
  [
    iommu_ioas_copy,
    40,
    { size: 0, flags: 4, dst_ioas_id: 8, src_ioas_id: 12, length: 16, dst_iova: 24, src_iova: 32 },
  ],
  [iommu_ioas_unmap, 24, { size: 0, ioas_id: 4, iova: 8, length: 16 }],
  [iommu_option, 24, { size: 0, option_id: 4, op: 8, __reserved: 10, object_id: 12, val64: 16 }],
  [iommu_vfio_ioas, 12, { size: 0, ioas_id: 4, op: 8, __reserved: 10 }],
  [
    iommu_hwpt_alloc,
    48,
    {
      size: 0,
      flags: 4,
      dev_id: 8,
      pt_id: 12,
      out_hwpt_id: 16,
      __reserved: 20,
      data_type: 24,
      data_len: 28,
      data_uptr: 32,
      fault_id: 40,
      __reserved2: 44,
    },
  ],
  [
    iommu_hw_info,
    40,
    {
      size: 0,
      flags: 4,
      dev_id: 8,
      data_len: 12,
      data_uptr: 16,
      // The union { in_data_type; out_data_type; }.
      data_type: 24,
      out_max_pasid_log2: 28,
      __reserved: 29,
      out_capabilities: 32,
    },
  ],
  [iommu_hwpt_set_dirty_tracking, 16, { size: 0, flags: 4, hwpt_id: 8, __reserved: 12 }],
  [
    iommu_hwpt_get_dirty_bitmap,
    48,
    {
      size: 0,
      hwpt_id: 4,
      flags: 8,
      __reserved: 12,
      iova: 16,
      length: 24,
      page_size: 32,
      data: 40,
    },
  ],
  [
    iommu_hwpt_invalidate,
    32,
    {
      size: 0,
      hwpt_id: 4,
      data_uptr: 8,
      data_type: 16,
      entry_len: 20,
      entry_num: 24,
      __reserved: 28,
    },
  ],
  [iommu_fault_alloc, 16, { size: 0, flags: 4, out_fault_id: 8, out_fault_fd: 12 }],
  [
    iommu_viommu_alloc,
    40,
    {
      size: 0,
      flags: 4,
      type: 8,
      dev_id: 12,
      hwpt_id: 16,
      out_viommu_id: 20,
      data_len: 24,
      __reserved: 28,
      data_uptr: 32,
    },
  ],
  [iommu_vdevice_alloc, 24, { size: 0, viommu_id: 4, dev_id: 8, out_vdevice_id: 12, virt_id: 16 }],
  [iommu_ioas_change_process, 8, { size: 0, __reserved: 4 }],
  [
    iommu_veventq_alloc,
    32,
    {
      size: 0,
      flags: 4,
      viommu_id: 8,
      type: 12,
      veventq_depth: 16,
      out_veventq_id: 20,
      out_veventq_fd: 24,
      __reserved: 28,
    },
  ],
  [
    iommu_hw_queue_alloc,
    40,
    {
      size: 0,
      flags: 4,
      viommu_id: 8,
      type: 12,
      index: 16,
      out_hw_queue_id: 20,
      nesting_parent_iova: 24,
      length: 32,
    },
  ],
  // drivers/iommu/iommufd/iommufd_test.h: the fixed part around the 48-byte union at 16.
  [iommu_test_cmd, 72, { size: 0, op: 4, id: 8, __reserved: 12, last: 64 }],
  // include/uapi/linux/vfio.h, type1 container side.
  [vfio_iommu_type1_dma_map, 32, { argsz: 0, flags: 4, vaddr: 8, iova: 16, size: 24 }],
  [vfio_iommu_type1_dma_unmap, 24, { argsz: 0, flags: 4, iova: 8, size: 16 }],
  [vfio_iommu_type1_info, 24, { argsz: 0, flags: 4, iova_pgsizes: 8, cap_offset: 16, pad: 20 }],
  [vfio_info_cap_header, 8, { id: 0, version: 2, next: 4 }],
  [
    vfio_iommu_type1_info_cap_iova_range,
    16,
    { id: 0, version: 2, next: 4, nr_iovas: 8, reserved: 12 },
  ],
  [vfio_iova_range, 16, { start: 0, end: 8 }],
  [vfio_iommu_type1_info_dma_avail, 12, { id: 0, version: 2, next: 4, avail: 8 }],
];

describe("uAPI structure layouts match the kernel headers", () => {
  it.each(GOLDEN.map(([s, size, fields]) => [s.name, s, size, fields] as const))(
    "%s",
    (_name, s, size, fields) => {
      expect(s.size).toBe(size);
      expect(s.fieldNames).toEqual(Object.keys(fields));
      for (const [field, off] of Object.entries(fields))
        expect({ field, off: s.offsetOf(field) }).toEqual({ field, off });
    },
  );

  it("iommu_ioas_copy: each field decodes from the bytes at its C offset", () => {
    const b = new Uint8Array(40);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, 40, true);
    dv.setUint32(4, 7, true);
    dv.setUint32(8, 11, true);
    dv.setUint32(12, 13, true);
    dv.setBigUint64(16, 0x1000n, true);
    dv.setBigUint64(24, 0x2000n, true);
    dv.setBigUint64(32, 0x3000n, true);
    expect(iommu_ioas_copy.decode(b)).toEqual({
      size: 40,
      flags: 7,
      dst_ioas_id: 11,
      src_ioas_id: 13,
      length: 0x1000n,
      dst_iova: 0x2000n,
      src_iova: 0x3000n,
    });
    expect(iommu_ioas_copy.offsetOf("dst_iova")).toBe(24);
    expect(iommu_ioas_copy.offsetOf("src_iova")).toBe(32);
  });
});

describe("ioctl numbers: _IO(';', nr) with the header's nr", () => {
  it.each([
    ["IOMMU_DESTROY", IOMMU_DESTROY, 0x3b80],
    ["IOMMU_IOAS_ALLOC", IOMMU_IOAS_ALLOC, 0x3b81],
    ["IOMMU_IOAS_ALLOW_IOVAS", IOMMU_IOAS_ALLOW_IOVAS, 0x3b82],
    ["IOMMU_IOAS_COPY", IOMMU_IOAS_COPY, 0x3b83],
    ["IOMMU_IOAS_IOVA_RANGES", IOMMU_IOAS_IOVA_RANGES, 0x3b84],
    ["IOMMU_IOAS_MAP", IOMMU_IOAS_MAP, 0x3b85],
    ["IOMMU_IOAS_UNMAP", IOMMU_IOAS_UNMAP, 0x3b86],
    ["IOMMU_OPTION", IOMMU_OPTION, 0x3b87],
    ["IOMMU_VFIO_IOAS", IOMMU_VFIO_IOAS, 0x3b88],
    ["IOMMU_HWPT_ALLOC", IOMMU_HWPT_ALLOC, 0x3b89],
    ["IOMMU_GET_HW_INFO", IOMMU_GET_HW_INFO, 0x3b8a],
    ["IOMMU_HWPT_SET_DIRTY_TRACKING", IOMMU_HWPT_SET_DIRTY_TRACKING, 0x3b8b],
    ["IOMMU_HWPT_GET_DIRTY_BITMAP", IOMMU_HWPT_GET_DIRTY_BITMAP, 0x3b8c],
    ["IOMMU_HWPT_INVALIDATE", IOMMU_HWPT_INVALIDATE, 0x3b8d],
    ["IOMMU_FAULT_QUEUE_ALLOC", IOMMU_FAULT_QUEUE_ALLOC, 0x3b8e],
    ["IOMMU_IOAS_MAP_FILE", IOMMU_IOAS_MAP_FILE, 0x3b8f],
    ["IOMMU_VIOMMU_ALLOC", IOMMU_VIOMMU_ALLOC, 0x3b90],
    ["IOMMU_VDEVICE_ALLOC", IOMMU_VDEVICE_ALLOC, 0x3b91],
    ["IOMMU_IOAS_CHANGE_PROCESS", IOMMU_IOAS_CHANGE_PROCESS, 0x3b92],
    ["IOMMU_VEVENTQ_ALLOC", IOMMU_VEVENTQ_ALLOC, 0x3b93],
    ["IOMMU_HW_QUEUE_ALLOC", IOMMU_HW_QUEUE_ALLOC, 0x3b94],
    ["IOMMU_TEST_CMD", IOMMU_TEST_CMD, 0x3ba0],
    ["VFIO_GET_API_VERSION", VFIO_GET_API_VERSION, 0x3b64],
    ["VFIO_CHECK_EXTENSION", VFIO_CHECK_EXTENSION, 0x3b65],
    ["VFIO_SET_IOMMU", VFIO_SET_IOMMU, 0x3b66],
    ["VFIO_IOMMU_GET_INFO", VFIO_IOMMU_GET_INFO, 0x3b70],
    ["VFIO_IOMMU_MAP_DMA", VFIO_IOMMU_MAP_DMA, 0x3b71],
    ["VFIO_IOMMU_UNMAP_DMA", VFIO_IOMMU_UNMAP_DMA, 0x3b72],
    ["VFIO_IOMMU_DIRTY_PAGES", VFIO_IOMMU_DIRTY_PAGES, 0x3b75],
  ])("%s = %s", (_name, num, want) => expect(num).toBe(want));
});
