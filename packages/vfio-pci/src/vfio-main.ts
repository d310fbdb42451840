import {
  EINVAL,
  ENODEV,
  ENOMEM,
  ENOTTY,
  type File,
  type FileOperations,
  type Kernel,
  KernelWarning,
  Mutex,
  type Vma,
  copyFromUser,
  copyStructFromUser,
  copyToUser,
  fail,
  ioctlErrno,
} from "@x/kernel";
import { type FieldSpec, type Struct, U32_MAX, getU32, setU32 } from "@x/iommufd";
import type { VfioIommufdBinding } from "./vfio-iommufd.js";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_PASID,
  VFIO_DEVICE_BIND_FLAG_TOKEN,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_DETACH_PASID,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_MINSZ,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
  vfio_irq_set,
} from "./vfio-uapi.js";

/**
 * The VFIO core: a registered device, its dev_set, the registration reference, and the
 * character device `/dev/vfio/devices/vfioN` with its open / bind / close life cycle.
 *
 * A cdev fd starts without access: every ioctl but BIND_IOMMUFD is EINVAL. BIND opens the device
 * (first open: iommufd bind, then the driver's `openDevice`); only one cdev fd may have it open.
 * The last close of a bound fd runs the driver's `closeDevice`, then unbinds from iommufd.
 *
 * Registration: `register` holds the initial reference; each cdev fd and each exporter object
 * holds one more; `unregister` drops the initial one and is refused (EBUSY-like WARN in the
 * model, the kernel waits) while others remain, after asking the driver's `request` op to get the
 * user to release the device. `tryGetRegistration` fails once unregistering.
 *
 * Lock order: dev_set.lock → memory_lock (vfio-pci) → dma-buf reservation lock.
 */

/** Devices reset together (slot or bus): hot reset and close-time bus reset work on the set. */
export class VfioDeviceSet {
  readonly devices: VfioDevice[] = [];
  readonly lock: Mutex;
  constructor(
    kernel: Kernel,
    readonly id: string,
  ) {
    this.lock = new Mutex(kernel.lockdep, "vfio_device_set.lock");
  }
}

/** The driver half of a VFIO device (struct vfio_device_ops). */
export abstract class VfioDevice {
  /** Registration references; 0 = unregistered. */
  private refs = 0;
  openCount = 0;
  /** The cdev node once registered. */
  cdevPath: string | undefined;
  /** Set while some cdev fd has bound the device to an iommufd. */
  binding: VfioIommufdBinding | undefined;

  constructor(
    readonly kernel: Kernel,
    readonly devSet: VfioDeviceSet,
    readonly name: string,
  ) {}

  abstract openDevice(): void;
  abstract closeDevice(): void;
  /** The driver's ioctl for everything the core does not handle. */
  abstract ioctl(cmd: number, arg: bigint): number;
  /** The driver's VFIO_DEVICE_FEATURE handler (payload address and size). */
  abstract deviceFeature(flags: number, arg: bigint, argsz: number): number;
  abstract read(pos: bigint, count: number): Uint8Array;
  abstract write(pos: bigint, data: Uint8Array): number;
  abstract mmap(vma: Vma): void;
  /** Bind to the iommufd context behind `file` (the driver's bind_iommufd op). */
  abstract bindIommufd(file: File): VfioIommufdBinding;

  /** The device is being unregistered while open: ask its user to release it (the request op). */
  request(_count: number): void {}

  /** Wake the device for an ioctl or access (vfio_device_pm_runtime_get); no-op by default. */
  pmRuntimeGet(): void {}

  /** Let it sleep again afterwards (vfio_device_pm_runtime_put); no-op by default. */
  pmRuntimePut(): void {}

  get registered(): boolean {
    return this.refs > 0;
  }

  get registrationRefs(): number {
    return this.refs;
  }

  /** vfio_device_try_get_registration */
  tryGetRegistration(): boolean {
    if (this.refs === 0) return false;
    this.refs++;
    return true;
  }

  /** vfio_device_put_registration */
  putRegistration(): void {
    if (this.refs <= 0) throw new KernelWarning(`${this.name}: registration put below zero`);
    this.refs--;
  }

  /** @internal vfio_register_group_dev's initial reference. */
  markRegistered(): void {
    if (this.refs !== 0) throw new KernelWarning(`${this.name} registered twice`);
    this.refs = 1;
  }

  /**
   * vfio_unregister_group_dev: drop the initial reference. The kernel then waits for the other
   * holders (open fds ask the user to close); the model refuses while any remain.
   */
  unregister(): void {
    if (this.refs !== 1) {
      // The kernel asks the user through the request op, then waits; the model cannot wait.
      this.request(0);
      throw new KernelWarning(`${this.name}: unregister with ${this.refs - 1} users left`);
    }
    this.refs = 0;
    if (this.cdevPath) this.kernel.unregisterDevice(this.cdevPath);
    this.cdevPath = undefined;
    const i = this.devSet.devices.indexOf(this);
    if (i >= 0) this.devSet.devices.splice(i, 1);
  }
}

/** struct vfio_device_file: one per open of the cdev. */
class VfioDeviceFile {
  accessGranted = false;
  constructor(readonly device: VfioDevice) {}
}

/**
 * vfio_check_feature: 1 = go ahead, 0 = probe answered; EINVAL for an unsupported GET / SET,
 * neither of them, or a payload shorter than `minsz`.
 */
export function vfioCheckFeature(
  flags: number,
  argsz: number,
  supportedOps: number,
  minsz: number,
): 0 | 1 {
  if ((flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) & ~supportedOps) !== 0)
    fail(EINVAL, "feature operation not supported");
  if (flags & VFIO_DEVICE_FEATURE_PROBE) return 0;
  if (!(flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)))
    fail(EINVAL, "neither GET nor SET");
  if (argsz < minsz) fail(EINVAL, "feature payload too short");
  return 1;
}

/** VFIO_DEVICE_FEATURE in the core: header checks, then the driver. @see vfio_ioctl_device_feature */
function vfioIoctlDeviceFeature(device: VfioDevice, arg: bigint): number {
  const hdr = copyFromUser(device.kernel, arg, VFIO_DEVICE_FEATURE_MINSZ);
  const argsz = getU32(hdr, 0);
  const flags = getU32(hdr, 4);
  if (argsz < VFIO_DEVICE_FEATURE_MINSZ) fail(EINVAL, "argsz below the header");
  const known =
    VFIO_DEVICE_FEATURE_MASK |
    VFIO_DEVICE_FEATURE_GET |
    VFIO_DEVICE_FEATURE_SET |
    VFIO_DEVICE_FEATURE_PROBE;
  if ((flags & ~known) >>> 0 !== 0) fail(EINVAL, "unknown feature flags");
  if (
    !(flags & VFIO_DEVICE_FEATURE_PROBE) &&
    flags & VFIO_DEVICE_FEATURE_SET &&
    flags & VFIO_DEVICE_FEATURE_GET
  )
    fail(EINVAL, "GET and SET together");
  switch (flags & VFIO_DEVICE_FEATURE_MASK) {
    // Core features need migration / dirty-logging ops, which vfio-pci does not have.
    case VFIO_DEVICE_FEATURE_MIGRATION:
    case VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE:
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_START:
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP:
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT:
    case VFIO_DEVICE_FEATURE_MIG_DATA_SIZE:
      return fail(ENOTTY, "no migration or logging ops");
    default:
      return device.deviceFeature(
        flags,
        arg + BigInt(VFIO_DEVICE_FEATURE_MINSZ),
        argsz - VFIO_DEVICE_FEATURE_MINSZ,
      );
  }
}

/**
 * The SET_IRQS header checks of the VFIO core, in order; the size of the data array that
 * follows the header (0 for DATA_NONE). `max` is the index's IRQ count.
 * @see vfio_set_irqs_validate_and_prepare
 */
export function vfioSetIrqsValidateAndPrepare(
  hdr: {
    readonly argsz: number;
    readonly flags: number;
    readonly index: number;
    readonly start: number;
    readonly count: number;
  },
  max: number,
  numIrqs: number,
): number {
  const minsz = vfio_irq_set.size;
  if (
    hdr.argsz < minsz ||
    hdr.index >= numIrqs ||
    hdr.count >= U32_MAX - hdr.start ||
    (hdr.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)) !== 0
  )
    fail(EINVAL, "argsz, index, count or flags");
  if (hdr.start >= max || hdr.start + hdr.count > max) fail(EINVAL, "start / count past the IRQs");
  let size: number;
  switch (hdr.flags & VFIO_IRQ_SET_DATA_TYPE_MASK) {
    case VFIO_IRQ_SET_DATA_NONE:
      size = 0;
      break;
    case VFIO_IRQ_SET_DATA_BOOL:
      size = 1;
      break;
    case VFIO_IRQ_SET_DATA_EVENTFD:
      size = 4;
      break;
    default:
      return fail(EINVAL, "not exactly one data type");
  }
  if (size && hdr.argsz - minsz < hdr.count * size) fail(EINVAL, "argsz too small for data");
  return hdr.count * size;
}

/** Write one u32 field of the user's struct back (the kernel's put_user of an out field). */
function putU32Field<S extends FieldSpec>(
  kernel: Kernel,
  arg: bigint,
  s: Struct<S>,
  field: keyof S & string,
  value: number,
): void {
  const out = new Uint8Array(4);
  setU32(out, 0, value);
  copyToUser(kernel, arg + BigInt(s.offsetOf(field)), out);
}

/** @see vfio_df_ioctl_bind_iommufd */
function vfioDfIoctlBindIommufd(df: VfioDeviceFile, arg: bigint): number {
  const device = df.device;
  const kernel = device.kernel;
  const s = vfio_device_bind_iommufd;
  const { argsz } = s.decode(copyFromUser(kernel, arg, 4));
  if (argsz < s.minSize) fail(EINVAL, "argsz");
  const bind = s.decode(copyStructFromUser(kernel, s.size, arg, argsz));
  const { flags, iommufd } = bind;
  if (iommufd < 0 || flags & ~VFIO_DEVICE_BIND_FLAG_TOKEN) fail(EINVAL, "bad iommufd or flags");
  return device.devSet.lock.with(() => {
    if (df.accessGranted) fail(EINVAL, "already bound");
    if (flags & VFIO_DEVICE_BIND_FLAG_TOKEN) {
      copyFromUser(kernel, bind.token_uuid_ptr, 16);
      // No SR-IOV is modelled: a VF token offered to a device that is neither PF nor VF.
      fail(EINVAL, "VF token provided for a device without one");
    }
    const file = kernel.current.process.files.fget(iommufd);
    try {
      vfioDfOpen(df, file);
    } finally {
      file.put();
    }
    try {
      putU32Field(kernel, arg, s, "out_devid", device.binding!.devid);
    } catch (e) {
      vfioDfClose(df);
      throw e;
    }
    df.accessGranted = true;
    return 0;
  });
}

/** First open binds to iommufd and opens the driver; a cdev allows one opener. @see vfio_df_open */
function vfioDfOpen(df: VfioDeviceFile, iommufdFile: File): void {
  const device = df.device;
  if (device.openCount !== 0) fail(EINVAL, "device already opened through another cdev fd");
  device.openCount++;
  try {
    device.binding = device.bindIommufd(iommufdFile);
    try {
      device.openDevice();
    } catch (e) {
      device.binding.unbind();
      device.binding = undefined;
      throw e;
    }
  } catch (e) {
    device.openCount--;
    throw e;
  }
}

/** @see vfio_df_close */
function vfioDfClose(df: VfioDeviceFile): void {
  const device = df.device;
  if (--device.openCount === 0) {
    device.closeDevice();
    device.binding?.unbind();
    device.binding = undefined;
  }
}

/**
 * The PASID of an ATTACH/DETACH_IOMMUFD_PT with its PASID flag, read only then: the struct
 * must reach past `pasid` (EINVAL) and the extra bytes are copied in (EFAULT).
 */
function readPtPasid(
  kernel: Kernel,
  arg: bigint,
  argsz: number,
  s: typeof vfio_device_attach_iommufd_pt | typeof vfio_device_detach_iommufd_pt,
): number {
  const xend = s.endOf("pasid");
  if (argsz < xend) fail(EINVAL, "argsz does not reach pasid");
  const extra = copyFromUser(kernel, arg + BigInt(s.minSize), xend - s.minSize);
  return getU32(extra, xend - s.minSize - 4);
}

/** @see vfio_df_ioctl_attach_pt */
function vfioDfIoctlAttachPt(df: VfioDeviceFile, arg: bigint): number {
  const kernel = df.device.kernel;
  const s = vfio_device_attach_iommufd_pt;
  const { argsz, flags, pt_id: ptId } = s.decode(copyFromUser(kernel, arg, s.minSize));
  if (argsz < s.minSize) fail(EINVAL, "argsz");
  if (flags & ~VFIO_DEVICE_ATTACH_PASID) fail(EINVAL, "flags");
  const withPasid = (flags & VFIO_DEVICE_ATTACH_PASID) !== 0;
  const pasid = withPasid ? readPtPasid(kernel, arg, argsz, s) : undefined;
  const binding = df.device.binding!;
  return df.device.devSet.lock.with(() => {
    const out = pasid === undefined ? binding.attach(ptId) : binding.pasidAttach(pasid, ptId);
    try {
      putU32Field(kernel, arg, s, "pt_id", out);
    } catch (e) {
      // out_detach is detach_ioas whichever attach ran: after a PASID attach the RID goes and
      // the PASID stays.
      binding.detach();
      throw e;
    }
    return 0;
  });
}

/** @see vfio_df_ioctl_detach_pt */
function vfioDfIoctlDetachPt(df: VfioDeviceFile, arg: bigint): number {
  const kernel = df.device.kernel;
  const s = vfio_device_detach_iommufd_pt;
  const { argsz, flags } = s.decode(copyFromUser(kernel, arg, s.minSize));
  if (argsz < s.minSize) fail(EINVAL, "argsz");
  if (flags & ~VFIO_DEVICE_DETACH_PASID) fail(EINVAL, "flags");
  const pasid = flags & VFIO_DEVICE_DETACH_PASID ? readPtPasid(kernel, arg, argsz, s) : undefined;
  const binding = df.device.binding!;
  df.device.devSet.lock.with(() =>
    pasid === undefined ? binding.detach() : binding.pasidDetach(pasid),
  );
  return 0;
}

/** The cdev's file operations. @see vfio_device_fops */
export const vfioDeviceFops: FileOperations = {
  name: "vfio-device",
  /** vfio_device_fops_unl_ioctl: the result, or -errno (`ioctlErrno`). */
  ioctl(file, cmd, arg) {
    const df = file.priv as VfioDeviceFile;
    try {
      if (cmd === VFIO_DEVICE_BIND_IOMMUFD) return vfioDfIoctlBindIommufd(df, arg);
      if (!df.accessGranted) fail(EINVAL, "device not bound");
      df.device.pmRuntimeGet();
      try {
        switch (cmd) {
          case VFIO_DEVICE_ATTACH_IOMMUFD_PT:
            return vfioDfIoctlAttachPt(df, arg);
          case VFIO_DEVICE_DETACH_IOMMUFD_PT:
            return vfioDfIoctlDetachPt(df, arg);
          case VFIO_DEVICE_FEATURE:
            return vfioIoctlDeviceFeature(df.device, arg);
          default:
            return df.device.ioctl(cmd, arg);
        }
      } finally {
        df.device.pmRuntimePut();
      }
    } catch (e) {
      return ioctlErrno(df.device.kernel, e);
    }
  },
  read(file, len, pos) {
    const df = file.priv as VfioDeviceFile;
    if (!df.accessGranted) fail(EINVAL, "device not bound");
    return df.device.read(pos, len);
  },
  write(file, data, pos) {
    const df = file.priv as VfioDeviceFile;
    if (!df.accessGranted) fail(EINVAL, "device not bound");
    return df.device.write(pos, data);
  },
  mmap(file, vma) {
    const df = file.priv as VfioDeviceFile;
    if (!df.accessGranted) fail(EINVAL, "device not bound");
    df.device.mmap(vma);
  },
  release(file) {
    const df = file.priv as VfioDeviceFile;
    if (df.accessGranted) df.device.devSet.lock.with(() => vfioDfClose(df));
    df.device.putRegistration();
  },
};

/** The device behind an open cdev file (for region read/write helpers and tests). */
export function vfioDeviceFromFile(file: File): VfioDeviceFile {
  if (file.fops !== vfioDeviceFops) fail(EINVAL, "not a VFIO device file");
  return file.priv as VfioDeviceFile;
}

/**
 * Register `device` and create its cdev node `/dev/vfio/devices/vfioN` (lowest free N).
 * @see vfio_register_group_dev
 */
export function vfioRegisterDevice(device: VfioDevice): string {
  const kernel = device.kernel;
  let n = 0;
  while (kernel.hasDevice(`/dev/vfio/devices/vfio${n}`)) n++;
  const path = `/dev/vfio/devices/vfio${n}`;
  device.markRegistered();
  device.devSet.devices.push(device);
  device.cdevPath = path;
  kernel.registerDevice(path, (k, flags) => {
    // vfio_device_fops_cdev_open
    if (!device.tryGetRegistration()) fail(ENODEV, `${device.name} is going away`);
    if (k.shouldFail("vfio_allocate_device_file")) {
      device.putRegistration();
      fail(ENOMEM, "vfio_device_file");
    }
    return k.anonFile(vfioDeviceFops, new VfioDeviceFile(device), flags);
  });
  return path;
}
