/**
 * Golden VFIO layouts (include/uapi/linux/vfio.h, with the DMA_BUF feature of the series): the
 * ioctl numbers, the sizes, and each field at the offset the C compiler gives it. The handlers
 * read and write their structures at literal offsets, so the fields are pinned by building the
 * bytes by hand here and checking what the kernel side makes of them.
 */
import { amdIommuDriver } from "@x/iommu-pgtable";
import { IommufdClient, iommufdInit } from "@x/iommufd";
import { Libc, O_CLOEXEC, O_RDONLY, O_RDWR } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_BIND_IOMMUFD_MINSZ,
  VFIO_DEVICE_BIND_IOMMUFD_SIZE,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_DMA_BUF_SIZE,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MINSZ,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_INFO_MINSZ,
  VFIO_DEVICE_INFO_SIZE,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_LOW_POWER_ENTRY_WITH_WAKEUP_SIZE,
  VFIO_PCI_HOT_RESET_MINSZ,
  VFIO_REGION_DMA_RANGE_SIZE,
  VFIO_REGION_INFO_SIZE,
  encodeDmaBufFeature,
} from "../src/vfio-uapi.js";
import type { VfioPciDmaBuf } from "../src/vfio-pci-dmabuf.js";
import { GPU, MiB, PAGE, getBuf, gpu, machine } from "./helpers.js";

function bytes(n: number): { b: Uint8Array; v: DataView } {
  const b = new Uint8Array(n);
  return { b, v: new DataView(b.buffer) };
}

describe("VFIO ioctl numbers: _IO(';', 100 + k)", () => {
  it.each([
    ["VFIO_DEVICE_GET_INFO", VFIO_DEVICE_GET_INFO, 0x3b6b],
    ["VFIO_DEVICE_GET_REGION_INFO", VFIO_DEVICE_GET_REGION_INFO, 0x3b6c],
    ["VFIO_DEVICE_RESET", VFIO_DEVICE_RESET, 0x3b6f],
    ["VFIO_DEVICE_PCI_HOT_RESET", VFIO_DEVICE_PCI_HOT_RESET, 0x3b71],
    ["VFIO_DEVICE_FEATURE", VFIO_DEVICE_FEATURE, 0x3b75],
    ["VFIO_DEVICE_BIND_IOMMUFD", VFIO_DEVICE_BIND_IOMMUFD, 0x3b76],
    ["VFIO_DEVICE_ATTACH_IOMMUFD_PT", VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77],
    ["VFIO_DEVICE_DETACH_IOMMUFD_PT", VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78],
  ])("%s = %s", (_n, num, want) => expect(num).toBe(want));

  it("feature flags and the DMA_BUF feature number", () => {
    expect(VFIO_DEVICE_FEATURE_GET).toBe(0x10000);
    expect(VFIO_DEVICE_FEATURE_SET).toBe(0x20000);
    expect(VFIO_DEVICE_FEATURE_PROBE).toBe(0x40000);
    expect(VFIO_DEVICE_FEATURE_DMA_BUF).toBe(11);
  });
});

describe("VFIO structure sizes (sizeof and the handlers' minsz)", () => {
  it.each([
    ["sizeof(struct vfio_device_info)", VFIO_DEVICE_INFO_SIZE, 24],
    ["offsetofend(struct vfio_device_info, num_irqs)", VFIO_DEVICE_INFO_MINSZ, 16],
    ["sizeof(struct vfio_region_info)", VFIO_REGION_INFO_SIZE, 32],
    ["offsetofend(struct vfio_pci_hot_reset, count)", VFIO_PCI_HOT_RESET_MINSZ, 12],
    ["sizeof(struct vfio_device_feature)", VFIO_DEVICE_FEATURE_MINSZ, 8],
    [
      "sizeof(struct vfio_device_low_power_entry_with_wakeup)",
      VFIO_LOW_POWER_ENTRY_WITH_WAKEUP_SIZE,
      8,
    ],
    ["sizeof(struct vfio_device_feature_dma_buf)", VFIO_DEVICE_FEATURE_DMA_BUF_SIZE, 16],
    ["sizeof(struct vfio_region_dma_range)", VFIO_REGION_DMA_RANGE_SIZE, 16],
    ["sizeof(struct vfio_device_bind_iommufd)", VFIO_DEVICE_BIND_IOMMUFD_SIZE, 24],
    ["offsetofend(struct vfio_device_bind_iommufd, out_devid)", VFIO_DEVICE_BIND_IOMMUFD_MINSZ, 16],
    [
      "offsetofend(struct vfio_device_attach_iommufd_pt, pt_id)",
      VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ,
      12,
    ],
    [
      "offsetofend(struct vfio_device_detach_iommufd_pt, flags)",
      VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ,
      8,
    ],
  ])("%s = %s", (_n, got, want) => expect(got).toBe(want));
});

describe("VFIO structure fields at their C offsets", () => {
  it("vfio_device_info: argsz 0, flags 4, num_regions 8, num_irqs 12, cap_offset 16", () => {
    const m = machine();
    const { fd } = gpu(m);
    const { b, v } = bytes(24);
    v.setUint32(0, 24, true);
    v.setUint32(16, 0xdead, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_INFO, b)).toBe(0);
    expect(v.getUint32(0, true)).toBe(24);
    expect(v.getUint32(4, true)).toBe(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    expect(v.getUint32(8, true)).toBe(9); // VFIO_PCI_NUM_REGIONS
    expect(v.getUint32(12, true)).toBe(5); // VFIO_PCI_NUM_IRQS
  });

  it("vfio_region_info: argsz 0, flags 4, index 8, cap_offset 12, size 16, offset 24", () => {
    const m = machine();
    const { fd } = gpu(m);
    const { b, v } = bytes(32);
    v.setUint32(0, 32, true);
    v.setUint32(8, 2, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, b)).toBe(0);
    expect(v.getUint32(8, true)).toBe(2);
    expect(v.getUint32(12, true)).toBe(0);
    expect(v.getBigUint64(16, true)).toBe(MiB); // BAR 2 of the test GPU
    expect(v.getBigUint64(24, true)).toBe(2n << 40n);
    expect(v.getUint32(4, true) & 0x3).toBe(0x3); // READ | WRITE
  });

  it("vfio_device_feature + vfio_device_feature_dma_buf + vfio_region_dma_range[]", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const { b, v } = bytes(8 + 16 + 2 * 16);
    v.setUint32(0, b.byteLength, true); // argsz
    v.setUint32(4, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, true); // flags
    v.setUint32(8, 0, true); // region_index
    v.setUint32(12, O_RDONLY | O_CLOEXEC, true); // open_flags
    v.setUint32(16, 0, true); // flags
    v.setUint32(20, 2, true); // nr_ranges
    v.setBigUint64(24, 4n * PAGE, true); // dma_ranges[0].offset
    v.setBigUint64(32, PAGE, true); // dma_ranges[0].length
    v.setBigUint64(40, 0n, true); // dma_ranges[1].offset
    v.setBigUint64(48, 2n * PAGE, true); // dma_ranges[1].length
    expect(
      encodeDmaBufFeature({
        regionIndex: 0,
        openFlags: O_RDONLY | O_CLOEXEC,
        ranges: [
          { offset: 4n * PAGE, length: PAGE },
          { offset: 0n, length: 2n * PAGE },
        ],
      }),
    ).toEqual(b);
    const dfd = m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b);
    expect(dfd).toBeGreaterThan(fd);
    expect(m.libc.process.files.cloexec(dfd)).toBe(true);
    const buf = getBuf(m, dfd);
    const priv = buf.priv as VfioPciDmaBuf;
    const start = vdev.pdev.resource(0).start;
    expect(buf.size).toBe(3n * PAGE);
    expect([...priv.paddr]).toEqual([start + 4n * PAGE, start]);
    expect([...priv.len]).toEqual([PAGE, 2n * PAGE]);
    // flags at 16 is the dma_buf struct's own: non-zero is refused.
    v.setUint32(16, 1, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b)).toBe(-1);
  });

  it("vfio_device_bind_iommufd: iommufd 8, out_devid 12; attach: pt_id 8 (written back)", () => {
    const m = machine();
    iommufdInit(m.kernel);
    const libc = new Libc(m.kernel);
    const vdev = m.mod.probe(
      m.bus.addDevice({
        ...GPU,
        bars: [{ type: "mem64", size: 16n * MiB }],
        iommu: amdIommuDriver(m.kernel),
      }),
    );
    const iommufd = IommufdClient.open(libc);
    const ioas = iommufd.ioasAlloc();
    const fd = libc.open(vdev.cdevPath!, O_RDWR);
    const bind = bytes(24);
    bind.v.setUint32(0, 24, true);
    bind.v.setInt32(8, iommufd.fd, true);
    bind.v.setUint32(12, 0xffffffff, true);
    expect(libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, bind.b)).toBe(0);
    const devid = bind.v.getUint32(12, true);
    expect(devid).not.toBe(0xffffffff);
    expect(devid).toBe(vdev.binding!.devid);
    const at = bytes(16);
    at.v.setUint32(0, 12, true);
    at.v.setUint32(8, ioas, true);
    expect(libc.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, at.b)).toBe(0);
    const hwpt = at.v.getUint32(8, true);
    expect(hwpt).not.toBe(ioas); // the auto domain's HWPT id replaces the IOAS id
    const de = bytes(12);
    de.v.setUint32(0, 8, true);
    expect(libc.ioctl(fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, de.b)).toBe(0);
  });
});
