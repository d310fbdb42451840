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
 *   iommufdDeviceDetach(idev)                             // back to blocking DMA
 *   iommufdDeviceUnbind(idev)                             // detach first; frees the id
 *
 * `dev` is an `IommuDevice`: the device plus its IOMMU driver's per-device operations
 * (capabilities, domain allocation, attach, reserved regions, hw_info). Attaching to an IOAS id
 * reuses the first automatic domain of that IOAS the driver accepts (the driver's attach says
 * EINVAL for "incompatible") or allocates a new one, which is filled with every area of the IOAS;
 * the automatic domain is destroyed — unmapped and unpinned — when its last device leaves.
 * Attaching to a paging HWPT id uses that domain. Any other id type is EINVAL, unknown ids ENOENT.
 * Reserved regions of the device are reserved in the IOAS for as long as it is attached
 * (EADDRINUSE when they collide with a mapping or an allowed range).
 *
 * Devices that share an iommu group (`dev.group`) attach together: the group follows its first
 * device's HWPT, later devices of the group must use the same one (EINVAL otherwise).
 *
 * Binding holds a reference on the iommufd file, so the context outlives its bound devices.
 */
import { EINVAL, KernelWarning, WARN_ON, fail, type File, type Kernel } from "@x/kernel";
import type { IommuResvRegion } from "./io-pagetable.js";
import type { IoptDomain } from "./iommu-domain.js";
import type { IommufdIoas } from "./ioas.js";
import {
  type IommufdHwptPaging,
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  iommufdHwPagetablePut,
  iommufdHwptPagingAlloc,
} from "./hw-pagetable.js";
import {
  IOMMUFD_OBJ_ANY,
  IOMMUFD_OBJ_DEVICE,
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_IOAS,
  type IommufdCtx,
  IommufdModule,
  IommufdObject,
} from "./main.js";

/** Driver-specific HWPT data (struct iommu_user_data): a user buffer the driver reads. */
export interface IommuUserData {
  readonly type: number;
  readonly uptr: bigint;
  readonly len: number;
}

/** A paging iommu_domain as iommufd uses it: the io_pagetable's view plus lifecycle. */
export interface IommuPagingDomain extends IoptDomain {
  /** enforce_cache_coherency: true when the domain now blocks no-snoop. */
  enforceCacheCoherency(): boolean;
  /** iommu_domain_free; only called once no device is attached. */
  free(): void;
}

/** What the device's IOMMU driver offers for this device (dev_iommu_ops + dev->iommu). */
export interface IommuDeviceOps {
  /** device_iommu_capable */
  capable(cap: number): boolean;
  /** domain_alloc_paging_flags; throws (EOPNOTSUPP, ENOMEM…) like the driver. */
  domainAllocPaging(flags: number, userData: IommuUserData | undefined): IommuPagingDomain;
  /** attach_dev: put the device (its group) behind `domain`; EINVAL = incompatible domain. */
  attachDev(domain: IommuPagingDomain): void;
  /** Return the device to blocked DMA; never fails. */
  blockDev(): void;
  /** hw_info: driver type and data for IOMMU_GET_HW_INFO (optional). */
  hwInfo?(inType: number): { type: number; data: Uint8Array };
  /** Reserved regions the IOAS must keep free while attached. */
  resvRegions(): readonly IommuResvRegion[];
}

/** struct device as iommufd sees it. */
export interface IommuDevice {
  readonly name: string;
  readonly iommu: IommuDeviceOps;
  /** The iommu_group identity; devices with the same group attach together. */
  readonly group: object;
  /** dev->iommu->max_pasids (0 or absent: no PASID). */
  readonly maxPasids?: number;
}

/** struct iommufd_group: the attachment state shared by the devices of one iommu group. */
class IommufdGroup {
  hwpt: IommufdHwptPaging | undefined;
  readonly devices: IommufdDevice[] = [];
  constructor(readonly group: object) {}
}

const groupsByCtx = new WeakMap<IommufdCtx, Map<object, IommufdGroup>>();

function iommufdGetGroup(ctx: IommufdCtx, dev: IommuDevice): IommufdGroup {
  let groups = groupsByCtx.get(ctx);
  if (!groups) groupsByCtx.set(ctx, (groups = new Map()));
  let g = groups.get(dev.group);
  if (!g) groups.set(dev.group, (g = new IommufdGroup(dev.group)));
  return g;
}

function iommufdPutGroup(ctx: IommufdCtx, g: IommufdGroup): void {
  if (g.devices.length === 0 && !g.hwpt) groupsByCtx.get(ctx)?.delete(g.group);
}

export class IommufdDevice extends IommufdObject {
  readonly type = IOMMUFD_OBJ_DEVICE;
  readonly enforceCacheCoherency: boolean;
  /** Whether the device is on its group's device list (attached). */
  attached = false;

  constructor(
    readonly ctx: IommufdCtx,
    readonly dev: IommuDevice,
    readonly igroup: IommufdGroup,
  ) {
    super();
    this.enforceCacheCoherency = dev.iommu.capable(IOMMU_CAP_ENFORCE_CACHE_COHERENCY);
  }

  /** The HWPT the device is attached to, if any. */
  get hwpt(): IommufdHwptPaging | undefined {
    return this.attached ? this.igroup.hwpt : undefined;
  }

  /** iommufd_device_destroy */
  destroy(): void {
    WARN_ON(this.attached, "device destroyed while attached");
    iommufdPutGroup(this.ctx, this.igroup);
    this.ctx.file.put();
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
  if (!dev.iommu.capable(IOMMU_CAP_CACHE_COHERENCY)) fail(EINVAL, "IOMMU not cache coherent");
  const igroup = iommufdGetGroup(ctx, dev);
  let idev: IommufdDevice;
  try {
    idev = ctx.objectAlloc(new IommufdDevice(ctx, dev, igroup));
  } catch (e) {
    iommufdPutGroup(ctx, igroup);
    throw e;
  }
  ctx.file.get();
  idev.users++;
  ctx.objectFinalize(idev);
  return idev;
}

/** iommufd_device_unbind: the driver's reference goes and the object is destroyed. */
export function iommufdDeviceUnbind(idev: IommufdDevice): void {
  idev.ctx.objectDestroyUser(idev);
}

/** iommufd_get_device: ENOENT unless `id` is a DEVICE of `ctx`. */
export function getIommufdDevice(ctx: IommufdCtx, id: number): IommufdDevice {
  return ctx.getObject<IommufdDevice>(id, IOMMUFD_OBJ_DEVICE);
}

/** Reserve the device's regions in the IOAS, owned by the device object. */
function enforceResvRegions(ioas: IommufdIoas, idev: IommufdDevice): void {
  ioas.iopt.enforceGroupResvRegions(idev, idev.dev.iommu.resvRegions());
}

/**
 * iommufd_hw_pagetable_attach: reserve the device's regions in the IOAS, attach the group's
 * domain when this is its first device, take a reference on the HWPT. EINVAL when the device is
 * already attached or its group uses another HWPT.
 */
export function iommufdHwPagetableAttach(hwpt: IommufdHwptPaging, idev: IommufdDevice): void {
  const g = idev.igroup;
  if (idev.attached) fail(EINVAL, "device already attached");
  if (g.hwpt && g.hwpt !== hwpt) fail(EINVAL, "group attached to another HWPT");
  if (idev.enforceCacheCoherency) {
    if (!hwpt.enforceCacheCoherency) {
      if (!hwpt.domain!.enforceCacheCoherency()) fail(EINVAL, "domain cannot enforce coherency");
      hwpt.enforceCacheCoherency = true;
    }
  }
  enforceResvRegions(hwpt.ioas, idev);
  try {
    if (g.devices.length === 0) idev.dev.iommu.attachDev(hwpt.domain!);
  } catch (e) {
    hwpt.ioas.iopt.removeReservedIova(idev);
    throw e;
  }
  g.hwpt = hwpt;
  hwpt.users++;
  g.devices.push(idev);
  idev.attached = true;
}

/** iommufd_hw_pagetable_detach: returns the HWPT whose reference the caller must put. */
export function iommufdHwPagetableDetach(idev: IommufdDevice): IommufdHwptPaging {
  const g = idev.igroup;
  const hwpt = g.hwpt;
  if (!idev.attached || !hwpt) throw new KernelWarning("detach of a device that is not attached");
  g.devices.splice(g.devices.indexOf(idev), 1);
  idev.attached = false;
  if (g.devices.length === 0) {
    idev.dev.iommu.blockDev();
    g.hwpt = undefined;
  }
  hwpt.ioas.iopt.removeReservedIova(idev);
  return hwpt;
}

type DoAttach = (idev: IommufdDevice, hwpt: IommufdHwptPaging) => IommufdHwptPaging | undefined;

/** iommufd_device_do_attach: no HWPT to release afterwards. */
const doAttach: DoAttach = (idev, hwpt) => {
  iommufdHwPagetableAttach(hwpt, idev);
  return undefined;
};

/**
 * iommufd_device_do_replace: switch the group to `hwpt` in one step; returns the old HWPT, whose
 * device-list references were moved to the new one except the one the caller puts.
 */
const doReplace: DoAttach = (idev, hwpt) => {
  const g = idev.igroup;
  const old = g.hwpt;
  if (!old || !idev.attached) fail(EINVAL, "device not attached");
  if (hwpt === old) return undefined;
  const moveIoas = hwpt.ioas !== old.ioas;
  const reserved: IommufdDevice[] = [];
  try {
    if (moveIoas) {
      for (const cur of g.devices) {
        enforceResvRegions(hwpt.ioas, cur);
        reserved.push(cur);
      }
    }
    if (idev.enforceCacheCoherency && !hwpt.enforceCacheCoherency) {
      if (!hwpt.domain!.enforceCacheCoherency()) fail(EINVAL, "domain cannot enforce coherency");
      hwpt.enforceCacheCoherency = true;
    }
    idev.dev.iommu.attachDev(hwpt.domain!);
  } catch (e) {
    for (const cur of reserved) hwpt.ioas.iopt.removeReservedIova(cur);
    throw e;
  }
  if (moveIoas) for (const cur of g.devices) old.ioas.iopt.removeReservedIova(cur);
  g.hwpt = hwpt;
  const n = g.devices.length;
  hwpt.users += n;
  // The caller's put takes the last of the old references.
  old.users -= n - 1;
  WARN_ON(old.users < 1, "old hwpt lost its last reference in replace");
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
): { hwptId: number; release: IommufdHwptPaging | undefined } {
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
    const hwpt = iommufdHwptPagingAlloc(ctx, ioas, idev, 0, false, undefined);
    let release: IommufdHwptPaging | undefined;
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
  let result: { hwptId: number; release: IommufdHwptPaging | undefined };
  try {
    switch (ptObj.type) {
      case IOMMUFD_OBJ_HWPT_PAGING: {
        const hwpt = ptObj as IommufdHwptPaging;
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
