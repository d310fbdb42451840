/**
 * Constants of the iommu core's header: prot flags, domain types, dirty flags, capabilities.
 * Values are the kernel's.
 *
 * @see include/linux/iommu.h
 */

/** DMA read allowed (device reads memory). */
export const IOMMU_READ = 1 << 0;
/** DMA write allowed (device writes memory). */
export const IOMMU_WRITE = 1 << 1;
/** DMA cache coherency. */
export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
/** Device memory (MSI doorbells, BARs). */
export const IOMMU_MMIO = 1 << 4;
export const IOMMU_PRIV = 1 << 5;

/** Domain type bits. */
export const __IOMMU_DOMAIN_PAGING = 1 << 0;
const __IOMMU_DOMAIN_PT = 1 << 2;
const __IOMMU_DOMAIN_NESTED = 1 << 6;

export const IOMMU_DOMAIN_BLOCKED = 0;
export const IOMMU_DOMAIN_IDENTITY = __IOMMU_DOMAIN_PT;
/** @alias include/linux/iommu.h defines it as __IOMMU_DOMAIN_PAGING, a name of its own. */
export const IOMMU_DOMAIN_UNMANAGED = __IOMMU_DOMAIN_PAGING;
/** A user (guest) stage-1 table translated through a nest-parent stage-2 domain. */
export const IOMMU_DOMAIN_NESTED = __IOMMU_DOMAIN_NESTED;

/** read_and_clear_dirty flag: report dirty bits but leave them set. */
export const IOMMU_DIRTY_NO_CLEAR = 1 << 0;

/** enum iommu_cap */
export const IOMMU_CAP_CACHE_COHERENCY = 0;
export const IOMMU_CAP_ENFORCE_CACHE_COHERENCY = 3;
export const IOMMU_CAP_DEFERRED_FLUSH = 4;
export const IOMMU_CAP_DIRTY_TRACKING = 5;

/** Allocation flags of domain_alloc_paging_flags (the uAPI IOMMU_HWPT_ALLOC_* values). */
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3;

/** enum iommu_hw_info_type */
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
export const IOMMU_HW_INFO_TYPE_AMD = 4;
export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;

/** The machine's page size and the u64 top come from the kernel; re-exported for drivers. */
export { PAGE_SHIFT, PAGE_SIZE, U64_MAX } from "@x/kernel";

/** A DMA direction as the device issues it. */
export type DmaAccess = typeof IOMMU_READ | typeof IOMMU_WRITE;
