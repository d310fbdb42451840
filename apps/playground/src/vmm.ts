/**
 * A QEMU-like VMM client: it drives the model only through system calls of one user process,
 * with the kernel's byte layouts, the way QEMU's iommufd backend and vfio-pci do.
 *
 * - Guest RAM is memfd-backed and mapped with IOMMU_IOAS_MAP_FILE at its guest-physical address
 *   (QEMU's `dma_map_file` path).
 * - Each passthrough device is opened through its VFIO cdev, bound to the iommufd
 *   (VFIO_DEVICE_BIND_IOMMUFD) and attached with QEMU's "autodomains" rule: try every HWPT the
 *   VMM already has, EINVAL means "incompatible, try the next", else allocate a new HWPT on the
 *   IOAS. So one IOAS routinely has several domains.
 * - Each memory BAR is exported once as a single-range dma-buf (VFIO_DEVICE_FEATURE DMA_BUF) and
 *   mapped with MAP_FILE at its guest-physical address while the guest has memory decode on —
 *   the memory listener's region_add / region_del.
 * - Guest config writes go to the kernel first (pwrite on the config region), then the emulated
 *   view is updated; a MEM 1→0 write unmaps the BARs, 0→1 maps them again. Reset, FLR and power
 *   changes run the unmap → operation → map protocol (drivers/vfio/pci/vfio_pci_core.c, vfio_pci_dmabuf.c) — unless the VMM
 *   was built with `forgetsRemap`, the buggy VMM of scenario 4.
 * - RAM map failures are fatal (VmmFatal, QEMU's hw_error); BAR map failures warn once per
 *   process with QEMU's hint and the VM goes on without P2P to that BAR (`barMapFatal` gives
 *   cloud-hypervisor's policy instead: the boot aborts).
 */
import {
  EINVAL,
  ENOENT,
  ENOTTY,
  KernelError,
  type Libc,
  MAP_FAILED,
  MAP_SHARED,
  MFD_CLOEXEC,
  O_CLOEXEC,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  errnoName,
} from "@x/kernel";
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  iommu_hwpt_alloc,
  iommu_ioas_alloc,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  U64_MAX,
} from "@x/iommufd";
import {
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_PCI_CONFIG_REGION_INDEX,
  decodeRegionInfo,
  encodeDmaBufFeature,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_region_info,
} from "@x/vfio-pci";
import type { LogKind } from "./scenario.js";
import { bytes, hex } from "./snapshot.js";

const MAP_RW = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/** QEMU's hw_error / realize failure: the VM cannot go on. */
export class VmmFatal extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
    this.name = "VmmFatal";
  }
}

export interface RamBlock {
  readonly name: string;
  readonly gpa: bigint;
  readonly size: bigint;
  readonly memfd: number;
}

export interface Bar {
  readonly index: number;
  /** Offset of the BAR's region in the device fd (GET_REGION_INFO). */
  readonly offset: bigint;
  readonly size: bigint;
  /** Guest-physical address the guest's firmware gave the BAR. */
  readonly gpa: bigint;
  /** The dma-buf exported for it, or -1 when export failed. */
  dmabufFd: number;
  /** Whether the IOAS currently has an area for it (that the VMM knows of). */
  mapped: boolean;
  /**
   * The mmap'd pieces of the BAR when it is not mapped whole (a sparse BAR): the listener maps
   * each as its own section, at its BAR offset in the dma-buf.
   */
  readonly areas?: readonly { readonly offset: bigint; readonly size: bigint }[];
}

export interface PassthroughDevice {
  readonly name: string;
  readonly path: string;
  fd: number;
  devId: number;
  hwptId: number;
  readonly bars: Bar[];
  /** Offset of the config region in the device fd (GET_REGION_INFO); -1 before it is asked. */
  configOffset: bigint;
  /** QEMU's emulated COMMAND register (what the guest believes). */
  command: number;
  open: boolean;
}

export interface BarPlacement {
  readonly index: number;
  readonly gpa: bigint;
}

export interface VmmOptions {
  readonly name?: string;
  /** The buggy VMM of scenario 4: does not unmap before, nor map after, reset and power changes. */
  readonly forgetsRemap?: boolean;
  /** cloud-hypervisor's policy (vfio_p2p_dma=on): a BAR that cannot be DMA-mapped aborts the boot. */
  readonly barMapFatal?: boolean;
  /** Where the VMM's console output goes (the scenario's step log). */
  log(text: string, kind: LogKind): void;
}

const errText = errnoName;

export class Vmm {
  readonly name: string;
  iommufd = -1;
  ioasId = 0;
  readonly hwpts: number[] = [];
  readonly ram: RamBlock[] = [];
  readonly devices: PassthroughDevice[] = [];
  /** The once-per-process P2P warning was printed. */
  p2pWarned = false;
  /** Minimum IOVA alignment reported by IOAS_IOVA_RANGES (QEMU's container pgsizes). */
  iovaAlignment = 1n;
  /** The bug of scenario 4, switchable: no unmap before, no map after reset and power changes. */
  forgetsRemap: boolean;

  constructor(
    readonly libc: Libc,
    readonly options: VmmOptions,
  ) {
    this.name = options.name ?? "qemu";
    this.forgetsRemap = options.forgetsRemap ?? false;
  }

  private log(text: string, kind: LogKind = "info"): void {
    this.options.log(`${this.name}: ${text}`, kind);
  }

  /** One system call, logged like strace unless `quiet`; returns its result (≥ 0) or -errno. */
  sys(what: string, call: () => number, quiet = false): number {
    const ret = call();
    if (ret < 0) {
      const e = this.libc.errno;
      this.log(`${what} = -1 ${errText(e)}`, "ioctl");
      return -e;
    }
    if (!quiet) this.log(`${what} = ${ret}`, "ioctl");
    return ret;
  }

  private check(what: string, ret: number): number {
    if (ret < 0) throw new KernelError(-ret, what);
    return ret;
  }

  /** Open /dev/iommu and allocate the IOAS every device will share (iommufd backend). */
  boot(): void {
    this.iommufd = this.check(
      "open /dev/iommu",
      this.sys('open("/dev/iommu", O_RDWR)', () => this.libc.open("/dev/iommu", O_RDWR)),
    );
    this.ioasId = this.allocIoas();
    this.readIovaRanges();
    this.log(`IOAS ${this.ioasId} ready`);
  }

  /** IOAS_IOVA_RANGES with room for no range: only the alignment is wanted here. */
  private readIovaRanges(): void {
    const buf = iommu_ioas_iova_ranges.encode({
      size: iommu_ioas_iova_ranges.size,
      ioas_id: this.ioasId,
      num_iovas: 0,
    });
    const ret = this.libc.ioctl(this.iommufd, IOMMU_IOAS_IOVA_RANGES, buf);
    // EMSGSIZE still writes the struct back: the alignment is valid either way.
    if (ret >= 0 || this.libc.errno !== ENOENT) {
      this.iovaAlignment = iommu_ioas_iova_ranges.get(buf, "out_iova_alignment") || 1n;
    }
  }

  /** IOMMU_IOAS_MAP_FILE at a fixed IOVA; returns 0 or -errno. */
  mapFile(fd: number, start: bigint, length: bigint, iova: bigint, quiet = false): number {
    const buf = iommu_ioas_map_file.encode({
      size: iommu_ioas_map_file.size,
      flags: MAP_RW,
      ioas_id: this.ioasId,
      fd,
      start,
      length,
      iova,
    });
    return this.sys(
      `ioctl(IOMMU_IOAS_MAP_FILE, fd=${fd} start=${hex(start)} len=${bytes(length)} iova=${hex(iova)})`,
      () => this.libc.ioctl(this.iommufd, IOMMU_IOAS_MAP_FILE, buf),
      quiet,
    );
  }

  /** IOMMU_IOAS_ALLOC: the main IOAS at boot, another one later. */
  allocIoas(): number {
    const buf = iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size });
    this.check(
      "IOMMU_IOAS_ALLOC",
      this.sys("ioctl(IOMMU_IOAS_ALLOC)", () =>
        this.libc.ioctl(this.iommufd, IOMMU_IOAS_ALLOC, buf),
      ),
    );
    return iommu_ioas_alloc.get(buf, "out_ioas_id");
  }

  /** IOMMU_IOAS_COPY from the main IOAS into `dstIoas` at a fixed IOVA; 0 or -errno. */
  copy(dstIoas: number, srcIova: bigint, length: bigint, dstIova: bigint): number {
    const buf = iommu_ioas_copy.encode({
      size: iommu_ioas_copy.size,
      flags: MAP_RW,
      dst_ioas_id: dstIoas,
      src_ioas_id: this.ioasId,
      length,
      dst_iova: dstIova,
      src_iova: srcIova,
    });
    return this.sys(
      `ioctl(IOMMU_IOAS_COPY, ${hex(srcIova)} +${bytes(length)} → IOAS ${dstIoas} @${hex(dstIova)})`,
      () => this.libc.ioctl(this.iommufd, IOMMU_IOAS_COPY, buf),
    );
  }

  /** IOMMU_IOAS_MAP of a user VA at a fixed IOVA (QEMU's path for memory without an fd); 0 or -errno. */
  mapVa(va: bigint, length: bigint, iova: bigint): number {
    const buf = iommu_ioas_map.encode({
      size: iommu_ioas_map.size,
      flags: MAP_RW,
      ioas_id: this.ioasId,
      user_va: va,
      length,
      iova,
    });
    return this.sys(
      `ioctl(IOMMU_IOAS_MAP, va=${hex(va)} len=${bytes(length)} iova=${hex(iova)})`,
      () => this.libc.ioctl(this.iommufd, IOMMU_IOAS_MAP, buf),
    );
  }

  /** IOMMU_IOAS_UNMAP; ENOENT is success, as QEMU's iommufd backend treats it. */
  unmap(iova: bigint, length: bigint, quiet = false): number {
    const buf = iommu_ioas_unmap.encode({
      size: iommu_ioas_unmap.size,
      ioas_id: this.ioasId,
      iova,
      length,
    });
    const ret = this.sys(
      `ioctl(IOMMU_IOAS_UNMAP, iova=${hex(iova)} len=${bytes(length)})`,
      () => this.libc.ioctl(this.iommufd, IOMMU_IOAS_UNMAP, buf),
      quiet,
    );
    return ret === -ENOENT ? 0 : ret;
  }

  /**
   * Guest RAM: a memfd of `size`, mapped at `gpa`. Large blocks are mapped in `chunk`-sized
   * pieces (one MAP_FILE each, like a machine with several DIMMs) so progress can be shown.
   */
  addRam(
    name: string,
    gpa: bigint,
    size: bigint,
    opts: {
      readonly memfdFlags?: number;
      readonly chunk?: bigint;
      readonly progress?: (done: number, total: number) => void;
    } = {},
  ): RamBlock {
    const memfd = this.createMemfd(name, size, opts.memfdFlags ?? 0);
    const chunk = opts.chunk ?? size;
    const total = Number((size + chunk - 1n) / chunk);
    for (let i = 0; i < total; i++) {
      const off = BigInt(i) * chunk;
      const len = size - off < chunk ? size - off : chunk;
      const ret = this.mapFile(memfd, off, len, gpa + off);
      if (ret < 0)
        throw new VmmFatal(
          `vfio_container_dma_map(${hex(gpa + off)}, ${bytes(len)}) = ${ret} (${errText(-ret)}): vfio: DMA mapping failed, unable to continue`,
          -ret,
        );
      opts.progress?.(i + 1, total);
    }
    const block = { name, gpa, size, memfd };
    this.ram.push(block);
    this.log(`RAM ${name}: ${bytes(size)} at ${hex(gpa)} mapped`);
    return block;
  }

  /** memfd_create + ftruncate: guest memory backing that is not mapped yet. */
  createMemfd(name: string, size: bigint, memfdFlags = 0): number {
    const flags = MFD_CLOEXEC | memfdFlags;
    const memfd = this.check(
      "memfd_create",
      this.sys(`memfd_create("${name}", ${hex(BigInt(flags))})`, () =>
        this.libc.memfdCreate(name, flags),
      ),
    );
    this.check(
      "ftruncate",
      this.sys(`ftruncate(${memfd}, ${bytes(size)})`, () => this.libc.ftruncate(memfd, size)),
    );
    return memfd;
  }

  /** vfio_device_attach with autodomains: existing HWPTs first (EINVAL = try next), else a new one. */
  private attach(dev: PassthroughDevice): void {
    for (const hwpt of this.hwpts) {
      const ret = this.attachPt(dev, hwpt);
      if (ret >= 0) return;
      if (ret !== -EINVAL) throw new VmmFatal(`${dev.name}: attach to HWPT ${hwpt} failed`, -ret);
    }
    const buf = iommu_hwpt_alloc.encode({
      size: iommu_hwpt_alloc.size,
      dev_id: dev.devId,
      pt_id: this.ioasId,
    });
    const ret = this.sys(`ioctl(IOMMU_HWPT_ALLOC, dev=${dev.devId} pt=${this.ioasId})`, () =>
      this.libc.ioctl(this.iommufd, IOMMU_HWPT_ALLOC, buf),
    );
    if (ret < 0) throw new VmmFatal(`${dev.name}: cannot allocate a HWPT`, -ret);
    const hwpt = iommu_hwpt_alloc.get(buf, "out_hwpt_id");
    this.hwpts.push(hwpt);
    const at = this.attachPt(dev, hwpt);
    if (at < 0) throw new VmmFatal(`${dev.name}: attach to new HWPT ${hwpt} failed`, -at);
  }

  attachPt(dev: PassthroughDevice, pt: number): number {
    const s = vfio_device_attach_iommufd_pt;
    const buf = s.encode({ argsz: s.size, pt_id: pt });
    const ret = this.sys(`ioctl(${dev.name}, VFIO_DEVICE_ATTACH_IOMMUFD_PT, pt=${pt})`, () =>
      this.libc.ioctl(dev.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, buf),
    );
    // pt_id comes back as the HWPT the device is attached to (an IOAS id is replaced).
    if (ret >= 0) dev.hwptId = s.decode(buf).pt_id;
    return ret;
  }

  /** GET_REGION_INFO without capabilities: size and offset of a region (size 0 on failure). */
  private regionInfo(dev: PassthroughDevice, index: number): { size: bigint; offset: bigint } {
    const buf = vfio_region_info.encode({ argsz: vfio_region_info.size, index });
    const ret = this.libc.ioctl(dev.fd, VFIO_DEVICE_GET_REGION_INFO, buf);
    return ret < 0 ? { size: 0n, offset: 0n } : decodeRegionInfo(buf);
  }

  /**
   * Realize a vfio-pci device: open the cdev, bind, attach, export every placed BAR as a
   * single-range dma-buf. BARs are mapped when the guest turns memory decode on.
   */
  addDevice(name: string, path: string, placements: readonly BarPlacement[]): PassthroughDevice {
    const dev: PassthroughDevice = {
      name,
      path,
      fd: -1,
      devId: 0,
      hwptId: 0,
      bars: [],
      configOffset: -1n,
      command: 0,
      open: false,
    };
    this.openDevice(dev);
    for (const p of placements) {
      const { size, offset } = this.regionInfo(dev, p.index);
      const bar: Bar = { index: p.index, offset, size, gpa: p.gpa, dmabufFd: -1, mapped: false };
      bar.dmabufFd = this.exportBar(dev, bar);
      dev.bars.push(bar);
    }
    this.devices.push(dev);
    return dev;
  }

  /** Open the cdev, BIND_IOMMUFD and attach (autodomains). */
  private openDevice(dev: PassthroughDevice): void {
    dev.fd = this.check(
      `open ${dev.path}`,
      this.sys(`open("${dev.path}", O_RDWR)`, () => this.libc.open(dev.path, O_RDWR)),
    );
    dev.open = true;
    const bind = vfio_device_bind_iommufd.encode({
      argsz: vfio_device_bind_iommufd.size,
      iommufd: this.iommufd,
    });
    this.check(
      "VFIO_DEVICE_BIND_IOMMUFD",
      this.sys(`ioctl(${dev.name}, VFIO_DEVICE_BIND_IOMMUFD, iommufd=${this.iommufd})`, () =>
        this.libc.ioctl(dev.fd, VFIO_DEVICE_BIND_IOMMUFD, bind),
      ),
    );
    dev.devId = vfio_device_bind_iommufd.decode(bind).out_devid;
    dev.configOffset = this.regionInfo(dev, VFIO_PCI_CONFIG_REGION_INDEX).offset;
    this.attach(dev);
    // The domains decide the IOVA alignment (QEMU's container pgsizes).
    this.readIovaRanges();
    this.log(`${dev.name}: bound as device ${dev.devId}, attached to HWPT ${dev.hwptId}`);
  }

  /** Open a closed device again with fresh dma-bufs (the old ones stay dead for good). */
  reopenDevice(dev: PassthroughDevice): void {
    this.openDevice(dev);
    dev.command = 0;
    for (const bar of dev.bars) bar.dmabufFd = this.exportBar(dev, bar);
  }

  /** QEMU's region mmap of a BAR (for guest CPU access): a VM_PFNMAP mapping of the device fd. */
  mmapBar(dev: PassthroughDevice, bar: Bar): bigint {
    const off = bar.offset;
    let va = MAP_FAILED;
    this.sys(`mmap(${dev.name} BAR${bar.index}, ${bytes(bar.size)})`, () => {
      va = this.libc.mmap(0n, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev.fd, off);
      return va === MAP_FAILED ? -1 : 0;
    });
    if (va === MAP_FAILED)
      throw new KernelError(this.libc.errno, `mmap ${dev.name} BAR${bar.index}`);
    return va;
  }

  /** VFIO_DEVICE_FEATURE(GET | DMA_BUF) over the whole BAR; QEMU warns and goes on when it fails. */
  exportBar(dev: PassthroughDevice, bar: Bar, ranges = [{ offset: 0n, length: bar.size }]): number {
    const buf = encodeDmaBufFeature({
      regionIndex: bar.index,
      openFlags: O_RDWR | O_CLOEXEC,
      ranges,
    });
    const fd = this.sys(
      `ioctl(${dev.name}, VFIO_DEVICE_FEATURE, GET|DMA_BUF bar=${bar.index} ranges=${ranges.length})`,
      () => this.libc.ioctl(dev.fd, VFIO_DEVICE_FEATURE, buf),
    );
    if (fd === -ENOTTY)
      this.log("VFIO dma-buf not supported in kernel: PCI BAR IOMMU mappings may fail", "warn");
    else if (fd < 0)
      this.log(
        `${dev.name} BAR${bar.index}: failed to create dma-buf (${errText(-fd)}): PCI BAR IOMMU mappings may fail`,
        "warn",
      );
    return fd;
  }

  /** The memory listener's region_add for one BAR: MAP_FILE its dma-buf at its GPA. */
  mapBar(dev: PassthroughDevice, bar: Bar): void {
    if (bar.mapped) return;
    const align = this.iovaAlignment;
    if (bar.gpa % align !== 0n || bar.size % align !== 0n) {
      this.log(`${dev.name} BAR${bar.index}: not aligned to ${bytes(align)}, not DMA mapped`);
      return;
    }
    for (const a of bar.areas ?? [{ offset: 0n, size: bar.size }]) {
      const ret =
        bar.dmabufFd < 0
          ? -EINVAL
          : this.mapFile(bar.dmabufFd, a.offset, a.size, bar.gpa + a.offset);
      if (ret < 0) this.warnBarMapFailed(dev, bar, ret);
      else bar.mapped = true;
    }
  }

  /** QEMU's ram_device rule: a failed BAR map is a once-per-process warning, never fatal. */
  warnBarMapFailed(dev: PassthroughDevice, bar: Bar, ret: number): void {
    if (this.options.barMapFatal)
      throw new VmmFatal(
        `Failed to DMA map ${dev.name} BAR${bar.index} at ${hex(bar.gpa)}: ${errText(-ret)}`,
        -ret,
      );
    if (this.p2pWarned) return;
    this.p2pWarned = true;
    this.log(
      `vfio_container_dma_map(${dev.name} BAR${bar.index}, ${hex(bar.gpa)}, ${bytes(bar.size)}) = ${ret} (${errText(-ret)}) ` +
        "PCI peer-to-peer transactions on BARs are not supported.",
      "warn",
    );
  }

  /** region_del for one BAR. */
  unmapBar(bar: Bar): void {
    if (!bar.mapped) return;
    this.unmap(bar.gpa, bar.size);
    bar.mapped = false;
  }

  private configOffset(dev: PassthroughDevice, off: number): bigint {
    if (dev.configOffset < 0n) throw new Error(`${dev.name}: config region not looked up yet`);
    return dev.configOffset + BigInt(off);
  }

  /** pread of config space through the device fd. */
  configRead(dev: PassthroughDevice, off: number, size: 1 | 2 | 4): number {
    const data = new Uint8Array(size);
    if (this.libc.pread(dev.fd, data, this.configOffset(dev, off)) !== size)
      throw new KernelError(this.libc.errno, `${dev.name}: config read at ${off}`);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v << 8) | (data[i] ?? 0);
    return v >>> 0;
  }

  /** The kernel half of a config write: pwrite on the config region, nothing emulated. */
  kernelConfigWrite(dev: PassthroughDevice, off: number, size: 1 | 2 | 4, value: number): void {
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (value >>> (8 * i)) & 0xff;
    this.check(
      "config write",
      this.sys(`pwrite(${dev.name}, config[${hex(BigInt(off))}] = ${hex(BigInt(value))})`, () =>
        this.libc.pwrite(dev.fd, data, this.configOffset(dev, off)),
      ),
    );
  }

  private findCap(dev: PassthroughDevice, id: number): number {
    let pos = this.configRead(dev, PCI_CAPABILITY_LIST, 1) & ~3;
    for (let n = 0; pos && n < 48; n++) {
      if (this.configRead(dev, pos, 1) === id) return pos;
      pos = this.configRead(dev, pos + 1, 1) & ~3;
    }
    return 0;
  }

  /**
   * vfio_pci_write_config: the kernel sees the write first, then QEMU updates its emulated
   * COMMAND and, when MEM changed, the memory listener adds or removes the BAR sections.
   */
  guestConfigWrite(dev: PassthroughDevice, off: number, size: 1 | 2 | 4, value: number): void {
    this.kernelConfigWrite(dev, off, size, value);
    if (off === PCI_COMMAND) this.emulateCommand(dev, value);
  }

  /** QEMU's emulated COMMAND update: a MEM change adds or removes the BAR sections (map / unmap). */
  emulateCommand(dev: PassthroughDevice, value: number): void {
    const was = (dev.command & PCI_COMMAND_MEMORY) !== 0;
    const now = (value & PCI_COMMAND_MEMORY) !== 0;
    dev.command = value;
    if (was === now) return;
    for (const bar of dev.bars) now ? this.mapBar(dev, bar) : this.unmapBar(bar);
  }

  /** The guest driver turns memory decode and bus mastering on (what firmware does at boot). */
  guestEnableMemory(dev: PassthroughDevice): void {
    this.guestConfigWrite(
      dev,
      PCI_COMMAND,
      2,
      dev.command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
    );
  }

  /**
   * vfio_pci_pre_reset → VFIO_DEVICE_RESET → vfio_pci_post_reset. Pre-reset clears IO|MEM|MASTER
   * first (which unmaps the BARs) and only then forces D0; `d0-first` is the order QEMU had
   * before 2025. The guest turns decode back on afterwards, which maps the BARs again. The
   * forgetful VMM issues the reset alone.
   */
  reset(dev: PassthroughDevice): void {
    const command = dev.command;
    if (!this.forgetsRemap) {
      this.quiesce(dev);
      this.setPowerRaw(dev, PCI_D0);
    }
    this.deviceReset(dev);
    if (!this.forgetsRemap) this.guestConfigWrite(dev, PCI_COMMAND, 2, command);
  }

  /** Clear IO | MEMORY | MASTER through the guest-config path (vfio revokes, the listener unmaps). */
  quiesce(dev: PassthroughDevice): void {
    const off = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    this.guestConfigWrite(dev, PCI_COMMAND, 2, dev.command & ~off);
  }

  /** VFIO_DEVICE_RESET alone. */
  deviceReset(dev: PassthroughDevice): void {
    this.check(
      "VFIO_DEVICE_RESET",
      this.sys(`ioctl(${dev.name}, VFIO_DEVICE_RESET)`, () =>
        this.libc.ioctl(dev.fd, VFIO_DEVICE_RESET),
      ),
    );
  }

  /** A guest-initiated FLR through PCIe DEVCTL: QEMU wraps it like a reset (unless forgetful). */
  guestFlr(dev: PassthroughDevice): void {
    const exp = this.findCap(dev, PCI_CAP_ID_EXP);
    if (!exp) throw new KernelError(ENOTTY, `${dev.name} has no PCIe capability`);
    const command = dev.command;
    if (!this.forgetsRemap) this.quiesce(dev);
    const devctl = this.configRead(dev, exp + PCI_EXP_DEVCTL, 2);
    this.kernelConfigWrite(dev, exp + PCI_EXP_DEVCTL, 2, devctl | PCI_EXP_DEVCTL_BCR_FLR);
    if (!this.forgetsRemap) this.guestConfigWrite(dev, PCI_COMMAND, 2, command);
  }

  /** PMCSR write through the config region (no listener involved). */
  setPowerRaw(dev: PassthroughDevice, state: number): void {
    const pm = this.findCap(dev, PCI_CAP_ID_PM);
    if (!pm) return;
    const pmcsr = this.configRead(dev, pm + PCI_PM_CTRL, 2);
    this.kernelConfigWrite(dev, pm + PCI_PM_CTRL, 2, (pmcsr & ~PCI_PM_CTRL_STATE_MASK) | state);
  }

  /** Guest power change (PMCSR): BARs are unmapped before leaving D0 and mapped after coming back. */
  guestSetPower(dev: PassthroughDevice, state: number): void {
    const leavingD0 = state !== PCI_D0;
    if (leavingD0 && !this.forgetsRemap) for (const bar of dev.bars) this.unmapBar(bar);
    this.setPowerRaw(dev, state);
    if (!leavingD0 && !this.forgetsRemap && dev.command & PCI_COMMAND_MEMORY)
      for (const bar of dev.bars) this.mapBar(dev, bar);
  }

  /** Hot-unplug: region_del of every BAR, close the dma-bufs, close the device fd. */
  closeDevice(dev: PassthroughDevice): void {
    if (!this.forgetsRemap) for (const bar of dev.bars) this.unmapBar(bar);
    for (const bar of dev.bars) {
      if (bar.dmabufFd >= 0)
        this.sys(`close(${bar.dmabufFd})`, () => this.libc.close(bar.dmabufFd));
      bar.dmabufFd = -1;
    }
    this.sys(`close(${dev.name})`, () => this.libc.close(dev.fd));
    dev.open = false;
    dev.fd = -1;
  }

  /** Unmap the whole IOAS (QEMU at exit): iova 0, length U64_MAX. */
  unmapAll(): number {
    return this.unmap(0n, U64_MAX);
  }

  /** Orderly exit: every device closed, RAM unmapped and closed, /dev/iommu closed. */
  shutdown(): void {
    for (const dev of this.devices) if (dev.open) this.closeDevice(dev);
    this.unmapAll();
    for (const r of this.ram) this.sys(`close(${r.memfd})`, () => this.libc.close(r.memfd));
    this.sys("close(/dev/iommu)", () => this.libc.close(this.iommufd));
    this.iommufd = -1;
  }
}
