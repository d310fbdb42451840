/**
 * The io_pagetable's view of an iommu_domain: @x/iommu-pgtable's paging domains, driven
 * through the iommu core calls. Whole-page work goes through the domain's PFN-level entry
 * points (`mapPfns` / `unmapPfns` / `readPfnRuns`: the same checks and errnos without a bigint
 * per page); anything with a sub-page part (2 KiB IO pages, an area's page offset) through
 * `iommuMap` / `iommuUnmap` with byte addresses.
 *
 * Unmap never fails; iommufd only unmaps whole ranges it mapped, so a different byte count
 * (a cut through a huge IOPTE, a hole) is a WARN (iommu_unmap_nofail).
 */
import { type IommuDomain, iommuIovaToPhys, iommuMap, iommuUnmap } from "@x/iommu-pgtable";
import { KernelWarning } from "@x/kernel";

export {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_READ,
  IOMMU_WRITE,
} from "@x/iommu-pgtable";

export type IoptDomain = IommuDomain;

const PAGE_MASK = 0xfffn;
/** Frames above this do not fit the PFN-level calls (they take numbers < 2^52). */
const PFN_LIMIT = 2 ** 52;

/** Whole pages the PFN-level calls can take: page-aligned and below PFN_LIMIT. */
export function pageRange(iova: bigint, paddr: bigint, size: bigint): boolean {
  return ((iova | paddr | size) & PAGE_MASK) === 0n && (iova + size) >> 12n < BigInt(PFN_LIMIT);
}

/** Smallest IO page size of the domain (1 << __ffs(pgsize_bitmap)). */
export function domainMinPageSize(domain: IoptDomain): bigint {
  const b = domain.pgsizeBitmap;
  return b & -b;
}

/** iommu_map: throws KernelError; a failed call leaves nothing of itself mapped. */
export function domainMap(
  domain: IoptDomain,
  iova: bigint,
  paddr: bigint,
  size: bigint,
  prot: number,
): void {
  if (pageRange(iova, paddr, size)) {
    domain.mapPfns(Number(iova >> 12n), Number(paddr >> 12n), Number(size >> 12n), prot);
  } else {
    iommuMap(domain, iova, paddr, size, prot);
  }
}

/** @see iommu_unmap_nofail */
export function iommuUnmapNofail(domain: IoptDomain, iova: bigint, size: bigint): void {
  let ret: bigint;
  if (pageRange(iova, 0n, size)) {
    ret = BigInt(domain.unmapPfns(Number(iova >> 12n), Number(size >> 12n))) << 12n;
  } else {
    ret = iommuUnmap(domain, iova, size);
  }
  if (ret !== size) {
    throw new KernelWarning(
      `iommu_unmap_nofail: unmapped 0x${ret.toString(16)} of 0x${size.toString(16)} at 0x${iova.toString(16)}`,
    );
  }
}

/** iommu_iova_to_phys: 0n when not mapped. */
export function domainIovaToPhys(domain: IoptDomain, iova: bigint): bigint {
  return iommuIovaToPhys(domain, iova);
}

/**
 * Read back the frames mapped from page-aligned `iova` on, as contiguous (pfn, npages) runs,
 * until `fn` returns false, a hole, or `npages` pages. Reads in growing chunks so a caller
 * that stops early (a full batch) does not pay for the whole range. The range lies inside the
 * 64-bit space (an area's), so its frames fit the PFN-level read.
 */
export function domainReadRange(
  domain: IoptDomain,
  iova: bigint,
  npages: number,
  fn: (pfn: number, npages: number) => boolean,
): void {
  let iovaPfn = Number(iova >> 12n);
  let left = npages;
  let chunk = 512;
  if (!domain.pt || iova & PAGE_MASK) {
    for (; left > 0; left--, iova += 4096n) {
      const pa = iommuIovaToPhys(domain, iova);
      if (pa === 0n || !fn(Number(pa >> 12n), 1)) return;
    }
    return;
  }
  while (left > 0) {
    const n = Math.min(chunk, left);
    let next = iovaPfn;
    let stop = false;
    domain.readPfnRuns(iovaPfn, n, (runIova, pfn, cnt) => {
      if (stop) return;
      if (runIova !== next || !fn(pfn, cnt)) stop = true;
      else next = runIova + cnt;
    });
    if (stop || next !== iovaPfn + n) return;
    iovaPfn += n;
    left -= n;
    chunk *= 2;
  }
}
