/**
 * The IOMMUs in front of the fuzzed PCI functions: hardware-like drivers of @x/iommu-pgtable
 * over x86-64 second-stage tables. Each machine has two instances; a domain of one is refused
 * by devices behind the other (EINVAL at attach), so an IOAS gets two domains when both devices
 * attach to it. Each reports VT-d's reserved regions (the MSI range). Table allocations are
 * injectable failure points (kernel.shouldFail).
 * The checker walks the tables directly (`forEachIopte`): every IOPTE, with its prot.
 */
import {
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  type IommuDomain,
  PT_DRIVER_ALLOC_FLAGS,
  IOMMU_RESV_MSI,
  PtIommuDriver,
  X86_MSI_RANGE_END,
  X86_MSI_RANGE_START,
  x86_64Format,
} from "@x/iommu-pgtable";
import type { Kernel } from "@x/kernel";

/**
 * A VT-d-like unit: struct iommu_hw_info_vtd (flags, cap_reg, ecap_reg) all zero, and VT-d's
 * reserved regions without RMRRs (intel_iommu_get_resv_regions): the interrupt range. One
 * description for every instance but its name.
 */
const VTD_LIKE = {
  hwInfoType: IOMMU_HW_INFO_TYPE_INTEL_VTD,
  hwInfoData: () => new Uint8Array(24),
  caps: [IOMMU_CAP_CACHE_COHERENCY],
  allocFlags: PT_DRIVER_ALLOC_FLAGS,
  ptCfg: () => ({ format: x86_64Format, features: 0 }),
  resvRegions: () => [
    {
      start: X86_MSI_RANGE_START,
      length: X86_MSI_RANGE_END - X86_MSI_RANGE_START + 1n,
      type: IOMMU_RESV_MSI,
    },
  ],
};

/** A cache-coherent IOMMU instance named `name` (48-bit x86-64 tables). */
export function ptIommuDriver(kernel: Kernel, name: string): PtIommuDriver {
  return new PtIommuDriver({ ...VTD_LIKE, name }, kernel);
}

/**
 * Every IOPTE of `domain` as runs of 4 KiB frames, fn(iovaPfn, pfn, npages, prot), in one
 * walk of the table over its aperture, holes skipped.
 */
export function forEachIopte(
  domain: IommuDomain,
  fn: (iovaPfn: number, pfn: number, npages: number, prot: number) => void,
): void {
  const first = Number(domain.geometry.apertureStart >> 12n);
  const last = Number(domain.geometry.apertureEnd >> 12n);
  domain.readPfnRuns(first, last - first + 1, fn);
}
