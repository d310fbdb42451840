/**
 * The driver entry points iommufd calls on a device's IOMMU driver beyond @x/iommu-pgtable's
 * `IommuDriver`, and the lookup of those ops from a device (drivers/iommu/iommu-priv.h's
 * dev_iommu_ops). Both the device attach path and HWPT allocation use them.
 */
import type { IommuDevice, IommuDomain, IommuDriver, IommuResvRegion } from "@x/iommu-pgtable";
import { EINVAL, type Kernel, WARN_ON, copyFromUser, fail } from "@x/kernel";

/** Driver-specific HWPT data (struct iommu_user_data): a user buffer the driver reads. */
export interface IommuUserData {
  readonly type: number;
  readonly uptr: bigint;
  readonly len: number;
}

/** A user array of driver-specific entries (struct iommu_user_data_array); the driver writes
 * back into `entryNum` how many entries it handled. */
export interface IommuUserDataArray {
  readonly type: number;
  readonly uptr: bigint;
  readonly entryLen: number;
  entryNum: number;
}

/**
 * Read one driver structure of `size` bytes whose first version ended at `minLen`: EINVAL for
 * another type or a length outside [minLen, size], else the bytes zero-extended (EFAULT).
 * @see __iommu_copy_struct_from_user
 */
export function iommuCopyStructFromUser(
  kernel: Kernel,
  data: IommuUserData,
  type: number,
  size: number,
  minLen: number,
): Uint8Array {
  if (data.type !== type) fail(EINVAL, "user data type");
  if (data.len < minLen || size < data.len) fail(EINVAL, "user data length");
  const out = new Uint8Array(size);
  out.set(copyFromUser(kernel, data.uptr, data.len));
  return out;
}

/**
 * Entry `index` of a user array, with the rules of `iommuCopyStructFromUser`. An index past
 * `entryNum` is a driver bug: a WARN, not an errno for user space.
 * @see __iommu_copy_struct_from_user_array
 */
export function iommuCopyStructFromUserArray(
  kernel: Kernel,
  array: IommuUserDataArray,
  type: number,
  index: number,
  size: number,
  minLen: number,
): Uint8Array {
  WARN_ON(index >= array.entryNum, "index past the array");
  const uptr = array.uptr + BigInt(array.entryLen) * BigInt(index);
  return iommuCopyStructFromUser(
    kernel,
    { type: array.type, uptr, len: array.entryLen },
    type,
    size,
    minLen,
  );
}

/**
 * The optional driver entry points iommufd uses beyond @x/iommu-pgtable's `IommuDriver`:
 * reserved regions (iommu_get_resv_regions) and HWPT data for domain allocation
 * (domain_alloc_paging_flags' user_data). A driver without them has no reserved regions.
 */
export interface IommufdDriverExtras {
  getResvRegions?(dev: IommuDevice): readonly IommuResvRegion[];
  domainAllocPaging(dev: IommuDevice, flags: number, userData?: IommuUserData): IommuDomain;
  /** A nested (IOMMU_DOMAIN_NESTED) domain over the nest-parent `parent`. @see domain_alloc_nested */
  domainAllocNested?(
    dev: IommuDevice,
    parent: IommuDomain,
    flags: number,
    userData: IommuUserData,
  ): IommuDomain;
  /**
   * The nested domain's cache_invalidate_user: handle the entries, set `array.entryNum` to the
   * count handled, throw the errno of the first one that failed. Decision: the kernel keeps it
   * in the domain's ops; @x/iommu-pgtable's domain ops carry no uAPI types, so the driver gives
   * it here, for its own nested domains.
   */
  cacheInvalidateUser?(domain: IommuDomain, array: IommuUserDataArray): void;
  /**
   * ops->user_pasid_table: the guest owns the PASID table, so a page request for a PASID with
   * no attachment of its own goes to the nested domain attached to the RID.
   */
  readonly userPasidTable?: boolean;
}

/** @see dev_iommu_ops */
export function driverOf(dev: IommuDevice): IommuDriver & IommufdDriverExtras {
  return dev.iommu as IommuDriver & IommufdDriverExtras;
}
