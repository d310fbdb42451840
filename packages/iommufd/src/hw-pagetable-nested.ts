/**
 * Nested HW page tables (struct iommufd_hwpt_nested) and IOMMU_HWPT_INVALIDATE.
 *
 * A nested HWPT holds a user-owned stage-1 configuration the driver parses from HWPT data
 * (IOMMU_HWPT_DATA_*), translated through a nest-parent paging HWPT (stage 2). It maps nothing
 * itself: the IOAS behind the parent is what a device attached to it can reach. It is made on
 * a paging HWPT allocated with IOMMU_HWPT_ALLOC_NEST_PARENT (holding a reference on it), or on
 * a vIOMMU (holding a reference on the vIOMMU instead, see viommu.ts).
 *
 * @see drivers/iommu/iommufd/hw_pagetable.c
 */
import { EINVAL, EOPNOTSUPP, fail } from "@x/kernel";
import { IOMMU_DOMAIN_NESTED, type IommuDomain, iommuDomainFree } from "@x/iommu-pgtable";
import type { IommufdDevice } from "./device.js";
import type { IommufdFault } from "./eventq-fault.js";
import type { IommufdHwptPaging } from "./hw-pagetable.js";
import {
  type IommuUserData,
  type IommuUserDataArray,
  type IommufdDriverExtras,
  driverOf,
} from "./iommu-priv.js";
import {
  IOMMUFD_OBJ_ANY,
  IOMMUFD_OBJ_HWPT_NESTED,
  IOMMUFD_OBJ_VIOMMU,
  type IommufdCtx,
  IommufdObject,
  type IommufdUcmd,
  ucmdRespond,
} from "./main.js";
import {
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  type iommu_hwpt_invalidate,
} from "./uapi.js";
import type { IommufdViommu } from "./viommu.js";

/** The only flags a nested HWPT takes. */
const HWPT_NESTED_VALID_FLAGS = IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID;

/**
 * The largest entry_num IOMMU_HWPT_INVALIDATE takes: the selftest's
 * IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX, the same bound the kernel puts on a vEVENTQ's depth.
 */
export const IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX = 1 << 19;

export class IommufdHwptNested extends IommufdObject {
  readonly type = IOMMUFD_OBJ_HWPT_NESTED;
  domain: IommuDomain | undefined;
  /** Made through a vIOMMU: the reference held is the vIOMMU's, not the parent's. */
  viommu: IommufdViommu | undefined;
  /** hwpt->fault: where page requests of attached devices go (IOMMU_HWPT_FAULT_ID_VALID). */
  fault: IommufdFault | undefined;
  /** hwpt->pasid_compat: allocated with IOMMU_HWPT_ALLOC_PASID (see device.ts). */
  pasidCompat = false;

  constructor(
    readonly ctx: IommufdCtx,
    /** The nest parent (for a vIOMMU-made HWPT, the vIOMMU's). */
    readonly parent: IommufdHwptPaging,
  ) {
    super();
  }

  /** iommufd_hwpt_nested_destroy */
  destroy(): void {
    if (this.fault) this.fault.users--;
    this.fault = undefined;
    if (this.domain) iommuDomainFree(this.domain);
    this.domain = undefined;
    if (this.viommu) this.viommu.users--;
    else this.parent.users--;
  }
}

/** Either kind of HWPT a device can be attached to. */
export type IommufdHwpt = IommufdHwptPaging | IommufdHwptNested;

/** The paging HWPT whose IOAS a HWPT translates through. @see find_hwpt_paging */
export function findHwptPaging(hwpt: IommufdHwpt): IommufdHwptPaging {
  return hwpt.type === IOMMUFD_OBJ_HWPT_NESTED ? hwpt.parent : hwpt;
}

/** The driver's nested domain must really be one (a WARN in the kernel, then EOPNOTSUPP). */
function checkNestedDomain(domain: IommuDomain): IommuDomain {
  if (domain.type !== IOMMU_DOMAIN_NESTED) {
    iommuDomainFree(domain);
    fail(EOPNOTSUPP, "driver returned a domain that is not nested");
  }
  return domain;
}

/**
 * iommufd_hwpt_nested_alloc: a nested HWPT on the paging HWPT `parent` (reserved, not yet
 * visible). EOPNOTSUPP for other flags, no data or a driver without nesting; EINVAL unless the
 * parent is a user-made nest parent of the same driver.
 */
export function iommufdHwptNestedAlloc(
  ctx: IommufdCtx,
  parent: IommufdHwptPaging,
  idev: IommufdDevice,
  flags: number,
  userData: IommuUserData,
): IommufdHwptNested {
  const driver = driverOf(idev.dev);
  if (flags & ~HWPT_NESTED_VALID_FLAGS || !userData.len || !driver.domainAllocNested)
    fail(EOPNOTSUPP, "nested hwpt flags, data or driver");
  if (parent.autoDomain || !parent.nestParent || parent.domain?.owner !== driver)
    fail(EINVAL, "parent is not a nest parent of this driver");
  const hwpt = ctx.objectAlloc(new IommufdHwptNested(ctx, parent));
  hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0;
  parent.users++;
  try {
    hwpt.domain = checkNestedDomain(
      driver.domainAllocNested(
        idev.dev,
        parent.domain!,
        flags & ~IOMMU_HWPT_FAULT_ID_VALID,
        userData,
      ),
    );
    hwpt.domain.owner = driver;
    return hwpt;
  } catch (e) {
    ctx.objectAbortAndDestroy(hwpt);
    throw e;
  }
}

/**
 * iommufd_viommu_alloc_hwpt_nested: a nested HWPT the vIOMMU's driver makes; it references the
 * vIOMMU, and its parent is the vIOMMU's.
 */
export function iommufdViommuAllocHwptNested(
  ctx: IommufdCtx,
  viommu: IommufdViommu,
  flags: number,
  userData: IommuUserData,
): IommufdHwptNested {
  if (flags & ~HWPT_NESTED_VALID_FLAGS) fail(EOPNOTSUPP, "nested hwpt flags");
  if (!userData.len) fail(EOPNOTSUPP, "no hwpt data");
  const ops = viommu.ops;
  if (!ops?.allocDomainNested) fail(EOPNOTSUPP, "vIOMMU makes no nested domains");
  const hwpt = ctx.objectAlloc(new IommufdHwptNested(ctx, viommu.hwpt));
  hwpt.viommu = viommu;
  hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0;
  viommu.users++;
  try {
    hwpt.domain = checkNestedDomain(
      ops.allocDomainNested(flags & ~IOMMU_HWPT_FAULT_ID_VALID, userData),
    );
    hwpt.domain.owner = viommu.iommuDev;
    return hwpt;
  } catch (e) {
    ctx.objectAbortAndDestroy(hwpt);
    throw e;
  }
}

/**
 * iommufd_hwpt_invalidate: the entries go to a nested HWPT's domain or to a vIOMMU; any other
 * object is EINVAL. The struct is written back whatever happened, `entry_num` being the count
 * the driver handled (0 when it was never reached), so a partial failure tells user space where
 * to resume.
 */
export function iommufdHwptInvalidate(
  ucmd: IommufdUcmd<(typeof iommu_hwpt_invalidate)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  const array: IommuUserDataArray = {
    type: cmd.data_type,
    uptr: cmd.data_uptr,
    entryLen: cmd.entry_len,
    entryNum: cmd.entry_num,
  };
  let doneNum = 0;
  let rc = 0;
  let error: unknown;
  try {
    if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
    if (cmd.entry_num > IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX) fail(EINVAL, "entry_num");
    if (cmd.entry_num && (!cmd.data_uptr || !cmd.entry_len)) fail(EINVAL, "entries without data");
    rc = ctx.withObjectOrErrno(cmd.hwpt_id, IOMMUFD_OBJ_ANY, (obj) => {
      let invalidate: (() => void) | undefined;
      if (obj.type === IOMMUFD_OBJ_HWPT_NESTED) {
        const domain = (obj as IommufdHwptNested).domain!;
        const driver = domain.owner as IommufdDriverExtras;
        if (!driver.cacheInvalidateUser) fail(EOPNOTSUPP, "no cache_invalidate_user");
        invalidate = () => driver.cacheInvalidateUser!(domain, array);
      } else if (obj.type === IOMMUFD_OBJ_VIOMMU) {
        const ops = (obj as IommufdViommu).ops;
        if (!ops?.cacheInvalidate) fail(EOPNOTSUPP, "no vIOMMU cache_invalidate");
        invalidate = () => ops.cacheInvalidate!(array);
      } else {
        fail(EINVAL, "not a nested HWPT or vIOMMU");
      }
      try {
        invalidate();
      } finally {
        doneNum = array.entryNum;
      }
      return 0;
    });
  } catch (e) {
    error = e;
  }
  cmd.entry_num = doneNum;
  ucmdRespond(ucmd);
  if (error) throw error;
  return rc;
}
