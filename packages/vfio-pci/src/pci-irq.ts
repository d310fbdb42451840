import { EINVAL, ENOMEM, ENOSPC, ENOTCONN, ERANGE, KernelWarning, fail } from "@x/kernel";
import type { PciDev } from "./pci.js";
import {
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_DATA,
  PCI_MSIX_ENTRY_LOWER_ADDR,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_UPPER_ADDR,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_INTERRUPT_PIN,
  PCI_STATUS,
  PCI_STATUS_INTERRUPT,
} from "./pci-regs.js";

/**
 * Interrupts of a PCI function, both sides of the wire.
 *
 * Host side (the PCI core's MSI code, drivers/pci/msi/api.c and msi.c, and the IRQ core,
 * kernel/irq/manage.c): `pciAllocIrqVectors` / `pciFreeIrqVectors` program the MSI capability
 * or the MSI-X table in the BAR with the host's messages, `requestIrq` / `freeIrq` attach a
 * handler to one vector (an MSI-X entry is unmasked while a handler is attached), `disableIrq`
 * / `enableIrq` mask the INTx line at the interrupt controller, and `pciIntx`,
 * `pciCheckAndMaskIntx` and `pciCheckAndUnmaskIntx` use COMMAND.INTX_DISABLE (PCI 2.3 masking).
 *
 * Device side (what a device model calls when its work completes): `pciIntxAssert` /
 * `pciIntxDeassert` drive the level-triggered INTx line and STATUS.INTERRUPT; `pciMsiRaise`
 * sends the message of one MSI / MSI-X vector. A message needs bus mastering (it is a memory
 * write); a masked vector only sets its pending bit. A level interrupt that is still asserted
 * fires again when it is unmasked.
 *
 * Decision: every function has its own INTx line (no IRQ sharing between functions).
 */

/** An interrupt handler (the hard-IRQ part; the model has no threaded part). */
export type IrqHandler = () => void;

/** include/linux/interrupt.h: a pin whose interrupt is routed nowhere. */
export const IRQ_NOTCONNECTED = 0x80000000;

/** PCI_IRQ_* of pci_alloc_irq_vectors (include/linux/pci.h). */
export const PCI_IRQ_MSI = 1 << 1;
export const PCI_IRQ_MSIX = 1 << 2;

/** MSI message address of the x86 local APIC window (arch/x86/include/asm/msidef.h). */
const MSI_ADDR_BASE_LO = 0xfee00000;

/** Host interrupt state of one function (struct irq_desc and the msi_desc list). */
export class PciHostIrq {
  /** Handler on the INTx line (request_irq(pdev->irq)). */
  intxHandler: IrqHandler | undefined;
  /** disable_irq depth of the INTx line. */
  intxDepth = 0;
  /** PCI_IRQ_MSI / PCI_IRQ_MSIX while vectors are allocated, else 0. */
  msiType = 0;
  /** Linux IRQ numbers of the allocated vectors (sparse after dynamic MSI-X allocation). */
  readonly vectors: Array<number | undefined> = [];
  readonly handlers: Array<IrqHandler | undefined> = [];
}

function cfgRead(pdev: PciDev, off: number, size: 1 | 2 | 4): number {
  return pdev.readConfig(off, size);
}

function msiDataOff(pdev: PciDev): number {
  const flags = cfgRead(pdev, pdev.msiCap + PCI_MSI_FLAGS, 2);
  return pdev.msiCap + (flags & PCI_MSI_FLAGS_64BIT ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32);
}

function msiMaskOff(pdev: PciDev): number {
  const flags = cfgRead(pdev, pdev.msiCap + PCI_MSI_FLAGS, 2);
  return pdev.msiCap + (flags & PCI_MSI_FLAGS_64BIT ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32);
}

/** Physical address of MSI-X table entry `nr` (or of the PBA qword holding bit `nr`). */
function msixEntryAddr(pdev: PciDev, nr: number): bigint {
  return pdev.resource(pdev.msixTableBar).start + BigInt(pdev.msixTableOffset + nr * 16);
}

function msixPbaAddr(pdev: PciDev, nr: number): bigint {
  return pdev.resource(pdev.msixPbaBar).start + BigInt(pdev.msixPbaOffset + 8 * (nr >> 6));
}

function readU32(pdev: PciDev, paddr: bigint): number {
  const b = new Uint8Array(4);
  pdev.kernel.mem.readPhys(paddr, b);
  return new DataView(b.buffer).getUint32(0, true);
}

function writeU32(pdev: PciDev, paddr: bigint, v: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  pdev.kernel.mem.writePhys(paddr, b);
}

/** Table size advertised by the MSI-X capability. */
export function pciMsixVecCount(pdev: PciDev): number {
  if (!pdev.msixCap) return 0;
  return (cfgRead(pdev, pdev.msixCap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE) + 1;
}

/** Vectors the MSI capability can request (Multiple Message Capable). */
export function pciMsiVecCount(pdev: PciDev): number {
  if (!pdev.msiCap) return 0;
  return 1 << ((cfgRead(pdev, pdev.msiCap + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_QMASK) >> 1);
}

/**
 * Power-on MSI-X table: every entry masked, nothing pending. The table and the PBA are each
 * one contiguous range of the BAR, so each is written at once (a function is reset at every
 * open and close of its VFIO device), from images built once per vector count and only read.
 */
export function pciMsixTableReset(pdev: PciDev): void {
  const n = pciMsixVecCount(pdev);
  const { table, pba } = msixPowerOnImage(n);
  pdev.kernel.mem.writePhys(msixEntryAddr(pdev, 0), table);
  pdev.kernel.mem.writePhys(msixPbaAddr(pdev, 0), pba);
}

const msixPowerOnImages = new Map<number, { table: Uint8Array; pba: Uint8Array }>();

function msixPowerOnImage(n: number): { table: Uint8Array; pba: Uint8Array } {
  let image = msixPowerOnImages.get(n);
  if (!image) {
    const table = new Uint8Array(n * PCI_MSIX_ENTRY_SIZE);
    const view = new DataView(table.buffer);
    const masked = PCI_MSIX_ENTRY_CTRL_MASKBIT;
    for (let i = 0; i < n; i++) {
      view.setUint32(i * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, masked, true);
    }
    image = { table, pba: new Uint8Array(8 * Math.ceil(n / 64)) };
    msixPowerOnImages.set(n, image);
  }
  return image;
}

function setMsixEntryMask(pdev: PciDev, nr: number, masked: boolean): void {
  writeU32(
    pdev,
    msixEntryAddr(pdev, nr) + BigInt(PCI_MSIX_ENTRY_VECTOR_CTRL),
    masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0,
  );
}

/**
 * pci_alloc_irq_vectors(pdev, min, max, type) for one type: the vectors granted (between
 * `min` and `max`, fewer when the host runs short), ENOSPC below `min`, EINVAL without the
 * capability or while the other kind is enabled. Programs the capability / table and sets
 * its enable bit.
 * @see pci_alloc_irq_vectors
 */
export function pciAllocIrqVectors(pdev: PciDev, min: number, max: number, type: number): number {
  const host = pdev.hostIrq;
  if (host.msiType) fail(EINVAL, `${pdev.name}: vectors already allocated`);
  if (max < min) fail(ERANGE, `${pdev.name}: ${max} vectors requested, at least ${min}`);
  const msix = type === PCI_IRQ_MSIX;
  const capable = msix ? pciMsixVecCount(pdev) : pciMsiVecCount(pdev);
  if (!capable) fail(EINVAL, `${pdev.name}: no ${msix ? "MSI-X" : "MSI"} capability`);
  const nvec = Math.min(max, capable, pdev.bus.root.irqVectorsLeft());
  if (nvec < min) fail(ENOSPC, `${pdev.name}: ${nvec} vectors available, ${min} needed`);
  if (pdev.kernel.shouldFail("pci_alloc_irq_vectors")) fail(ENOMEM, "msi descriptors");
  for (let i = 0; i < nvec; i++) {
    host.vectors.push(pdev.bus.root.allocIrq());
    host.handlers.push(undefined);
  }
  host.msiType = type;
  // pci_intx_for_msi: INTx is disabled while MSI or MSI-X is on.
  pciIntx(pdev, false);
  if (msix) {
    const ctl = pdev.msixCap + PCI_MSIX_FLAGS;
    pdev.writeConfig(
      ctl,
      2,
      cfgRead(pdev, ctl, 2) | PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL,
    );
    host.vectors.forEach((irq, i) => {
      if (irq !== undefined) msixWriteMsg(pdev, i, irq);
    });
    pdev.writeConfig(ctl, 2, cfgRead(pdev, ctl, 2) & ~PCI_MSIX_FLAGS_MASKALL);
  } else {
    const cap = pdev.msiCap;
    pdev.writeConfig(cap + PCI_MSI_ADDRESS_LO, 4, MSI_ADDR_BASE_LO);
    const flags = cfgRead(pdev, cap + PCI_MSI_FLAGS, 2);
    if (flags & PCI_MSI_FLAGS_64BIT) pdev.writeConfig(cap + PCI_MSI_ADDRESS_HI, 4, 0);
    pdev.writeConfig(msiDataOff(pdev), 2, (host.vectors[0] ?? 0) & 0xffff);
    const multiple = Math.ceil(Math.log2(nvec));
    pdev.writeConfig(
      cap + PCI_MSI_FLAGS,
      2,
      (flags & ~PCI_MSI_FLAGS_QSIZE) | (multiple << 4) | PCI_MSI_FLAGS_ENABLE,
    );
  }
  return nvec;
}

/** pci_free_irq_vectors: every handler must be gone; the capability is disabled. */
export function pciFreeIrqVectors(pdev: PciDev): void {
  const host = pdev.hostIrq;
  if (!host.msiType) return;
  if (host.handlers.some((h) => h !== undefined))
    throw new KernelWarning(`${pdev.name}: freeing vectors with handlers attached`);
  if (host.msiType === PCI_IRQ_MSIX) {
    const ctl = pdev.msixCap + PCI_MSIX_FLAGS;
    pdev.writeConfig(ctl, 2, cfgRead(pdev, ctl, 2) & ~PCI_MSIX_FLAGS_ENABLE);
  } else {
    const at = pdev.msiCap + PCI_MSI_FLAGS;
    pdev.writeConfig(at, 2, cfgRead(pdev, at, 2) & ~(PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE));
  }
  pdev.bus.root.freeIrqs(host.vectors.filter((v) => v !== undefined).length);
  host.vectors.length = 0;
  host.handlers.length = 0;
  host.msiType = 0;
  pciIntx(pdev, true);
}

/**
 * pci_msix_alloc_irq_at: one more MSI-X vector at table entry `nr` while MSI-X is enabled
 * (dynamic allocation, where the host's interrupt domain supports it).
 */
export function pciMsixAllocIrqAt(pdev: PciDev, nr: number): number {
  const host = pdev.hostIrq;
  if (host.msiType !== PCI_IRQ_MSIX || nr >= pciMsixVecCount(pdev))
    fail(EINVAL, `${pdev.name}: MSI-X entry ${nr}`);
  if (host.vectors[nr] !== undefined) fail(EINVAL, `${pdev.name}: entry ${nr} in use`);
  if (pdev.bus.root.irqVectorsLeft() < 1) fail(ENOSPC, "no vector left");
  if (pdev.kernel.shouldFail("pci_msix_alloc_irq_at")) fail(ENOMEM, "msi descriptor");
  const irq = pdev.bus.root.allocIrq();
  host.vectors[nr] = irq;
  msixWriteMsg(pdev, nr, irq);
  return irq;
}

function msixWriteMsg(pdev: PciDev, nr: number, irq: number): void {
  const e = msixEntryAddr(pdev, nr);
  writeU32(pdev, e + BigInt(PCI_MSIX_ENTRY_LOWER_ADDR), MSI_ADDR_BASE_LO);
  writeU32(pdev, e + BigInt(PCI_MSIX_ENTRY_UPPER_ADDR), 0);
  writeU32(pdev, e + BigInt(PCI_MSIX_ENTRY_DATA), irq);
}

/** pci_irq_vector: the Linux IRQ of vector `nr`, or EINVAL past the allocated ones. */
export function pciIrqVector(pdev: PciDev, nr: number): number {
  const irq = pdev.hostIrq.vectors[nr];
  if (irq === undefined) fail(EINVAL, `${pdev.name}: vector ${nr} not allocated`);
  return irq;
}

/** request_irq on vector `nr`; an MSI-X entry is unmasked once a handler is attached. */
export function requestIrq(pdev: PciDev, nr: number, handler: IrqHandler): void {
  const host = pdev.hostIrq;
  pciIrqVector(pdev, nr);
  if (host.handlers[nr]) throw new KernelWarning(`${pdev.name}: vector ${nr} already requested`);
  if (pdev.kernel.shouldFail("request_irq")) fail(ENOMEM, "irqaction");
  host.handlers[nr] = handler;
  if (host.msiType === PCI_IRQ_MSIX) setMsixEntryMask(pdev, nr, false);
}

/** free_irq on vector `nr`: the MSI-X entry is masked again. */
export function freeIrq(pdev: PciDev, nr: number): void {
  const host = pdev.hostIrq;
  if (!host.handlers[nr]) throw new KernelWarning(`${pdev.name}: freeing free vector ${nr}`);
  host.handlers[nr] = undefined;
  if (host.msiType === PCI_IRQ_MSIX) setMsixEntryMask(pdev, nr, true);
}

/**
 * request_irq(pdev->irq): ENOTCONN for a pin routed nowhere; `noAutoEn` leaves the line
 * disabled (IRQF_NO_AUTOEN) until `enableIrq`.
 */
export function requestIntx(pdev: PciDev, handler: IrqHandler, noAutoEn: boolean): void {
  const host = pdev.hostIrq;
  if (pdev.irq === IRQ_NOTCONNECTED) fail(ENOTCONN, `${pdev.name}: INTx not connected`);
  if (host.intxHandler) throw new KernelWarning(`${pdev.name}: INTx already requested`);
  if (pdev.kernel.shouldFail("request_irq")) fail(ENOMEM, "irqaction");
  host.intxHandler = handler;
  host.intxDepth = noAutoEn ? 1 : 0;
  intxDeliver(pdev);
}

/** free_irq(pdev->irq) */
export function freeIntx(pdev: PciDev): void {
  const host = pdev.hostIrq;
  if (!host.intxHandler) throw new KernelWarning(`${pdev.name}: freeing free INTx`);
  host.intxHandler = undefined;
  host.intxDepth = 0;
}

/** disable_irq_nosync(pdev->irq) */
export function disableIrq(pdev: PciDev): void {
  pdev.hostIrq.intxDepth++;
}

/** enable_irq(pdev->irq): a still-asserted level line fires again. */
export function enableIrq(pdev: PciDev): void {
  const host = pdev.hostIrq;
  if (host.intxDepth === 0) throw new KernelWarning(`${pdev.name}: unbalanced enable_irq`);
  if (--host.intxDepth === 0) intxDeliver(pdev);
}

/** pci_intx(pdev, enable): COMMAND.INTX_DISABLE cleared (enable) or set. */
export function pciIntx(pdev: PciDev, enable: boolean): void {
  const cmd = pdev.command;
  const next = enable ? cmd & ~PCI_COMMAND_INTX_DISABLE : cmd | PCI_COMMAND_INTX_DISABLE;
  if (next !== cmd) pdev.writeConfig(PCI_COMMAND, 2, next);
}

/**
 * pci_check_and_set_intx_mask: masking succeeds only when this function is asserting
 * (STATUS.INTERRUPT); unmasking only when it is not, so a pending interrupt is never lost.
 * @see pci_check_and_mask_intx
 */
function pciCheckAndSetIntxMask(pdev: PciDev, mask: boolean): boolean {
  const pending = (cfgRead(pdev, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT) !== 0;
  if (mask !== pending) return false;
  pciIntx(pdev, !mask);
  return true;
}

/** @see pci_check_and_mask_intx */
export function pciCheckAndMaskIntx(pdev: PciDev): boolean {
  return pciCheckAndSetIntxMask(pdev, true);
}

/** @see pci_check_and_unmask_intx */
export function pciCheckAndUnmaskIntx(pdev: PciDev): boolean {
  return pciCheckAndSetIntxMask(pdev, false);
}

/** The level-triggered line reaches its handler when asserted, not disabled and unmasked. */
export function intxDeliver(pdev: PciDev): void {
  const host = pdev.hostIrq;
  if (
    pdev.intxAsserted &&
    host.intxHandler &&
    host.intxDepth === 0 &&
    !(pdev.command & PCI_COMMAND_INTX_DISABLE)
  )
    host.intxHandler();
}

/** Device side: assert INTx (STATUS.INTERRUPT set; delivered unless masked). */
export function pciIntxAssert(pdev: PciDev): void {
  if (!pdev.config[PCI_INTERRUPT_PIN]) throw new KernelWarning(`${pdev.name} has no INTx pin`);
  pdev.intxAsserted = true;
  pdev.config[PCI_STATUS] = pdev.config[PCI_STATUS]! | PCI_STATUS_INTERRUPT;
  intxDeliver(pdev);
}

/** Device side: deassert INTx. */
export function pciIntxDeassert(pdev: PciDev): void {
  pdev.intxAsserted = false;
  pdev.config[PCI_STATUS] = pdev.config[PCI_STATUS]! & ~PCI_STATUS_INTERRUPT;
}

/**
 * Device side: send the message of MSI / MSI-X vector `nr`. Dropped without bus mastering or
 * with the capability disabled; a masked vector (MSI mask bit, MSI-X function mask or entry
 * mask) sets its pending bit instead. Returns whether the message was sent.
 */
export function pciMsiRaise(pdev: PciDev, nr: number): boolean {
  if (!pdev.busMaster) return false;
  const host = pdev.hostIrq;
  if (pdev.msixCap) {
    const ctl = cfgRead(pdev, pdev.msixCap + PCI_MSIX_FLAGS, 2);
    if (ctl & PCI_MSIX_FLAGS_ENABLE) {
      if (nr >= pciMsixVecCount(pdev))
        throw new KernelWarning(`${pdev.name}: MSI-X vector ${nr} outside the table`);
      const vctl = readU32(pdev, msixEntryAddr(pdev, nr) + BigInt(PCI_MSIX_ENTRY_VECTOR_CTRL));
      if (ctl & PCI_MSIX_FLAGS_MASKALL || vctl & PCI_MSIX_ENTRY_CTRL_MASKBIT) {
        const pba = msixPbaAddr(pdev, nr) + BigInt(((nr & 63) >> 5) * 4);
        writeU32(pdev, pba, readU32(pdev, pba) | (1 << (nr & 31)));
        return false;
      }
      host.handlers[nr]?.();
      return true;
    }
  }
  if (pdev.msiCap) {
    const flags = cfgRead(pdev, pdev.msiCap + PCI_MSI_FLAGS, 2);
    if (flags & PCI_MSI_FLAGS_ENABLE) {
      if (nr >= 1 << ((flags & PCI_MSI_FLAGS_QSIZE) >> 4)) return false;
      if (flags & PCI_MSI_FLAGS_MASKBIT && cfgRead(pdev, msiMaskOff(pdev), 4) & (1 << nr)) {
        // The Pending Bits register follows the Mask Bits; the device sets it, not software.
        const pending = msiMaskOff(pdev) + 4;
        for (let i = 0; i < 4; i++)
          pdev.config[pending + i] = pdev.config[pending + i]! | (((1 << nr) >>> (8 * i)) & 0xff);
        return false;
      }
      host.handlers[nr]?.();
      return true;
    }
  }
  return false;
}

/**
 * pci_restore_msi_state: after a reset, the allocated MSI-X entries get their messages back,
 * unmasked where a handler is attached (the MSI capability is restored with config space).
 */
export function pciRestoreMsiState(pdev: PciDev): void {
  const host = pdev.hostIrq;
  if (host.msiType !== PCI_IRQ_MSIX) return;
  host.vectors.forEach((irq, i) => {
    if (irq === undefined) return;
    msixWriteMsg(pdev, i, irq);
    setMsixEntryMask(pdev, i, host.handlers[i] === undefined);
  });
}

/** Size in bytes of the MSI-X table (QSIZE + 1 entries). */
export function pciMsixTableSize(pdev: PciDev): number {
  return pciMsixVecCount(pdev) * PCI_MSIX_ENTRY_SIZE;
}
