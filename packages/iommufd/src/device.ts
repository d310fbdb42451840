/**
 * Devices (struct iommufd_device): the in-kernel API a driver — VFIO's device cdev, or the
 * selftest's mock bus — uses to hand a DMA-capable device to an iommufd context.
 *
 * For drivers (vfio-pci, @x/selftest):
 *
 *   const ctx = iommufdCtxFromFile(kernel, file)          // the /dev/iommu file the user passed
 *   const idev = iommufdDeviceBind(ctx, dev)              // EINVAL without coherent IOMMU; idev.id
 *   let ptId = iommufdDeviceAttach(idev, ioasOrHwptId)    // returns the HWPT id actually used
 *   ptId = iommufdDeviceReplace(idev, otherId)            // atomic move (EINVAL if not attached)
 *   iommufdDeviceDetach(idev)                             // back to blocked DMA
 *   iommufdDeviceUnbind(idev)                             // detach first; frees the id
 *
 * `dev` is @x/iommu-pgtable's `IommuDevice` (a device and its `IommuDriver`). Attaching to an
 * IOAS id reuses the first automatic domain of that IOAS the driver accepts (its `attachDev`
 * answering EINVAL means "incompatible, try the next") or allocates a new one, which the
 * io_pagetable fills with every area of the IOAS; an automatic domain is destroyed — unmapped,
 * unpinned, freed — when its last device leaves. Attaching to a paging HWPT id uses that domain.
 * Any other object type is EINVAL, an unknown id ENOENT. The device's reserved regions
 * (`driver.getResvRegions?.(dev)`) are reserved in the IOAS while it is attached (EADDRINUSE when
 * they collide with a mapping or an allowed range).
 *
 * Decision: every device is alone in its iommu group (what ACS-isolated PCIe functions and the
 * selftest mock devices are), so the group state of the kernel is the device's own.
 *
 * Binding holds a reference on the iommufd file, so the context outlives its bound devices
 * (except the selftest's mock devices, see `registerTestCmd`), and the driver holds the DEVICE
 * object (IOMMU_DESTROY of its id is EBUSY) until unbind.
 */
import { EINVAL, KernelWarning, WARN_ON, fail, type File, type Kernel } from "@x/kernel";
import {
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  type IommuDevice,
  iommuAttachDevice,
  iommuDetachDevice,
} from "@x/iommu-pgtable";
import { driverOf } from "./iommu-priv.js";
import type { IommufdIoas } from "./ioas.js";
import { iommufdHwPagetablePut, iommufdHwptPagingAlloc } from "./hw-pagetable.js";
import { type IommufdHwpt, findHwptPaging } from "./hw-pagetable-nested.js";
import type { IommufdVdevice } from "./viommu.js";
import {
  IOMMUFD_OBJ_ANY,
  IOMMUFD_OBJ_DEVICE,
  IOMMUFD_OBJ_HWPT_NESTED,
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_IOAS,
  type IommufdCtx,
  IommufdModule,
  IommufdObject,
} from "./main.js";

export class IommufdDevice extends IommufdObject {
  readonly type = IOMMUFD_OBJ_DEVICE;
  readonly enforceCacheCoherency: boolean;
  /** The HWPT the device is attached to (igroup->hwpt; one device per group here). */
  hwpt: IommufdHwpt | undefined;
  /** Its vDEVICE, at most one (idev->vdev). */
  vdev: IommufdVdevice | undefined;
  /** Being unbound: no new vDEVICE may be made for it (idev->destroying). */
  destroying = false;

  constructor(
    readonly ctx: IommufdCtx,
    readonly dev: IommuDevice,
  ) {
    super();
    this.enforceCacheCoherency = dev.iommu.capable(dev, IOMMU_CAP_ENFORCE_CACHE_COHERENCY);
  }

  /** iommufd_device_destroy */
  destroy(): void {
    WARN_ON(this.hwpt !== undefined, "device destroyed while attached");
    if (!this.ctx.module.isSelftestMockDev(this.dev)) this.ctx.file.put();
  }
}

/** iommufd_ctx_from_file for drivers: EBADFD unless `file` is a /dev/iommu file. */
export function iommufdCtxFromFile(kernel: Kernel, file: File): IommufdCtx {
  const module = IommufdModule.of(kernel);
  if (!module) throw new KernelWarning("iommufd not loaded");
  return module.ctxFromFile(file);
}

/**
 * iommufd_device_bind: create the DEVICE object. The driver keeps a reference until unbind, so
 * IOMMU_DESTROY of a bound device's id is EBUSY.
 */
export function iommufdDeviceBind(ctx: IommufdCtx, dev: IommuDevice): IommufdDevice {
  // iommufd always maps with IOMMU_CACHE, so a non-coherent IOMMU cannot be used.
  if (!dev.iommu.capable(dev, IOMMU_CAP_CACHE_COHERENCY)) fail(EINVAL, "IOMMU not cache coherent");
  const idev = ctx.objectAlloc(new IommufdDevice(ctx, dev));
  if (!ctx.module.isSelftestMockDev(dev)) ctx.file.get();
  idev.users++;
  ctx.objectFinalize(idev);
  return idev;
}

/**
 * iommufd_device_unbind: the device's vDEVICE is destroyed (its id left a tombstone), then the
 * driver's reference goes and the object is destroyed.
 */
export function iommufdDeviceUnbind(idev: IommufdDevice): void {
  iommufdDeviceRemoveVdev(idev);
  idev.ctx.objectDestroyUser(idev);
}

/** iommufd_device_remove_vdev: from here on no vDEVICE can be made for the device. */
function iommufdDeviceRemoveVdev(idev: IommufdDevice): void {
  idev.destroying = true;
  if (idev.vdev) idev.ctx.objectTombstone(idev.vdev);
}

/** iommufd_get_device: ENOENT unless `id` is a DEVICE of `ctx`. */
export function getIommufdDevice(ctx: IommufdCtx, id: number): IommufdDevice {
  return ctx.getObject<IommufdDevice>(id, IOMMUFD_OBJ_DEVICE);
}

/** Reserve the device's regions in the IOAS, owned by the device object. */
function enforceResvRegions(ioas: IommufdIoas, idev: IommufdDevice): void {
  const dev = idev.dev;
  ioas.iopt.enforceGroupResvRegions(idev, driverOf(dev).getResvRegions?.(dev) ?? []);
}

/**
 * iommufd_hw_pagetable_attach: reserve the device's regions in the IOAS, attach the domain and
 * take a reference on the HWPT. EINVAL when already attached or the driver refuses the domain.
 */
export function iommufdHwPagetableAttach(hwpt: IommufdHwpt, idev: IommufdDevice): void {
  if (idev.hwpt) fail(EINVAL, "device already attached");
  const ioas = findHwptPaging(hwpt).ioas;
  hwptEnforceCacheCoherency(hwpt, idev);
  enforceResvRegions(ioas, idev);
  try {
    iommuAttachDevice(idev.dev, hwpt.domain!);
  } catch (e) {
    ioas.iopt.removeReservedIova(idev);
    throw e;
  }
  idev.hwpt = hwpt;
  hwpt.users++;
}

/**
 * Decision: @x/iommu-pgtable domains have no enforce_cache_coherency op; a domain enforces
 * coherency once a device whose driver reports IOMMU_CAP_ENFORCE_CACHE_COHERENCY uses it, and
 * then for good.
 */
function hwptEnforceCacheCoherency(hwpt: IommufdHwpt, idev: IommufdDevice): void {
  if (idev.enforceCacheCoherency) findHwptPaging(hwpt).enforceCacheCoherency = true;
}

/** iommufd_hw_pagetable_detach: returns the HWPT whose reference the caller must put. */
export function iommufdHwPagetableDetach(idev: IommufdDevice): IommufdHwpt {
  const hwpt = idev.hwpt;
  if (!hwpt) throw new KernelWarning("detach of a device that is not attached");
  iommuDetachDevice(idev.dev);
  idev.hwpt = undefined;
  findHwptPaging(hwpt).ioas.iopt.removeReservedIova(idev);
  return hwpt;
}

type DoAttach = (idev: IommufdDevice, hwpt: IommufdHwpt) => IommufdHwpt | undefined;

/** iommufd_device_do_attach: no HWPT to release afterwards. */
const doAttach: DoAttach = (idev, hwpt) => {
  iommufdHwPagetableAttach(hwpt, idev);
  return undefined;
};

/**
 * iommufd_device_do_replace: switch to `hwpt` in one step (the device never passes through
 * blocking); returns the old HWPT, whose reference the caller puts.
 */
const doReplace: DoAttach = (idev, hwpt) => {
  const old = idev.hwpt;
  if (!old) fail(EINVAL, "device not attached");
  if (hwpt === old) return undefined;
  const ioas = findHwptPaging(hwpt).ioas;
  const oldIoas = findHwptPaging(old).ioas;
  const moveIoas = ioas !== oldIoas;
  if (moveIoas) enforceResvRegions(ioas, idev);
  try {
    hwptEnforceCacheCoherency(hwpt, idev);
    iommuAttachDevice(idev.dev, hwpt.domain!);
  } catch (e) {
    if (moveIoas) ioas.iopt.removeReservedIova(idev);
    throw e;
  }
  if (moveIoas) oldIoas.iopt.removeReservedIova(idev);
  idev.hwpt = hwpt;
  hwpt.users++;
  return old;
};

/**
 * iommufd_device_auto_get_domain: under ioas.mutex, try each automatic domain of the IOAS (an
 * EINVAL from the attempt means "incompatible, try the next"; other errors fail), else allocate
 * a new automatic domain, attach and publish it.
 */
function autoGetDomain(
  idev: IommufdDevice,
  ioas: IommufdIoas,
  act: DoAttach,
): { hwptId: number; release: IommufdHwpt | undefined } {
  const ctx = idev.ctx;
  return ioas.mutex.with(() => {
    for (const hwpt of ioas.hwptList) {
      if (!hwpt.autoDomain || hwpt.users === 0) continue;
      hwpt.users++;
      try {
        const release = act(idev, hwpt);
        return { hwptId: hwpt.id, release };
      } catch (e) {
        if (e instanceof Error && "errno" in e && e.errno === EINVAL) continue;
        throw e;
      } finally {
        hwpt.users--;
      }
    }
    const hwpt = iommufdHwptPagingAlloc(ctx, ioas, idev, 0, undefined);
    let release: IommufdHwpt | undefined;
    try {
      release = act(idev, hwpt);
    } catch (e) {
      ctx.objectAbortAndDestroy(hwpt);
      throw e;
    }
    hwpt.autoDomain = true;
    ctx.objectFinalize(hwpt);
    return { hwptId: hwpt.id, release };
  });
}

/** iommufd_device_change_pt: resolve `ptId` and attach or replace; returns the HWPT id used. */
function deviceChangePt(idev: IommufdDevice, ptId: number, act: DoAttach): number {
  const ctx = idev.ctx;
  const ptObj = ctx.getObject(ptId, IOMMUFD_OBJ_ANY);
  let result: { hwptId: number; release: IommufdHwpt | undefined };
  try {
    switch (ptObj.type) {
      case IOMMUFD_OBJ_HWPT_PAGING:
      case IOMMUFD_OBJ_HWPT_NESTED: {
        const hwpt = ptObj as IommufdHwpt;
        result = { hwptId: hwpt.id, release: act(idev, hwpt) };
        break;
      }
      case IOMMUFD_OBJ_IOAS:
        result = autoGetDomain(idev, ptObj as IommufdIoas, act);
        break;
      default:
        return fail(EINVAL, `object ${ptId} cannot be attached to`);
    }
  } finally {
    ctx.putObject(ptObj);
  }
  // Released only after every lock is dropped: it may destroy an automatic domain.
  if (result.release) iommufdHwPagetablePut(ctx, result.release);
  return result.hwptId;
}

/** iommufd_device_attach: returns the id of the HWPT the device is now attached to. */
export function iommufdDeviceAttach(idev: IommufdDevice, ptId: number): number {
  return deviceChangePt(idev, ptId, doAttach);
}

/** iommufd_device_replace: like attach, for a device that is attached already. */
export function iommufdDeviceReplace(idev: IommufdDevice, ptId: number): number {
  return deviceChangePt(idev, ptId, doReplace);
}

/** iommufd_device_detach: back to blocked DMA; an automatic domain left unused is destroyed. */
export function iommufdDeviceDetach(idev: IommufdDevice): void {
  const hwpt = iommufdHwPagetableDetach(idev);
  iommufdHwPagetablePut(idev.ctx, hwpt);
}
