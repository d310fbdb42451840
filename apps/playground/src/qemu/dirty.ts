/**
 * QEMU's IOMMU dirty tracking on an iommufd container (hw/vfio/iommufd.c, backends/iommufd.c):
 * tracking switched on and off on every HWPT that was allocated with DIRTY_TRACKING, and the
 * bitmap read-and-cleared per HWPT into one buffer — one bit per page, the kernel only setting
 * bits, so the HWPTs' dirty sets add up.
 */
import { PAGE_SIZE, errnoName } from "@x/kernel";
import {
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
} from "@x/iommufd";
import { bytes, hex } from "../snapshot.js";
import { VmmFatal } from "../vmm.js";
import type { QemuMachine } from "./machine.js";

const IOMMU_HWPT_SET_DIRTY_TRACKING_ENABLE = 1 << 0;

/**
 * iommufd_set_dirty_page_tracking → iommufd_backend_set_dirty_tracking for each HWPT; a failure
 * undoes the HWPTs already switched and is returned to migration, which fails.
 */
export function iommufdSetDirtyPageTracking(q: QemuMachine, start: boolean): void {
  const done: number[] = [];
  for (const hwpt of q.vmm.hwpts) {
    const ret = setDirtyTracking(q, hwpt, start);
    if (ret < 0) {
      for (const h of done) setDirtyTracking(q, h, !start);
      throw new VmmFatal(
        `vfio: Could not ${start ? "start" : "stop"} dirty tracking: ${errnoName(-ret)}`,
        -ret,
      );
    }
    done.push(hwpt);
  }
}

function setDirtyTracking(q: QemuMachine, hwpt: number, enable: boolean): number {
  const buf = iommu_hwpt_set_dirty_tracking.encode({
    size: iommu_hwpt_set_dirty_tracking.size,
    flags: enable ? IOMMU_HWPT_SET_DIRTY_TRACKING_ENABLE : 0,
    hwpt_id: hwpt,
  });
  return q.sys.call(
    `ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, hwpt=${hwpt}, ${enable ? "ENABLE" : "0"})`,
    () => q.vmm.libc.ioctl(q.vmm.iommufd, IOMMU_HWPT_SET_DIRTY_TRACKING, buf),
  );
}

/**
 * iommufd_query_dirty_bitmap: IOMMU_HWPT_GET_DIRTY_BITMAP (read and clear) of [iova, iova +
 * size) at page granularity from every HWPT into one bitmap; the set page indexes come back.
 * A failure fails the migration.
 */
export function iommufdQueryDirtyBitmap(q: QemuMachine, iova: bigint, size: bigint): number[] {
  const pages = Number(size / BigInt(PAGE_SIZE));
  const len = Math.ceil(pages / 64) * 8;
  const data = q.vmm.libc.malloc(len);
  q.vmm.libc.poke(data, new Uint8Array(len));
  try {
    for (const hwpt of q.vmm.hwpts) {
      const buf = iommu_hwpt_get_dirty_bitmap.encode({
        size: iommu_hwpt_get_dirty_bitmap.size,
        hwpt_id: hwpt,
        iova,
        length: size,
        page_size: BigInt(PAGE_SIZE),
        data,
      });
      const ret = q.sys.call(
        `ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, hwpt=${hwpt}, iova=${hex(iova)} len=${bytes(size)} page=4 KiB)`,
        () => q.vmm.libc.ioctl(q.vmm.iommufd, IOMMU_HWPT_GET_DIRTY_BITMAP, buf),
      );
      if (ret < 0) throw new VmmFatal(`vfio: Failed to get dirty bitmap: ${errnoName(-ret)}`, -ret);
    }
    const bits = q.vmm.libc.peek(data, len);
    const out: number[] = [];
    for (let i = 0; i < pages; i++) if ((bits[i >> 3] ?? 0) & (1 << (i & 7))) out.push(i);
    return out;
  } finally {
    q.vmm.libc.free(data);
  }
}
