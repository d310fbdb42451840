import {
  EAGAIN,
  EINVAL,
  EIO,
  ENOTTY,
  KernelWarning,
  type Kernel,
  KmemCache,
  type MmioRegion,
  ModuleKey,
  Mutex,
  fail,
} from "@x/kernel";
import { type IommuDriver, IommuDevice } from "@x/iommu-pgtable";
import type { P2pdmaProvider } from "./pci-p2pdma.js";
import { PciHostIrq, intxDeliver, pciMsixTableReset, pciRestoreMsiState } from "./pci-irq.js";
import {
  IORESOURCE_IO,
  IORESOURCE_MEM,
  IORESOURCE_MEM_64,
  IORESOURCE_PREFETCH,
  PCI_AF_CAP,
  PCI_AF_CAP_FLR,
  PCI_AF_CAP_TP,
  PCI_AF_CTRL,
  PCI_AF_CTRL_FLR,
  PCI_AF_LENGTH,
  PCI_AF_SIZEOF,
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_AF,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_CAP_MSIX_SIZEOF,
  PCI_CAP_LIST_NEXT,
  PCI_CFG_SPACE_EXP_SIZE,
  PCI_CFG_SPACE_SIZE,
  PCI_CLASS_PROG,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_D1,
  PCI_D2,
  PCI_D3hot,
  PCI_DEVICE_ID,
  PCI_EXP_DEVCAP,
  PCI_EXP_DEVCAP_FLR,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_EXP_FLAGS,
  PCI_EXP_SIZEOF,
  PCI_HEADER_TYPE,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_PM_CTRL,
  PCI_PM_CTRL_NO_SOFT_RESET,
  PCI_PM_CTRL_STATE_MASK,
  PCI_PM_CAP_D1,
  PCI_PM_CAP_D2,
  PCI_PM_PMC,
  PCI_PM_SIZEOF,
  PCI_REVISION_ID,
  PCI_ROM_ADDRESS,
  PCI_ROM_ADDRESS_ENABLE,
  PCI_ROM_RESOURCE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STD_HEADER_SIZEOF,
  PCI_STD_NUM_BARS,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
} from "./pci-regs.js";

/**
 * The PCI function model: what the hardware does with config cycles, and the PCI-core helpers
 * vfio-pci calls (enable, save/restore, function reset, bus reset, power state).
 *
 * Hardware side: a config space with per-byte write masks; BAR registers that answer sizing
 * (all-ones in, size mask out) and hold whatever address is written; COMMAND with IO / MEMORY /
 * MASTER / INTX_DISABLE; PMCSR, whose D3hot -> D0 transition resets the function unless
 * NoSoftRst is advertised; PCIe DEVCTL.BCR_FLR and AF_CTRL.FLR, which reset the function when
 * the capability advertises FLR. A reset puts config back to power-on values (COMMAND 0, BARs 0);
 * BAR contents (device memory) survive it.
 *
 * The BAR's decode address is its MMIO region's base in the kernel's physical address space,
 * fixed at creation ("firmware assignment"). A memory access to the BAR only reaches the device
 * while it decodes (COMMAND.MEMORY set and in D0); `decodesMemory` is what the DMA and mmap paths
 * consult.
 */

/** One BAR as a device advertises it; a 64-bit BAR takes its index and the next one. */
export type PciBarSpec =
  | {
      readonly type: "mem32" | "mem64";
      /** Power of two, ≥ 16 bytes. */
      readonly size: bigint;
      readonly prefetchable?: boolean;
      /** PCI bus address − CPU physical address of the BAR (the P2P provider's bus_offset). */
      readonly busOffset?: bigint;
    }
  | { readonly type: "io"; readonly size: number };

export interface PciDevSpec {
  readonly vendor: number;
  readonly device: number;
  /** 24-bit class code (base, sub, prog-if). */
  readonly classCode?: number;
  readonly revision?: number;
  readonly subsystemVendor?: number;
  readonly subsystem?: number;
  /** BARs by index 0..5; `undefined` (or the slot after a mem64) is unused. */
  readonly bars?: ReadonlyArray<PciBarSpec | undefined>;
  /** Expansion ROM size (power of two ≥ 2 KiB), absent for no ROM. */
  readonly romSize?: bigint;
  /**
   * PM capability; `noSoftReset` keeps config across D3hot -> D0, `d1` / `d2` set the PMC bits
   * saying the function supports those states.
   */
  readonly pm?:
    | boolean
    | { readonly noSoftReset?: boolean; readonly d1?: boolean; readonly d2?: boolean };
  /** PCI Express capability; `flr` sets DEVCAP.FLR. */
  readonly pcie?: boolean | { readonly flr: boolean };
  /** Advanced Features capability with its FLR / TP bits. */
  readonly af?: boolean | { readonly flr: boolean; readonly tp: boolean };
  /** A VF-like function whose COMMAND.MEMORY is hard-wired (vfio treats memory as enabled). */
  readonly noCommandMemory?: boolean;
  /** The IOMMU in front of the function; without one it cannot be bound to iommufd. */
  readonly iommu?: IommuDriver;
  /** INTx pin 1..4 (INTA..INTD), 0 for none; INTA by default. */
  readonly interruptPin?: number;
  /**
   * pdev->irq: the host IRQ the pin is routed to; 0 when firmware routed it nowhere usable,
   * IRQ_NOTCONNECTED (pci-irq.ts) when it is not connected. Default: a line from the pin and slot.
   */
  readonly irq?: number;
  /** The function ignores COMMAND.INTX_DISABLE (no PCI 2.3 masking, pci_intx_mask_supported). */
  readonly intxMaskBroken?: boolean;
  /** MSI capability: vectors requested (Multiple Message Capable), 64-bit address, per-vector mask. */
  readonly msi?: {
    readonly vectors: 1 | 2 | 4 | 8 | 16 | 32;
    readonly is64?: boolean;
    readonly maskbit?: boolean;
  };
  /**
   * MSI-X capability: table size and where table and PBA live (memory BAR index and offset,
   * 8-byte aligned). The PBA defaults to right after the table in the same BAR.
   */
  readonly msix?: {
    readonly vectors: number;
    readonly tableBar: number;
    readonly tableOffset: number;
    readonly pbaBar?: number;
    readonly pbaOffset?: number;
  };
}

/** struct resource, reduced to what the model reads. */
interface PciResource {
  readonly flags: number;
  readonly start: bigint;
  readonly len: bigint;
  /** The MMIO region backing a memory BAR or the ROM. */
  readonly region: MmioRegion | undefined;
}

const NO_RESOURCE: PciResource = { flags: 0, start: 0n, len: 0n, region: undefined };

/**
 * Saved config (pci_save_state): the bytes the restore writes back, up to the last writable
 * one (the rest of a 4 KiB PCIe config space is read-only here).
 */
export interface PciSavedState {
  readonly config: Uint8Array;
}

/** Length of an MSI capability: flags, address (lo / hi), data, and mask + pending. */
function msiCapSize(msi: NonNullable<PciDevSpec["msi"]>): number {
  return 10 + (msi.is64 ? 4 : 0) + (msi.maskbit ? 10 : 0);
}

/** Config-space bytes the hardware lets software change outside BARs and capabilities. */
function headerWriteMask(
  wmask: Uint8Array,
  noCommandMemory: boolean,
  intxMaskSupported: boolean,
): void {
  const cmd =
    PCI_COMMAND_IO |
    (noCommandMemory ? 0 : PCI_COMMAND_MEMORY) |
    PCI_COMMAND_MASTER |
    (intxMaskSupported ? PCI_COMMAND_INTX_DISABLE : 0);
  wmask[PCI_COMMAND] = cmd & 0xff;
  wmask[PCI_COMMAND + 1] = cmd >> 8;
  wmask[PCI_INTERRUPT_LINE] = 0xff;
}

function isPow2(n: bigint): boolean {
  return n > 0n && (n & (n - 1n)) === 0n;
}

/** Per-kernel PCI state: buses, the I/O port allocator and the owner of each BAR region. */
class PciRoot {
  readonly buses: PciBus[] = [];
  private nextIoPort = 0x1000;
  /** Linux IRQ numbers handed to MSI vectors, above the legacy and IO-APIC lines. */
  private nextIrq = 64;
  /**
   * MSI vectors the host can still hand out (the interrupt domain's free vectors); tests
   * lower it to see a partial allocation.
   */
  msiVectorsFree = 200;
  /** The host's MSI domain can add MSI-X vectors while enabled (pci_msix_can_alloc_dyn). */
  msixCanAllocDyn = true;
  private readonly regionOwners = new Map<MmioRegion, { dev: PciDev; bar: number }>();

  constructor(readonly kernel: Kernel) {}

  /** @internal */
  allocIoPorts(size: number): number {
    const base = (this.nextIoPort + size - 1) & ~(size - 1);
    this.nextIoPort = base + size;
    return base;
  }

  /** @internal */
  irqVectorsLeft(): number {
    return this.msiVectorsFree;
  }

  /** @internal One MSI vector's Linux IRQ. */
  allocIrq(): number {
    this.msiVectorsFree--;
    return this.nextIrq++;
  }

  /** @internal */
  freeIrqs(n: number): void {
    this.msiVectorsFree += n;
  }

  /** @internal */
  claimRegion(region: MmioRegion, dev: PciDev, bar: number): void {
    this.regionOwners.set(region, { dev, bar });
  }

  /** The device and resource index whose BAR (or ROM) contains `paddr`, if any. */
  barAt(paddr: bigint): { dev: PciDev; bar: number } | undefined {
    const r = this.kernel.mem.mmioRegionAt(paddr);
    return r ? this.regionOwners.get(r) : undefined;
  }

  newBus(name?: string): PciBus {
    const bus = new PciBus(
      this,
      name ?? `0000:${(this.buses.length + 1).toString(16).padStart(2, "0")}`,
    );
    this.buses.push(bus);
    return bus;
  }
}

const PCI_ROOT = new ModuleKey<PciRoot>("pci");
const newPciRoot = (kernel: Kernel) => new PciRoot(kernel);

/** The PCI root of `kernel`, created on first use. */
export function pciRoot(kernel: Kernel): PciRoot {
  return kernel.moduleState(PCI_ROOT, newPciRoot);
}

/**
 * A PCI bus: the unit of a secondary-bus reset. vfio groups the devices a hot reset affects into
 * a dev_set; here the dev_set of a device is its bus.
 */
export class PciBus {
  readonly devices: PciDev[] = [];
  /** A secondary-bus reset is possible (a bridge above that allows it); pci_probe_reset_bus. */
  busResetPossible = true;

  constructor(
    readonly root: PciRoot,
    readonly name: string,
  ) {}

  /** Add a function at the next free device number (the BDF is `bus:dev.0`). */
  addDevice(spec: PciDevSpec): PciDev {
    const dev = new PciDev(
      this,
      `${this.name}:${this.devices.length.toString(16).padStart(2, "0")}.0`,
      spec,
    );
    this.devices.push(dev);
    return dev;
  }

  /**
   * pci_reset_bus: every function on the bus has its config saved, goes through a secondary-bus
   * reset, and gets its config back. EAGAIN if any device lock is contended (nothing reset).
   * @see pci_reset_bus
   */
  resetBus(): void {
    // The model is synchronous: a held device lock is contention, the whole reset is refused.
    for (const d of this.devices) if (d.deviceLock.locked) fail(EAGAIN, `${d.name} locked`);
    const saved = this.devices.map((d) => d.saveState());
    for (const d of this.devices) d.hwReset();
    this.devices.forEach((d, i) => {
      d.restoreState(saved[i]!);
    });
    this.root.kernel.trace.emit("pci:reset", { dev: this.name, method: "bus" });
  }
}

declare module "@x/kernel" {
  interface TraceEvents {
    "pci:reset": { dev: string; method: "flr" | "af_flr" | "pm" | "bus" };
    "pci:power": { dev: string; from: number; to: number };
  }
}

/**
 * Config space, write mask and power-on copy of a function, one object each, so that the
 * functions of a machine (and of the next) share slabs: four PCIe functions' 12 KiB to a slab,
 * sixteen conventional ones' 768 bytes.
 */
const expSpaceCache = new KmemCache(Uint8Array, 3 * PCI_CFG_SPACE_EXP_SIZE, 4);
const spaceCache = new KmemCache(Uint8Array, 3 * PCI_CFG_SPACE_SIZE, 16);

/** The capability list as it is built: the next free offset and the link byte to set. */
interface CapChain {
  readonly config: Uint8Array;
  next: number;
  link: number;
}

/** Append capability `id` of `len` bytes (dword-aligned) to the chain; returns its offset. */
function addCap(chain: CapChain, id: number, len: number): number {
  const at = chain.next;
  chain.config[chain.link] = at;
  chain.config[at] = id;
  chain.link = at + PCI_CAP_LIST_NEXT;
  chain.next = (at + len + 3) & ~3;
  return at;
}

/** struct pci_dev plus the device behind it. */
export class PciDev {
  readonly kernel: Kernel;
  readonly config: Uint8Array;
  private readonly wmask: Uint8Array;
  /** One past the last writable config byte: a restore never needs to look further. */
  private readonly wmaskEnd: number;
  private readonly initial: Uint8Array;
  /** Little-endian words of `config` and of `wmask`, made once (a DataView is costly to make). */
  private readonly configLe: DataView;
  private readonly wmaskLe: DataView;
  /** Resources 0..5 (BARs) and 6 (ROM). */
  readonly resources: PciResource[] = [];
  /** One P2P provider per memory BAR (pcim_p2pdma_provider); undefined otherwise. */
  readonly p2pProviders: Array<P2pdmaProvider | undefined> = [];
  /** Capability offsets, 0 when absent. */
  readonly pmCap: number;
  readonly pcieCap: number;
  readonly afCap: number;
  readonly msiCap: number;
  readonly msixCap: number;
  /** Where the MSI-X table and PBA live (BAR index, offset); meaningful with msixCap. */
  readonly msixTableBar: number = 0;
  readonly msixTableOffset: number = 0;
  readonly msixPbaBar: number = 0;
  readonly msixPbaOffset: number = 0;
  readonly noCommandMemory: boolean;
  /** pdev->irq */
  readonly irq: number;
  /** COMMAND.INTX_DISABLE is implemented (PCI 2.3 INTx masking). */
  readonly intxMaskSupported: boolean;
  /** The device drives its INTx line. */
  intxAsserted = false;
  /** The host's interrupt state for this function. */
  readonly hostIrq = new PciHostIrq();
  /** The device lock pci_dev_trylock takes around a reset. */
  readonly deviceLock: Mutex;
  /** Bumped by every hardware reset, for tests and the trace. */
  resetCount = 0;
  enableCount = 0;
  /** The function as its IOMMU sees it (attached domain, fault log), if it has one. */
  readonly iommuDev: IommuDevice | undefined;
  /** Port contents of I/O BARs (device registers the model stores but does not interpret). */
  private readonly ioPorts = new Map<number, Uint8Array>();

  constructor(
    readonly bus: PciBus,
    readonly name: string,
    spec: PciDevSpec,
  ) {
    this.kernel = bus.root.kernel;
    this.deviceLock = new Mutex(this.kernel.lockdep, "pci_dev.lock");
    this.noCommandMemory = spec.noCommandMemory ?? false;
    this.iommuDev = spec.iommu ? new IommuDevice(name, spec.iommu) : undefined;
    const size = spec.pcie ? PCI_CFG_SPACE_EXP_SIZE : PCI_CFG_SPACE_SIZE;
    // config, wmask and the power-on copy share one object of a cache: every machine builds
    // its functions, and a buffer costs far more to create than its bytes.
    const space = (spec.pcie ? expSpaceCache : spaceCache).zalloc();
    this.config = space.subarray(0, size);
    this.wmask = space.subarray(size, 2 * size);
    this.initial = space.subarray(2 * size);
    this.configLe = new DataView(space.buffer, space.byteOffset, size);
    this.wmaskLe = new DataView(space.buffer, space.byteOffset + size, size);
    const cfg = this.configLe;
    cfg.setUint16(0, spec.vendor, true);
    cfg.setUint16(PCI_DEVICE_ID, spec.device, true);
    this.config[PCI_REVISION_ID] = spec.revision ?? 0;
    const cls = spec.classCode ?? 0x028000;
    this.config[PCI_CLASS_PROG] = cls & 0xff;
    cfg.setUint16(PCI_CLASS_PROG + 1, cls >> 8, true);
    this.config[PCI_HEADER_TYPE] = 0;
    cfg.setUint16(PCI_SUBSYSTEM_VENDOR_ID, spec.subsystemVendor ?? spec.vendor, true);
    cfg.setUint16(PCI_SUBSYSTEM_ID, spec.subsystem ?? 0, true);
    const pin = spec.interruptPin ?? 1;
    if (pin < 0 || pin > 4) throw new KernelWarning(`${name}: bad interrupt pin ${pin}`);
    this.config[PCI_INTERRUPT_PIN] = pin;
    this.irq = spec.irq ?? (pin ? 16 + ((bus.devices.length + pin - 1) % 4) : 0);
    this.intxMaskSupported = !spec.intxMaskBroken;
    headerWriteMask(this.wmask, this.noCommandMemory, this.intxMaskSupported);
    this.setupBars(spec);

    const chain: CapChain = {
      config: this.config,
      next: PCI_STD_HEADER_SIZEOF,
      link: PCI_CAPABILITY_LIST,
    };
    this.pmCap = spec.pm ? addCap(chain, PCI_CAP_ID_PM, PCI_PM_SIZEOF) : 0;
    if (this.pmCap) {
      const pm = typeof spec.pm === "object" ? spec.pm : {};
      const pmc = 0x0003 | (pm.d1 ? PCI_PM_CAP_D1 : 0) | (pm.d2 ? PCI_PM_CAP_D2 : 0);
      cfg.setUint16(this.pmCap + PCI_PM_PMC, pmc, true);
      const nsr = pm.noSoftReset === true;
      this.config[this.pmCap + PCI_PM_CTRL] = nsr ? PCI_PM_CTRL_NO_SOFT_RESET : 0;
      this.wmask[this.pmCap + PCI_PM_CTRL] = PCI_PM_CTRL_STATE_MASK;
    }
    this.msiCap = spec.msi ? addCap(chain, PCI_CAP_ID_MSI, msiCapSize(spec.msi)) : 0;
    if (spec.msi) this.setupMsi(spec.msi);
    this.pcieCap = spec.pcie ? addCap(chain, PCI_CAP_ID_EXP, PCI_EXP_SIZEOF) : 0;
    if (this.pcieCap) {
      cfg.setUint16(this.pcieCap + PCI_EXP_FLAGS, 0x0002, true);
      const flr = typeof spec.pcie === "object" && spec.pcie.flr;
      cfg.setUint32(this.pcieCap + PCI_EXP_DEVCAP, flr ? PCI_EXP_DEVCAP_FLR : 0, true);
      // DEVCTL: every control bit below BCR_FLR is plain read/write storage here.
      this.wmask[this.pcieCap + PCI_EXP_DEVCTL] = 0xff;
      this.wmask[this.pcieCap + PCI_EXP_DEVCTL + 1] = 0x7f;
    }
    this.msixCap = spec.msix ? addCap(chain, PCI_CAP_ID_MSIX, PCI_CAP_MSIX_SIZEOF) : 0;
    if (spec.msix) {
      const m = spec.msix;
      this.msixTableBar = m.tableBar;
      this.msixTableOffset = m.tableOffset;
      this.msixPbaBar = m.pbaBar ?? m.tableBar;
      this.msixPbaOffset = m.pbaOffset ?? m.tableOffset + m.vectors * PCI_MSIX_ENTRY_SIZE;
      this.setupMsix(m.vectors);
    }
    this.afCap = spec.af ? addCap(chain, PCI_CAP_ID_AF, PCI_AF_SIZEOF) : 0;
    if (this.afCap) {
      const af = typeof spec.af === "object" ? spec.af : { flr: true, tp: true };
      this.config[this.afCap + PCI_AF_LENGTH] = PCI_AF_SIZEOF;
      this.config[this.afCap + PCI_AF_CAP] =
        (af.flr ? PCI_AF_CAP_FLR : 0) | (af.tp ? PCI_AF_CAP_TP : 0);
    }
    if (this.pmCap || this.msiCap || this.pcieCap || this.msixCap || this.afCap) {
      cfg.setUint16(PCI_STATUS, PCI_STATUS_CAP_LIST, true);
    } else {
      this.config[PCI_CAPABILITY_LIST] = 0;
    }
    this.initial.set(this.config);
    // Writable bytes lie in the header and the capabilities, all below `chain.next`: no need
    // to scan the 4 KiB of an express function's space.
    let end = Math.min(chain.next, size);
    while (end > 0 && this.wmask[end - 1] === 0) end--;
    this.wmaskEnd = end;
    // Firmware assigned addresses: BAR registers hold their regions' bases.
    this.programBars();
    if (this.msixCap) pciMsixTableReset(this);
  }

  /** MSI: Message Control with MMC and the address / data / mask registers' write masks. */
  private setupMsi(msi: NonNullable<PciDevSpec["msi"]>): void {
    const cap = this.msiCap;
    const flags =
      (Math.log2(msi.vectors) << 1) |
      (msi.is64 ? PCI_MSI_FLAGS_64BIT : 0) |
      (msi.maskbit ? PCI_MSI_FLAGS_MASKBIT : 0);
    this.configLe.setUint16(cap + PCI_MSI_FLAGS, flags, true);
    this.wmask[cap + PCI_MSI_FLAGS] = PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE;
    const w = this.wmaskLe;
    w.setUint32(cap + PCI_MSI_ADDRESS_LO, 0xfffffffc, true);
    if (msi.is64) w.setUint32(cap + PCI_MSI_ADDRESS_HI, 0xffffffff, true);
    w.setUint16(cap + (msi.is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32), 0xffff, true);
    if (msi.maskbit)
      w.setUint32(
        cap + (msi.is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32),
        msi.vectors === 32 ? 0xffffffff : (1 << msi.vectors) - 1,
        true,
      );
  }

  /** MSI-X: table size, Table / PBA BIR and offsets, ENABLE and function mask writable. */
  /** `len` bytes at `off` lie in memory BAR `bar`, 8-byte aligned (an MSI-X table or PBA). */
  private inMemBar(bar: number, off: number, len: number): boolean {
    const r = this.resources[bar];
    return (
      r !== undefined &&
      (r.flags & IORESOURCE_MEM) !== 0 &&
      off % 8 === 0 &&
      BigInt(off + len) <= r.len
    );
  }

  private setupMsix(vectors: number): void {
    const cap = this.msixCap;
    if (
      vectors < 1 ||
      vectors > 2048 ||
      !this.inMemBar(this.msixTableBar, this.msixTableOffset, vectors * PCI_MSIX_ENTRY_SIZE) ||
      !this.inMemBar(this.msixPbaBar, this.msixPbaOffset, Math.ceil(vectors / 64) * 8)
    )
      throw new KernelWarning(`${this.name}: bad MSI-X table or PBA placement`);
    const cfg = this.configLe;
    cfg.setUint16(cap + PCI_MSIX_FLAGS, vectors - 1, true);
    cfg.setUint32(cap + PCI_MSIX_TABLE, (this.msixTableOffset | this.msixTableBar) >>> 0, true);
    cfg.setUint32(cap + PCI_MSIX_PBA, (this.msixPbaOffset | this.msixPbaBar) >>> 0, true);
    this.wmask[cap + PCI_MSIX_FLAGS + 1] = (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8;
  }

  private setupBars(spec: PciDevSpec): void {
    const bars = spec.bars ?? [];
    const root = this.bus.root;
    for (let i = 0; i < PCI_STD_NUM_BARS; i++) {
      const b = bars[i];
      const prev = bars[i - 1];
      if (prev?.type === "mem64") {
        if (b !== undefined)
          throw new KernelWarning(`${this.name}: BAR${i} is the upper half of BAR${i - 1}`);
        this.resources.push(NO_RESOURCE);
        this.p2pProviders.push(undefined);
        continue;
      }
      if (!b) {
        this.resources.push(NO_RESOURCE);
        this.p2pProviders.push(undefined);
        continue;
      }
      const off = PCI_BASE_ADDRESS_0 + 4 * i;
      if (b.type === "io") {
        if (!isPow2(BigInt(b.size)) || b.size < 4 || b.size > 256)
          throw new KernelWarning(`${this.name}: bad I/O BAR${i} size ${b.size}`);
        const port = root.allocIoPorts(b.size);
        this.resources.push({
          flags: IORESOURCE_IO,
          start: BigInt(port),
          len: BigInt(b.size),
          region: undefined,
        });
        this.p2pProviders.push(undefined);
        this.config[off] = PCI_BASE_ADDRESS_SPACE_IO;
        this.setBarMask(off, BigInt(b.size), false);
        continue;
      }
      if (!isPow2(b.size) || b.size < 16n)
        throw new KernelWarning(`${this.name}: bad BAR${i} size ${b.size}`);
      if (b.type === "mem64" && i === PCI_STD_NUM_BARS - 1)
        throw new KernelWarning(`${this.name}: 64-bit BAR5 has no upper half`);
      if (b.type === "mem32" && b.size > 1n << 31n)
        throw new KernelWarning(`${this.name}: 32-bit BAR${i} too big`);
      const region = this.kernel.mem.addMmioRegion(`${this.name} BAR${i}`, b.size);
      root.claimRegion(region, this, i);
      const is64 = b.type === "mem64";
      const flags =
        IORESOURCE_MEM |
        (b.prefetchable ? IORESOURCE_PREFETCH : 0) |
        (is64 ? IORESOURCE_MEM_64 : 0);
      this.resources.push({ flags, start: region.base, len: b.size, region });
      this.p2pProviders.push({ owner: this, busOffset: b.busOffset ?? 0n });
      this.config[off] =
        (is64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) |
        (b.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
      this.setBarMask(off, b.size, is64);
    }
    if (spec.romSize !== undefined) {
      if (!isPow2(spec.romSize) || spec.romSize < 0x800n)
        throw new KernelWarning(`${this.name}: bad ROM size`);
      const region = this.kernel.mem.addMmioRegion(`${this.name} ROM`, spec.romSize);
      root.claimRegion(region, this, PCI_ROM_RESOURCE);
      this.resources.push({ flags: IORESOURCE_MEM, start: region.base, len: spec.romSize, region });
      const mask = ~(spec.romSize - 1n) & 0xfffff800n;
      this.wmaskLe.setUint32(PCI_ROM_ADDRESS, Number(mask) | PCI_ROM_ADDRESS_ENABLE, true);
    } else {
      this.resources.push(NO_RESOURCE);
    }
  }

  /** Writable address bits of a BAR: exactly the bits above its size (sizing falls out of it). */
  private setBarMask(off: number, size: bigint, is64: boolean): void {
    const w = this.wmaskLe;
    const keep = this.config[off]! & PCI_BASE_ADDRESS_SPACE_IO ? 0xfffffffcn : 0xfffffff0n;
    w.setUint32(off, Number(~(size - 1n) & keep), true);
    if (is64) w.setUint32(off + 4, Number((~(size - 1n) >> 32n) & 0xffffffffn), true);
  }

  /** Write the firmware-assigned addresses (resource starts) into the BAR and ROM registers. */
  private programBars(): void {
    const cfg = this.configLe;
    for (let i = 0; i < PCI_STD_NUM_BARS; i++) {
      const r = this.resources[i]!;
      if (!r.flags) continue;
      const off = PCI_BASE_ADDRESS_0 + 4 * i;
      const type = this.config[off]! & (r.flags & IORESOURCE_IO ? 0x3 : 0xf);
      cfg.setUint32(off, (Number(r.start & 0xfffffff0n) | type) >>> 0, true);
      if (r.flags & IORESOURCE_MEM_64) cfg.setUint32(off + 4, Number(r.start >> 32n) >>> 0, true);
    }
    const rom = this.resources[PCI_ROM_RESOURCE]!;
    if (rom.flags) cfg.setUint32(PCI_ROM_ADDRESS, Number(rom.start & 0xfffff800n) >>> 0, true);
  }

  get cfgSize(): number {
    return this.config.length;
  }

  /** pci_find_capability */
  findCapability(id: number): number {
    if (id === PCI_CAP_ID_PM) return this.pmCap;
    if (id === PCI_CAP_ID_EXP) return this.pcieCap;
    if (id === PCI_CAP_ID_AF) return this.afCap;
    if (id === PCI_CAP_ID_MSI) return this.msiCap;
    if (id === PCI_CAP_ID_MSIX) return this.msixCap;
    return 0;
  }

  /** The registers behind I/O BAR `bar`. */
  ioSpace(bar: number): Uint8Array {
    let io = this.ioPorts.get(bar);
    if (!io) this.ioPorts.set(bar, (io = new Uint8Array(Number(this.resource(bar).len))));
    return io;
  }

  resource(i: number): PciResource {
    return this.resources[i] ?? NO_RESOURCE;
  }

  get command(): number {
    return this.readConfig(PCI_COMMAND, 2);
  }

  /** Current power state from PMCSR (D0 without a PM capability). */
  get powerState(): number {
    return this.pmCap ? this.config[this.pmCap + PCI_PM_CTRL]! & PCI_PM_CTRL_STATE_MASK : PCI_D0;
  }

  get noSoftReset(): boolean {
    return (
      this.pmCap !== 0 && (this.config[this.pmCap + PCI_PM_CTRL]! & PCI_PM_CTRL_NO_SOFT_RESET) !== 0
    );
  }

  /** Whether a memory transaction to a BAR reaches the device right now. */
  get decodesMemory(): boolean {
    return (
      (this.noCommandMemory || (this.command & PCI_COMMAND_MEMORY) !== 0) &&
      this.powerState === PCI_D0
    );
  }

  /** Whether the function may issue DMA (bus master enabled, in D0). */
  get busMaster(): boolean {
    return (this.command & PCI_COMMAND_MASTER) !== 0 && this.powerState === PCI_D0;
  }

  /** A config read of 1, 2 or 4 bytes (little endian), as the device answers it. */
  readConfig(off: number, size: 1 | 2 | 4): number {
    this.checkAccess(off, size);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + this.config[off + i]!;
    return v;
  }

  /** A config write as the device handles it: masked storage plus the side effects. */
  writeConfig(off: number, size: 1 | 2 | 4, value: number): void {
    this.checkAccess(off, size);
    const pmcsr = this.pmCap + PCI_PM_CTRL;
    const oldState = this.powerState;
    const oldCmd = this.command;
    let flr = false;
    for (let i = 0; i < size; i++) {
      const at = off + i;
      const b = Math.floor(value / 256 ** i) & 0xff;
      if (
        this.pcieCap &&
        at === this.pcieCap + PCI_EXP_DEVCTL + 1 &&
        b & (PCI_EXP_DEVCTL_BCR_FLR >> 8)
      )
        flr ||= (this.readConfig(this.pcieCap + PCI_EXP_DEVCAP, 4) & PCI_EXP_DEVCAP_FLR) !== 0;
      if (this.afCap && at === this.afCap + PCI_AF_CTRL && b & PCI_AF_CTRL_FLR)
        flr ||= (this.config[this.afCap + PCI_AF_CAP]! & PCI_AF_CAP_FLR) !== 0;
      const m = this.wmask[at]!;
      this.config[at] = (this.config[at]! & ~m) | (b & m);
    }
    if (this.pmCap && off <= pmcsr && pmcsr < off + size)
      this.powerTransition(oldState, this.powerState);
    if (flr) this.hwReset();
    // A level interrupt held back by INTX_DISABLE fires once the bit is cleared.
    if (oldCmd & PCI_COMMAND_INTX_DISABLE && !(this.command & PCI_COMMAND_INTX_DISABLE))
      intxDeliver(this);
  }

  private checkAccess(off: number, size: number): void {
    if (
      !(size === 1 || size === 2 || size === 4) ||
      off < 0 ||
      off % size !== 0 ||
      off + size > this.cfgSize
    )
      throw new KernelWarning(`${this.name}: bad config access ${size}@${off}`);
  }

  /** The device reacts to a PMCSR state change; leaving D3hot resets it unless NoSoftRst. */
  private powerTransition(from: number, to: number): void {
    if (from === to) return;
    this.kernel.trace.emit("pci:power", { dev: this.name, from, to });
    if (from === PCI_D3hot && to === PCI_D0 && !this.noSoftReset) this.hwReset();
  }

  /** A conventional / function-level reset of the hardware: config back to power-on values. */
  hwReset(): void {
    this.config.set(this.initial);
    // The reset function stops driving its interrupt.
    this.intxAsserted = false;
    if (this.msixCap) pciMsixTableReset(this);
    this.resetCount++;
  }

  /** pci_save_state */
  saveState(): PciSavedState {
    return { config: this.config.slice(0, this.wmaskEnd) };
  }

  /** pci_restore_state: writable header and capability registers back, without side effects. */
  restoreState(s: PciSavedState): void {
    for (let i = 0; i < this.wmaskEnd; i++) {
      const m = this.wmask[i]!;
      this.config[i] = (this.config[i]! & ~m) | (s.config[i]! & m);
    }
    if (this.pmCap) {
      // PMCSR is restored by the power-state code, never by the config restore.
      const at = this.pmCap + PCI_PM_CTRL;
      this.config[at] = (this.config[at]! & ~PCI_PM_CTRL_STATE_MASK) | PCI_D0;
    }
    pciRestoreMsiState(this);
  }

  /** pci_enable_device: decode of every assigned resource turned on. */
  enableDevice(): void {
    let cmd = this.command;
    for (const r of this.resources) {
      if (r.flags & IORESOURCE_IO) cmd |= PCI_COMMAND_IO;
      if (r.flags & IORESOURCE_MEM) cmd |= PCI_COMMAND_MEMORY;
    }
    this.writeConfig(PCI_COMMAND, 2, cmd);
    this.enableCount++;
  }

  /** pci_disable_device: bus mastering off. */
  disableDevice(): void {
    if (this.enableCount > 0) this.enableCount--;
    this.writeConfig(PCI_COMMAND, 2, this.command & ~PCI_COMMAND_MASTER);
  }

  /** pci_set_master / pci_clear_master */
  setMaster(on: boolean): void {
    const cmd = this.command;
    this.writeConfig(PCI_COMMAND, 2, on ? cmd | PCI_COMMAND_MASTER : cmd & ~PCI_COMMAND_MASTER);
  }

  /**
   * pci_set_power_state for D0..D3hot (the model's callers never ask for D3cold; anything else
   * is EINVAL). Without a PM capability nothing changes: every VFIO caller ignores the kernel's
   * EIO there. Going up to a shallower low-power state (D3hot -> D1, D2 -> D1) is EINVAL, and
   * D1 / D2 on a function whose PMC does not offer them is EIO, both before PMCSR is touched.
   * Returns to D0 from D3hot reset the function when NoSoftRst is clear.
   * @see pci_set_low_power_state
   */
  setPowerState(state: number): void {
    if (state < PCI_D0 || state > PCI_D3hot) fail(EINVAL, `power state ${state}`);
    if (!this.pmCap) return;
    const cur = this.powerState;
    if (cur === state) return;
    if (state !== PCI_D0) {
      if (cur > state) fail(EINVAL, `power transition D${cur} -> D${state}`);
      const pmc = this.readConfig(this.pmCap + PCI_PM_PMC, 2);
      if (
        (state === PCI_D1 && !(pmc & PCI_PM_CAP_D1)) ||
        (state === PCI_D2 && !(pmc & PCI_PM_CAP_D2))
      )
        fail(EIO, `D${state} not supported`);
    }
    const at = this.pmCap + PCI_PM_CTRL;
    this.writeConfig(at, 2, (this.readConfig(at, 2) & ~PCI_PM_CTRL_STATE_MASK) | state);
  }

  /** The reset method pci_reset_function would use, or undefined when there is none. */
  resetMethod(): "flr" | "af_flr" | "pm" | "bus" | undefined {
    if (this.pcieCap && this.readConfig(this.pcieCap + PCI_EXP_DEVCAP, 4) & PCI_EXP_DEVCAP_FLR)
      return "flr";
    if (this.afCap) {
      const cap = this.config[this.afCap + PCI_AF_CAP]!;
      if (cap & PCI_AF_CAP_FLR && cap & PCI_AF_CAP_TP) return "af_flr";
    }
    if (this.pmCap && !this.noSoftReset) return "pm";
    if (this.bus.devices.length === 1) return "bus";
    return undefined;
  }

  /**
   * pci_try_reset_function: EAGAIN when the device lock is contended, ENOTTY without a reset
   * method; otherwise save config, reset, restore. The power state ends in D0.
   */
  tryResetFunction(): void {
    if (this.deviceLock.locked) fail(EAGAIN, `${this.name} locked`);
    this.deviceLock.lock();
    try {
      if (!this.resetMethod()) fail(ENOTTY, `${this.name} has no reset method`);
      const saved = this.saveState();
      this.resetFunctionLocked();
      this.restoreState(saved);
    } finally {
      this.deviceLock.unlock();
    }
  }

  /**
   * __pci_reset_function_locked: the reset alone, config left at its power-on values (the
   * caller holds the device lock and restores what it wants). ENOTTY without a method.
   */
  resetFunctionLocked(): void {
    const method = this.resetMethod();
    if (!method) fail(ENOTTY, `${this.name} has no reset method`);
    this.hwReset();
    this.kernel.trace.emit("pci:reset", { dev: this.name, method });
  }
}
