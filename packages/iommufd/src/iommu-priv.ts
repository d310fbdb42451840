/**
 * The driver entry points iommufd calls on a device's IOMMU driver beyond @x/iommu-pgtable's
 * `IommuDriver`, and the lookup of those ops from a device (drivers/iommu/iommu-priv.h's
 * dev_iommu_ops). Both the device attach path and HWPT allocation use them.
 */
import type { IommuDevice, IommuDomain, IommuDriver, IommuResvRegion } from "@x/iommu-pgtable";

/** Driver-specific HWPT data (struct iommu_user_data): a user buffer the driver reads. */
export interface IommuUserData {
  readonly type: number;
  readonly uptr: bigint;
  readonly len: number;
}

/**
 * The optional driver entry points iommufd uses beyond @x/iommu-pgtable's `IommuDriver`:
 * reserved regions (iommu_get_resv_regions) and HWPT data for domain allocation
 * (domain_alloc_paging_flags' user_data). A driver without them has no reserved regions.
 */
export interface IommufdDriverExtras {
  getResvRegions?(dev: IommuDevice): readonly IommuResvRegion[];
  domainAllocPaging(dev: IommuDevice, flags: number, userData?: IommuUserData): IommuDomain;
}

/** @see dev_iommu_ops */
export function driverOf(dev: IommuDevice): IommuDriver & IommufdDriverExtras {
  return dev.iommu as IommuDriver & IommufdDriverExtras;
}
