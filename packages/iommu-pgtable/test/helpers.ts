/** Helpers shared by the iommu-pgtable tests. */
import { isKernelError } from "@x/kernel";
import { IOMMU_READ, IOMMU_WRITE } from "../src/index.js";

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
