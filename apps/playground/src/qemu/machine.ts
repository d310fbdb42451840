/**
 * QEMU's own sequence for a q35 guest with vfio-pci functions on an iommufd backend, system
 * call by system call through @x/kernel's Libc: the memory backend (backends/hostmem-memfd.c,
 * util/memfd.c), the iommufd backend (backends/iommufd.c), the cdev attach with autodomains
 * (hw/vfio/iommufd.c), the memory listener (hw/vfio/listener.c), the device realize, BAR
 * mmaps and dma-buf export (hw/vfio/pci.c, hw/vfio/region.c), resets and the teardown.
 *
 * Guest RAM, BARs and the device list are registered with the world's Vmm, so the views and
 * checks see them; the Vmm's map / unmap and guest-config paths are the listener's.
 */
import {
  EINVAL,
  EMSGSIZE,
  EPERM,
  ENOSPC,
  ENOTTY,
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  O_RDWR,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  errnoName,
} from "@x/kernel";
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_IOVA_RANGES,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_ioas_alloc,
  iommu_ioas_change_process,
  iommu_ioas_iova_ranges,
  iommu_iova_range,
} from "@x/iommufd";
import {
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_DEVID_OWNED,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_FLAG_MMAP,
  type VfioRegionInfo,
  decodeHotResetInfo,
  decodeInfoCaps,
  decodeRegionInfo,
  encodeDmaBufFeature,
  encodePciHotReset,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
  vfio_device_info,
  vfio_pci_hot_reset_info,
  vfio_region_info,
} from "@x/vfio-pci";
import { bytes, hex } from "../snapshot.js";
import type { Bar, PassthroughDevice, Vmm } from "../vmm.js";
import { VmmFatal } from "../vmm.js";
import type { HostDevice } from "../world.js";
import {
  type IrqState,
  eventNotifierTestAndClear,
  getIrqInfo,
  newIrqState,
  vfioDisableInterrupts,
  vfioIntxEnable,
  vfioIntxEoi,
  vfioMsixEarlySetup,
  vfioRegisterNotifiers,
  vfioUnregisterNotifiers,
} from "./interrupts.js";
import { type Log, QemuSys } from "./sys.js";

/** An mmap-able piece of a region, as a SPARSE_MMAP capability lists them. */
type MmapArea = NonNullable<VfioRegionInfo["sparseMmap"]>[number];

const PCI_BASE_ADDRESS_0 = 0x10;
const PCI_COMMAND_INTX_DISABLE = 0x400;
const PCI_CAP_ID_MSIX = 0x11;
const PCI_CAP_ID_EXP = 0x10;
const PCI_EXP_DEVCAP = 4;
const PCI_EXP_DEVCAP_FLR = 1 << 28;
const PCI_PM_CTRL_NO_SOFT_RESET = 0x0008;
const PCI_INTERRUPT_PIN = 0x3d;
const PCI_MSIX_FLAGS = 2;
const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
const PCI_MSIX_TABLE = 4;
const PCI_MSIX_TABLE_BIR = 0x7;
const PCI_MSIX_ENTRY_SIZE = 16;
const PCI_MSIX_FLAGS_ENABLE = 0x8000;
const PCI_MSIX_FLAGS_MASKALL = 0x4000;

export type RamKind = "memfd" | "anon";

/** A RAM block: its QEMU virtual address, and the memfd when the backend has one. */
export interface QemuRam {
  readonly name: string;
  readonly gpa: bigint;
  readonly size: bigint;
  readonly va: bigint;
  readonly fd: number;
}

export interface QemuRegion {
  readonly flags: number;
  readonly size: bigint;
  readonly offset: bigint;
  readonly caps: readonly number[];
  /** The SPARSE_MMAP capability's areas, when the region has one. */
  readonly sparse: readonly MmapArea[] | undefined;
}

/** What QEMU's VFIOPCIDevice holds for one function. */
export interface QemuVfioDevice {
  readonly name: string;
  readonly host: HostDevice;
  /** The Vmm's view (fd, BARs, emulated COMMAND) shared with the listener and the checks. */
  readonly pv: PassthroughDevice;
  readonly irq: IrqState;
  readonly regions: Map<number, QemuRegion>;
  /** BAR mmaps: where the region is mapped in QEMU and how large. */
  readonly mmaps: Map<number, { va: bigint; size: bigint }>;
  resetWorks: boolean;
  hasFlr: boolean;
  hasPmReset: boolean;
  aer: boolean;
  pin: number;
  msixCap: number;
  /** Where the MSI-X table lives: BAR, offset, and its size in bytes. */
  msixTable: { bar: number; offset: bigint; size: bigint } | undefined;
  get fd(): number;
}

/** A q35 machine's QEMU process over the world's Libc. */
export class QemuMachine {
  readonly sys: QemuSys;
  readonly ram: QemuRam[] = [];
  readonly devices: QemuVfioDevice[] = [];
  /** The container's IOVA ranges (what IOAS_IOVA_RANGES reported). */
  iovaRanges: { start: bigint; last: bigint }[] = [];
  /** An iommufd_backend user count (devices connected). */
  private users = 0;
  containerReady = false;

  constructor(
    readonly vmm: Vmm,
    log: Log,
  ) {
    this.sys = new QemuSys(vmm.libc, log);
  }

  private get libc() {
    return this.vmm.libc;
  }

  // --- memory backends -------------------------------------------------------------------

  /**
   * qemu_ram_mmap (util/mmap-alloc.c): reserve the range with a PROT_NONE mapping, then map
   * the memory over it with MAP_FIXED (a guard page stays reserved after it).
   */
  private ramMmap(size: bigint, fd: number): bigint {
    const sys = this.sys;
    let reserved = MAP_FAILED;
    sys.must(
      `mmap(NULL, ${bytes(size + BigInt(PAGE_SIZE))}, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)`,
      () => {
        reserved = this.libc.mmap(
          0n,
          size + BigInt(PAGE_SIZE),
          0,
          MAP_PRIVATE | MAP_ANONYMOUS,
          -1,
          0,
        );
        return reserved === MAP_FAILED ? -1 : 0;
      },
      "qemu_ram_mmap (util/mmap-alloc.c)",
    );
    const flags = fd >= 0 ? MAP_SHARED | MAP_FIXED : MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
    let va = MAP_FAILED;
    sys.must(
      `mmap(${hex(reserved)}, ${bytes(size)}, PROT_READ|PROT_WRITE, ${fd >= 0 ? "MAP_SHARED" : "MAP_PRIVATE|MAP_ANONYMOUS"}|MAP_FIXED, ${fd}, 0)`,
      () => {
        va = this.libc.mmap(reserved, size, PROT_READ | PROT_WRITE, flags, fd, 0);
        return va === MAP_FAILED ? -1 : 0;
      },
      "qemu_ram_mmap (util/mmap-alloc.c)",
    );
    return va;
  }

  /**
   * memory-backend-memfd with share=on, seal=on: memfd_create with MFD_ALLOW_SEALING, the
   * size, then the seals (GROW and SHRINK fix the size, SEAL freezes the set), then the shared
   * mapping. Any failure is fatal. @see memfd_backend_memory_alloc (backends/hostmem-memfd.c)
   * @see qemu_memfd_create (util/memfd.c)
   */
  memfdBackend(name: string, gpa: bigint, size: bigint): QemuRam {
    const sys = this.sys;
    const where = "qemu_memfd_create (util/memfd.c)";
    const flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    const fd = sys.must(
      `memfd_create("memory-backend-memfd", MFD_CLOEXEC|MFD_ALLOW_SEALING)`,
      () => this.libc.memfdCreate("memory-backend-memfd", flags),
      where,
    );
    sys.must(`ftruncate(${fd}, ${bytes(size)})`, () => this.libc.ftruncate(fd, size), where);
    sys.must(
      `fcntl(${fd}, F_ADD_SEALS, F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL)`,
      () => this.libc.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL),
      where,
    );
    return this.addRam({ name, gpa, size, va: this.ramMmap(size, fd), fd });
  }

  /** Anonymous guest RAM (no memory backend object). @see qemu_anon_ram_alloc (util/oslib-posix.c) */
  anonRam(name: string, gpa: bigint, size: bigint): QemuRam {
    return this.addRam({ name, gpa, size, va: this.ramMmap(size, -1), fd: -1 });
  }

  private addRam(ram: QemuRam): QemuRam {
    this.ram.push(ram);
    this.vmm.ram.push({ name: ram.name, gpa: ram.gpa, size: ram.size, memfd: ram.fd });
    this.sys.log(
      `RAM ${ram.name}: ${bytes(ram.size)} at guest ${hex(ram.gpa)}, host VA ${hex(ram.va)}`,
    );
    return ram;
  }

  // --- iommufd backend -------------------------------------------------------------------

  /**
   * iommufd_backend_connect: open /dev/iommu on the first user, then the CPR probe —
   * IOMMU_IOAS_CHANGE_PROCESS with nothing to change. Any error only blocks CPR transfer.
   * @see iommufd_backend_connect (backends/iommufd.c)
   * @see iommufd_change_process_capable (hw/vfio/cpr-iommufd.c)
   */
  iommufdBackendConnect(): void {
    if (this.users++ > 0) return;
    const sys = this.sys;
    this.vmm.iommufd = sys.must(
      'open("/dev/iommu", O_RDWR)',
      () => this.libc.open("/dev/iommu", O_RDWR),
      "iommufd_backend_connect (backends/iommufd.c)",
    );
    const buf = iommu_ioas_change_process.encode({ size: iommu_ioas_change_process.size });
    const ret = sys.call("ioctl(IOMMU_IOAS_CHANGE_PROCESS) /* CPR probe */", () =>
      this.libc.ioctl(this.vmm.iommufd, IOMMU_IOAS_CHANGE_PROCESS, buf),
    );
    if (ret < 0)
      sys.log(`CPR probe: ${errnoName(-ret)}; cpr-transfer is blocked, the VM runs`, "tolerated");
    else sys.log("CPR probe succeeded: the iommufd vmstate is registered");
  }

  private iommufdCtl(what: string, request: number, buf: Uint8Array, where: string): number {
    return this.sys.must(
      `ioctl(${what})`,
      () => this.libc.ioctl(this.vmm.iommufd, request, buf),
      where,
    );
  }

  /** iommufd_backend_alloc_ioas: the container's IOAS. */
  private allocIoas(): void {
    const buf = iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size });
    this.iommufdCtl("IOMMU_IOAS_ALLOC", IOMMU_IOAS_ALLOC, buf, "iommufd_backend_alloc_ioas");
    this.vmm.ioasId = iommu_ioas_alloc.get(buf, "out_ioas_id");
  }

  /** iommufd_backend_get_device_info: IOMMU_GET_HW_INFO, type DEFAULT; fatal on error. */
  getHwInfo(dev: QemuVfioDevice): { type: number; caps: bigint } {
    const data = this.libc.malloc(64);
    const buf = iommu_hw_info.encode({
      size: iommu_hw_info.size,
      dev_id: dev.pv.devId,
      data_len: 64,
      data_uptr: data,
    });
    this.iommufdCtl(
      `IOMMU_GET_HW_INFO, dev=${dev.pv.devId}`,
      IOMMU_GET_HW_INFO,
      buf,
      "iommufd_backend_get_device_info (backends/iommufd.c)",
    );
    this.libc.free(data);
    return {
      type: iommu_hw_info.get(buf, "data_type"),
      caps: iommu_hw_info.get(buf, "out_capabilities"),
    };
  }

  // --- device attach ---------------------------------------------------------------------

  /**
   * iommufd_cdev_attach up to the listener: the cdev, the backend, BIND_IOMMUFD, then the
   * container (a new IOAS for the first device) and autodomains. @see iommufd_cdev_attach
   * (hw/vfio/iommufd.c)
   */
  cdevOpenAndBind(host: HostDevice): QemuVfioDevice {
    const sys = this.sys;
    const name = host.spec.name;
    const path = host.vdev.cdevPath ?? "";
    const fd = sys.must(
      `open("${path}", O_RDWR)`,
      () => this.libc.open(path, O_RDWR),
      "iommufd_cdev_getfd (hw/vfio/iommufd.c)",
    );
    const pv: PassthroughDevice = {
      name,
      path,
      fd,
      devId: 0,
      hwptId: 0,
      bars: [],
      configOffset: -1n,
      command: 0,
      open: true,
    };
    const dev: QemuVfioDevice = {
      name,
      host,
      pv,
      irq: newIrqState(),
      regions: new Map(),
      mmaps: new Map(),
      resetWorks: false,
      hasFlr: false,
      hasPmReset: false,
      aer: false,
      pin: 0,
      msixCap: 0,
      msixTable: undefined,
      get fd() {
        return pv.fd;
      },
    };
    this.iommufdBackendConnect();
    const bind = vfio_device_bind_iommufd.encode({
      argsz: vfio_device_bind_iommufd.size,
      iommufd: this.vmm.iommufd,
    });
    sys.must(
      `ioctl(${name}, VFIO_DEVICE_BIND_IOMMUFD, {argsz=24, flags=0, iommufd=${this.vmm.iommufd}})`,
      () => this.libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, bind),
      "iommufd_cdev_connect_and_bind (hw/vfio/iommufd.c)",
    );
    pv.devId = vfio_device_bind_iommufd.decode(bind).out_devid;
    sys.log(`${name}: devid ${pv.devId}`);
    this.devices.push(dev);
    this.vmm.devices.push(pv);
    return dev;
  }

  /** The first device makes the container: IOMMU_IOAS_ALLOC. */
  containerGet(): boolean {
    if (this.vmm.ioasId) return false;
    this.allocIoas();
    return true;
  }

  private attachPt(dev: QemuVfioDevice, pt: number, tolerateEinval: boolean): number {
    const s = vfio_device_attach_iommufd_pt;
    const buf = s.encode({ argsz: s.size, pt_id: pt });
    const ret = this.sys.call(
      `ioctl(${dev.name}, VFIO_DEVICE_ATTACH_IOMMUFD_PT, pt_id=${pt})`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, buf),
      tolerateEinval ? { [EINVAL]: "incompatible domain: QEMU tries the next HWPT" } : {},
    );
    // The kernel writes back the HWPT the device is now attached to.
    if (ret >= 0) dev.pv.hwptId = s.decode(buf).pt_id;
    return ret;
  }

  /**
   * Autodomains: every HWPT of the container first (EINVAL means incompatible, try the next),
   * else GET_HW_INFO and a new HWPT on the IOAS — with dirty tracking when the IOMMU has it.
   * @see iommufd_cdev_autodomains_get (hw/vfio/iommufd.c)
   */
  autodomainsGet(dev: QemuVfioDevice): void {
    for (const hwpt of this.vmm.hwpts) {
      const ret = this.attachPt(dev, hwpt, true);
      if (ret >= 0) {
        this.sys.log(`${dev.name}: joined HWPT ${hwpt}`);
        return;
      }
      if (ret !== -EINVAL)
        throw new VmmFatal(`${dev.name}: attach to HWPT ${hwpt}: ${errnoName(-ret)}`, -ret);
    }
    const info = this.getHwInfo(dev);
    const dirty = (info.caps & IOMMU_HW_CAP_DIRTY_TRACKING) !== 0n;
    const flags = dirty ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0;
    const buf = iommu_hwpt_alloc.encode({
      size: iommu_hwpt_alloc.size,
      flags,
      dev_id: dev.pv.devId,
      pt_id: this.vmm.ioasId,
    });
    this.iommufdCtl(
      `IOMMU_HWPT_ALLOC, dev=${dev.pv.devId} pt=${this.vmm.ioasId} flags=${dirty ? "DIRTY_TRACKING" : "0"}`,
      IOMMU_HWPT_ALLOC,
      buf,
      "iommufd_backend_alloc_hwpt (backends/iommufd.c)",
    );
    const hwpt = iommu_hwpt_alloc.get(buf, "out_hwpt_id");
    const ret = this.attachPt(dev, hwpt, false);
    if (ret < 0) {
      this.destroy(hwpt);
      throw new VmmFatal(`${dev.name}: attach to new HWPT ${hwpt}: ${errnoName(-ret)}`, -ret);
    }
    this.vmm.hwpts.push(hwpt);
    this.sys.log(`${dev.name}: new HWPT ${hwpt}${dirty ? " (dirty tracking capable)" : ""}`);
  }

  /** iommufd_backend_free_id: IOMMU_DESTROY; a failure is only reported. */
  destroy(id: number): void {
    const buf = iommu_destroy.encode({ size: iommu_destroy.size, id });
    this.sys.warnOnError(
      `ioctl(IOMMU_DESTROY, id=${id})`,
      () => this.libc.ioctl(this.vmm.iommufd, IOMMU_DESTROY, buf),
      "iommufd_backend_free_id",
    );
  }

  /**
   * IOMMU_IOAS_IOVA_RANGES probed with num_iovas 0 (EMSGSIZE tells the count), then read in
   * full; the alignment becomes the container's page sizes. @see iommufd_cdev_get_info_iova_range
   * (hw/vfio/iommufd.c)
   */
  getIovaRanges(): void {
    const sys = this.sys;
    const ioas = this.vmm.ioasId;
    const probe = iommu_ioas_iova_ranges.encode({
      size: iommu_ioas_iova_ranges.size,
      ioas_id: ioas,
    });
    const ret = sys.call(
      `ioctl(IOMMU_IOAS_IOVA_RANGES, ioas=${ioas}, num_iovas=0)`,
      () => this.libc.ioctl(this.vmm.iommufd, IOMMU_IOAS_IOVA_RANGES, probe),
      { [EMSGSIZE]: "num_iovas now holds the count: QEMU reallocates and asks again" },
    );
    if (ret < 0 && ret !== -EMSGSIZE) {
      sys.log("Cannot get IOVA ranges: fallback to the default 64-bit range and 4K pages", "warn");
      return;
    }
    const n = iommu_ioas_iova_ranges.get(probe, "num_iovas");
    const array = this.libc.malloc(16 * n);
    const buf = iommu_ioas_iova_ranges.encode({
      size: iommu_ioas_iova_ranges.size,
      ioas_id: ioas,
      num_iovas: n,
      allowed_iovas: array,
    });
    sys.must(
      `ioctl(IOMMU_IOAS_IOVA_RANGES, ioas=${ioas}, num_iovas=${n})`,
      () => this.libc.ioctl(this.vmm.iommufd, IOMMU_IOAS_IOVA_RANGES, buf),
      "iommufd_cdev_get_info_iova_range (hw/vfio/iommufd.c)",
    );
    const raw = this.libc.peek(array, 16 * n);
    this.libc.free(array);
    this.iovaRanges = [];
    for (let i = 0; i < n; i++)
      this.iovaRanges.push(iommu_iova_range.decode(raw.subarray(iommu_iova_range.size * i)));
    this.vmm.iovaAlignment = iommu_ioas_iova_ranges.get(buf, "out_iova_alignment") || 1n;
    for (const r of this.iovaRanges) sys.log(`usable IOVA ${hex(r.start)}..${hex(r.last)}`);
    sys.log(`IOVA alignment ${bytes(this.vmm.iovaAlignment)}`);
  }

  /**
   * vfio_listener_register's replay: every RAM section is DMA-mapped at its guest-physical
   * address — by fd (MAP_FILE) for a shared RAMBlock with an fd, by VA (MAP) otherwise. A RAM
   * map failure is fatal. @see vfio_container_region_add (hw/vfio/listener.c)
   * @see iommufd_cdev_map (hw/vfio/iommufd.c)
   */
  listenerRegister(): void {
    for (const r of this.ram) {
      const ret =
        r.fd >= 0 ? this.vmm.mapFile(r.fd, 0n, r.size, r.gpa) : this.vmm.mapVa(r.va, r.size, r.gpa);
      if (ret < 0)
        throw new VmmFatal(
          `memory listener initialization failed: Region ${r.name}: vfio_container_dma_map(${hex(r.gpa)}, ${bytes(r.size)}) = ${ret} (${errnoName(-ret)})`,
          -ret,
        );
    }
    this.containerReady = true;
  }

  // --- realize ---------------------------------------------------------------------------

  /** VFIO_DEVICE_GET_INFO: a PCI device with the regions and IRQs QEMU needs, or fatal. */
  getDeviceInfo(dev: QemuVfioDevice): void {
    const buf = vfio_device_info.encode({ argsz: vfio_device_info.size });
    this.sys.must(
      `ioctl(${dev.name}, VFIO_DEVICE_GET_INFO, argsz=${vfio_device_info.size})`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_GET_INFO, buf),
      "vfio_device_get_info (hw/vfio/device.c)",
    );
    const info = vfio_device_info.decode(buf);
    if (!(info.flags & VFIO_DEVICE_FLAGS_PCI) || info.num_regions < 8 || info.num_irqs < 3)
      throw new VmmFatal(`${dev.name}: not a usable vfio-pci device`, EINVAL);
    dev.resetWorks = (info.flags & VFIO_DEVICE_FLAGS_RESET) !== 0;
    this.sys.log(
      `${dev.name}: ${info.num_regions} regions, ${info.num_irqs} IRQ indexes${dev.resetWorks ? ", reset works" : ""}`,
    );
  }

  /**
   * VFIO_DEVICE_GET_REGION_INFO with argsz 32; a larger argsz back means capabilities follow,
   * and QEMU asks again with room for them. @see vfio_device_get_region_info (hw/vfio/device.c)
   */
  regionInfo(dev: QemuVfioDevice, index: number): QemuRegion {
    let argsz = vfio_region_info.size;
    for (;;) {
      const buf = new Uint8Array(argsz);
      vfio_region_info.encode({ argsz, index }, buf);
      this.sys.must(
        `ioctl(${dev.name}, VFIO_DEVICE_GET_REGION_INFO, index=${index} argsz=${argsz})`,
        () => this.libc.ioctl(dev.fd, VFIO_DEVICE_GET_REGION_INFO, buf),
        "vfio_device_get_region_info (hw/vfio/device.c)",
      );
      const info = vfio_region_info.decode(buf);
      if (info.argsz > argsz) {
        argsz = info.argsz;
        continue;
      }
      const r = decodeRegionInfo(buf);
      const region = {
        flags: r.flags,
        size: r.size,
        offset: r.offset,
        caps: decodeInfoCaps(buf, info.cap_offset).map((c) => c.id),
        sparse: r.sparseMmap,
      };
      dev.regions.set(index, region);
      return region;
    }
  }

  /**
   * vfio_pci_populate_device: region info of BAR0..5 and config space, then GET_IRQ_INFO(ERR)
   * (an error is silent: no AER).
   */
  populateDevice(dev: QemuVfioDevice): void {
    for (let i = 0; i < 6; i++) {
      const r = this.regionInfo(dev, i);
      if (r.size)
        this.sys.log(
          `${dev.name} BAR${i}: ${bytes(r.size)}${r.flags & VFIO_REGION_INFO_FLAG_MMAP ? ", mmap" : ""}${r.caps.includes(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) ? ", MSI-X mappable" : ""}`,
        );
    }
    dev.pv.configOffset = this.regionInfo(dev, VFIO_PCI_CONFIG_REGION_INDEX).offset;
    const err = getIrqInfo(this.sys, dev, VFIO_PCI_ERR_IRQ_INDEX, {
      [ENOTTY]: "no error IRQ: QEMU leaves AER off",
      [EINVAL]: "no error IRQ: QEMU leaves AER off",
    });
    dev.aer = typeof err !== "number" && err.count === 1;
  }

  private configRead(dev: QemuVfioDevice, off: number, size: 1 | 2 | 4): number {
    return this.vmm.configRead(dev.pv, off, size);
  }

  private findCap(dev: QemuVfioDevice, id: number): number {
    let pos = this.configRead(dev, PCI_CAPABILITY_LIST, 1) & ~3;
    for (let n = 0; pos && n < 48; n++) {
      if (this.configRead(dev, pos, 1) === id) return pos;
      pos = this.configRead(dev, pos + 1, 1) & ~3;
    }
    return 0;
  }

  /**
   * vfio_pci_config_setup and vfio_pci_add_capabilities, the parts that ask the kernel: the
   * config space read through the region, the MSI-X capability (then GET_IRQ_INFO(MSIX), fatal),
   * the interrupt pin, the FLR and PM-reset abilities QEMU's reset will choose from.
   */
  configSetup(dev: QemuVfioDevice): void {
    const cfg = dev.regions.get(VFIO_PCI_CONFIG_REGION_INDEX);
    const len = Number(cfg?.size ?? 256n);
    const space = new Uint8Array(len);
    const off = dev.pv.configOffset;
    const n = this.sys.must(
      `pread(${dev.name}, config, ${len}, ${hex(off)})`,
      () => this.libc.pread(dev.fd, space, off),
      "vfio_pci_config_setup (hw/vfio/pci.c)",
    );
    if (n !== len) throw new VmmFatal(`${dev.name}: short config read`, EINVAL);
    dev.pin = space[PCI_INTERRUPT_PIN] ?? 0;
    dev.msixCap = this.findCap(dev, PCI_CAP_ID_MSIX);
    if (dev.msixCap) {
      const table = this.configRead(dev, dev.msixCap + PCI_MSIX_TABLE, 4);
      const entries =
        (this.configRead(dev, dev.msixCap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE) + 1;
      dev.msixTable = {
        bar: table & PCI_MSIX_TABLE_BIR,
        offset: BigInt(table & ~PCI_MSIX_TABLE_BIR) & 0xffff_ffffn,
        size: BigInt(entries * PCI_MSIX_ENTRY_SIZE),
      };
      vfioMsixEarlySetup(this.sys, dev);
    }
    const exp = this.findCap(dev, PCI_CAP_ID_EXP);
    dev.hasFlr =
      exp !== 0 && (this.configRead(dev, exp + PCI_EXP_DEVCAP, 4) & PCI_EXP_DEVCAP_FLR) !== 0;
    const pm = this.findCap(dev, PCI_CAP_ID_PM);
    dev.hasPmReset =
      pm !== 0 && !(this.configRead(dev, pm + PCI_PM_CTRL, 2) & PCI_PM_CTRL_NO_SOFT_RESET);
    this.sys.log(
      `${dev.name}: INTx pin ${dev.pin || "none"}, MSI-X ${dev.msixCap ? `at ${hex(BigInt(dev.msixCap))}` : "absent"}, FLR ${dev.hasFlr ? "yes" : "no"}, PM reset ${dev.hasPmReset ? "yes" : "no"}`,
    );
  }

  /**
   * The mmap areas of a BAR: the SPARSE_MMAP areas when the kernel lists them (empty ones
   * dropped), else the whole region; without MSIX_MAPPABLE on the MSI-X table's BAR, the table's
   * pages are carved out. @see vfio_region_setup (hw/vfio/region.c)
   * @see vfio_pci_fixup_msix_region (hw/vfio/pci.c)
   */
  mmapAreas(dev: QemuVfioDevice, index: number, region: QemuRegion): MmapArea[] {
    if (region.sparse)
      return region.sparse
        .filter((a) => a.size > 0n)
        .sort((a, b) => (a.offset < b.offset ? -1 : 1));
    const whole = [{ offset: 0n, size: region.size }];
    const t = dev.msixTable;
    if (!t || t.bar !== index || region.caps.includes(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE))
      return whole;
    const page = BigInt(PAGE_SIZE);
    const start = t.offset & ~(page - 1n);
    const end = (t.offset + t.size + page - 1n) & ~(page - 1n);
    if (start === 0n) return end >= region.size ? [] : [{ offset: end, size: region.size - end }];
    if (end >= region.size) return [{ offset: 0n, size: start }];
    return [
      { offset: 0n, size: start },
      { offset: end, size: region.size - end },
    ];
  }

  /**
   * vfio_region_mmap: reserve an aligned range, map each area over it MAP_SHARED|MAP_FIXED from
   * the device fd at the region offset (the gaps are unmapped), then export the areas as one
   * dma-buf with a range per area. An mmap failure warns (slow path); a dma-buf failure warns
   * (no P2P). @see vfio_region_mmap (hw/vfio/region.c)
   * @see vfio_region_create_dma_buf (hw/vfio/region.c)
   */
  barsRegister(dev: QemuVfioDevice, placements: readonly { index: number; gpa: bigint }[]): void {
    const sys = this.sys;
    for (const p of placements) {
      const region = dev.regions.get(p.index);
      if (!region?.size || !(region.flags & VFIO_REGION_INFO_FLAG_MMAP)) continue;
      const areas = this.mmapAreas(dev, p.index, region);
      if (!areas.length) continue;
      const size = region.size;
      const align = size < 1n << 30n ? size : 1n << 30n;
      let base = MAP_FAILED;
      sys.must(
        `mmap(NULL, ${bytes(size + align)}, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)`,
        () => {
          base = this.libc.mmap(0n, size + align, 0, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          return base === MAP_FAILED ? -1 : 0;
        },
        "vfio_region_mmap (hw/vfio/region.c)",
      );
      const aligned = (base + align - 1n) & ~(align - 1n);
      if (aligned > base) this.libc.munmap(base, aligned - base);
      const tail = base + size + align - (aligned + size);
      if (tail > 0n) this.libc.munmap(aligned + size, tail);
      let cursor = 0n;
      let ok = true;
      for (const a of areas) {
        if (a.offset > cursor) this.libc.munmap(aligned + cursor, a.offset - cursor);
        const at = aligned + a.offset;
        const ret = sys.call(
          `mmap(${hex(at)}, ${bytes(a.size)}, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_FIXED, ${dev.name}, ${hex(region.offset + a.offset)})`,
          () =>
            this.libc.mmap(
              at,
              a.size,
              PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_FIXED,
              dev.fd,
              region.offset + a.offset,
            ) === MAP_FAILED
              ? -1
              : 0,
        );
        if (ret < 0) ok = false;
        cursor = a.offset + a.size;
      }
      if (cursor < size) this.libc.munmap(aligned + cursor, size - cursor);
      if (!ok) {
        this.libc.munmap(aligned, size);
        sys.log(`Failed to mmap ${dev.name} BAR ${p.index}. Performance may be slow`, "warn");
        continue;
      }
      dev.mmaps.set(p.index, { va: aligned, size });
      const bar: Bar = {
        index: p.index,
        offset: region.offset,
        size,
        gpa: p.gpa,
        dmabufFd: -1,
        mapped: false,
        areas,
      };
      bar.dmabufFd = this.createDmaBuf(
        dev,
        p.index,
        areas.map((a) => ({ offset: a.offset, length: a.size })),
      );
      dev.pv.bars.push(bar);
    }
  }

  /** VFIO_DEVICE_FEATURE(GET|DMA_BUF) over the mmap areas; ENOTTY or any error warns. */
  createDmaBuf(
    dev: QemuVfioDevice,
    index: number,
    ranges: readonly { offset: bigint; length: bigint }[],
  ): number {
    const buf = encodeDmaBufFeature({ regionIndex: index, openFlags: O_RDWR, ranges });
    const fd = this.sys.call(
      `ioctl(${dev.name}, VFIO_DEVICE_FEATURE, GET|DMA_BUF region=${index} nr_ranges=${ranges.length})`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_FEATURE, buf),
    );
    if (fd === -ENOTTY)
      this.sys.log(
        "VFIO dma-buf not supported in kernel, using mmap fallback, P2P DMA will not work",
        "warn",
      );
    else if (fd < 0)
      this.sys.log(
        `${dev.name} BAR${index}: dma-buf unavailable, using mmap fallback: ${errnoName(-fd)}`,
        "warn",
      );
    return fd;
  }

  /** vfio_pci_interrupt_setup: INTx when the pin is wired (fatal on failure). */
  interruptSetup(dev: QemuVfioDevice): void {
    if (dev.pin) vfioIntxEnable(this.sys, dev);
  }

  /** vfio_pci_register_err_notifier / vfio_pci_register_req_notifier. */
  registerNotifiers(dev: QemuVfioDevice): void {
    vfioRegisterNotifiers(this.sys, dev, dev.aer);
  }

  /**
   * vfio_mmap_set_enabled: the BAR mmap subregions toggled, so the listener removes (UNMAP) or
   * adds (MAP_FILE of the dma-buf) each BAR's section while memory decode is on.
   */
  mmapSetEnabled(dev: QemuVfioDevice, enabled: boolean): void {
    if (!(dev.pv.command & PCI_COMMAND_MEMORY)) return;
    for (const bar of dev.pv.bars) enabled ? this.vmm.mapBar(dev.pv, bar) : this.vmm.unmapBar(bar);
  }

  /**
   * vfio_intx_interrupt (no KVM irqfd): drain the eventfd, assert the guest's line, and take the
   * BAR mmaps away so guest BAR accesses trap and act as EOI; returns whether one was pending.
   */
  intxInterrupt(dev: QemuVfioDevice): boolean {
    if (eventNotifierTestAndClear(this.sys, dev.irq.intxFd) === 0n) return false;
    dev.irq.intxPending = true;
    this.sys.log(`${dev.name}: INTx pending, guest INT${"ABCD"[dev.pin - 1] ?? "?"}# asserted`);
    this.mmapSetEnabled(dev, false);
    return true;
  }

  /** vfio_pci_intx_eoi then, when the mmap timeout fires with nothing pending, vfio_intx_mmap_enable. */
  intxEoiAndRemap(dev: QemuVfioDevice): void {
    vfioIntxEoi(this.sys, dev);
    if (!dev.irq.intxPending) this.mmapSetEnabled(dev, true);
  }

  // --- guest config writes ----------------------------------------------------------------

  /** vfio_pci_write_config of COMMAND: the kernel first, then the emulation and the listener. */
  guestWriteCommand(dev: QemuVfioDevice, value: number): void {
    this.vmm.guestConfigWrite(dev.pv, PCI_COMMAND, 2, value);
  }

  /** The guest writes MSI-X Message Control; the kernel sees it first (and drops it). */
  guestWriteMsixControl(dev: QemuVfioDevice, enable: boolean, maskAll: boolean): void {
    const ctl = this.configRead(dev, dev.msixCap + PCI_MSIX_FLAGS, 2);
    const value =
      (ctl & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL)) |
      (enable ? PCI_MSIX_FLAGS_ENABLE : 0) |
      (maskAll ? PCI_MSIX_FLAGS_MASKALL : 0);
    this.vmm.kernelConfigWrite(dev.pv, dev.msixCap + PCI_MSIX_FLAGS, 2, value);
  }

  // --- reset -----------------------------------------------------------------------------

  /**
   * vfio_pci_pre_reset: interrupts off; COMMAND with IO, MEMORY, MASTER and INTX_DISABLE clear
   * (the kernel revokes the dma-bufs, the listener unmaps the BARs); the function back in D0.
   */
  preReset(dev: QemuVfioDevice): void {
    vfioDisableInterrupts(this.sys, dev);
    const clear =
      PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;
    this.guestWriteCommand(dev, dev.pv.command & ~clear);
    const pm = this.findCap(dev, PCI_CAP_ID_PM);
    if (pm) {
      const pmcsr = this.configRead(dev, pm + PCI_PM_CTRL, 2);
      if ((pmcsr & PCI_PM_CTRL_STATE_MASK) !== PCI_D0)
        this.vmm.kernelConfigWrite(dev.pv, pm + PCI_PM_CTRL, 2, pmcsr & ~PCI_PM_CTRL_STATE_MASK);
    }
  }

  /** vfio_pci_post_reset: INTx back (errors warn), every BAR register written 0. */
  postReset(dev: QemuVfioDevice): void {
    if (dev.pin) vfioIntxEnable(this.sys, dev, false);
    for (let i = 0; i < 6; i++)
      this.vmm.kernelConfigWrite(dev.pv, PCI_BASE_ADDRESS_0 + 4 * i, 4, 0);
  }

  /** VFIO_DEVICE_RESET; a failure is reported, never fatal. */
  private deviceReset(dev: QemuVfioDevice): number {
    return this.sys.warnOnError(
      `ioctl(${dev.name}, VFIO_DEVICE_RESET)`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_RESET),
      `${dev.name}: reset failed`,
    );
  }

  /**
   * vfio_pci_hot_reset_one through the cdev (single mode): the info probe (ENOSPC gives the
   * count), the dependent list — all owned, none another realized device — then
   * VFIO_DEVICE_PCI_HOT_RESET with count 0. Returns 0 or -errno; QEMU goes on either way.
   * @see iommufd_cdev_pci_hot_reset (hw/vfio/iommufd.c)
   */
  hotResetOne(dev: QemuVfioDevice): number {
    const sys = this.sys;
    const hdr = vfio_pci_hot_reset_info.encode({ argsz: vfio_pci_hot_reset_info.size });
    let ret = sys.call(
      `ioctl(${dev.name}, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, argsz=12)`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hdr),
      { [ENOSPC]: "count now holds the number of affected functions: QEMU asks again" },
    );
    if (ret < 0 && ret !== -ENOSPC) return ret;
    const count = vfio_pci_hot_reset_info.get(hdr, "count");
    const argsz = vfio_pci_hot_reset_info.size + 8 * count;
    const info = new Uint8Array(argsz);
    vfio_pci_hot_reset_info.encode({ argsz }, info);
    ret = sys.call(`ioctl(${dev.name}, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, argsz=${argsz})`, () =>
      this.libc.ioctl(dev.fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, info),
    );
    if (ret < 0) {
      sys.log(`${dev.name}: hot reset info failed`, "warn");
      return ret;
    }
    const reply = decodeHotResetInfo(info);
    if (!(reply.flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED)) return -EPERM;
    for (const d of reply.devices) {
      if (d.devid === dev.pv.devId || d.devid === VFIO_PCI_DEVID_OWNED) continue;
      if (this.devices.some((o) => o.pv.devId === d.devid)) {
        sys.log(`${dev.name}: hot reset would reset another device of this VM`, "tolerated");
        return -EINVAL;
      }
    }
    const reset = encodePciHotReset({});
    return sys.call(
      `ioctl(${dev.name}, VFIO_DEVICE_PCI_HOT_RESET, {argsz=12, flags=0, count=0})`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_PCI_HOT_RESET, reset),
    );
  }

  /**
   * vfio_pci_reset: pre-reset, then VFIO_DEVICE_RESET when the function has FLR (or no PM
   * reset), else a hot reset of its slot or bus, else the PM reset through VFIO_DEVICE_RESET;
   * then post-reset. The guest's next COMMAND write maps the BARs again.
   * @see vfio_pci_reset (hw/vfio/pci.c)
   */
  reset(dev: QemuVfioDevice): "device" | "hot" | "pm" | "none" {
    this.preReset(dev);
    let how: "device" | "hot" | "pm" | "none" = "none";
    if (dev.resetWorks && (dev.hasFlr || !dev.hasPmReset)) {
      if (this.deviceReset(dev) >= 0) how = "device";
    } else {
      const hot = this.hotResetOne(dev);
      if (hot >= 0) how = "hot";
      else {
        this.sys.log(
          `${dev.name}: hot reset not done (${errnoName(-hot)}): QEMU falls back`,
          "tolerated",
        );
        if (dev.resetWorks && dev.hasPmReset && this.deviceReset(dev) >= 0) how = "pm";
      }
    }
    this.postReset(dev);
    return how;
  }

  // --- teardown --------------------------------------------------------------------------

  /**
   * vfio_exitfn, vfio_pci_finalize and iommufd_cdev_detach: notifiers and interrupts off, the
   * BARs leave the address space (UNMAP) and are munmap'd, DETACH_IOMMUFD_PT, the HWPT is
   * destroyed by its last device, the container by the last device (RAM unmapped, IOAS
   * destroyed), then the device fd closes and the backend disconnects.
   */
  detach(dev: QemuVfioDevice): void {
    const sys = this.sys;
    vfioUnregisterNotifiers(sys, dev);
    vfioDisableInterrupts(sys, dev);
    for (const bar of dev.pv.bars) this.vmm.unmapBar(bar);
    for (const [index, m] of dev.mmaps)
      sys.call(`munmap(${hex(m.va)}, ${bytes(m.size)}) /* BAR${index} */`, () =>
        this.libc.munmap(m.va, m.size),
      );
    dev.mmaps.clear();
    const det = vfio_device_detach_iommufd_pt.encode({
      argsz: vfio_device_detach_iommufd_pt.size,
    });
    sys.warnOnError(
      `ioctl(${dev.name}, VFIO_DEVICE_DETACH_IOMMUFD_PT)`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, det),
      `${dev.name}: detach failed`,
    );
    const hwpt = dev.pv.hwptId;
    dev.pv.hwptId = 0;
    const others = this.devices.filter((d) => d !== dev && d.pv.open);
    if (hwpt && !others.some((d) => d.pv.hwptId === hwpt)) {
      this.destroy(hwpt);
      this.vmm.hwpts.splice(this.vmm.hwpts.indexOf(hwpt), 1);
    }
    if (!others.length) {
      for (const r of this.ram) this.vmm.unmap(r.gpa, r.size);
      this.destroy(this.vmm.ioasId);
      this.vmm.ioasId = 0;
      this.containerReady = false;
    }
    // The BAR RAMBlocks are reclaimed with their regions, closing the dma-buf fd they hold
    // (reclaim_ramblock, system/physmem.c).
    for (const bar of dev.pv.bars)
      if (bar.dmabufFd >= 0) {
        const fd = bar.dmabufFd;
        sys.call(`close(${fd}) /* BAR${bar.index} dma-buf */`, () => this.libc.close(fd));
        bar.dmabufFd = -1;
      }
    sys.call(`close(${dev.name})`, () => this.libc.close(dev.fd));
    dev.pv.fd = -1;
    dev.pv.open = false;
    if (--this.users === 0) {
      sys.call("close(/dev/iommu)", () => this.libc.close(this.vmm.iommufd));
      this.vmm.iommufd = -1;
    }
  }

  /** The memory backends go last (host_memory_backend finalize): munmap, close the memfd. */
  freeRam(): void {
    for (const r of this.ram) {
      this.sys.call(`munmap(${hex(r.va)}, ${bytes(r.size)})`, () => this.libc.munmap(r.va, r.size));
      if (r.fd >= 0) this.sys.call(`close(${r.fd})`, () => this.libc.close(r.fd));
    }
  }
}
