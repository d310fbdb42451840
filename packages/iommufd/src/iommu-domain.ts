/**
 * What the io_pagetable needs of an iommu_domain: the core's map / unmap / iova_to_phys, its
 * geometry and pgsize_bitmap. The paging domains of @x/iommu-pgtable provide it (the HWPT code
 * passes them in); tests may pass any implementation.
 *
 * Unmap never fails and returns the bytes removed; iommufd only ever unmaps whole ranges it
 * mapped, so a short count is a WARN (iommu_unmap_nofail).
 */
import { KernelWarning } from "@x/kernel";

export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
export const IOMMU_MMIO = 1 << 4;

export interface IoptDomainGeometry {
  readonly apertureStart: bigint;
  /** Inclusive. */
  readonly apertureEnd: bigint;
}

export interface IoptDomain {
  readonly pgsizeBitmap: bigint;
  readonly geometry: IoptDomainGeometry;
  /** iommu_map: throws KernelError; a failed call leaves nothing of itself mapped. */
  map(iova: bigint, paddr: bigint, size: bigint, prot: number): void;
  /** iommu_unmap: bytes unmapped. */
  unmap(iova: bigint, size: bigint): bigint;
  /** iommu_iova_to_phys: 0n when not mapped. */
  iovaToPhys(iova: bigint): bigint;
  /**
   * Optional run-level read-back: call `fn` with contiguous (pfn, npages) runs of what
   * [iova, iova + npages pages) translates to, in order, until `fn` returns false. Lets
   * batch_from_domain avoid one iova_to_phys per page.
   */
  readRange?(iova: bigint, npages: number, fn: (pfn: number, npages: number) => boolean): void;
}

/** Smallest IO page size of the domain (1 << __ffs(pgsize_bitmap)). */
export function domainMinPageSize(domain: IoptDomain): bigint {
  const b = domain.pgsizeBitmap;
  return b & -b;
}

/** @see iommu_unmap_nofail */
export function iommuUnmapNofail(domain: IoptDomain, iova: bigint, size: bigint): void {
  const ret = domain.unmap(iova, size);
  if (ret !== size) {
    throw new KernelWarning(`iommu_unmap_nofail: unmapped ${ret} of ${size} at ${iova}`);
  }
}
