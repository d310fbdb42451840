/** Helpers shared by the iommu-pgtable tests. */
import { isKernelError } from "@x/kernel";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_FLUSH_RANGE,
  amdv1Format,
  iommuptDomainAlloc,
  vtdssFormat,
} from "../src/index.js";

export const RW = IOMMU_READ | IOMMU_WRITE;

/** The errno name of the KernelError `fn` throws, or "ok" when it returns. */
export function errnoOf(fn: () => void): string {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e)) return e.errnoName;
    throw e;
  }
  return "ok";
}

/** A VT-d second-stage domain with a 48-bit input space, as the Intel driver allocates one. */
export function vtdDomain(): IommuDomain {
  return iommuptDomainAlloc({
    format: vtdssFormat,
    features: 1 << PT_FEAT_FLUSH_RANGE,
    hwMaxVaLg2: 48,
  });
}

/** An AMDv1 domain starting at level 2 whose top grows on demand (PT_FEAT_DYNAMIC_TOP). */
export function amdDomain(): IommuDomain {
  return iommuptDomainAlloc({
    format: amdv1Format,
    features: (1 << PT_FEAT_DYNAMIC_TOP) | (1 << PT_FEAT_FLUSH_RANGE),
    startingLevel: 2,
  });
}
