/**
 * QEMU's interrupt plumbing for a vfio-pci device (hw/vfio/pci.c), without KVM irqfds (TCG):
 * INTx through a QEMU eventfd with the kernel's automask and an explicit UNMASK at EOI, MSI-X
 * through one eventfd per vector, ERR and REQ notifiers. Every call is VFIO_DEVICE_SET_IRQS
 * filled the way QEMU fills it; the results are treated as QEMU treats them.
 */
import { EAGAIN, EFD_CLOEXEC, EFD_NONBLOCK, ENOTTY, errnoName } from "@x/kernel";
import { VmmFatal } from "../vmm.js";
import type { QemuSys } from "./sys.js";
import {
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
  encodeIrqSet,
  vfio_irq_info,
} from "@x/vfio-pci";

const INDEX_NAMES = ["INTX", "MSI", "MSIX", "ERR", "REQ"];

/** The interrupt state QEMU keeps per device. */
export interface IrqState {
  /** The INTx eventfd while INTx is enabled. */
  intxFd: number;
  /** An INTx was signalled and not yet EOI'd (vdev->intx.pending). */
  intxPending: boolean;
  /** MSI-X enabled on the host, and the eventfd per used vector (-1 unused). */
  msixEnabled: boolean;
  msixFds: number[];
  /** GET_IRQ_INFO(MSIX) said NORESIZE: growing means disable and re-enable. */
  msixNoresize: boolean;
  errFd: number;
  reqFd: number;
}

export function newIrqState(): IrqState {
  return {
    intxFd: -1,
    intxPending: false,
    msixEnabled: false,
    msixFds: [],
    msixNoresize: true,
    errFd: -1,
    reqFd: -1,
  };
}

export interface IrqDevice {
  readonly name: string;
  readonly fd: number;
  /** The interrupt pin QEMU read from config space; 0 for none. */
  readonly pin: number;
  readonly irq: IrqState;
}

function flagsText(flags: number): string {
  const data =
    flags & VFIO_IRQ_SET_DATA_EVENTFD
      ? "EVENTFD"
      : flags & VFIO_IRQ_SET_DATA_BOOL
        ? "BOOL"
        : "NONE";
  const action =
    flags & VFIO_IRQ_SET_ACTION_TRIGGER
      ? "TRIGGER"
      : flags & VFIO_IRQ_SET_ACTION_UNMASK
        ? "UNMASK"
        : "MASK";
  return `DATA_${data}|ACTION_${action}`;
}

/** VFIO_DEVICE_SET_IRQS; returns the ioctl's result or -errno. */
function setIrqs(
  sys: QemuSys,
  dev: IrqDevice,
  index: number,
  flags: number,
  start: number,
  count: number,
  fds: readonly number[] = [],
): number {
  const buf = encodeIrqSet({ flags, index, start, count, data: fds });
  const what = `ioctl(${dev.name}, VFIO_DEVICE_SET_IRQS, ${INDEX_NAMES[index]} ${flagsText(flags)} start=${start} count=${count}${fds.length ? ` fds=[${fds.join(",")}]` : ""})`;
  return sys.call(what, () => sys.libc.ioctl(dev.fd, VFIO_DEVICE_SET_IRQS, buf));
}

/** VFIO_DEVICE_GET_IRQ_INFO: {flags, count} or -errno. */
export function getIrqInfo(
  sys: QemuSys,
  dev: IrqDevice,
  index: number,
  tolerated: Readonly<Record<number, string>> = {},
): { flags: number; count: number } | number {
  const buf = vfio_irq_info.encode({ argsz: vfio_irq_info.size, index });
  const ret = sys.call(
    `ioctl(${dev.name}, VFIO_DEVICE_GET_IRQ_INFO, ${INDEX_NAMES[index]})`,
    () => sys.libc.ioctl(dev.fd, VFIO_DEVICE_GET_IRQ_INFO, buf),
    tolerated,
  );
  if (ret < 0) return ret;
  return { flags: vfio_irq_info.get(buf, "flags"), count: vfio_irq_info.get(buf, "count") };
}

/** event_notifier_init: a non-blocking, close-on-exec eventfd. */
function eventNotifier(sys: QemuSys, what: string): number {
  return sys.must(
    `eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC) /* ${what} */`,
    () => sys.libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC),
    "event_notifier_init",
  );
}

function closeFd(sys: QemuSys, fd: number): void {
  if (fd >= 0) sys.call(`close(${fd})`, () => sys.libc.close(fd));
}

/** event_notifier_test_and_clear: read the 8-byte counter; 0 when nothing was signalled. */
export function eventNotifierTestAndClear(sys: QemuSys, fd: number): bigint {
  const buf = new Uint8Array(8);
  const n = sys.call(`read(${fd}, 8)`, () => sys.libc.read(fd, buf), {
    [EAGAIN]: "nothing signalled yet",
  });
  return n === 8 ? new DataView(buf.buffer).getBigUint64(0, true) : 0n;
}

/**
 * vfio_intx_enable: a QEMU eventfd as the INTx trigger; a failure is fatal at realize, a warning
 * after a reset or an MSI-X disable. Without
 * KVM irqfds QEMU handles the interrupt itself. @see vfio_intx_enable (hw/vfio/pci.c)
 */
export function vfioIntxEnable(sys: QemuSys, dev: IrqDevice, fatal = true): void {
  const fd = eventNotifier(sys, "intx-interrupt");
  const ret = setIrqs(
    sys,
    dev,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
    0,
    1,
    [fd],
  );
  if (ret < 0) {
    closeFd(sys, fd);
    if (fatal) throw new VmmFatal(`vfio_intx_enable (hw/vfio/pci.c): ${errnoName(-ret)}`, -ret);
    sys.log(`${dev.name}: failed to re-enable INTx: ${errnoName(-ret)}`, "warn");
    return;
  }
  dev.irq.intxFd = fd;
}

/** vfio_intx_disable: SET_IRQS(INTX, NONE|TRIGGER, 0, 0), result ignored, eventfd closed. */
function vfioIntxDisable(sys: QemuSys, dev: IrqDevice): void {
  if (dev.irq.intxFd < 0) return;
  setIrqs(
    sys,
    dev,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
    0,
    0,
  );
  closeFd(sys, dev.irq.intxFd);
  dev.irq.intxFd = -1;
  dev.irq.intxPending = false;
}

/** vfio_pci_intx_eoi: the guest's EOI; the kernel left the line masked until this UNMASK. */
export function vfioIntxEoi(sys: QemuSys, dev: IrqDevice): void {
  if (!dev.irq.intxPending) return;
  dev.irq.intxPending = false;
  setIrqs(
    sys,
    dev,
    VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
    0,
    1,
  );
}

/**
 * vfio_msix_early_setup's GET_IRQ_INFO(MSIX): fatal on error; NORESIZE decides how vectors
 * grow later.
 */
export function vfioMsixEarlySetup(sys: QemuSys, dev: IrqDevice): number {
  const info = getIrqInfo(sys, dev, VFIO_PCI_MSIX_IRQ_INDEX);
  if (typeof info === "number")
    return sys.must("GET_IRQ_INFO(MSIX)", () => info, "vfio_msix_early_setup (hw/vfio/pci.c)");
  dev.irq.msixNoresize = (info.flags & VFIO_IRQ_INFO_NORESIZE) !== 0;
  sys.log(
    `${dev.name}: MSI-X with ${info.count} vectors${dev.irq.msixNoresize ? ", NORESIZE" : ", dynamic"}`,
  );
  return info.count;
}

/**
 * The guest set MSI-X Enable with every vector masked (what Linux does first): INTx goes,
 * MSI-X is enabled on the host with one unsignalled vector. @see vfio_msix_enable
 */
export function vfioMsixEnable(sys: QemuSys, dev: IrqDevice): void {
  vfioIntxDisable(sys, dev);
  const ret = setIrqs(
    sys,
    dev,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
    0,
    1,
    [-1],
  );
  if (ret < 0) sys.log(`vfio: failed to enable MSI-X: ${errnoName(-ret)}`, "warn");
  else dev.irq.msixEnabled = true;
}

/**
 * The guest unmasked vector `nr`: an eventfd for it; with NORESIZE growing past the enabled
 * count is a disable and a re-enable of all vectors. @see vfio_msix_vector_do_use
 */
export function vfioMsixVectorUse(sys: QemuSys, dev: IrqDevice, nr: number): void {
  const fd = eventNotifier(sys, `msix-vector-${nr}`);
  const fds = dev.irq.msixFds;
  const resizing = fds.length < nr + 1;
  while (fds.length < nr + 1) fds.push(-1);
  fds[nr] = fd;
  const flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  let ret: number;
  if (dev.irq.msixNoresize && resizing) {
    setIrqs(
      sys,
      dev,
      VFIO_PCI_MSIX_IRQ_INDEX,
      VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
      0,
      0,
    );
    ret = setIrqs(sys, dev, VFIO_PCI_MSIX_IRQ_INDEX, flags, 0, fds.length, fds);
  } else {
    ret = setIrqs(sys, dev, VFIO_PCI_MSIX_IRQ_INDEX, flags, nr, 1, [fd]);
  }
  if (ret < 0) sys.log(`vfio: failed to set up MSI-X vector ${nr}: ${errnoName(-ret)}`, "warn");
}

/**
 * vfio_msix_disable: SET_IRQS(MSIX, NONE|TRIGGER, 0, 0) always, eventfds closed, then INTx is
 * enabled again when the function has a pin (a failure there warns).
 */
function vfioMsixDisable(sys: QemuSys, dev: IrqDevice): void {
  if (!dev.irq.msixEnabled) return;
  setIrqs(
    sys,
    dev,
    VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
    0,
    0,
  );
  for (const fd of dev.irq.msixFds) closeFd(sys, fd);
  dev.irq.msixFds = [];
  dev.irq.msixEnabled = false;
  if (dev.pin) vfioIntxEnable(sys, dev, false);
}

/**
 * vfio_disable_interrupts: MSI-X off first — which puts the function back on INTx — then INTx
 * off, so both leave.
 */
export function vfioDisableInterrupts(sys: QemuSys, dev: IrqDevice): void {
  vfioMsixDisable(sys, dev);
  vfioIntxDisable(sys, dev);
}

/**
 * vfio_pci_register_err_notifier / vfio_pci_register_req_notifier: an eventfd per notifier;
 * ERR only when GET_IRQ_INFO(ERR) gave one vector (PCIe AER), REQ skipped when its info fails.
 * Failures warn.
 */
export function vfioRegisterNotifiers(sys: QemuSys, dev: IrqDevice, aer: boolean): void {
  const flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  if (aer) {
    const fd = eventNotifier(sys, "err");
    if (setIrqs(sys, dev, VFIO_PCI_ERR_IRQ_INDEX, flags, 0, 1, [fd]) < 0) {
      sys.log(`${dev.name}: failed to set up error notification`, "warn");
      closeFd(sys, fd);
    } else dev.irq.errFd = fd;
  }
  const req = getIrqInfo(sys, dev, VFIO_PCI_REQ_IRQ_INDEX, {
    [ENOTTY]: "no device request channel: QEMU skips the notifier",
  });
  if (typeof req === "number" || req.count < 1) return;
  const fd = eventNotifier(sys, "req");
  if (setIrqs(sys, dev, VFIO_PCI_REQ_IRQ_INDEX, flags, 0, 1, [fd]) < 0) {
    sys.log(`${dev.name}: failed to set up device request notification`, "warn");
    closeFd(sys, fd);
  } else dev.irq.reqFd = fd;
}

/** vfio_exitfn's unregistering: each notifier gets fd -1, its eventfd is closed. */
export function vfioUnregisterNotifiers(sys: QemuSys, dev: IrqDevice): void {
  const flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  for (const [index, key] of [
    [VFIO_PCI_REQ_IRQ_INDEX, "reqFd"],
    [VFIO_PCI_ERR_IRQ_INDEX, "errFd"],
  ] as const) {
    const fd = dev.irq[key];
    if (fd < 0) continue;
    if (setIrqs(sys, dev, index, flags, 0, 1, [-1]) < 0)
      sys.log(`${dev.name}: failed to de-assign ${INDEX_NAMES[index]} trigger`, "warn");
    closeFd(sys, fd);
    dev.irq[key] = -1;
  }
}
