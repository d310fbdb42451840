/**
 * A legacy VFIO type1 container, reduced to what the contrast scenario needs: VFIO_IOMMU_MAP_DMA
 * of a user VA into the container's own domain. Like vfio_iommu_type1 it first tries to pin the
 * range (GUP); when GUP refuses a VM_PFNMAP mapping (a BAR mmap) it looks the PFNs up through the
 * VMA (follow_pfn) and maps them raw — not pinned, not accounted, and with nothing tying the
 * IOMMU mapping to the VMA's or the device's lifetime. After the BAR is zapped by a reset or the
 * device is closed, the IOMMU keeps translating to the old MMIO: the use-after-free iommufd's
 * dma-buf revoke exists to prevent.
 *
 * It lives here, not in a package, because it is the counter-example: the model's iommufd never
 * maps a BAR by VA (EFAULT), as the kernel's own selftests expect.
 */
import {
  IOMMU_CACHE,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  IommuDevice,
  iommuDomainFree,
  iommuMap,
  iommuReadRuns,
  iommuUnmap,
} from "@x/iommu-pgtable";
import {
  EFAULT,
  FOLL_LONGTERM,
  FOLL_WRITE,
  type Kernel,
  type MmStruct,
  PfnRuns,
  fail,
  isKernelError,
  pinUserPages,
  unpinUserPageRuns,
} from "@x/kernel";
import type { ProbeResult } from "./scenario.js";
import { hex } from "./snapshot.js";
import type { Host, HostDevice } from "./world.js";

const PAGE = 4096n;

/** One VFIO_IOMMU_MAP_DMA: the runs it mapped and what they were taken from. */
interface Type1Dma {
  readonly iova: bigint;
  readonly size: bigint;
  readonly runs: PfnRuns;
  /** Pages pinned by GUP (RAM); false for PFNs scraped from a PFNMAP VMA. */
  readonly pinned: boolean;
  /** For scraped BAR PFNs: the device and its state when they were taken. */
  readonly owner: { readonly dev: HostDevice; readonly resets: number } | undefined;
}

export class Type1Container {
  readonly domain: IommuDomain;
  private readonly dmas: Type1Dma[] = [];

  constructor(
    private readonly kernel: Kernel,
    private readonly mm: MmStruct,
    private readonly host: Host,
    iommu: string,
  ) {
    const unit = host.iommus.get(iommu);
    if (!unit) throw new Error(`no IOMMU ${iommu}`);
    this.domain = unit.driver.domainAllocPaging(new IommuDevice("type1-container", unit.driver), 0);
  }

  /** VFIO_IOMMU_MAP_DMA: pin, or scrape PFNs from a PFNMAP VMA, then map. */
  mapDma(vaddr: bigint, iova: bigint, size: bigint): "pinned" | "pfnmap" {
    const npages = Number(size / PAGE);
    const runs = new PfnRuns();
    let pinned = true;
    try {
      const n = pinUserPages(this.kernel, this.mm, vaddr, npages, FOLL_WRITE | FOLL_LONGTERM, runs);
      if (n !== npages) {
        unpinUserPageRuns(this.kernel, runs, false);
        fail(EFAULT, "partial pin");
      }
    } catch (e) {
      if (!isKernelError(e, EFAULT)) throw e;
      // vaddr_get_pfns: GUP refused; a VM_PFNMAP VMA is resolved page by page (follow_pfn).
      pinned = false;
      runs.clear();
      for (let i = 0; i < npages; i++)
        runs.push(this.mm.followPfn(vaddr + BigInt(i) * PAGE, true), 1);
    }
    let off = 0n;
    runs.forEach((pfn, n) => {
      iommuMap(
        this.domain,
        iova + off,
        BigInt(pfn) * PAGE,
        BigInt(n) * PAGE,
        IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE,
      );
      off += BigInt(n) * PAGE;
    });
    const first = BigInt(runs.pfn(0)) * PAGE;
    const dev = pinned
      ? undefined
      : [...this.host.devices.values()].find((d) =>
          this.host.describePhys(first)?.startsWith(d.spec.name),
        );
    this.dmas.push({
      iova,
      size,
      runs,
      pinned,
      owner: dev && { dev, resets: dev.pdev.resetCount },
    });
    return pinned ? "pinned" : "pfnmap";
  }

  /** VFIO_IOMMU_UNMAP_DMA of one whole earlier mapping. */
  unmapDma(iova: bigint): void {
    const i = this.dmas.findIndex((d) => d.iova === iova);
    const dma = this.dmas[i];
    if (!dma) fail(EFAULT, `no mapping at ${hex(iova)}`);
    iommuUnmap(this.domain, dma.iova, dma.size);
    if (dma.pinned) unpinUserPageRuns(this.kernel, dma.runs, true);
    this.dmas.splice(i, 1);
  }

  /** Unmap everything (container release). */
  release(): void {
    while (this.dmas.length) this.unmapDma(this.dmas[0]!.iova);
    iommuDomainFree(this.domain);
  }

  /**
   * What a device behind this container reaches at `iova`: "stale" when the translation leads to
   * a BAR whose device was reset or closed since the PFNs were taken.
   */
  probe(name: string, iova: bigint): ProbeResult {
    const run = iommuReadRuns(this.domain, iova, 1n)[0];
    if (!run) return { name, iova, verdict: "fault", detail: "type1: no translation" };
    const bar = this.host.describePhys(run.paddr);
    if (!bar) return { name, iova, verdict: "ram", detail: `RAM ${hex(run.paddr)}` };
    const dma = this.dmas.find((d) => iova >= d.iova && iova < d.iova + d.size);
    const owner = dma?.owner;
    const gone =
      owner && (owner.dev.pdev.resetCount !== owner.resets || owner.dev.vdev.openCount === 0);
    return gone
      ? {
          name,
          iova,
          verdict: "stale",
          detail: `${bar} — after its ${owner.dev.vdev.openCount ? "reset" : "close"}`,
        }
      : { name, iova, verdict: "mmio", detail: bar };
  }
}
