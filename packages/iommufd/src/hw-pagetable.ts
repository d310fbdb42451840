/**
 * Paging HW page tables (struct iommufd_hwpt_paging): an iommu_domain allocated by the device's
 * IOMMU driver, bound to one IOAS whose mappings it mirrors. Creation adds the domain to the
 * IOAS's io_pagetable, which fills it with every existing area; destruction removes it (unmap,
 * then unpin what no other domain or access still covers).
 *
 * Two ways to get one: IOMMU_HWPT_ALLOC (a user-owned HWPT, destroyed by IOMMU_DESTROY) and an
 * automatic domain made by device attach to an IOAS (`autoDomain`, reused by later compatible
 * attaches and destroyed with its last device). Also here: IOMMU_GET_HW_INFO and the two
 * dirty-tracking ioctls of a paging HWPT (IOMMU_HWPT_SET_DIRTY_TRACKING,
 * IOMMU_HWPT_GET_DIRTY_BITMAP).
 */
import { EINVAL, EOPNOTSUPP, KernelWarning, WARN_ON, copyToUser, fail } from "@x/kernel";
import { IOMMU_CAP_DIRTY_TRACKING, type IommuDomain, iommuDomainFree } from "@x/iommu-pgtable";
import type { IommufdDevice } from "./device.js";
import { ioptReadAndClearDirtyData, ioptSetDirtyTracking } from "./io-pagetable-dirty.js";
import type { IommufdFault } from "./eventq-fault.js";
import { type IommuUserData, driverOf } from "./iommu-priv.js";
import type { IommufdIoas } from "./ioas.js";
import {
  type IommufdHwpt,
  iommufdHwptNestedAlloc,
  iommufdViommuAllocHwptNested,
} from "./hw-pagetable-nested.js";
import type { IommufdViommu } from "./viommu.js";
import {
  IOMMUFD_OBJ_ANY,
  IOMMUFD_OBJ_DEVICE,
  IOMMUFD_OBJ_FAULT,
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_IOAS,
  IOMMUFD_OBJ_VIOMMU,
  type IommufdCtx,
  IommufdObject,
  type IommufdUcmd,
  ucmdRespond,
} from "./main.js";
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_NONE,
  type iommu_hw_info,
  type iommu_hwpt_alloc,
  type iommu_hwpt_get_dirty_bitmap,
  type iommu_hwpt_set_dirty_tracking,
} from "./uapi.js";

const HWPT_PAGING_VALID_FLAGS =
  IOMMU_HWPT_ALLOC_NEST_PARENT |
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING |
  IOMMU_HWPT_FAULT_ID_VALID |
  IOMMU_HWPT_ALLOC_PASID;

export class IommufdHwptPaging extends IommufdObject {
  readonly type = IOMMUFD_OBJ_HWPT_PAGING;
  domain: IommuDomain | undefined;
  autoDomain = false;
  nestParent = false;
  /** hwpt->fault: where page requests of attached devices go (IOMMU_HWPT_FAULT_ID_VALID). */
  fault: IommufdFault | undefined;
  /** hwpt->pasid_compat: allocated with IOMMU_HWPT_ALLOC_PASID (see device.ts). */
  pasidCompat = false;
  enforceCacheCoherency = false;
  /** In `ioas.hwptList` and in the io_pagetable's domains. */
  inIoas = false;

  constructor(
    readonly ctx: IommufdCtx,
    readonly ioas: IommufdIoas,
  ) {
    super();
  }

  /** iommufd_hwpt_paging_destroy */
  destroy(): void {
    if (this.inIoas) this.ioas.mutex.with(() => this.leaveIoas());
    this.release();
  }

  /** iommufd_hwpt_paging_abort: the creating path still holds ioas.mutex. */
  override abort(): void {
    this.ioas.mutex.assertHeld();
    if (this.inIoas) this.leaveIoas();
    this.release();
  }

  private leaveIoas(): void {
    const ioas = this.ioas;
    const i = ioas.hwptList.indexOf(this);
    WARN_ON(i < 0, "hwpt not on its IOAS list");
    ioas.hwptList.splice(i, 1);
    ioas.iopt.tableRemoveDomain(this.domain!);
    this.inIoas = false;
  }

  private release(): void {
    if (this.fault) this.fault.users--;
    this.fault = undefined;
    if (this.domain) iommuDomainFree(this.domain);
    this.domain = undefined;
    this.ioas.users--;
  }
}

/**
 * iommufd_hwpt_paging_alloc: allocate the object (reserved, not yet visible), the driver's
 * domain and add it to the IOAS (which fills it). Called with ioas.mutex held. The kernel's
 * immediate_attach mode (for drivers that finish a domain only at attach) has no driver here.
 */
export function iommufdHwptPagingAlloc(
  ctx: IommufdCtx,
  ioas: IommufdIoas,
  idev: IommufdDevice,
  flags: number,
  userData: IommuUserData | undefined,
): IommufdHwptPaging {
  ioas.mutex.assertHeld();
  const dev = idev.dev;
  if (flags & ~HWPT_PAGING_VALID_FLAGS) fail(EOPNOTSUPP, "hwpt flags");
  if (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING && !dev.iommu.capable(dev, IOMMU_CAP_DIRTY_TRACKING))
    fail(EOPNOTSUPP, "no dirty tracking");
  if (flags & IOMMU_HWPT_FAULT_ID_VALID && flags & IOMMU_HWPT_ALLOC_NEST_PARENT)
    fail(EOPNOTSUPP, "fault on a nest parent");
  const hwpt = ctx.objectAlloc(new IommufdHwptPaging(ctx, ioas));
  ioas.users++;
  hwpt.nestParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0;
  hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0;
  try {
    const domainFlags = flags & ~IOMMU_HWPT_FAULT_ID_VALID;
    const driver = driverOf(dev);
    // Decision: a driver reads HWPT data when its domainAllocPaging declares the third
    // parameter; the others refuse data like the kernel's drivers do (EOPNOTSUPP).
    if (userData && driver.domainAllocPaging.length < 3) fail(EOPNOTSUPP, "driver takes no data");
    hwpt.domain = userData
      ? driver.domainAllocPaging(dev, domainFlags, userData)
      : dev.iommu.domainAllocPaging(dev, domainFlags);
    hwpt.domain.owner = driver;
    // The coherency mode is chosen here, before the first IOPTE, and never changes: a device
    // attached later leaves it as it is (iommufd_hwpt_paging_enforce_cc runs only at alloc).
    // Decision: @x/iommu-pgtable domains have no enforce_cache_coherency op, so a domain made
    // for a device whose driver reports IOMMU_CAP_ENFORCE_CACHE_COHERENCY always enforces.
    if (idev.enforceCacheCoherency) hwpt.enforceCacheCoherency = true;
    ioas.iopt.tableAddDomain(hwpt.domain);
    hwpt.inIoas = true;
    ioas.hwptList.push(hwpt);
    return hwpt;
  } catch (e) {
    ctx.objectAbortAndDestroy(hwpt);
    throw e;
  }
}

/**
 * iommufd_hw_pagetable_put: a device's reference on its HWPT goes; an automatic domain is
 * destroyed with its last reference.
 */
export function iommufdHwPagetablePut(ctx: IommufdCtx, hwpt: IommufdHwpt): void {
  if (hwpt.type === IOMMUFD_OBJ_HWPT_PAGING && hwpt.autoDomain && hwpt.users === 2) {
    hwpt.users--;
    ctx.objectRemove(hwpt.id);
    return;
  }
  hwpt.users--;
}

// --- IOMMU_HWPT_ALLOC ------------------------------------------------------------------------

/**
 * iommufd_hwpt_alloc: `pt_id` chooses the kind — an IOAS gives a paging HWPT, a paging HWPT
 * (a nest parent) or a vIOMMU a nested one; anything else, or no object, is EINVAL. With
 * FAULT_ID_VALID the HWPT sends page requests to that FAULT object, looked up last (ENOENT
 * without one).
 */
export function iommufdHwptAlloc(ucmd: IommufdUcmd<(typeof iommu_hwpt_alloc)["fields"]>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  if ((cmd.data_type === IOMMU_HWPT_DATA_NONE) !== (cmd.data_len === 0))
    fail(EINVAL, "data type and length disagree");
  const userData: IommuUserData = { type: cmd.data_type, uptr: cmd.data_uptr, len: cmd.data_len };
  return ctx.withObjectOrErrno<IommufdDevice>(cmd.dev_id, IOMMUFD_OBJ_DEVICE, (idev) => {
    let ptObj: IommufdObject;
    try {
      ptObj = ctx.getObject(cmd.pt_id, IOMMUFD_OBJ_ANY);
    } catch {
      return fail(EINVAL, `pt_id ${cmd.pt_id}`);
    }
    try {
      if (ptObj.type === IOMMUFD_OBJ_IOAS) {
        const ioas = ptObj as IommufdIoas;
        // ioas.mutex stays held until the new HWPT is published or aborted.
        return ioas.mutex.with(() =>
          hwptPublish(
            ucmd,
            iommufdHwptPagingAlloc(ctx, ioas, idev, cmd.flags, cmd.data_len ? userData : undefined),
          ),
        );
      }
      if (ptObj.type === IOMMUFD_OBJ_HWPT_PAGING)
        return hwptPublish(
          ucmd,
          iommufdHwptNestedAlloc(ctx, ptObj as IommufdHwptPaging, idev, cmd.flags, userData),
        );
      if (ptObj.type === IOMMUFD_OBJ_VIOMMU) {
        const viommu = ptObj as IommufdViommu;
        if (viommu.iommuDev !== idev.dev.iommu) fail(EINVAL, "vIOMMU of another IOMMU");
        return hwptPublish(ucmd, iommufdViommuAllocHwptNested(ctx, viommu, cmd.flags, userData));
      }
      return fail(EINVAL, "pt_id is not an IOAS, nest parent or vIOMMU");
    } finally {
      ctx.putObject(ptObj);
    }
  });
}

/** The common tail of iommufd_hwpt_alloc: fault lookup, the id back to user space, finalize. */
function hwptPublish(
  ucmd: IommufdUcmd<(typeof iommu_hwpt_alloc)["fields"]>,
  hwpt: IommufdHwpt,
): number {
  const { ctx, cmd } = ucmd;
  try {
    if (cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) {
      const fault = ctx.getObject<IommufdFault>(cmd.fault_id, IOMMUFD_OBJ_FAULT);
      hwpt.fault = fault;
      fault.users++;
      ctx.putObject(fault);
    }
    cmd.out_hwpt_id = hwpt.id;
    ucmdRespond(ucmd);
  } catch (e) {
    ctx.objectAbortAndDestroy(hwpt);
    throw e;
  }
  ctx.objectFinalize(hwpt);
  return 0;
}

// --- IOMMU_GET_HW_INFO -----------------------------------------------------------------------

/** iommufd_get_hw_info: the driver's info blob (zero-padded to data_len) and capabilities. */
export function iommufdGetHwInfo(ucmd: IommufdUcmd<(typeof iommu_hw_info)["fields"]>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags & ~IOMMU_HW_INFO_FLAG_INPUT_TYPE) fail(EOPNOTSUPP, "flags");
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  return ctx.withObjectOrErrno<IommufdDevice>(cmd.dev_id, IOMMUFD_OBJ_DEVICE, (idev) => {
    const dev = idev.dev;
    const iommu = dev.iommu;
    const inType =
      cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE ? cmd.data_type : IOMMU_HW_INFO_TYPE_DEFAULT;
    const info = iommu.hwInfo(dev);
    if (info.type === IOMMU_HW_INFO_TYPE_NONE)
      throw new KernelWarning("driver with hw_info reports type NONE");
    // Decision: drivers report one type; asking for another one is EOPNOTSUPP.
    if (inType !== IOMMU_HW_INFO_TYPE_DEFAULT && inType !== info.type)
      fail(EOPNOTSUPP, "hw_info type");
    const data = info.data;
    cmd.data_type = info.type;
    const copyLen = Math.min(cmd.data_len, data.length);
    if (cmd.data_len) {
      const out = new Uint8Array(cmd.data_len);
      out.set(data.subarray(0, copyLen));
      copyToUser(ctx.kernel, cmd.data_uptr, out);
    }
    cmd.data_len = data.length;
    cmd.out_capabilities = iommu.capable(dev, IOMMU_CAP_DIRTY_TRACKING)
      ? IOMMU_HW_CAP_DIRTY_TRACKING
      : 0n;
    // max_pasids is non-zero only when PASID is supported and enabled. Decision: no device of
    // the model enables the PCI PASID capability, so PCI_PASID_EXEC/PRIV are never reported.
    cmd.out_max_pasid_log2 = dev.maxPasids ? 31 - Math.clz32(dev.maxPasids) : 0;
    ucmdRespond(ucmd);
    return 0;
  });
}

// --- IOMMU_HWPT_SET_DIRTY_TRACKING / IOMMU_HWPT_GET_DIRTY_BITMAP ---------------------------

/**
 * iommufd_hwpt_set_dirty_tracking: unknown flags are EOPNOTSUPP (`__reserved` is not looked
 * at), then the id must name a paging HWPT (anything else is ENOENT, as the typed lookup of
 * iommufd_get_hwpt_paging), then iopt_set_dirty_tracking.
 */
export function iommufdHwptSetDirtyTracking(
  ucmd: IommufdUcmd<(typeof iommu_hwpt_set_dirty_tracking)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE) fail(EOPNOTSUPP, "flags");
  return ctx.withObjectOrErrno<IommufdHwptPaging>(cmd.hwpt_id, IOMMUFD_OBJ_HWPT_PAGING, (hwpt) => {
    const enable = (cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0;
    ioptSetDirtyTracking(hwpt.ioas.iopt, hwpt.domain!, enable);
    return 0;
  });
}

/**
 * iommufd_hwpt_get_dirty_bitmap: unknown flags or a non-zero `__reserved` are EOPNOTSUPP, then
 * the paging HWPT lookup (ENOENT), then iopt_read_and_clear_dirty_data. NO_CLEAR is passed to
 * the walk as IOMMU_DIRTY_NO_CLEAR (the same bit).
 */
export function iommufdHwptGetDirtyBitmap(
  ucmd: IommufdUcmd<(typeof iommu_hwpt_get_dirty_bitmap)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR || cmd.__reserved)
    fail(EOPNOTSUPP, "flags/__reserved");
  return ctx.withObjectOrErrno<IommufdHwptPaging>(cmd.hwpt_id, IOMMUFD_OBJ_HWPT_PAGING, (hwpt) => {
    ioptReadAndClearDirtyData(hwpt.ioas.iopt, hwpt.domain!, cmd.flags, cmd);
    return 0;
  });
}
