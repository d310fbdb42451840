/**
 * The ioctl table of /dev/iommu (main.c's iommufd_ioctl_ops) and module load. Kept apart from
 * main.ts so the object files can import the core without an import cycle.
 *
 * Decision: fault queues, vEVENTQs and HW queues (0x8E, 0x93, 0x94) are outside this model; their slots stay empty, so they answer ENOTTY after the `size` read,
 * as any hole of the table does. HWPT_INVALIDATE, VIOMMU_ALLOC and VDEVICE_ALLOC are present and
 * behave as on a machine whose IOMMU drivers have no nesting or vIOMMU support.
 */
import type { Kernel } from "@x/kernel";
import {
  iommufdGetHwInfo,
  iommufdHwptAlloc,
  iommufdHwptGetDirtyBitmap,
  iommufdHwptInvalidate,
  iommufdHwptSetDirtyTracking,
} from "./hw-pagetable.js";
import {
  iommufdIoasAllocIoctl,
  iommufdIoasAllowIovas,
  iommufdIoasChangeProcess,
  iommufdIoasCopy,
  iommufdIoasIovaRanges,
  iommufdIoasMap,
  iommufdIoasMapFile,
  iommufdIoasOption,
  iommufdIoasUnmap,
} from "./ioas.js";
import {
  type IommufdIoctlOp,
  IommufdModule,
  ioctlOp,
  iommufdDestroy,
  iommufdOption,
} from "./main.js";
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VIOMMU_ALLOC,
  iommu_destroy,
  iommu_hw_info,
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
  iommu_option,
  iommu_vdevice_alloc,
  iommu_vfio_ioas,
  iommu_viommu_alloc,
} from "./uapi.js";
import { iommufdVfioIoas, iommufdVfioIoctl } from "./vfio-compat.js";
import { iommufdVdeviceAllocIoctl, iommufdViommuAllocIoctl } from "./viommu.js";

/**
 * The /dev/iommu ioctl table (@see iommufd_ioctl_ops): number, structure and handler of each
 * command. Exported so tests and tools iterate the very table the kernel dispatches from.
 */
export const IOMMUFD_IOCTL_OPS: readonly IommufdIoctlOp[] = [
  ioctlOp(IOMMU_DESTROY, iommu_destroy, iommufdDestroy),
  ioctlOp(IOMMU_IOAS_ALLOC, iommu_ioas_alloc, iommufdIoasAllocIoctl),
  ioctlOp(IOMMU_IOAS_ALLOW_IOVAS, iommu_ioas_allow_iovas, iommufdIoasAllowIovas),
  ioctlOp(IOMMU_IOAS_COPY, iommu_ioas_copy, iommufdIoasCopy),
  ioctlOp(IOMMU_IOAS_IOVA_RANGES, iommu_ioas_iova_ranges, iommufdIoasIovaRanges),
  ioctlOp(IOMMU_IOAS_MAP, iommu_ioas_map, iommufdIoasMap),
  ioctlOp(IOMMU_IOAS_UNMAP, iommu_ioas_unmap, iommufdIoasUnmap),
  ioctlOp(IOMMU_OPTION, iommu_option, iommufdOption(iommufdIoasOption)),
  ioctlOp(IOMMU_VFIO_IOAS, iommu_vfio_ioas, iommufdVfioIoas),
  ioctlOp(IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, iommufdHwptAlloc),
  ioctlOp(IOMMU_GET_HW_INFO, iommu_hw_info, iommufdGetHwInfo),
  ioctlOp(
    IOMMU_HWPT_SET_DIRTY_TRACKING,
    iommu_hwpt_set_dirty_tracking,
    iommufdHwptSetDirtyTracking,
  ),
  ioctlOp(IOMMU_HWPT_GET_DIRTY_BITMAP, iommu_hwpt_get_dirty_bitmap, iommufdHwptGetDirtyBitmap),
  ioctlOp(IOMMU_HWPT_INVALIDATE, iommu_hwpt_invalidate, iommufdHwptInvalidate),
  ioctlOp(IOMMU_IOAS_MAP_FILE, iommu_ioas_map_file, iommufdIoasMapFile),
  ioctlOp(IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, iommufdViommuAllocIoctl),
  ioctlOp(IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, iommufdVdeviceAllocIoctl),
  ioctlOp(IOMMU_IOAS_CHANGE_PROCESS, iommu_ioas_change_process, iommufdIoasChangeProcess),
];

/**
 * Load iommufd into a kernel: registers /dev/iommu (and, with `vfioContainer`, the VFIO
 * container node /dev/vfio/vfio served by the compat layer) and fills the ioctl table.
 */
export function iommufdInit(
  kernel: Kernel,
  options: { vfioContainer?: boolean } = {},
): IommufdModule {
  const module = new IommufdModule(kernel, options);
  module.compat = iommufdVfioIoctl;
  module.addIoctls(IOMMUFD_IOCTL_OPS);
  return module;
}
