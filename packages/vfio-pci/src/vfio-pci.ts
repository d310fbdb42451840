import { VFIO_PCI_DMA_BUF_IOMMUFD_MAP } from "@x/dmabuf";
import { type Kernel, KernelWarning, ModuleKey } from "@x/kernel";
import type { PciBus, PciDev } from "./pci.js";
import { VfioPciCoreDevice } from "./vfio-pci-core.js";
import {
  type VfioPciDeviceOps,
  vfioPciDefaultOps,
  vfioPciDmaBufIommufdMap,
} from "./vfio-pci-dmabuf.js";
import { VfioDeviceSet, vfioRegisterDevice } from "./vfio-main.js";

/**
 * The vfio-pci module: `loadVfioPci(kernel)` is its module init (publishes
 * `vfio_pci_dma_buf_iommufd_map` for iommufd), `vfioPciProbe` binds the driver to a PCI function
 * and creates its cdev `/dev/vfio/devices/vfioN`.
 */
export class VfioPciModule {
  private static readonly key = new ModuleKey<VfioPciModule>("vfio_pci");
  /** One dev_set per bus: the devices a hot reset touches together. */
  private readonly devSets = new Map<PciBus, VfioDeviceSet>();
  private readonly byPdev = new Map<PciDev, VfioPciCoreDevice>();

  /** @internal module init is `loadVfioPci`. */
  constructor(
    readonly kernel: Kernel,
    readonly options: VfioPciOptions,
  ) {
    // Loading it twice on one machine WARNs here, before its symbol is exported again.
    kernel.setModuleState(VfioPciModule.key, this);
    kernel.symbols.exportSymbol(VFIO_PCI_DMA_BUF_IOMMUFD_MAP, vfioPciDmaBufIommufdMap, "vfio_pci");
  }

  static of(kernel: Kernel): VfioPciModule | undefined {
    return kernel.moduleState(VfioPciModule.key);
  }

  /** The vfio-pci device driving `pdev`, if bound. */
  device(pdev: PciDev): VfioPciCoreDevice | undefined {
    return this.byPdev.get(pdev);
  }

  /**
   * vfio_pci_probe: bind the driver to `pdev`. `pciOps: null` models a variant driver that does
   * not implement dma-buf export (DMA_BUF → EOPNOTSUPP).
   */
  probe(pdev: PciDev, opts: { readonly pciOps?: VfioPciDeviceOps | null } = {}): VfioPciCoreDevice {
    if (this.byPdev.has(pdev)) throw new KernelWarning(`${pdev.name} already bound to vfio-pci`);
    let set = this.devSets.get(pdev.bus);
    if (!set) this.devSets.set(pdev.bus, (set = new VfioDeviceSet(this.kernel, pdev.bus.name)));
    const ops = opts.pciOps === null ? undefined : (opts.pciOps ?? vfioPciDefaultOps);
    const vdev = new VfioPciCoreDevice(this.kernel, set, pdev, ops, this.options.closeCleanupFirst);
    vfioRegisterDevice(vdev);
    this.byPdev.set(pdev, vdev);
    return vdev;
  }

  /** vfio_pci_remove: unregister; refused (WARN) while a cdev fd or a live dma-buf holds it. */
  remove(vdev: VfioPciCoreDevice): void {
    vdev.unregister();
    this.byPdev.delete(vdev.pdev);
  }
}

/** Build-time choices; the default is the baseline close ordering. */
export interface VfioPciOptions {
  /** The 2026 close-ordering fix: revoke and zombie the dma-bufs before disabling. */
  readonly closeCleanupFirst?: boolean;
}

/** Module init: load vfio-pci into `kernel`. */
export function loadVfioPci(kernel: Kernel, options: VfioPciOptions = {}): VfioPciModule {
  return new VfioPciModule(kernel, options);
}
