import {
  EAGAIN,
  EBUSY,
  EFAULT,
  EINVAL,
  EIO,
  ENODEV,
  ENOMEM,
  ENOSPC,
  ENOTTY,
  type EventfdCtx,
  type File,
  type Kernel,
  Mutex,
  PAGE_SHIFT,
  PAGE_SIZE,
  RwSem,
  VM_DONTDUMP,
  VM_DONTEXPAND,
  VM_IO,
  VM_PFNMAP,
  VM_SHARED,
  type Vma,
  copyFromUser,
  copyToUser,
  eventfdCtxFdget,
  eventfdSignal,
  fail,
  isKernelError,
} from "@x/kernel";
import type { PciDev, PciSavedState } from "./pci.js";
import type { DmaFault } from "./pci-dma.js";
import { pciMsixTableSize } from "./pci-irq.js";
import {
  IORESOURCE_IO,
  IORESOURCE_MEM,
  PCI_D0,
  PCI_D3hot,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_ROM_RESOURCE,
  PCI_STD_NUM_BARS,
} from "./pci-regs.js";
import {
  type VfioPciIrqCtx,
  vfioPciCoreRequest,
  vfioPciIoctlGetIrqInfo,
  vfioPciIoctlSetIrqs,
  vfioPciIrqsDisable,
  vfioPciReleaseNotifiers,
} from "./vfio-pci-intrs.js";
import {
  vfioConfigInit,
  vfioConfigRead,
  vfioConfigWrite,
  vfioPciMemoryEnabled,
} from "./vfio-pci-config.js";
import {
  type VfioPciDeviceOps,
  type VfioPciDmaBuf,
  vfioPciCoreFeatureDmaBuf,
  vfioPciDmaBufCleanup,
  vfioPciDmaBufMove,
} from "./vfio-pci-dmabuf.js";
import { type VfioIommufdBinding, vfioIommufdBind } from "./vfio-iommufd.js";
import { VfioDevice, type VfioDeviceSet, vfioCheckFeature } from "./vfio-main.js";
import {
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
  VFIO_DEVICE_FEATURE_LOW_POWER_EXIT,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_LOW_POWER_ENTRY_WITH_WAKEUP_SIZE,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_DEVID_NOT_OWNED,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_MASK,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  vfio_info_cap_header,
  vfio_pci_dependent_device,
  vfio_device_info,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
  vfio_region_info,
} from "./vfio-uapi.js";

const VM_PFNMAP_FLAGS = VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP;
const PAGES_PER_REGION = 2 ** Number(VFIO_PCI_OFFSET_SHIFT - BigInt(PAGE_SHIFT));

/**
 * vfio-pci core: one PCI function driven through VFIO. Owns the virtual config space while
 * open, `memory_lock` (the rw-semaphore that orders BAR access against everything that turns
 * memory decode off), the dma-buf list, runtime power management and the reset paths.
 *
 * "Memory enabled" (`memoryEnabled`) = not in D3hot and vconfig COMMAND.MEMORY set (or a function
 * whose MEMORY bit is hard-wired). Every path that may turn it off zaps the BAR mmaps and revokes
 * the dma-bufs with `memory_lock` held for write before acting, and un-revokes afterwards when it
 * is on again. Decision: a BAR mmap in the model has no cached PTEs (every access faults, and the
 * fault checks memory enable under `memory_lock` read), so a zap is counted and traced only.
 *
 * Runtime PM: LOW_POWER_ENTRY engages it and the function is runtime-suspended (D3hot) whenever no
 * ioctl is running; each ioctl resumes it around the call like `vfio_device_pm_runtime_get/put`.
 * A resume with a wake-up fd registered signals it and leaves the engaged state, without
 * un-revoking. Decision (not checked against a running kernel): a config access while engaged
 * resumes the function too, so a COMMAND write with MEMORY set un-revokes (the memory-enable
 * predicate ignores the engaged state) and the function then sleeps again with live buffers.
 *
 * Lock order: dev_set.lock → memory_lock → pci_dev.lock and dma-buf reservation locks.
 * Decision: each device's memory_lock is its own lockdep class, because hot reset write-trylocks
 * every device of the set at once and the model's lockdep checks trylocks like locks.
 */
export class VfioPciCoreDevice extends VfioDevice {
  readonly memoryLock: RwSem;
  readonly dmabufs = new Set<VfioPciDmaBuf>();
  /** Virtual config space; exists only while open. */
  vconfig: Uint8Array | undefined;
  /** BAR registers seen at open, for restoring after a reset behind vfio's back. */
  readonly rbar: number[] = [];
  barDirty = false;
  resetWorks = false;
  needsReset = false;
  pmRuntimeEngaged = false;
  /** pm_wake_eventfd_ctx: the eventfd of LOW_POWER_ENTRY_WITH_WAKEUP, signalled at resume. */
  pmWakeEventfdCtx: EventfdCtx | undefined;
  runtimeSuspended = false;
  private pmSave: PciSavedState | undefined;
  /** Config saved at open, put back by close (vdev->pci_saved_state). */
  private pciSavedState: PciSavedState | undefined;
  private runtimeSave: PciSavedState | undefined;
  /** BAR mmaps of the device, and how often they were zapped. */
  readonly barVmas = new Set<Vma>();
  zapCount = 0;
  /** IOMMU faults and failed transactions of this function as a DMA master (pci-dma.ts). */
  readonly dmaFaults: DmaFault[] = [];

  // Interrupt state (vfio-pci-intrs.ts).
  /** Serialises SET_IRQS and INTx masking from config space. */
  readonly igate: Mutex;
  /** INTx, MSI or MSI-X index while enabled; VFIO_PCI_NUM_IRQS for none. */
  irqType = VFIO_PCI_NUM_IRQS;
  /** Per-vector contexts: INTx uses 0, MSI / MSI-X one per signalled vector. */
  readonly irqCtx = new Map<number, VfioPciIrqCtx>();
  errTrigger: EventfdCtx | undefined;
  reqTrigger: EventfdCtx | undefined;
  /** The user's COMMAND.INTX_DISABLE. */
  virqDisabled = false;
  /** INTx masked through COMMAND.INTX_DISABLE (else at the interrupt controller). */
  pci23 = false;
  /** MSI-X vectors can be added while enabled (no NORESIZE). */
  hasDynMsix = false;
  /** log2 of the MSI vectors enabled, shown in the virtual Multiple Message Capable. */
  msiQmax = 0;
  /** The BAR holding the MSI-X table (0xff: none), and the table's byte range in it. */
  msixBar = 0xff;
  msixOffset = 0;
  msixSize = 0;

  constructor(
    kernel: Kernel,
    devSet: VfioDeviceSet,
    readonly pdev: PciDev,
    /** NULL for a variant driver that did not implement dma-buf export. */
    readonly pciOps: VfioPciDeviceOps | undefined,
    /** The 2026 close order: dma-bufs become zombies before the function is disabled. */
    readonly cleanupFirst = false,
  ) {
    super(kernel, devSet, pdev.name);
    this.memoryLock = new RwSem(kernel.lockdep, `vfio_pci.memory_lock/${pdev.name}`);
    this.igate = new Mutex(kernel.lockdep, "vfio_pci.igate");
  }

  // --- memory enable, zap and power -------------------------------------------------------

  /** @see __vfio_pci_memory_enabled */
  memoryEnabled(): boolean {
    return vfioPciMemoryEnabled(this, this.vconfig);
  }

  /** @see vfio_pci_zap_bars */
  zapBars(): void {
    this.zapCount++;
    this.kernel.trace.emit("vfio-pci:zap", { dev: this.name, vmas: this.barVmas.size });
  }

  /** @see vfio_pci_zap_and_down_write_memory_lock */
  zapAndDownWriteMemoryLock(): void {
    this.memoryLock.downWrite();
    this.zapBars();
  }

  /**
   * Power transition with config save/restore around D3hot for functions that lose config
   * (NoSoftRst clear). @see vfio_pci_set_power_state
   */
  setPowerState(state: number): void {
    const p = this.pdev;
    const cur = p.powerState;
    const needsRestore = cur >= PCI_D3hot && state <= PCI_D0 && !p.noSoftReset;
    const save =
      state === PCI_D3hot && cur < PCI_D3hot && !p.noSoftReset ? p.saveState() : undefined;
    p.setPowerState(state);
    // Kept only when the function did reach D3hot (a refused transition stores nothing).
    if (save && p.powerState >= PCI_D3hot) this.pmSave = save;
    else if (needsRestore && this.pmSave) {
      p.restoreState(this.pmSave);
      this.pmSave = undefined;
    }
  }

  /** PMCSR write (triggers #3 / #4). @see vfio_lock_and_set_power_state */
  lockAndSetPowerState(state: number): void {
    if (state >= PCI_D3hot) {
      this.zapAndDownWriteMemoryLock();
      vfioPciDmaBufMove(this, true);
    } else {
      this.memoryLock.downWrite();
    }
    try {
      // The PCI core's refusal (EINVAL, EIO) leaves the function where it was; nobody is told.
      try {
        this.setPowerState(state);
      } catch (e) {
        if (!isKernelError(e)) throw e;
      }
      if (this.memoryEnabled()) vfioPciDmaBufMove(this, false);
    } finally {
      this.memoryLock.upWrite();
    }
  }

  /**
   * Revoke, try a function reset, un-revoke if memory is still enabled; the reset's own error
   * is returned (config FLR ignores it). Used by VFIO_DEVICE_RESET (#8) and config FLR (#9, #10).
   */
  private resetRevoking(forceD0: boolean): number {
    this.zapAndDownWriteMemoryLock();
    try {
      if (forceD0) this.setPowerState(PCI_D0);
      vfioPciDmaBufMove(this, true);
      let ret = 0;
      try {
        this.pdev.tryResetFunction();
      } catch (e) {
        if (!isKernelError(e)) throw e;
        ret = -e.errno;
      }
      if (this.memoryEnabled()) vfioPciDmaBufMove(this, false);
      return ret;
    } finally {
      this.memoryLock.upWrite();
    }
  }

  /** A config-space FLR request (PCIe DEVCTL or AF CTRL). */
  resetFunctionLocked(): void {
    this.resetRevoking(false);
  }

  // --- runtime PM ---------------------------------------------------------------------------

  /** The PCI core suspends the idle, engaged function: config saved, D3hot. */
  private runtimeSuspend(): void {
    this.memoryLock.withWrite(() => {
      this.runtimeSave = this.pdev.saveState();
      this.pdev.setPowerState(PCI_D3hot);
      this.runtimeSuspended = true;
    });
  }

  /** Back to D0 with config restored; a registered wake-up fd is signalled. @see vfio_pci_core_runtime_resume */
  private runtimeResume(): void {
    this.pdev.setPowerState(PCI_D0);
    if (this.runtimeSave) this.pdev.restoreState(this.runtimeSave);
    this.runtimeSave = undefined;
    this.runtimeSuspended = false;
    this.memoryLock.withWrite(() => {
      if (this.pmWakeEventfdCtx) {
        eventfdSignal(this.pmWakeEventfdCtx);
        this.kernel.trace.emit("vfio-pci:wake", { dev: this.name });
        this.runtimePmExitLocked();
      }
    });
  }

  /** A wake-up from the device side (PME) or any access while suspended (trigger #7). */
  pmWake(): void {
    if (this.runtimeSuspended) this.runtimeResume();
    this.pmRuntimePut();
  }

  /** @internal vfio_device_pm_runtime_get */
  override pmRuntimeGet(): void {
    if (this.runtimeSuspended) this.runtimeResume();
  }

  /** @internal vfio_device_pm_runtime_put: an engaged function goes back to sleep. */
  override pmRuntimePut(): void {
    if (this.pmRuntimeEngaged && !this.runtimeSuspended && this.openCount > 0)
      this.runtimeSuspend();
  }

  /** @see __vfio_pci_runtime_pm_exit */
  private runtimePmExitLocked(): void {
    if (!this.pmRuntimeEngaged) return;
    this.pmRuntimeEngaged = false;
    this.pmWakeEventfdCtx?.put();
    this.pmWakeEventfdCtx = undefined;
  }

  /** Trigger #5: revoke first, even when already engaged (then EINVAL). @see vfio_pci_runtime_pm_entry */
  private runtimePmEntry(wake: EventfdCtx | undefined): void {
    this.zapAndDownWriteMemoryLock();
    try {
      vfioPciDmaBufMove(this, true);
      if (this.pmRuntimeEngaged) fail(EINVAL, "low power already engaged");
      this.pmRuntimeEngaged = true;
      this.pmWakeEventfdCtx = wake;
    } finally {
      this.memoryLock.upWrite();
    }
  }

  /** Trigger #6. @see vfio_pci_runtime_pm_exit */
  runtimePmExit(): void {
    this.memoryLock.withWrite(() => {
      this.runtimePmExitLocked();
      if (this.memoryEnabled()) vfioPciDmaBufMove(this, false);
    });
  }

  // --- open / close -------------------------------------------------------------------------

  /** @see vfio_pci_core_enable */
  override openDevice(): void {
    const p = this.pdev;
    this.setPowerState(PCI_D0);
    p.enableDevice();
    try {
      p.tryResetFunction();
      this.resetWorks = true;
    } catch (e) {
      if (!isKernelError(e)) throw e;
      if (e.errno === EAGAIN) {
        p.disableDevice();
        throw e;
      }
      this.resetWorks = false;
    }
    this.pciSavedState = p.saveState();
    this.pci23 = p.intxMaskSupported;
    // With INTx masking available, DisINTx starts clear.
    if (this.pci23 && p.command & PCI_COMMAND_INTX_DISABLE)
      p.writeConfig(PCI_COMMAND, 2, p.command & ~PCI_COMMAND_INTX_DISABLE);
    if (this.kernel.shouldFail("vfio_config_init")) {
      p.disableDevice();
      fail(ENOMEM, "vconfig");
    }
    this.vconfig = vfioConfigInit(this);
    if (p.msixCap) {
      this.msixBar = p.msixTableBar;
      this.msixOffset = p.msixTableOffset;
      this.msixSize = pciMsixTableSize(p);
      this.hasDynMsix = p.bus.root.msixCanAllocDyn;
    } else {
      this.msixBar = 0xff;
    }
  }

  /**
   * Baseline order: disable first — leave runtime PM (which un-revokes when
   * memory is enabled), back to D0, stop bus mastering, drop vconfig, reset — then turn every
   * dma-buf into a zombie, so importers are still live across the reset. With
   * `cleanupFirst` (the 2026 fix) the zombies come first, so no importer is live across the
   * disable and reset.
   * @see vfio_pci_core_close_device
   */
  override closeDevice(): void {
    if (this.cleanupFirst) vfioPciDmaBufCleanup(this);
    // Leave low power while still suspended (memory disabled: no un-revoke), then wake to D0.
    this.runtimePmExit();
    this.pmRuntimeGet();
    this.setPowerState(PCI_D0);
    const p = this.pdev;
    p.setMaster(false);
    vfioPciIrqsDisable(this);
    this.needsReset = true;
    this.vconfig = undefined;
    // COMMAND is written whole: decode and bus mastering off, DisINTx on, so the function
    // raises nothing while it resets; the reset is the locked one (no save / restore of its
    // own), then the config saved at open comes back.
    p.writeConfig(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    if (this.resetWorks && !p.deviceLock.locked) {
      p.deviceLock.lock();
      try {
        p.resetFunctionLocked();
        this.needsReset = false;
      } catch (e) {
        if (!isKernelError(e)) throw e;
      } finally {
        p.deviceLock.unlock();
      }
    }
    if (this.pciSavedState) p.restoreState(this.pciSavedState);
    this.pciSavedState = undefined;
    p.disableDevice();
    if (!this.cleanupFirst) vfioPciDmaBufCleanup(this);
    vfioPciDevSetTryReset(this.devSet.devices as VfioPciCoreDevice[]);
    vfioPciReleaseNotifiers(this);
  }

  /** @see vfio_pci_core_request */
  override request(count: number): void {
    vfioPciCoreRequest(this, count);
  }

  // --- ioctls -------------------------------------------------------------------------------

  override ioctl(cmd: number, arg: bigint): number {
    switch (cmd) {
      case VFIO_DEVICE_GET_INFO:
        return this.ioctlGetInfo(arg);
      case VFIO_DEVICE_GET_REGION_INFO:
        return this.ioctlGetRegionInfo(arg);
      case VFIO_DEVICE_GET_IRQ_INFO:
        return vfioPciIoctlGetIrqInfo(this, arg);
      case VFIO_DEVICE_SET_IRQS:
        return vfioPciIoctlSetIrqs(this, arg);
      case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO:
        return this.ioctlGetPciHotResetInfo(arg);
      case VFIO_DEVICE_RESET:
        if (!this.resetWorks) fail(EINVAL, "device cannot be reset");
        return this.resetRevoking(true);
      case VFIO_DEVICE_PCI_HOT_RESET:
        return this.ioctlPciHotReset(arg);
      default:
        // Decision: VFIO_DEVICE_IOEVENTFD is not modelled.
        return fail(ENOTTY, `ioctl ${cmd.toString(16)}`);
    }
  }

  /** @see vfio_pci_ioctl_get_info */
  private ioctlGetInfo(arg: bigint): number {
    const s = vfio_device_info;
    const { argsz } = s.decode(copyFromUser(this.kernel, arg, s.minSize));
    if (argsz < s.minSize) fail(EINVAL, "argsz");
    const out = s.encode({
      argsz,
      flags: VFIO_DEVICE_FLAGS_PCI | (this.resetWorks ? VFIO_DEVICE_FLAGS_RESET : 0),
      num_regions: VFIO_PCI_NUM_REGIONS,
      num_irqs: VFIO_PCI_NUM_IRQS,
    });
    copyToUser(this.kernel, arg, out.subarray(0, Math.min(argsz, s.size)));
    return 0;
  }

  /**
   * BAR mmap support: a memory BAR of at least a page, or a smaller one that starts a page.
   * The kernel reserves the rest of that page ("vfio sub-page reserved") so no other resource
   * lands in what the mapping exposes; the model gives every BAR pages of its own, so that
   * reservation cannot fail here.
   * @see vfio_pci_probe_mmaps
   */
  barMmapSupported(bar: number): boolean {
    const r = this.pdev.resource(bar);
    if (!(r.flags & IORESOURCE_MEM) || r.len === 0n) return false;
    return r.len >= BigInt(PAGE_SIZE) || (r.start & BigInt(PAGE_SIZE - 1)) === 0n;
  }

  /**
   * The region's info and its capabilities (a BAR holding the MSI-X table reports it as
   * mappable). @see vfio_pci_ioctl_get_region_info
   */
  private regionInfoCaps(index: number): {
    flags: number;
    size: bigint;
    caps: Array<{ id: number; version: number }>;
  } {
    const caps: Array<{ id: number; version: number }> = [];
    if (index < PCI_STD_NUM_BARS) {
      const size = this.pdev.resource(index).len;
      if (!size) return { flags: 0, size, caps };
      let flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
      if (this.barMmapSupported(index)) {
        flags |= VFIO_REGION_INFO_FLAG_MMAP;
        if (index === this.msixBar) {
          if (this.kernel.shouldFail("vfio_info_cap_add")) fail(ENOMEM, "region info caps");
          caps.push({ id: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, version: 1 });
        }
      }
      return { flags, size, caps };
    }
    if (index === VFIO_PCI_ROM_REGION_INDEX) {
      const size = this.pdev.resource(PCI_ROM_RESOURCE).len;
      return { flags: size ? VFIO_REGION_INFO_FLAG_READ : 0, size, caps };
    }
    if (index === VFIO_PCI_CONFIG_REGION_INDEX)
      return {
        flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE,
        size: BigInt(this.pdev.cfgSize),
        caps,
      };
    // No VGA and no device-specific regions in the model.
    return fail(EINVAL, `region ${index}`);
  }

  /**
   * The core's half: argsz checked, capabilities chained after the 32-byte struct, or, when
   * argsz has no room for them, argsz raised to what is needed with cap_offset 0 (success).
   * @see vfio_get_region_info
   */
  private ioctlGetRegionInfo(arg: bigint): number {
    const minsz = vfio_region_info.size;
    const info = vfio_region_info.decode(copyFromUser(this.kernel, arg, minsz));
    if (info.argsz < minsz) fail(EINVAL, "argsz");
    const { flags, size, caps } = this.regionInfoCaps(info.index);
    info.flags = flags;
    info.size = size;
    info.offset = BigInt(info.index) << VFIO_PCI_OFFSET_SHIFT;
    info.cap_offset = 0;
    if (caps.length) {
      const capsSize = caps.length * vfio_info_cap_header.size;
      info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
      if (info.argsz < minsz + capsSize) {
        info.argsz = minsz + capsSize;
      } else {
        const buf = new Uint8Array(capsSize);
        caps.forEach((c, i) => {
          const at = i * vfio_info_cap_header.size;
          const next = i + 1 < caps.length ? minsz + at + vfio_info_cap_header.size : 0;
          vfio_info_cap_header.encode({ ...c, next }, buf.subarray(at));
        });
        copyToUser(this.kernel, arg + BigInt(minsz), buf);
        info.cap_offset = minsz;
      }
    }
    copyToUser(this.kernel, arg, vfio_region_info.encode(info));
    return 0;
  }

  /**
   * The functions a hot reset of this device's bus affects, by iommufd device id as the cdev
   * form reports them: the devid of each function bound to the caller's iommufd, NOT_OWNED (-1)
   * for any other (unopened, unbound or bound elsewhere), which also clears DEV_ID_OWNED. Too
   * small a buffer is ENOSPC with `count` filled in the header.
   * @see vfio_pci_ioctl_get_pci_hot_reset_info
   */
  private ioctlGetPciHotResetInfo(arg: bigint): number {
    const minsz = vfio_pci_hot_reset_info.size;
    const hdr = vfio_pci_hot_reset_info.decode(copyFromUser(this.kernel, arg, minsz));
    if (hdr.argsz < minsz) fail(EINVAL, "argsz");
    hdr.flags = 0;
    if (!this.pdev.bus.busResetPossible) fail(ENODEV, "no slot or bus reset");
    const pdevs = this.pdev.bus.devices;
    if (hdr.argsz < minsz + pdevs.length * vfio_pci_dependent_device.size) {
      hdr.count = pdevs.length;
      copyToUser(this.kernel, arg, vfio_pci_hot_reset_info.encode(hdr));
      return fail(ENOSPC, `${pdevs.length} devices affected`);
    }
    if (this.kernel.shouldFail("hot_reset_info devices")) fail(ENOMEM, "devices");
    const ctx = this.binding?.ctx;
    hdr.flags = VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
    const out = new Uint8Array(pdevs.length * vfio_pci_dependent_device.size);
    this.devSet.lock.with(() => {
      pdevs.forEach((p, i) => {
        const vdev = (this.devSet.devices as VfioPciCoreDevice[]).find((d) => d.pdev === p);
        // OWNED (group held, no devid) cannot arise with one function per group: see owned().
        const devid =
          vdev?.binding && owned(vdev, ctx) ? vdev.binding.devid : VFIO_PCI_DEVID_NOT_OWNED;
        if (devid === VFIO_PCI_DEVID_NOT_OWNED) hdr.flags &= ~VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
        const [, bus, dev, fn] = /^[0-9a-f]+:([0-9a-f]+):([0-9a-f]+)\.([0-7])$/.exec(p.name) ?? [];
        vfio_pci_dependent_device.encode(
          {
            devid,
            segment: 0,
            bus: Number.parseInt(bus ?? "0", 16),
            devfn: (Number.parseInt(dev ?? "0", 16) << 3) | Number(fn ?? 0),
          },
          out.subarray(i * 8),
        );
      });
    });
    copyToUser(this.kernel, arg + BigInt(minsz), out);
    hdr.count = pdevs.length;
    copyToUser(this.kernel, arg, vfio_pci_hot_reset_info.encode(hdr));
    return 0;
  }

  /**
   * VFIO_DEVICE_PCI_HOT_RESET through the cdev: an empty group list, the caller's iommufd
   * proving ownership. @see vfio_pci_ioctl_pci_hot_reset
   */
  private ioctlPciHotReset(arg: bigint): number {
    const s = vfio_pci_hot_reset;
    const { argsz, flags, count } = s.decode(copyFromUser(this.kernel, arg, s.size));
    if (argsz < s.size || flags) fail(EINVAL, "argsz or flags");
    // Only cdev opens exist here: a group-fd list is the group path's, refused on a cdev.
    if (count !== 0) fail(EINVAL, "group fds given to a cdev-opened device");
    if (!this.pdev.bus.busResetPossible) fail(ENODEV, "no slot or bus reset");
    vfioPciDevSetHotReset(this.devSet.devices as VfioPciCoreDevice[], this.binding?.ctx);
    return 0;
  }

  override deviceFeature(flags: number, arg: bigint, argsz: number): number {
    switch (flags & VFIO_DEVICE_FEATURE_MASK) {
      case VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY:
        if (vfioCheckFeature(flags, argsz, VFIO_DEVICE_FEATURE_SET, 0) === 0) return 0;
        this.runtimePmEntry(undefined);
        return 0;
      case VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP:
        return this.featurePmEntryWithWakeup(flags, arg, argsz);
      case VFIO_DEVICE_FEATURE_LOW_POWER_EXIT:
        if (vfioCheckFeature(flags, argsz, VFIO_DEVICE_FEATURE_SET, 0) === 0) return 0;
        this.runtimePmExit();
        return 0;
      case VFIO_DEVICE_FEATURE_DMA_BUF:
        return vfioPciCoreFeatureDmaBuf(this, flags, arg, argsz);
      default:
        // Decision: BUS_MASTER (10) and the VF token (0) are not modelled.
        return fail(ENOTTY, `feature ${flags & VFIO_DEVICE_FEATURE_MASK}`);
    }
  }

  /**
   * The eventfd's context reference is the device's until the engaged state ends; a refused
   * entry gives it back. @see vfio_pci_core_pm_entry_with_wakeup
   */
  private featurePmEntryWithWakeup(flags: number, arg: bigint, argsz: number): number {
    if (
      vfioCheckFeature(
        flags,
        argsz,
        VFIO_DEVICE_FEATURE_SET,
        VFIO_LOW_POWER_ENTRY_WITH_WAKEUP_SIZE,
      ) === 0
    )
      return 0;
    const entry = new DataView(
      copyFromUser(this.kernel, arg, VFIO_LOW_POWER_ENTRY_WITH_WAKEUP_SIZE).buffer,
    );
    const fd = entry.getInt32(0, true);
    if (fd < 0) fail(EINVAL, "wakeup_eventfd");
    const ctx = eventfdCtxFdget(this.kernel.current.process.files, fd);
    try {
      this.runtimePmEntry(ctx);
    } catch (e) {
      ctx.put();
      throw e;
    }
    return 0;
  }

  override bindIommufd(file: File): VfioIommufdBinding {
    return vfioIommufdBind(this.pdev, file);
  }

  // --- regions ------------------------------------------------------------------------------

  private regionAccess(pos: bigint, count: number, write: boolean, data?: Uint8Array): Uint8Array {
    const index = Number(pos >> VFIO_PCI_OFFSET_SHIFT);
    const off = pos & VFIO_PCI_OFFSET_MASK;
    if (index >= VFIO_PCI_NUM_REGIONS) fail(EINVAL, `region ${index}`);
    this.pmRuntimeGet();
    try {
      if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
        const vconfig = this.vconfig!;
        if (off >= BigInt(this.pdev.cfgSize) || off + BigInt(count) > BigInt(this.pdev.cfgSize))
          fail(EFAULT, "past config space");
        if (write) {
          vfioConfigWrite(this, vconfig, Number(off), data!);
          return data!;
        }
        return vfioConfigRead(this, vconfig, Number(off), count);
      }
      if (index === VFIO_PCI_VGA_REGION_INDEX) fail(EINVAL, "no VGA");
      return this.barAccess(
        index === VFIO_PCI_ROM_REGION_INDEX ? PCI_ROM_RESOURCE : index,
        off,
        count,
        write,
        data,
      );
    } finally {
      this.pmRuntimePut();
    }
  }

  /** BAR / ROM access through the device fd: EIO while memory is disabled. @see vfio_pci_bar_rw */
  private barAccess(
    bar: number,
    off: bigint,
    count: number,
    write: boolean,
    data?: Uint8Array,
  ): Uint8Array {
    const r = this.pdev.resource(bar);
    if (!r.len || off >= r.len) fail(EINVAL, `offset ${off} outside BAR${bar}`);
    if (bar === PCI_ROM_RESOURCE && write) fail(EINVAL, "ROM is read-only");
    const n = Number(BigInt(count) < r.len - off ? BigInt(count) : r.len - off);
    if (r.flags & IORESOURCE_IO) {
      const io = this.pdev.ioSpace(bar);
      if (write) io.set(data!.subarray(0, n), Number(off));
      return write ? data!.subarray(0, n) : io.slice(Number(off), Number(off) + n);
    }
    // The MSI-X table is not reachable this way: reads see all-ones, writes are dropped.
    const xStart = bar === this.msixBar ? BigInt(this.msixOffset) : 0n;
    const xEnd = bar === this.msixBar ? xStart + BigInt(this.msixSize) : 0n;
    const end = off + BigInt(n);
    const lo = off > xStart ? off : xStart;
    const hi = end < xEnd ? end : xEnd;
    return this.memoryLock.withRead(() => {
      if (!this.memoryEnabled()) fail(EIO, "memory decode disabled");
      if (write) {
        const d = data!.subarray(0, n);
        if (lo >= hi) this.kernel.mem.writePhys(r.start + off, d);
        else {
          if (lo > off) this.kernel.mem.writePhys(r.start + off, d.subarray(0, Number(lo - off)));
          if (end > hi) this.kernel.mem.writePhys(r.start + hi, d.subarray(Number(hi - off)));
        }
        return d;
      }
      const out = new Uint8Array(n);
      this.kernel.mem.readPhys(r.start + off, out);
      if (lo < hi) out.fill(0xff, Number(lo - off), Number(hi - off));
      return out;
    });
  }

  /**
   * pread on the device fd: bytes read (possibly short at the end of a BAR). Nothing is checked
   * for a zero count, which reads 0 bytes wherever it points. @see vfio_pci_core_read
   */
  override read(pos: bigint, count: number): Uint8Array {
    if (!count) return new Uint8Array(0);
    return this.regionAccess(pos, count, false);
  }

  /** pwrite on the device fd: bytes written (0 for an empty write). @see vfio_pci_core_write */
  override write(pos: bigint, data: Uint8Array): number {
    if (!data.length) return 0;
    return this.regionAccess(pos, data.length, true, data).length;
  }

  /**
   * BAR mmap: shared only, page-aligned, inside a mmap-capable BAR; a VM_PFNMAP mapping whose
   * faults check memory enable under memory_lock (SIGBUS, here EFAULT, when off).
   * @see vfio_pci_core_mmap
   */
  override mmap(vma: Vma): void {
    const index = Math.floor(vma.pgoff / PAGES_PER_REGION);
    if (index >= VFIO_PCI_ROM_REGION_INDEX) fail(EINVAL, `region ${index} cannot be mapped`);
    if (!(vma.flags & VM_SHARED)) fail(EINVAL, "private BAR mapping");
    if (!this.barMmapSupported(index)) fail(EINVAL, `BAR${index} cannot be mapped`);
    const r = this.pdev.resource(index);
    const pgoffInBar = vma.pgoff % PAGES_PER_REGION;
    // phys_len: the BAR's length rounded up to pages (a sub-page BAR maps its whole page).
    const barPages = Number((r.len + BigInt(PAGE_SIZE - 1)) >> BigInt(PAGE_SHIFT));
    if (pgoffInBar + vma.npages > barPages) fail(EINVAL, "mapping past the BAR");
    const barPfn = Number(r.start >> BigInt(PAGE_SHIFT));
    vma.flags |= VM_PFNMAP_FLAGS;
    vma.priv = this;
    vma.ops = {
      fault: (_v, pgoff) =>
        this.memoryLock.withRead(() => {
          if (!this.memoryEnabled()) fail(EFAULT, "SIGBUS: BAR access with memory disabled");
          return barPfn + (pgoff % PAGES_PER_REGION);
        }),
      open: (v) => this.barVmas.add(v),
      close: (v) => this.barVmas.delete(v),
    };
    this.barVmas.add(vma);
  }
}

/**
 * Whether the caller's iommufd owns `vdev`: bound to that context. The kernel also counts a
 * device whose iommu group the context holds through another device (-ENOENT from
 * vfio_iommufd_get_dev_id); every function here is alone in its group, so an unbound device,
 * opened or not, is never owned.
 * @see vfio_iommufd_get_dev_id
 */
function owned(vdev: VfioPciCoreDevice, ctx: unknown): boolean {
  return vdev.binding?.ctx === ctx;
}

/**
 * Hot reset of a dev_set (trigger #11): under the set lock, per device check ownership
 * (EINVAL) and write-trylock memory_lock (EBUSY), revoke and zap; all to D0; bus reset; then,
 * walking back over every device locked so far (also when the loop stopped early), un-revoke
 * open devices whose memory is enabled and unlock.
 * @see vfio_pci_dev_set_hot_reset
 */
function vfioPciDevSetHotReset(devices: VfioPciCoreDevice[], ctx: unknown): void {
  const first = devices[0];
  if (!first) fail(EINVAL, "empty dev_set");
  first.devSet.lock.with(() => {
    const locked: VfioPciCoreDevice[] = [];
    let err: unknown;
    try {
      for (const vdev of devices) {
        if (!owned(vdev, ctx)) fail(EINVAL, `${vdev.name} is not owned by the caller`);
        if (!vdev.memoryLock.tryDownWrite()) fail(EBUSY, `${vdev.name} memory_lock contended`);
        locked.push(vdev);
        vfioPciDmaBufMove(vdev, true);
        vdev.zapBars();
      }
      for (const vdev of devices) vdev.setPowerState(PCI_D0);
      first.pdev.bus.resetBus();
    } catch (e) {
      err = e;
    }
    for (const vdev of locked.reverse()) {
      if (vdev.openCount && vdev.memoryEnabled()) vfioPciDmaBufMove(vdev, false);
      vdev.memoryLock.upWrite();
    }
    if (err !== undefined) throw err;
  });
}

/**
 * After a close: if no device of the set is open and one needs a reset, reset the bus.
 * @see vfio_pci_dev_set_try_reset
 */
function vfioPciDevSetTryReset(devices: VfioPciCoreDevice[]): void {
  if (devices.some((d) => d.openCount > 0) || !devices.some((d) => d.needsReset)) return;
  const bus = devices[0]!.pdev.bus;
  if (!bus.busResetPossible) return;
  try {
    bus.resetBus();
  } catch (e) {
    if (!isKernelError(e)) throw e;
    return;
  }
  for (const d of devices) d.needsReset = false;
}

declare module "@x/kernel" {
  interface TraceEvents {
    "vfio-pci:zap": { dev: string; vmas: number };
    "vfio-pci:wake": { dev: string };
  }
}
