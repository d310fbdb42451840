/**
 * vIOMMUs and vDEVICEs (IOMMU_VIOMMU_ALLOC, IOMMU_VDEVICE_ALLOC).
 *
 * A vIOMMU is the slice of one physical IOMMU instance given to a guest: made on a device
 * (which names the instance) over a nest-parent paging HWPT (its stage 2, referenced for the
 * vIOMMU's life). Its driver may make nested HWPTs on it and take cache invalidations for it.
 * A vDEVICE binds a device to a vIOMMU under the guest's id for it (`virt_id`): unique within
 * the vIOMMU, and at most one per device. Unbinding the device destroys its vDEVICE but leaves
 * its object id reserved — a tombstone: IOMMU_DESTROY of it is ENOENT and the id is not handed
 * out again while the context lives.
 *
 * @see drivers/iommu/iommufd/viommu.c
 */
import { EEXIST, EINVAL, ENOENT, EOPNOTSUPP, KernelWarning, fail } from "@x/kernel";
import type { IommuDomain } from "@x/iommu-pgtable";
import { type IommufdDevice, getIommufdDevice } from "./device.js";
import type { IommufdVeventq } from "./eventq.js";
import type { IommufdHwptPaging } from "./hw-pagetable.js";
import type { IommufdHwQueue } from "./hw-queue.js";
import { type IommuUserData, type IommuUserDataArray, driverOf } from "./iommu-priv.js";
import {
  IOMMUFD_OBJ_DEVICE,
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_VDEVICE,
  IOMMUFD_OBJ_VIOMMU,
  type IommufdCtx,
  IommufdObject,
  type IommufdUcmd,
  ucmdRespond,
} from "./main.js";
import type { iommu_vdevice_alloc, iommu_viommu_alloc } from "./uapi.js";

const IOMMU_VIOMMU_TYPE_DEFAULT = 0;

/** What a driver's viommu_init installs (struct iommufd_viommu_ops). */
export interface IommufdViommuOps {
  /** Driver teardown, before the core drops its references. */
  destroy?(): void;
  /** A nested domain from the vIOMMU's HWPT data. @see alloc_domain_nested */
  allocDomainNested?(flags: number, userData: IommuUserData): IommuDomain;
  /** Handle invalidation entries; `array.entryNum` = the count handled. @see cache_invalidate */
  cacheInvalidate?(array: IommuUserDataArray): void;
  /** Non-zero when the vIOMMU offers HW queues of `type`. @see get_hw_queue_size */
  getHwQueueSize?(type: number): number;
  /** Bring up `queue` at `index` over the physical address `basePa`. @see hw_queue_init_phys */
  hwQueueInitPhys?(queue: IommufdHwQueue, index: number, basePa: bigint): void;
}

/** The vIOMMU entry points of a driver (iommu_ops' get_viommu_size and viommu_init). */
export interface IommufdViommuDriver {
  /** Non-zero when the driver offers vIOMMUs of `type` for `dev`. @see get_viommu_size */
  getViommuSize?(dev: IommufdDevice["dev"], type: number): number;
  /** Set `viommu.ops` and consume the user data (errors abort the allocation). */
  viommuInit?(
    viommu: IommufdViommu,
    parent: IommuDomain,
    userData: IommuUserData | undefined,
  ): void;
}

export class IommufdViommu extends IommufdObject {
  readonly type = IOMMUFD_OBJ_VIOMMU;
  /** virt_id -> vDEVICE (viommu->vdevs). */
  readonly vdevs = new Map<bigint, IommufdVdevice>();
  /** At most one vEVENTQ per event type. */
  readonly veventqs: IommufdVeventq[] = [];
  ops: IommufdViommuOps | undefined;
  /** Driver-private state (the driver's part of the allocation). */
  priv: unknown;

  constructor(
    readonly ctx: IommufdCtx,
    readonly viommuType: number,
    /** The nest parent (stage 2). */
    readonly hwpt: IommufdHwptPaging,
    /** The physical IOMMU instance (the device's driver). */
    readonly iommuDev: unknown,
  ) {
    super();
  }

  /** iommufd_viommu_destroy */
  destroy(): void {
    this.ops?.destroy?.();
    this.hwpt.users--;
  }
}

export class IommufdVdevice extends IommufdObject {
  readonly type = IOMMUFD_OBJ_VDEVICE;

  constructor(
    readonly viommu: IommufdViommu,
    readonly idev: IommufdDevice,
    readonly virtId: bigint,
  ) {
    super();
  }

  /** iommufd_vdevice_destroy: also drops the reference on the device taken at allocation. */
  destroy(): void {
    if (this.viommu.vdevs.get(this.virtId) === this) this.viommu.vdevs.delete(this.virtId);
    this.viommu.users--;
    this.idev.vdev = undefined;
    this.idev.users--;
  }
}

/** iommufd_viommu_alloc_ioctl */
export function iommufdViommuAllocIoctl(
  ucmd: IommufdUcmd<(typeof iommu_viommu_alloc)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) fail(EOPNOTSUPP, "flags/type");
  return ctx.withObjectOrErrno<IommufdDevice>(cmd.dev_id, IOMMUFD_OBJ_DEVICE, (idev) => {
    const driver = driverOf(idev.dev) as ReturnType<typeof driverOf> & IommufdViommuDriver;
    if (!driver.getViommuSize || !driver.viommuInit || !driver.getViommuSize(idev.dev, cmd.type))
      fail(EOPNOTSUPP, "no vIOMMU of this type");
    return ctx.withObjectOrErrno<IommufdHwptPaging>(
      cmd.hwpt_id,
      IOMMUFD_OBJ_HWPT_PAGING,
      (hwpt) => {
        if (!hwpt.nestParent) fail(EINVAL, "not a nest parent");
        const viommu = ctx.objectAlloc(new IommufdViommu(ctx, cmd.type, hwpt, idev.dev.iommu));
        hwpt.users++;
        try {
          const data = cmd.data_len
            ? { type: cmd.type, uptr: cmd.data_uptr, len: cmd.data_len }
            : undefined;
          driver.viommuInit!(viommu, hwpt.domain!, data);
          if (!viommu.ops) throw new KernelWarning("viommu_init set no ops");
          cmd.out_viommu_id = viommu.id;
          ucmdRespond(ucmd);
        } catch (e) {
          ctx.objectAbortAndDestroy(viommu);
          throw e;
        }
        ctx.objectFinalize(viommu);
        return 0;
      },
    );
  });
}

/** iommufd_vdevice_alloc_ioctl (virt_id always fits an unsigned long here). */
export function iommufdVdeviceAllocIoctl(
  ucmd: IommufdUcmd<(typeof iommu_vdevice_alloc)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  return ctx.withObjectOrErrno<IommufdViommu>(cmd.viommu_id, IOMMUFD_OBJ_VIOMMU, (viommu) => {
    const idev = getIommufdDevice(ctx, cmd.dev_id);
    let keepIdev = false;
    try {
      if (viommu.iommuDev !== idev.dev.iommu) fail(EINVAL, "device of another IOMMU");
      if (idev.destroying) fail(ENOENT, "device is being unbound");
      if (idev.vdev) fail(EEXIST, "device has a vDEVICE");
      const vdev = ctx.objectAlloc(new IommufdVdevice(viommu, idev, cmd.virt_id));
      // From here the vDEVICE owns the device lookup's reference (its destroy drops it).
      keepIdev = true;
      viommu.users++;
      idev.vdev = vdev;
      try {
        if (viommu.vdevs.has(cmd.virt_id)) fail(EEXIST, `virt_id 0x${cmd.virt_id.toString(16)}`);
        viommu.vdevs.set(cmd.virt_id, vdev);
        cmd.out_vdevice_id = vdev.id;
        ucmdRespond(ucmd);
      } catch (e) {
        ctx.objectAbortAndDestroy(vdev);
        throw e;
      }
      ctx.objectFinalize(vdev);
      return 0;
    } finally {
      if (!keepIdev) ctx.putObject(idev);
    }
  });
}

/** The vDEVICE id (virt_id) of `dev` on `viommu`. @see iommufd_viommu_get_vdev_id */
export function iommufdViommuGetVdevId(viommu: IommufdViommu, dev: unknown): bigint {
  for (const [virtId, vdev] of viommu.vdevs) if (vdev.idev.dev === dev) return virtId;
  return fail(ENOENT, "device has no vDEVICE on this vIOMMU");
}

/** The vDEVICE at `virtId`, if any. @see iommufd_viommu_find_dev */
export function iommufdViommuFindDev(
  viommu: IommufdViommu,
  virtId: bigint,
): IommufdDevice | undefined {
  return viommu.vdevs.get(virtId)?.idev;
}
