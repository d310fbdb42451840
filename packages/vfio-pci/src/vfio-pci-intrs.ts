import {
  EBUSY,
  EINVAL,
  ENODEV,
  ENOMEM,
  ENOTTY,
  type EventfdCtx,
  KernelWarning,
  POLLHUP,
  POLLIN,
  copyFromUser,
  copyToUser,
  eventfdCtxDoRead,
  eventfdCtxFdget,
  eventfdPollWait,
  eventfdRemoveWait,
  eventfdSignal,
  fail,
  isKernelError,
} from "@x/kernel";
import {
  PCI_IRQ_MSI,
  PCI_IRQ_MSIX,
  disableIrq,
  enableIrq,
  freeIntx,
  freeIrq,
  pciAllocIrqVectors,
  pciCheckAndMaskIntx,
  pciCheckAndUnmaskIntx,
  pciFreeIrqVectors,
  pciIntx,
  pciIrqVector,
  pciMsiVecCount,
  pciMsixAllocIrqAt,
  pciMsixVecCount,
  requestIntx,
  requestIrq,
} from "./pci-irq.js";
import { PCI_COMMAND, PCI_COMMAND_MEMORY, PCI_INTERRUPT_PIN } from "./pci-regs.js";
import type { VfioPciCoreDevice } from "./vfio-pci-core.js";
import { vfioSetIrqsValidateAndPrepare } from "./vfio-main.js";
import {
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_REQ_IRQ_INDEX,
  vfio_irq_info,
  vfio_irq_set,
} from "./vfio-uapi.js";

/**
 * vfio-pci interrupts (drivers/vfio/pci/vfio_pci_intrs.c and drivers/vfio/virqfd.c): the
 * device's INTx, MSI and MSI-X delivered to user eventfds, INTx masking with the automask and
 * its unmask eventfd, and the ERR / REQ notification eventfds.
 *
 * `vdev.irqType` is the one of INTx / MSI / MSI-X enabled, or VFIO_PCI_NUM_IRQS for none; a
 * per-vector context (`vdev.irqCtx`) holds the trigger eventfd, and for INTx the mask state
 * and the unmask virqfd. SET_IRQS runs under `igate`; MSI vectors are allocated, requested
 * and freed with `memory_lock` held and memory decode forced on
 * (vfio_pci_memory_lock_and_enable), since the MSI-X table sits in a BAR.
 *
 * The model is synchronous: a device interrupt runs the hard-IRQ handler at once, and a
 * virqfd's inject work runs inside the wake-up.
 */

/** struct virqfd: an eventfd whose signals run `handler`, then `thread` when it asks. */
interface Virqfd {
  readonly eventfd: EventfdCtx;
  readonly wake: (events: number) => void;
}

/** struct vfio_pci_irq_ctx */
export interface VfioPciIrqCtx {
  trigger: EventfdCtx | undefined;
  unmask: Virqfd | undefined;
  masked: boolean;
}

/** Sentinel of `irqType`: no interrupt mode enabled. */
const IRQ_NONE = VFIO_PCI_NUM_IRQS;

function isIntx(vdev: VfioPciCoreDevice): boolean {
  return vdev.irqType === VFIO_PCI_INTX_IRQ_INDEX;
}

function isIrqNone(vdev: VfioPciCoreDevice): boolean {
  return vdev.irqType === IRQ_NONE;
}

// --- virqfd -----------------------------------------------------------------------------------

/** @see vfio_virqfd_disable */
function vfioVirqfdDisable(ctx: VfioPciIrqCtx): void {
  const v = ctx.unmask;
  if (!v) return;
  eventfdRemoveWait(v.eventfd, v.wake);
  v.eventfd.put();
  ctx.unmask = undefined;
}

/**
 * Run `handler` on every signal of `fd` (the count is consumed), then `thread` when the handler
 * says so; POLLHUP (the eventfd's release) tears it down. EBUSY when one is already set; a
 * count already raised runs the handler at once.
 * @see vfio_virqfd_enable
 */
function vfioVirqfdEnable(
  vdev: VfioPciCoreDevice,
  ctx: VfioPciIrqCtx,
  handler: () => boolean,
  thread: () => void,
  fd: number,
): void {
  if (vdev.kernel.shouldFail("virqfd")) fail(ENOMEM, "virqfd");
  const eventfd = eventfdCtxFdget(vdev.kernel.current.process.files, fd);
  if (ctx.unmask) {
    eventfd.put();
    fail(EBUSY, "unmask eventfd already set");
  }
  const virqfd: Virqfd = {
    eventfd,
    wake: (events) => {
      if (events & POLLIN) {
        eventfdCtxDoRead(eventfd);
        if (handler()) thread();
      }
      if (events & POLLHUP && ctx.unmask === virqfd) vfioVirqfdDisable(ctx);
    },
  };
  ctx.unmask = virqfd;
  if (eventfdPollWait(eventfd, virqfd.wake) & POLLIN && handler()) thread();
}

// --- memory decode around MSI programming -------------------------------------------------------

/** @see vfio_pci_memory_lock_and_enable */
function memoryLockAndEnable(vdev: VfioPciCoreDevice): number {
  vdev.memoryLock.downWrite();
  const cmd = vdev.pdev.command;
  if (!(cmd & PCI_COMMAND_MEMORY)) vdev.pdev.writeConfig(PCI_COMMAND, 2, cmd | PCI_COMMAND_MEMORY);
  return cmd;
}

/** @see vfio_pci_memory_unlock_and_restore */
function memoryUnlockAndRestore(vdev: VfioPciCoreDevice, cmd: number): void {
  if (vdev.pdev.command !== cmd) vdev.pdev.writeConfig(PCI_COMMAND, 2, cmd);
  vdev.memoryLock.upWrite();
}

function withMemoryEnabled<T>(vdev: VfioPciCoreDevice, fn: () => T): T {
  const cmd = memoryLockAndEnable(vdev);
  try {
    return fn();
  } finally {
    memoryUnlockAndRestore(vdev, cmd);
  }
}

// --- INTx -------------------------------------------------------------------------------------

/** @see vfio_send_intx_eventfd */
function vfioSendIntxEventfd(vdev: VfioPciCoreDevice): void {
  if (!isIntx(vdev) || vdev.virqDisabled) return;
  const trigger = vdev.irqCtx.get(0)?.trigger;
  if (trigger) eventfdSignal(trigger);
}

/** Mask INTx; whether the state changed. Caller holds igate. @see __vfio_pci_intx_mask */
function vfioPciIntxMaskLocked(vdev: VfioPciCoreDevice): boolean {
  const pdev = vdev.pdev;
  // A mask through config space while INTx is not in use: the physical bit follows.
  if (!isIntx(vdev)) {
    if (vdev.pci23) pciIntx(pdev, false);
    return false;
  }
  const ctx = vdev.irqCtx.get(0);
  if (!ctx) throw new KernelWarning("INTx enabled without a context");
  if (ctx.masked) return false;
  if (vdev.pci23) pciIntx(pdev, false);
  else disableIrq(pdev);
  ctx.masked = true;
  return true;
}

/**
 * The unmask handler (also the virqfd handler): true when the interrupt is still pending,
 * INTx then stays masked and the trigger must fire again.
 * @see vfio_pci_intx_unmask_handler
 */
function vfioPciIntxUnmaskHandler(vdev: VfioPciCoreDevice): boolean {
  const pdev = vdev.pdev;
  if (!isIntx(vdev)) {
    if (vdev.pci23) pciIntx(pdev, true);
    return false;
  }
  const ctx = vdev.irqCtx.get(0);
  if (!ctx) throw new KernelWarning("INTx enabled without a context");
  let pending = false;
  if (ctx.masked && !vdev.virqDisabled) {
    if (vdev.pci23) pending = !pciCheckAndUnmaskIntx(pdev);
    else {
      // The context is unmasked first: a still-asserted line fires again inside enable_irq.
      ctx.masked = false;
      enableIrq(pdev);
      return false;
    }
    ctx.masked = pending;
  }
  return pending;
}

/** @see __vfio_pci_intx_unmask */
function vfioPciIntxUnmaskLocked(vdev: VfioPciCoreDevice): void {
  if (vfioPciIntxUnmaskHandler(vdev)) vfioSendIntxEventfd(vdev);
}

/** COMMAND.INTX_DISABLE set by the user. @see vfio_pci_intx_mask */
export function vfioPciIntxMask(vdev: VfioPciCoreDevice): boolean {
  return vdev.igate.with(() => vfioPciIntxMaskLocked(vdev));
}

/** COMMAND.INTX_DISABLE cleared by the user. @see vfio_pci_intx_unmask */
export function vfioPciIntxUnmask(vdev: VfioPciCoreDevice): void {
  vdev.igate.with(() => vfioPciIntxUnmaskLocked(vdev));
}

/**
 * The hard-IRQ handler: without PCI 2.3 masking the line is disabled at the interrupt
 * controller; with it, only an unmasked function that is asserting is masked. Either way the
 * interrupt stays masked until the user unmasks it (AUTOMASKED).
 * @see vfio_intx_handler
 */
function vfioIntxHandler(vdev: VfioPciCoreDevice): void {
  const ctx = vdev.irqCtx.get(0);
  if (!ctx) return;
  let handled = false;
  if (!vdev.pci23) {
    disableIrq(vdev.pdev);
    ctx.masked = true;
    handled = true;
  } else if (!ctx.masked && pciCheckAndMaskIntx(vdev.pdev)) {
    ctx.masked = true;
    handled = true;
  }
  if (handled) vfioSendIntxEventfd(vdev);
}

/** @see vfio_intx_enable */
function vfioIntxEnable(vdev: VfioPciCoreDevice, trigger: EventfdCtx | undefined): void {
  const pdev = vdev.pdev;
  if (!isIrqNone(vdev)) fail(EINVAL, "another interrupt mode is enabled");
  if (!pdev.irq) fail(ENODEV, `${pdev.name} has no IRQ`);
  if (vdev.kernel.shouldFail("vfio_irq_ctx_alloc")) fail(ENOMEM, "irq ctx");
  const ctx: VfioPciIrqCtx = { trigger, unmask: undefined, masked: vdev.virqDisabled };
  vdev.irqCtx.set(0, ctx);
  // The physical DisINTx follows the mask; without it the line starts disabled when masked.
  if (vdev.pci23) pciIntx(pdev, !ctx.masked);
  vdev.irqType = VFIO_PCI_INTX_IRQ_INDEX;
  try {
    requestIntx(pdev, () => vfioIntxHandler(vdev), !vdev.pci23 && ctx.masked);
  } catch (e) {
    vdev.irqType = IRQ_NONE;
    vdev.irqCtx.delete(0);
    throw e;
  }
}

/** Swap the trigger of enabled INTx (undefined: no eventfd, INTx stays enabled). */
function vfioIntxSetSignal(vdev: VfioPciCoreDevice, trigger: EventfdCtx | undefined): void {
  const ctx = vdev.irqCtx.get(0);
  if (!ctx) throw new KernelWarning("INTx enabled without a context");
  const old = ctx.trigger;
  ctx.trigger = trigger;
  old?.put();
}

/** @see vfio_intx_disable */
function vfioIntxDisable(vdev: VfioPciCoreDevice): void {
  const ctx = vdev.irqCtx.get(0);
  if (!ctx) throw new KernelWarning("INTx enabled without a context");
  vfioVirqfdDisable(ctx);
  freeIntx(vdev.pdev);
  ctx.trigger?.put();
  vdev.irqCtx.delete(0);
  vdev.irqType = IRQ_NONE;
}

type SetIrqsFn = (
  vdev: VfioPciCoreDevice,
  index: number,
  start: number,
  count: number,
  flags: number,
  data: Uint8Array | undefined,
) => number;

function s32(data: Uint8Array, i: number): number {
  return new DataView(data.buffer, data.byteOffset).getInt32(4 * i, true);
}

/** @see vfio_pci_set_intx_mask */
const vfioPciSetIntxMask: SetIrqsFn = (vdev, _index, start, count, flags, data) => {
  if (!isIntx(vdev) || start !== 0 || count !== 1) fail(EINVAL, "INTx mask needs INTx, 0, 1");
  if (flags & VFIO_IRQ_SET_DATA_NONE) vfioPciIntxMaskLocked(vdev);
  else if (flags & VFIO_IRQ_SET_DATA_BOOL) {
    if (data![0]) vfioPciIntxMaskLocked(vdev);
  } else if (flags & VFIO_IRQ_SET_DATA_EVENTFD) fail(ENOTTY, "INTx mask eventfd");
  return 0;
};

/** @see vfio_pci_set_intx_unmask */
const vfioPciSetIntxUnmask: SetIrqsFn = (vdev, _index, start, count, flags, data) => {
  if (!isIntx(vdev) || start !== 0 || count !== 1) fail(EINVAL, "INTx unmask needs INTx, 0, 1");
  if (flags & VFIO_IRQ_SET_DATA_NONE) vfioPciIntxUnmaskLocked(vdev);
  else if (flags & VFIO_IRQ_SET_DATA_BOOL) {
    if (data![0]) vfioPciIntxUnmaskLocked(vdev);
  } else if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
    const ctx = vdev.irqCtx.get(0);
    if (!ctx) throw new KernelWarning("INTx enabled without a context");
    const fd = s32(data!, 0);
    if (fd >= 0)
      vfioVirqfdEnable(
        vdev,
        ctx,
        () => vfioPciIntxUnmaskHandler(vdev),
        () => vfioSendIntxEventfd(vdev),
        fd,
      );
    else vfioVirqfdDisable(ctx);
  }
  return 0;
};

/** @see vfio_pci_set_intx_trigger */
const vfioPciSetIntxTrigger: SetIrqsFn = (vdev, _index, start, count, flags, data) => {
  if (isIntx(vdev) && !count && flags & VFIO_IRQ_SET_DATA_NONE) {
    vfioIntxDisable(vdev);
    return 0;
  }
  if (!(isIntx(vdev) || isIrqNone(vdev)) || start !== 0 || count !== 1)
    fail(EINVAL, "INTx trigger needs INTx or none, 0, 1");
  if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
    const fd = s32(data!, 0);
    const trigger = fd >= 0 ? eventfdCtxFdget(vdev.kernel.current.process.files, fd) : undefined;
    try {
      if (isIntx(vdev)) vfioIntxSetSignal(vdev, trigger);
      else vfioIntxEnable(vdev, trigger);
    } catch (e) {
      trigger?.put();
      throw e;
    }
    return 0;
  }
  if (!isIntx(vdev)) fail(EINVAL, "INTx loopback without INTx");
  if (flags & VFIO_IRQ_SET_DATA_NONE || (flags & VFIO_IRQ_SET_DATA_BOOL && data![0]))
    vfioSendIntxEventfd(vdev);
  return 0;
};

// --- MSI / MSI-X ------------------------------------------------------------------------------

/**
 * Allocate `nvec` vectors; a positive return is the smaller number the host could give (the
 * caller returns it to the user, who may retry with it).
 * @see vfio_msi_enable
 */
function vfioMsiEnable(vdev: VfioPciCoreDevice, nvec: number, msix: boolean): number {
  if (!isIrqNone(vdev)) fail(EINVAL, "another interrupt mode is enabled");
  const got = withMemoryEnabled(vdev, () => {
    const n = pciAllocIrqVectors(vdev.pdev, 1, nvec, msix ? PCI_IRQ_MSIX : PCI_IRQ_MSI);
    if (n < nvec) pciFreeIrqVectors(vdev.pdev);
    return n;
  });
  if (got < nvec) return got;
  vdev.irqType = msix ? VFIO_PCI_MSIX_IRQ_INDEX : VFIO_PCI_MSI_IRQ_INDEX;
  // fls(nvec * 2 - 1) - 1: log2 of nvec rounded up to a power of two.
  if (!msix) vdev.msiQmax = 31 - Math.clz32(nvec * 2 - 1);
  return 0;
}

/** The Linux IRQ of `vector`, allocating it on demand with dynamic MSI-X. @see vfio_msi_alloc_irq */
function vfioMsiAllocIrq(vdev: VfioPciCoreDevice, vector: number, msix: boolean): number {
  const pdev = vdev.pdev;
  try {
    return pciIrqVector(pdev, vector);
  } catch (e) {
    if (!isKernelError(e) || !msix || !vdev.hasDynMsix) throw e;
  }
  return withMemoryEnabled(vdev, () => pciMsixAllocIrqAt(pdev, vector));
}

/**
 * Point `vector` at eventfd `fd` (-1: none). An existing context is torn down first (its
 * Linux IRQ stays allocated until MSI is disabled).
 * @see vfio_msi_set_vector_signal
 */
function vfioMsiSetVectorSignal(
  vdev: VfioPciCoreDevice,
  vector: number,
  fd: number,
  msix: boolean,
): void {
  const pdev = vdev.pdev;
  const old = vdev.irqCtx.get(vector);
  if (old) {
    withMemoryEnabled(vdev, () => freeIrq(pdev, vector));
    old.trigger?.put();
    vdev.irqCtx.delete(vector);
  }
  if (fd < 0) return;
  if (!old) vfioMsiAllocIrq(vdev, vector, msix);
  if (vdev.kernel.shouldFail("vfio_irq_ctx_alloc")) fail(ENOMEM, "irq ctx");
  const trigger = eventfdCtxFdget(vdev.kernel.current.process.files, fd);
  try {
    withMemoryEnabled(vdev, () => requestIrq(pdev, vector, () => eventfdSignal(trigger)));
  } catch (e) {
    trigger.put();
    throw e;
  }
  vdev.irqCtx.set(vector, { trigger, unmask: undefined, masked: false });
}

/** On the first failure every vector from `start` up to the failed one is reset. @see vfio_msi_set_block */
function vfioMsiSetBlock(
  vdev: VfioPciCoreDevice,
  start: number,
  count: number,
  fds: Uint8Array | undefined,
  msix: boolean,
): void {
  let j = start;
  try {
    for (let i = 0; i < count; i++, j++)
      vfioMsiSetVectorSignal(vdev, j, fds ? s32(fds, i) : -1, msix);
  } catch (e) {
    for (let i = start; i <= j; i++) vfioMsiSetVectorSignal(vdev, i, -1, msix);
    throw e;
  }
}

/** @see vfio_msi_disable */
function vfioMsiDisable(vdev: VfioPciCoreDevice, msix: boolean): void {
  for (const [vector, ctx] of [...vdev.irqCtx]) {
    vfioVirqfdDisable(ctx);
    vfioMsiSetVectorSignal(vdev, vector, -1, msix);
  }
  withMemoryEnabled(vdev, () => pciFreeIrqVectors(vdev.pdev));
  vdev.irqType = IRQ_NONE;
}

/** @see vfio_pci_set_msi_trigger */
const vfioPciSetMsiTrigger: SetIrqsFn = (vdev, index, start, count, flags, data) => {
  const msix = index === VFIO_PCI_MSIX_IRQ_INDEX;
  if (vdev.irqType === index && !count && flags & VFIO_IRQ_SET_DATA_NONE) {
    vfioMsiDisable(vdev, msix);
    return 0;
  }
  if (!(vdev.irqType === index || isIrqNone(vdev)))
    fail(EINVAL, "another interrupt mode is enabled");
  if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
    if (vdev.irqType === index) {
      vfioMsiSetBlock(vdev, start, count, data, msix);
      return 0;
    }
    const ret = vfioMsiEnable(vdev, start + count, msix);
    if (ret) return ret;
    try {
      vfioMsiSetBlock(vdev, start, count, data, msix);
    } catch (e) {
      vfioMsiDisable(vdev, msix);
      throw e;
    }
    return 0;
  }
  if (vdev.irqType !== index) fail(EINVAL, "loopback on a disabled index");
  for (let i = start; i < start + count; i++) {
    const trigger = vdev.irqCtx.get(i)?.trigger;
    if (!trigger) continue;
    if (flags & VFIO_IRQ_SET_DATA_NONE || data![i - start]) eventfdSignal(trigger);
  }
  return 0;
};

// --- ERR / REQ --------------------------------------------------------------------------------

type TriggerSlot = "errTrigger" | "reqTrigger";

/** @see vfio_pci_set_ctx_trigger_single */
function vfioPciSetCtxTriggerSingle(
  vdev: VfioPciCoreDevice,
  slot: TriggerSlot,
  count: number,
  flags: number,
  data: Uint8Array | undefined,
): number {
  const cur = vdev[slot];
  if (flags & VFIO_IRQ_SET_DATA_NONE) {
    if (cur) {
      if (count) eventfdSignal(cur);
      else {
        cur.put();
        vdev[slot] = undefined;
      }
      return 0;
    }
  } else if (flags & VFIO_IRQ_SET_DATA_BOOL) {
    if (!count) fail(EINVAL, "count 0 with a bool");
    if (data![0] && cur) eventfdSignal(cur);
    return 0;
  } else if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
    if (!count) fail(EINVAL, "count 0 with an eventfd");
    const fd = s32(data!, 0);
    if (fd === -1) {
      cur?.put();
      vdev[slot] = undefined;
    } else if (fd >= 0) {
      const next = eventfdCtxFdget(vdev.kernel.current.process.files, fd);
      cur?.put();
      vdev[slot] = next;
    }
    return 0;
  }
  return fail(EINVAL, "no trigger to signal or release");
}

/** @see vfio_pci_set_err_trigger */
const vfioPciSetErrTrigger: SetIrqsFn = (vdev, index, start, count, flags, data) => {
  if (index !== VFIO_PCI_ERR_IRQ_INDEX || start !== 0 || count > 1) fail(EINVAL, "ERR: 0, <= 1");
  return vfioPciSetCtxTriggerSingle(vdev, "errTrigger", count, flags, data);
};

/** @see vfio_pci_set_req_trigger */
const vfioPciSetReqTrigger: SetIrqsFn = (vdev, index, start, count, flags, data) => {
  if (index !== VFIO_PCI_REQ_IRQ_INDEX || start !== 0 || count > 1) fail(EINVAL, "REQ: 0, <= 1");
  return vfioPciSetCtxTriggerSingle(vdev, "reqTrigger", count, flags, data);
};

// --- ioctls -----------------------------------------------------------------------------------

/** @see vfio_pci_get_irq_count */
function vfioPciGetIrqCount(vdev: VfioPciCoreDevice, index: number): number {
  switch (index) {
    case VFIO_PCI_INTX_IRQ_INDEX:
      return vdev.vconfig?.[PCI_INTERRUPT_PIN] ? 1 : 0;
    case VFIO_PCI_MSI_IRQ_INDEX:
      return pciMsiVecCount(vdev.pdev);
    case VFIO_PCI_MSIX_IRQ_INDEX:
      return pciMsixVecCount(vdev.pdev);
    case VFIO_PCI_ERR_IRQ_INDEX:
      return vdev.pdev.pcieCap ? 1 : 0;
    case VFIO_PCI_REQ_IRQ_INDEX:
      return 1;
    default:
      return 0;
  }
}

/**
 * The handler for (index, action); undefined gives ENOTTY: MSI / MSI-X have no mask or unmask,
 * ERR exists on PCI Express only, and several action bits at once match nothing.
 * @see vfio_pci_set_irqs_ioctl
 */
function setIrqsHandler(
  vdev: VfioPciCoreDevice,
  index: number,
  flags: number,
): SetIrqsFn | undefined {
  const action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
  switch (index) {
    case VFIO_PCI_INTX_IRQ_INDEX:
      if (action === VFIO_IRQ_SET_ACTION_MASK) return vfioPciSetIntxMask;
      if (action === VFIO_IRQ_SET_ACTION_UNMASK) return vfioPciSetIntxUnmask;
      if (action === VFIO_IRQ_SET_ACTION_TRIGGER) return vfioPciSetIntxTrigger;
      return undefined;
    case VFIO_PCI_MSI_IRQ_INDEX:
    case VFIO_PCI_MSIX_IRQ_INDEX:
      return action === VFIO_IRQ_SET_ACTION_TRIGGER ? vfioPciSetMsiTrigger : undefined;
    case VFIO_PCI_ERR_IRQ_INDEX:
      return action === VFIO_IRQ_SET_ACTION_TRIGGER && vdev.pdev.pcieCap
        ? vfioPciSetErrTrigger
        : undefined;
    case VFIO_PCI_REQ_IRQ_INDEX:
      return action === VFIO_IRQ_SET_ACTION_TRIGGER ? vfioPciSetReqTrigger : undefined;
    default:
      return undefined;
  }
}

/** Caller holds igate (or is the close path). @see vfio_pci_set_irqs_ioctl */
function vfioPciSetIrqs(
  vdev: VfioPciCoreDevice,
  flags: number,
  index: number,
  start: number,
  count: number,
  data: Uint8Array | undefined,
): number {
  const fn = setIrqsHandler(vdev, index, flags);
  if (!fn) return fail(ENOTTY, `no handler for index ${index} flags ${flags}`);
  return fn(vdev, index, start, count, flags, data);
}

/** @see vfio_pci_ioctl_get_irq_info */
export function vfioPciIoctlGetIrqInfo(vdev: VfioPciCoreDevice, arg: bigint): number {
  const kernel = vdev.kernel;
  const info = vfio_irq_info.decode(copyFromUser(kernel, arg, vfio_irq_info.size));
  if (info.argsz < vfio_irq_info.size || info.index >= VFIO_PCI_NUM_IRQS)
    fail(EINVAL, "argsz or index");
  if (info.index === VFIO_PCI_ERR_IRQ_INDEX && !vdev.pdev.pcieCap)
    fail(EINVAL, "ERR on conventional PCI");
  info.flags = VFIO_IRQ_INFO_EVENTFD;
  info.count = vfioPciGetIrqCount(vdev, info.index);
  if (info.index === VFIO_PCI_INTX_IRQ_INDEX)
    info.flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
  else if (info.index !== VFIO_PCI_MSIX_IRQ_INDEX || !vdev.hasDynMsix)
    info.flags |= VFIO_IRQ_INFO_NORESIZE;
  copyToUser(kernel, arg, vfio_irq_info.encode(info));
  return 0;
}

/** @see vfio_pci_ioctl_set_irqs */
export function vfioPciIoctlSetIrqs(vdev: VfioPciCoreDevice, arg: bigint): number {
  const kernel = vdev.kernel;
  const hdr = vfio_irq_set.decode(copyFromUser(kernel, arg, vfio_irq_set.size));
  const max = vfioPciGetIrqCount(vdev, hdr.index);
  const dataSize = vfioSetIrqsValidateAndPrepare(hdr, max, VFIO_PCI_NUM_IRQS);
  let data: Uint8Array | undefined;
  if (dataSize) {
    data = copyFromUser(kernel, arg + BigInt(vfio_irq_set.size), dataSize);
    if (kernel.shouldFail("memdup_user")) fail(ENOMEM, "irq set data");
  }
  return vdev.igate.with(() =>
    vfioPciSetIrqs(vdev, hdr.flags, hdr.index, hdr.start, hdr.count, data),
  );
}

/**
 * Close-time teardown: whichever of INTx / MSI / MSI-X is enabled is disabled (none: the
 * ENOTTY of the missing handler is ignored), and the user's INTx disable is forgotten.
 * @see vfio_pci_core_disable
 */
export function vfioPciIrqsDisable(vdev: VfioPciCoreDevice): void {
  if (!isIrqNone(vdev))
    vfioPciSetIrqs(
      vdev,
      VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
      vdev.irqType,
      0,
      0,
      undefined,
    );
  vdev.virqDisabled = false;
}

/** The ERR and REQ eventfds are released when the device is closed. @see vfio_pci_core_close_device */
export function vfioPciReleaseNotifiers(vdev: VfioPciCoreDevice): void {
  vdev.igate.with(() => {
    vdev.errTrigger?.put();
    vdev.errTrigger = undefined;
    vdev.reqTrigger?.put();
    vdev.reqTrigger = undefined;
  });
}

/**
 * The device is being unbound while open: ask the user to release it through the REQ eventfd;
 * `count` numbers the request. Whether a request reached the user.
 * @see vfio_pci_core_request
 */
export function vfioPciCoreRequest(vdev: VfioPciCoreDevice, count: number): boolean {
  return vdev.igate.with(() => {
    if (vdev.reqTrigger) {
      if (count % 10 === 0) vdev.kernel.trace.emit("vfio-pci:request", { dev: vdev.name, count });
      eventfdSignal(vdev.reqTrigger);
      return true;
    }
    return false;
  });
}

/**
 * An uncorrectable error reported by AER: the user hears of it through the ERR eventfd.
 * @see vfio_pci_core_aer_err_detected
 */
export function vfioPciAerErrDetected(vdev: VfioPciCoreDevice): void {
  vdev.igate.with(() => {
    if (vdev.errTrigger) eventfdSignal(vdev.errTrigger);
  });
}

declare module "@x/kernel" {
  interface TraceEvents {
    "vfio-pci:request": { dev: string; count: number };
  }
}
