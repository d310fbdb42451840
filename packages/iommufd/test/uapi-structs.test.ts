import { describe, expect, it } from "vitest";
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
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
  IOMMU_VFIO_IOAS,
  VFIO_CHECK_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_option,
  iommu_test_cmd,
  iommu_vfio_ioas,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
} from "../src/index.js";

describe("ioctl numbers (include/uapi/linux/iommufd.h)", () => {
  it.each([
    [IOMMU_DESTROY, 0x3b80],
    [IOMMU_IOAS_ALLOC, 0x3b81],
    [IOMMU_IOAS_ALLOW_IOVAS, 0x3b82],
    [IOMMU_IOAS_COPY, 0x3b83],
    [IOMMU_IOAS_IOVA_RANGES, 0x3b84],
    [IOMMU_IOAS_MAP, 0x3b85],
    [IOMMU_IOAS_UNMAP, 0x3b86],
    [IOMMU_OPTION, 0x3b87],
    [IOMMU_VFIO_IOAS, 0x3b88],
    [IOMMU_HWPT_ALLOC, 0x3b89],
    [IOMMU_GET_HW_INFO, 0x3b8a],
    [IOMMU_IOAS_MAP_FILE, 0x3b8f],
    [IOMMU_IOAS_CHANGE_PROCESS, 0x3b92],
    [IOMMU_TEST_CMD, 0x3ba0],
    [VFIO_GET_API_VERSION, 0x3b64],
    [VFIO_CHECK_EXTENSION, 0x3b65],
    [VFIO_SET_IOMMU, 0x3b66],
    [VFIO_IOMMU_GET_INFO, 0x3b70],
    [VFIO_IOMMU_MAP_DMA, 0x3b71],
    [VFIO_IOMMU_UNMAP_DMA, 0x3b72],
  ])("0x%s", (num, want) => expect(num).toBe(want));
});

describe("structure sizes and minimum sizes (include/uapi/linux/iommufd.h)", () => {
  it.each([
    [iommu_destroy, 8, 8],
    [iommu_ioas_alloc, 12, 12],
    [iommu_ioas_iova_ranges, 32, 32],
    [iommu_ioas_allow_iovas, 24, 24],
    [iommu_ioas_map, 40, 40],
    [iommu_ioas_map_file, 40, 40],
    [iommu_ioas_copy, 40, 40],
    [iommu_ioas_unmap, 24, 24],
    [iommu_option, 24, 24],
    [iommu_vfio_ioas, 12, 12],
    [iommu_hwpt_alloc, 48, 24],
    [iommu_hw_info, 40, 32],
    [iommu_test_cmd, 72, 68],
    [vfio_iommu_type1_dma_map, 32, 32],
    [vfio_iommu_type1_dma_unmap, 24, 24],
    [vfio_iommu_type1_info, 24, 16],
  ] as const)("%o", (s, size, min) => {
    expect(s.size).toBe(size);
    expect(s.minSize).toBe(min);
  });

  it("field offsets of the map structures", () => {
    expect(
      ["size", "flags", "ioas_id", "__reserved", "user_va", "length", "iova"].map((f) =>
        iommu_ioas_map.offsetOf(f as "size"),
      ),
    ).toEqual([0, 4, 8, 12, 16, 24, 32]);
    expect(
      ["size", "flags", "ioas_id", "fd", "start", "length", "iova"].map((f) =>
        iommu_ioas_map_file.offsetOf(f as "size"),
      ),
    ).toEqual([0, 4, 8, 12, 16, 24, 32]);
    expect(iommu_option.offsetOf("op")).toBe(8);
    expect(iommu_option.offsetOf("__reserved")).toBe(10);
    expect(iommu_option.offsetOf("val64")).toBe(16);
    expect(iommu_hwpt_alloc.endOf("__reserved")).toBe(24);
    expect(iommu_hw_info.endOf("__reserved")).toBe(32);
    expect(iommu_test_cmd.endOf("last")).toBe(68);
  });
});

describe("codec", () => {
  it("encodes little endian, the fd as s32 and u64 as bigint", () => {
    const b = iommu_ioas_map_file.encode({
      size: 40,
      flags: 6,
      ioas_id: 0x01020304,
      fd: -1,
      start: 0x1122334455667788n,
      length: 0xffff_ffff_ffff_ffffn,
    });
    expect([...b.subarray(0, 16)]).toEqual([
      40, 0, 0, 0, 6, 0, 0, 0, 4, 3, 2, 1, 0xff, 0xff, 0xff, 0xff,
    ]);
    expect([...b.subarray(16, 24)]).toEqual([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    const d = iommu_ioas_map_file.decode(b);
    expect(d.fd).toBe(-1);
    expect(d.length).toBe(0xffff_ffff_ffff_ffffn);
    expect(d.iova).toBe(0n);
  });

  it("decodes a short buffer as zero-extended", () => {
    const d = iommu_hwpt_alloc.decode(new Uint8Array(24).fill(1));
    expect(d.__reserved).toBe(0x01010101);
    expect(d.data_type).toBe(0);
    expect(d.data_uptr).toBe(0n);
  });

  it("the u8[3] reserved field reads every byte", () => {
    const b = new Uint8Array(40);
    b[31] = 1;
    expect(iommu_hw_info.decode(b).__reserved).toBe(0x10000);
    b[31] = 0;
    b[29] = 2;
    expect(iommu_hw_info.get(b, "__reserved")).toBe(2);
  });

  it("round-trips every field", () => {
    const v = {
      size: 40,
      flags: 7,
      dst_ioas_id: 3,
      src_ioas_id: 4,
      length: 5n,
      dst_iova: 6n,
      src_iova: 7n,
    };
    expect(iommu_ioas_copy.decode(iommu_ioas_copy.encode(v))).toEqual(v);
  });
});
