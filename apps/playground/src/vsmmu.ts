/**
 * The VMM's accelerated virtual SMMUv3: the guest's SMMU is backed by a vIOMMU of the host's
 * SMMU, the way QEMU's smmuv3-accel does it over iommufd. The VMM owns stage 2 (a NEST_PARENT
 * HWPT over the IOAS holding guest RAM and P2P BARs); the guest owns stage 1 (its STEs, CDs and
 * page tables in guest RAM). A guest STE write becomes a nested HWPT the device is attached
 * to, a guest command (TLBI, CFGI_CD, ATC_INV) goes to IOMMU_HWPT_INVALIDATE on the vIOMMU,
 * and the vEVENTQ carries the guest's stage-1 events back for the guest's event queue.
 *
 * @see QEMU hw/arm/smmuv3-accel.c, backends/iommufd.c
 */
import {
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  iommu_destroy,
  iommu_hwpt_alloc,
  iommu_hwpt_arm_smmuv3,
  iommu_hwpt_invalidate,
  iommu_vdevice_alloc,
  iommu_vevent_arm_smmuv3,
  iommu_veventq_alloc,
  iommu_viommu_alloc,
  iommu_viommu_arm_smmuv3_invalidate,
} from "@x/iommufd";
import { KernelError } from "@x/kernel";
import { hex } from "./snapshot.js";
import type { PassthroughDevice, Vmm } from "./vmm.js";

/** One record read from the vEVENTQ: its sequence number and the guest's event words. */
export interface VsmmuEvent {
  readonly sequence: number;
  readonly evt: readonly bigint[];
}

/** struct iommufd_vevent_header: flags and sequence, before each record. */
const VEVENT_HEADER_SIZE = 8;

export class VirtSmmu {
  /** The stage-2 (nest-parent) HWPT. */
  s2 = 0;
  viommu = 0;
  veventqId = 0;
  veventqFd = -1;
  readonly vdevices = new Map<string, number>();
  /** The nested HWPT installed for each device (its guest STE). */
  readonly nested = new Map<string, number>();

  constructor(private readonly vmm: Vmm) {}

  private ioctl(what: string, request: number, buf: Uint8Array): number {
    const ret = this.vmm.sys(what, () => this.vmm.libc.ioctl(this.vmm.iommufd, request, buf));
    if (ret < 0) throw new KernelError(-ret, what);
    return ret;
  }

  /**
   * Stage 2: a NEST_PARENT HWPT on the IOAS for `dev`, the device moved onto it (the guest's
   * SMMU starts in bypass), then the vIOMMU over it.
   */
  realize(dev: PassthroughDevice): void {
    const buf = iommu_hwpt_alloc.encode({
      size: iommu_hwpt_alloc.size,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      dev_id: dev.devId,
      pt_id: this.vmm.ioasId,
    });
    this.ioctl(`ioctl(IOMMU_HWPT_ALLOC, NEST_PARENT dev=${dev.devId})`, IOMMU_HWPT_ALLOC, buf);
    this.s2 = iommu_hwpt_alloc.get(buf, "out_hwpt_id");
    const at = this.vmm.attachPt(dev, this.s2);
    if (at < 0) throw new KernelError(-at, `${dev.name}: attach to the stage-2 HWPT`);
    const v = iommu_viommu_alloc.encode({
      size: iommu_viommu_alloc.size,
      type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
      dev_id: dev.devId,
      hwpt_id: this.s2,
    });
    this.ioctl(`ioctl(IOMMU_VIOMMU_ALLOC, ARM_SMMUV3 s2=${this.s2})`, IOMMU_VIOMMU_ALLOC, v);
    this.viommu = iommu_viommu_alloc.get(v, "out_viommu_id");
  }

  /** The guest's StreamID for `dev`: IOMMU_VDEVICE_ALLOC with virt_id = vSID. */
  addDevice(dev: PassthroughDevice, vsid: bigint): void {
    const buf = iommu_vdevice_alloc.encode({
      size: iommu_vdevice_alloc.size,
      viommu_id: this.viommu,
      dev_id: dev.devId,
      virt_id: vsid,
    });
    this.ioctl(
      `ioctl(IOMMU_VDEVICE_ALLOC, ${dev.name} vSID=${hex(vsid)})`,
      IOMMU_VDEVICE_ALLOC,
      buf,
    );
    this.vdevices.set(dev.name, iommu_vdevice_alloc.get(buf, "out_vdevice_id"));
  }

  /** The vEVENTQ the guest's event queue is fed from. */
  allocEventQueue(depth: number): void {
    const buf = iommu_veventq_alloc.encode({
      size: iommu_veventq_alloc.size,
      viommu_id: this.viommu,
      type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
      veventq_depth: depth,
    });
    this.ioctl(`ioctl(IOMMU_VEVENTQ_ALLOC, depth=${depth})`, IOMMU_VEVENTQ_ALLOC, buf);
    this.veventqId = iommu_veventq_alloc.get(buf, "out_veventq_id");
    this.veventqFd = iommu_veventq_alloc.get(buf, "out_veventq_fd");
  }

  /** The guest wrote `dev`'s STE: a nested HWPT from its words 0 and 1, the device attached. */
  installSte(dev: PassthroughDevice, ste0: bigint, ste1: bigint): number {
    const data = iommu_hwpt_arm_smmuv3.encode({ ste0, ste1 });
    const uptr = this.vmm.libc.malloc(data.length);
    this.vmm.libc.poke(uptr, data);
    const buf = iommu_hwpt_alloc.encode({
      size: iommu_hwpt_alloc.size,
      dev_id: dev.devId,
      pt_id: this.viommu,
      data_type: IOMMU_HWPT_DATA_ARM_SMMUV3,
      data_len: data.length,
      data_uptr: uptr,
    });
    try {
      this.ioctl(
        `ioctl(IOMMU_HWPT_ALLOC, viommu=${this.viommu} ARM_SMMUV3 ste=${hex(ste0)},${hex(ste1)})`,
        IOMMU_HWPT_ALLOC,
        buf,
      );
    } finally {
      this.vmm.libc.free(uptr);
    }
    const hwpt = iommu_hwpt_alloc.get(buf, "out_hwpt_id");
    const at = this.vmm.attachPt(dev, hwpt);
    if (at < 0) throw new KernelError(-at, `${dev.name}: attach to nested HWPT ${hwpt}`);
    const old = this.nested.get(dev.name);
    if (old !== undefined) this.destroy(old);
    this.nested.set(dev.name, hwpt);
    return hwpt;
  }

  /** Forward guest commands: the count the kernel handled, and 0 or -errno. */
  invalidate(cmds: readonly (readonly [bigint, bigint])[]): { ret: number; done: number } {
    const size = iommu_viommu_arm_smmuv3_invalidate.size;
    const uptr = this.vmm.libc.malloc(size * cmds.length);
    for (const [i, [cmd0, cmd1]] of cmds.entries())
      this.vmm.libc.poke(
        uptr + BigInt(i * size),
        iommu_viommu_arm_smmuv3_invalidate.encode({ cmd0, cmd1 }),
      );
    const buf = iommu_hwpt_invalidate.encode({
      size: iommu_hwpt_invalidate.size,
      hwpt_id: this.viommu,
      data_uptr: uptr,
      data_type: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
      entry_len: size,
      entry_num: cmds.length,
    });
    const ret = this.vmm.sys(
      `ioctl(IOMMU_HWPT_INVALIDATE, viommu=${this.viommu} ${cmds.length} command(s))`,
      () => this.vmm.libc.ioctl(this.vmm.iommufd, IOMMU_HWPT_INVALIDATE, buf),
    );
    this.vmm.libc.free(uptr);
    return { ret: Math.min(ret, 0), done: iommu_hwpt_invalidate.get(buf, "entry_num") };
  }

  /** Drain the vEVENTQ (read(2) of whole records). */
  readEvents(): VsmmuEvent[] {
    const rec = VEVENT_HEADER_SIZE + iommu_vevent_arm_smmuv3.size;
    const buf = new Uint8Array(rec * 16);
    const n = this.vmm.sys(`read(vEVENTQ fd ${this.veventqFd})`, () =>
      this.vmm.libc.read(this.veventqFd, buf),
    );
    const out: VsmmuEvent[] = [];
    for (let off = 0; off + rec <= n; off += rec) {
      const sequence = new DataView(buf.buffer).getUint32(off + 4, true);
      const e = iommu_vevent_arm_smmuv3.decode(buf.subarray(off + VEVENT_HEADER_SIZE, off + rec));
      out.push({ sequence, evt: [e.evt0, e.evt1, e.evt2, e.evt3] });
    }
    return out;
  }

  /** IOMMU_DESTROY of one object. */
  destroy(id: number): void {
    const buf = iommu_destroy.encode({ size: iommu_destroy.size, id });
    this.ioctl(`ioctl(IOMMU_DESTROY, id=${id})`, IOMMU_DESTROY, buf);
  }

  /**
   * Unrealize: devices back on stage 2, then the nested HWPTs, vDEVICEs, the vEVENTQ (its fd
   * first: the open file holds it) and the vIOMMU, in the order their references allow.
   */
  teardown(devices: readonly PassthroughDevice[]): void {
    for (const dev of devices) {
      const at = this.vmm.attachPt(dev, this.s2);
      if (at < 0) throw new KernelError(-at, `${dev.name}: back to stage 2`);
    }
    for (const hwpt of this.nested.values()) this.destroy(hwpt);
    this.nested.clear();
    for (const vdev of this.vdevices.values()) this.destroy(vdev);
    this.vdevices.clear();
    if (this.veventqFd >= 0) {
      const fd = this.veventqFd;
      this.vmm.sys(`close(${fd})`, () => this.vmm.libc.close(fd));
      this.veventqFd = -1;
      this.destroy(this.veventqId);
    }
    this.destroy(this.viommu);
  }
}
