/**
 * IOMMU_VIOMMU_ALLOC and IOMMU_VDEVICE_ALLOC (viommu.c) for a machine whose IOMMU drivers offer
 * no virtual IOMMU: both ioctls exist with their layouts, size rules and early checks, and
 * answer what such a kernel answers — VIOMMU_ALLOC EOPNOTSUPP for a real device (no
 * viommu_init op), VDEVICE_ALLOC ENOENT (no vIOMMU object can exist).
 */
import { EOPNOTSUPP, KernelWarning, fail } from "@x/kernel";
import { getIommufdDevice } from "./device.js";
import { IOMMUFD_OBJ_VIOMMU, type IommufdUcmd } from "./main.js";
import type { iommu_vdevice_alloc, iommu_viommu_alloc } from "./uapi.js";

export const IOMMU_VIOMMU_TYPE_DEFAULT = 0;

/** iommufd_viommu_alloc_ioctl */
export function iommufdViommuAllocIoctl(
  ucmd: IommufdUcmd<(typeof iommu_viommu_alloc)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) fail(EOPNOTSUPP, "flags/type");
  const idev = getIommufdDevice(ctx, cmd.dev_id);
  ctx.putObject(idev);
  return fail(EOPNOTSUPP, "the device's IOMMU driver has no vIOMMU");
}

/** iommufd_vdevice_alloc_ioctl: the vIOMMU lookup fails first (virt_id always fits 64 bits). */
export function iommufdVdeviceAllocIoctl(
  ucmd: IommufdUcmd<(typeof iommu_vdevice_alloc)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  return ctx.withObject(cmd.viommu_id, IOMMUFD_OBJ_VIOMMU, () => {
    throw new KernelWarning("a vIOMMU object exists without vIOMMU support");
  });
}
