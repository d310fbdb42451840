/**
 * Paging HW page tables (struct iommufd_hwpt_paging): an iommu_domain allocated by the device's
 * IOMMU driver, bound to one IOAS whose mappings it mirrors. Creation adds the domain to the
 * IOAS's io_pagetable, which fills it with every existing area; destruction removes it (unmap,
 * then unpin what no other domain or access still covers).
 *
 * Two ways to get one: IOMMU_HWPT_ALLOC (a user-owned HWPT, destroyed by IOMMU_DESTROY) and an
 * automatic domain made by device attach to an IOAS (`autoDomain`, reused by later compatible
 * attaches and destroyed with its last device). Also here: IOMMU_GET_HW_INFO.
 */
import {
  EINVAL,
  ENOENT,
  EOPNOTSUPP,
  KernelWarning,
  WARN_ON,
  copyToUser,
  fail,
} from "@x/kernel";
import type { IommuDevice, IommufdDevice, IommuPagingDomain, IommuUserData } from "./device.js";
import { iommufdHwPagetableAttach, iommufdHwPagetableDetach } from "./device.js";
import type { IommufdIoas } from "./ioas.js";
import {
  IOMMUFD_OBJ_ANY,
  IOMMUFD_OBJ_DEVICE,
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_IOAS,
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
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_NONE,
  type iommu_hw_info,
  type iommu_hwpt_alloc,
} from "./uapi.js";

/** enum iommu_cap values iommufd asks drivers about. */
export const IOMMU_CAP_CACHE_COHERENCY = 0;
export const IOMMU_CAP_ENFORCE_CACHE_COHERENCY = 3;
export const IOMMU_CAP_DIRTY_TRACKING = 5;

const HWPT_PAGING_VALID_FLAGS =
  IOMMU_HWPT_ALLOC_NEST_PARENT |
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING |
  IOMMU_HWPT_FAULT_ID_VALID |
  IOMMU_HWPT_ALLOC_PASID;

export class IommufdHwptPaging extends IommufdObject {
  readonly type = IOMMUFD_OBJ_HWPT_PAGING;
  domain: IommuPagingDomain | undefined;
  autoDomain = false;
  nestParent = false;
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
    const ioas = this.ioas;
    if (this.inIoas) {
      ioas.mutex.with(() => {
        const i = ioas.hwptList.indexOf(this);
        WARN_ON(i < 0, "hwpt not on its IOAS list");
        ioas.hwptList.splice(i, 1);
      });
      ioas.iopt.tableRemoveDomain(this.domain!);
      this.inIoas = false;
    }
    this.domain?.free();
    this.domain = undefined;
    ioas.users--;
  }
}

/**
 * iommufd_hwpt_paging_enforce_cc: once a domain enforces coherency it stays so; a driver that
 * advertised the capability but cannot do it on a fresh domain is a bug (a WARN upstream).
 */
function hwptPagingEnforceCc(hwpt: IommufdHwptPaging): void {
  if (hwpt.enforceCacheCoherency) return;
  if (!hwpt.domain!.enforceCacheCoherency()) fail(EINVAL, "cannot enforce cache coherency");
  hwpt.enforceCacheCoherency = true;
}

/**
 * iommufd_hwpt_paging_alloc: allocate the object (reserved, not yet visible), the driver's
 * domain and add it to the IOAS. Called with ioas.mutex held. With `immediateAttach` the device
 * is attached before the domain is filled (for drivers that finish a domain only at attach).
 */
export function iommufdHwptPagingAlloc(
  ctx: IommufdCtx,
  ioas: IommufdIoas,
  idev: IommufdDevice,
  flags: number,
  immediateAttach: boolean,
  userData: IommuUserData | undefined,
): IommufdHwptPaging {
  ioas.mutex.assertHeld();
  const dev: IommuDevice = idev.dev;
  if (flags & ~HWPT_PAGING_VALID_FLAGS) fail(EOPNOTSUPP, "hwpt flags");
  if (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING && !dev.iommu.capable(IOMMU_CAP_DIRTY_TRACKING))
    fail(EOPNOTSUPP, "no dirty tracking");
  if (flags & IOMMU_HWPT_FAULT_ID_VALID && flags & IOMMU_HWPT_ALLOC_NEST_PARENT)
    fail(EOPNOTSUPP, "fault on a nest parent");
  const hwpt = ctx.objectAlloc(new IommufdHwptPaging(ctx, ioas));
  ioas.users++;
  hwpt.nestParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0;
  let attached = false;
  try {
    hwpt.domain = dev.iommu.domainAllocPaging(flags & ~IOMMU_HWPT_FAULT_ID_VALID, userData);
    if (idev.enforceCacheCoherency) {
      try {
        hwptPagingEnforceCc(hwpt);
      } catch (e) {
        throw new KernelWarning(`enforce_cache_coherency failed on a new domain: ${e}`);
      }
    }
    if (immediateAttach) {
      iommufdHwPagetableAttach(hwpt, idev);
      attached = true;
    }
    ioas.iopt.tableAddDomain(hwpt.domain);
    hwpt.inIoas = true;
    ioas.hwptList.push(hwpt);
    return hwpt;
  } catch (e) {
    if (attached) iommufdHwPagetableDetach(idev);
    ctx.objectAbortAndDestroy(hwpt);
    throw e;
  }
}

/**
 * iommufd_hw_pagetable_put: a device's reference on its HWPT goes; an automatic domain is
 * destroyed with its last reference.
 */
export function iommufdHwPagetablePut(ctx: IommufdCtx, hwpt: IommufdHwptPaging): void {
  if (hwpt.autoDomain && hwpt.users === 2) {
    hwpt.users--;
    ctx.objectRemove(hwpt.id);
    return;
  }
  hwpt.users--;
}

// --- IOMMU_HWPT_ALLOC ------------------------------------------------------------------------

/**
 * iommufd_hwpt_alloc. Decision: only paging HWPTs on an IOAS are modelled (no nesting, vIOMMU or
 * fault objects exist), so a `pt_id` naming anything else is EINVAL, as for a type the kernel
 * does not accept there; FAULT_ID_VALID then fails its fault lookup with ENOENT.
 */
export function iommufdHwptAlloc(ucmd: IommufdUcmd<(typeof iommu_hwpt_alloc)["fields"]>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags & ~HWPT_PAGING_VALID_FLAGS || cmd.__reserved) fail(EOPNOTSUPP, "flags/__reserved");
  if (!cmd.data_len && cmd.data_type !== IOMMU_HWPT_DATA_NONE) fail(EINVAL, "data type without data");
  if (cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT && cmd.data_type !== IOMMU_HWPT_DATA_NONE)
    fail(EINVAL, "nest parent with data");
  const userData: IommuUserData | undefined =
    cmd.data_type === IOMMU_HWPT_DATA_NONE
      ? undefined
      : { type: cmd.data_type, uptr: cmd.data_uptr, len: cmd.data_len };
  return ctx.withObject<IommufdDevice, number>(cmd.dev_id, IOMMUFD_OBJ_DEVICE, (idev) => {
    let ptObj: IommufdObject;
    try {
      ptObj = ctx.getObject(cmd.pt_id, IOMMUFD_OBJ_ANY);
    } catch {
      return fail(EINVAL, `pt_id ${cmd.pt_id}`);
    }
    try {
      if (ptObj.type !== IOMMUFD_OBJ_IOAS) fail(EINVAL, "pt_id is not an IOAS");
      const ioas = ptObj as IommufdIoas;
      const hwpt = ioas.mutex.with(() =>
        iommufdHwptPagingAlloc(ctx, ioas, idev, cmd.flags, false, userData),
      );
      if (cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) {
        ctx.objectAbortAndDestroy(hwpt);
        fail(ENOENT, `fault ${cmd.fault_id}`);
      }
      cmd.out_hwpt_id = hwpt.id;
      try {
        ucmdRespond(ucmd);
      } catch (e) {
        ctx.objectAbortAndDestroy(hwpt);
        throw e;
      }
      ctx.objectFinalize(hwpt);
      return 0;
    } finally {
      ctx.putObject(ptObj);
    }
  });
}

// --- IOMMU_GET_HW_INFO -----------------------------------------------------------------------

/** iommufd_get_hw_info: the driver's info blob (zero-padded to data_len) and capabilities. */
export function iommufdGetHwInfo(ucmd: IommufdUcmd<(typeof iommu_hw_info)["fields"]>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags & ~IOMMU_HW_INFO_FLAG_INPUT_TYPE) fail(EOPNOTSUPP, "flags");
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  return ctx.withObject<IommufdDevice, number>(cmd.dev_id, IOMMUFD_OBJ_DEVICE, (idev) => {
    const iommu = idev.dev.iommu;
    const inType = cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE ? cmd.data_type : IOMMU_HW_INFO_TYPE_DEFAULT;
    let data: Uint8Array = new Uint8Array(0);
    if (iommu.hwInfo) {
      const info = iommu.hwInfo(inType);
      if (info.type === IOMMU_HW_INFO_TYPE_NONE)
        throw new KernelWarning("driver with hw_info reports type NONE");
      data = info.data;
      cmd.data_type = info.type;
    } else cmd.data_type = IOMMU_HW_INFO_TYPE_NONE;
    const copyLen = Math.min(cmd.data_len, data.length);
    if (cmd.data_len) {
      const out = new Uint8Array(cmd.data_len);
      out.set(data.subarray(0, copyLen));
      copyToUser(ctx.kernel, cmd.data_uptr, out);
    }
    cmd.data_len = data.length;
    cmd.out_capabilities = iommu.capable(IOMMU_CAP_DIRTY_TRACKING) ? IOMMU_HW_CAP_DIRTY_TRACKING : 0n;
    const maxPasids = idev.dev.maxPasids ?? 0;
    cmd.out_max_pasid_log2 = maxPasids ? Math.floor(Math.log2(maxPasids)) : 0;
    ucmdRespond(ucmd);
    return 0;
  });
}

