/**
 * The PCI core's interrupt helpers as drivers/pci/msi/{api,msi}.c and kernel/irq/manage.c
 * define them (pci_alloc_irq_vectors, pci_free_irq_vectors, pci_msix_alloc_irq_at,
 * request_irq / free_irq, disable_irq / enable_irq, pci_restore_msi_state), and the device side
 * of a message: an MSI-X entry of 16 bytes (address, upper address, data, vector control), the
 * Pending Bit Array one bit per entry in qwords, INTx as a level-triggered line.
 */
import { EINVAL, ENOMEM, ENOSPC, ENOTCONN, ERANGE, Kernel, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { type PciDev, type PciDevSpec, pciRoot } from "../src/pci.js";
import {
  IRQ_NOTCONNECTED,
  PCI_IRQ_MSI,
  PCI_IRQ_MSIX,
  disableIrq,
  enableIrq,
  freeIntx,
  freeIrq,
  pciAllocIrqVectors,
  pciFreeIrqVectors,
  pciIntxAssert,
  pciIntxDeassert,
  pciMsiRaise,
  pciMsixAllocIrqAt,
  requestIntx,
  requestIrq,
} from "../src/pci-irq.js";
import {
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSI_FLAGS,
} from "../src/pci-regs.js";
import { catchErr } from "./helpers.js";

const MSIX: PciDevSpec = {
  vendor: 0x15b3,
  device: 0x1017,
  bars: [{ type: "mem64", size: 0x10000n }],
  msix: { vectors: 128, tableBar: 0, tableOffset: 0 },
};

function device(spec: PciDevSpec): PciDev {
  const kernel = new Kernel();
  const d = pciRoot(kernel).newBus().addDevice(spec);
  d.writeConfig(PCI_COMMAND, 2, PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY);
  return d;
}

function bar0(d: PciDev, off: number, len: number): number[] {
  const b = new Uint8Array(len);
  d.kernel.mem.readPhys(d.resource(0).start + BigInt(off), b);
  return [...b];
}

/** The four dwords of MSI-X entry `nr`: address, upper address, data, vector control. */
function entry(d: PciDev, nr: number): number[] {
  const b = Uint8Array.from(bar0(d, 16 * nr, 16));
  const v = new DataView(b.buffer);
  return [0, 4, 8, 12].map((o) => v.getUint32(o, true));
}

/** Pending Bit Array qwords as two dwords each (the PBA follows the 128-entry table). */
function pba(d: PciDev): number[] {
  const b = Uint8Array.from(bar0(d, 128 * 16, 16));
  const v = new DataView(b.buffer);
  return [0, 4, 8, 12].map((o) => v.getUint32(o, true));
}

function errno(fn: () => unknown): number | undefined {
  return (catchErr(fn) as { errno?: number } | undefined)?.errno;
}

describe("MSI-X table and PBA", () => {
  it("pci_alloc_irq_vectors writes each entry's message; masked vectors set their PBA bit, also past 32 and 64", () => {
    const d = device(MSIX);
    expect(pciAllocIrqVectors(d, 1, 128, PCI_IRQ_MSIX)).toBe(128);
    const irqs = d.hostIrq.vectors;
    for (const nr of [0, 1, 127]) expect(entry(d, nr)).toEqual([0xfee00000, 0, irqs[nr], 1]);
    // No handler attached: every entry is still masked, so a message only sets its pending bit.
    for (const nr of [1, 33, 65, 127]) expect(pciMsiRaise(d, nr)).toBe(false);
    expect(pba(d)).toEqual([1 << 1, 1 << 1, 1 << 1, 0x80000000]);
    // Attached: unmasked and sent, without a handler call for a vector that has none.
    const fired: number[] = [];
    requestIrq(d, 65, () => fired.push(65));
    expect(entry(d, 65)[3]).toBe(0);
    expect(pciMsiRaise(d, 65)).toBe(true);
    expect(fired).toEqual([65]);
    freeIrq(d, 65);
    expect(entry(d, 65)[3]).toBe(1);
    // An entry unmasked behind the host's back (a mapped table page) is sent without a handler.
    d.kernel.mem.writePhys(d.resource(0).start + BigInt(16 * 2 + 12), new Uint8Array(4));
    expect(pciMsiRaise(d, 2)).toBe(true);
    // A vector outside the table is a device-model bug.
    expect(catchErr(() => pciMsiRaise(d, 128))).toBeInstanceOf(KernelWarning);
  });

  it("a reset clears every message and pending bit and masks every entry (both PBA qwords)", () => {
    const d = device(MSIX);
    pciAllocIrqVectors(d, 1, 128, PCI_IRQ_MSIX);
    for (const nr of [3, 100]) pciMsiRaise(d, nr);
    expect(pba(d)).toEqual([1 << 3, 0, 0, 1 << 4]);
    d.hwReset();
    for (const nr of [0, 3, 127]) expect(entry(d, nr)).toEqual([0, 0, 0, 1]);
    expect(pba(d)).toEqual([0, 0, 0, 0]);
  });

  it("pci_restore_msi_state: allocated entries get their messages back, unmasked only with a handler", () => {
    const d = device(MSIX);
    pciAllocIrqVectors(d, 2, 2, PCI_IRQ_MSIX);
    pciMsixAllocIrqAt(d, 5);
    requestIrq(d, 1, () => {});
    const irqs = d.hostIrq.vectors;
    const saved = d.saveState();
    d.hwReset();
    d.restoreState(saved);
    expect(entry(d, 0)).toEqual([0xfee00000, 0, irqs[0], 1]);
    expect(entry(d, 1)).toEqual([0xfee00000, 0, irqs[1], 0]);
    expect(entry(d, 5)).toEqual([0xfee00000, 0, irqs[5], 1]);
    // Entries never allocated stay as the reset left them.
    expect(entry(d, 3)).toEqual([0, 0, 0, 1]);
  });

  it("pci_msix_alloc_irq_at: inside the table, MSI-X on, entry free, a vector left; the message at 0 / 4 / 8", () => {
    const d = device(MSIX);
    const root = d.bus.root;
    expect(errno(() => pciMsixAllocIrqAt(d, 0))).toBe(EINVAL);
    pciAllocIrqVectors(d, 2, 2, PCI_IRQ_MSIX);
    expect(errno(() => pciMsixAllocIrqAt(d, 128))).toBe(EINVAL);
    expect(errno(() => pciMsixAllocIrqAt(d, 1))).toBe(EINVAL);
    root.msiVectorsFree = 0;
    expect(errno(() => pciMsixAllocIrqAt(d, 4))).toBe(ENOSPC);
    root.msiVectorsFree = 1;
    d.kernel.current.fault.arm(1);
    expect(errno(() => pciMsixAllocIrqAt(d, 4))).toBe(ENOMEM);
    expect(d.kernel.current.fault.failedSite).toBe("pci_msix_alloc_irq_at");
    d.kernel.current.fault.disarm();
    expect(d.hostIrq.vectors[4]).toBeUndefined();
    expect(root.msiVectorsFree).toBe(1);
    const irq = pciMsixAllocIrqAt(d, 4);
    expect(root.msiVectorsFree).toBe(0);
    expect(entry(d, 4)).toEqual([0xfee00000, 0, irq, 1]);
    // The entry before it is untouched.
    expect(entry(d, 3)).toEqual([0, 0, 0, 1]);
    // pci_free_irq_vectors gives back the allocated vectors only, not the holes.
    pciFreeIrqVectors(d);
    expect(root.msiVectorsFree).toBe(3);
    expect(d.readConfig(d.msixCap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_ENABLE).toBe(0);
  });
});

describe("pci_alloc_irq_vectors / pci_free_irq_vectors", () => {
  const MSI: PciDevSpec = {
    vendor: 0x8086,
    // Bit 15 and bit 0 set: Message Control of an absent MSI-X capability would read as this.
    device: 0x9a0b,
    bars: [{ type: "mem32", size: 0x1000n }],
    msi: { vectors: 32, is64: true, maskbit: true },
    pcie: true,
  };

  it("refuses a second allocation, max < min, a missing capability and an injected failure", () => {
    const d = device(MSI);
    const left = d.bus.root.msiVectorsFree;
    expect(errno(() => pciAllocIrqVectors(d, 2, 1, PCI_IRQ_MSI))).toBe(ERANGE);
    expect(errno(() => pciAllocIrqVectors(d, 1, 1, PCI_IRQ_MSIX))).toBe(EINVAL);
    d.kernel.current.fault.arm(1);
    expect(errno(() => pciAllocIrqVectors(d, 1, 4, PCI_IRQ_MSI))).toBe(ENOMEM);
    expect(d.kernel.current.fault.failedSite).toBe("pci_alloc_irq_vectors");
    d.kernel.current.fault.disarm();
    expect(d.hostIrq.msiType).toBe(0);
    expect(d.bus.root.msiVectorsFree).toBe(left);
    expect(d.readConfig(d.msiCap + PCI_MSI_FLAGS, 2) & 1).toBe(0);
    expect(pciAllocIrqVectors(d, 1, 4, PCI_IRQ_MSI)).toBe(4);
    expect(errno(() => pciAllocIrqVectors(d, 1, 4, PCI_IRQ_MSI))).toBe(EINVAL);
    expect(d.bus.root.msiVectorsFree).toBe(left - 4);
  });

  it("Multiple Message Enable replaces what the register held", () => {
    const d = device(MSI);
    const at = d.msiCap + PCI_MSI_FLAGS;
    d.writeConfig(at, 2, 5 << 4);
    pciAllocIrqVectors(d, 1, 2, PCI_IRQ_MSI);
    expect((d.readConfig(at, 2) >> 4) & 7).toBe(1);
  });

  it("freeing with a handler attached WARNs; a free with nothing allocated changes nothing", () => {
    const d = device(MSI);
    d.writeConfig(PCI_COMMAND, 2, d.command | PCI_COMMAND_INTX_DISABLE);
    pciFreeIrqVectors(d);
    expect(d.command & PCI_COMMAND_INTX_DISABLE).toBe(PCI_COMMAND_INTX_DISABLE);
    pciAllocIrqVectors(d, 2, 2, PCI_IRQ_MSI);
    requestIrq(d, 1, () => {});
    expect(catchErr(() => pciFreeIrqVectors(d))).toBeInstanceOf(KernelWarning);
    freeIrq(d, 1);
    pciFreeIrqVectors(d);
    expect(d.hostIrq.msiType).toBe(0);
  });

  it("request_irq twice WARNs, an injected failure attaches nothing, free_irq of a free vector WARNs", () => {
    const d = device(MSI);
    pciAllocIrqVectors(d, 2, 2, PCI_IRQ_MSI);
    const fired: number[] = [];
    d.kernel.current.fault.arm(1);
    expect(errno(() => requestIrq(d, 0, () => fired.push(0)))).toBe(ENOMEM);
    expect(d.kernel.current.fault.failedSite).toBe("request_irq");
    d.kernel.current.fault.disarm();
    expect(d.hostIrq.handlers[0]).toBeUndefined();
    requestIrq(d, 0, () => fired.push(0));
    expect(catchErr(() => requestIrq(d, 0, () => {}))).toBeInstanceOf(KernelWarning);
    expect(catchErr(() => freeIrq(d, 1))).toBeInstanceOf(KernelWarning);
    expect(pciMsiRaise(d, 0)).toBe(true);
    expect(fired).toEqual([0]);
  });

  it("MSI messages: needs bus mastering and Enable; a vector without a handler is still sent", () => {
    const d = device(MSI);
    expect(pciMsiRaise(d, 0)).toBe(false);
    pciAllocIrqVectors(d, 2, 2, PCI_IRQ_MSI);
    expect(pciMsiRaise(d, 1)).toBe(true);
    d.setMaster(false);
    expect(pciMsiRaise(d, 1)).toBe(false);
  });

  it("a masked MSI vector past 8 sets its Pending bit in the right byte, nothing past the register", () => {
    const d = device(MSI);
    pciAllocIrqVectors(d, 32, 32, PCI_IRQ_MSI);
    const cap = d.msiCap;
    const next = d.readConfig(cap + 24, 4);
    d.writeConfig(cap + 16, 4, (1 << 9) | (1 << 2));
    expect(pciMsiRaise(d, 9)).toBe(false);
    expect(pciMsiRaise(d, 2)).toBe(false);
    expect(d.readConfig(cap + 20, 4)).toBe((1 << 9) | (1 << 2));
    // The capability after the Pending Bits is untouched.
    expect(d.readConfig(cap + 24, 4)).toBe(next);
  });

  it("an MSI-X function with MSI-X off sends nothing", () => {
    const d = device({ ...MSIX, device: 0x1573 });
    expect(pciMsiRaise(d, 0)).toBe(false);
  });

  it("after a reset an MSI function's BAR is not written as if it held an MSI-X table", () => {
    const d = device(MSI);
    pciAllocIrqVectors(d, 2, 2, PCI_IRQ_MSI);
    d.kernel.mem.writePhys(d.resource(0).start, new Uint8Array(16).fill(0xa5));
    d.restoreState(d.saveState());
    expect(bar0(d, 0, 16)).toEqual(new Array(16).fill(0xa5));
  });
});

describe("INTx: request_irq, disable_irq / enable_irq and the level-triggered line", () => {
  const INTX: PciDevSpec = { vendor: 0x8086, device: 0x100e, bars: [] };

  it("request delivers nothing until the line is asserted; IRQF_NO_AUTOEN holds it until enable_irq", () => {
    const d = device(INTX);
    let n = 0;
    requestIntx(d, () => n++, true);
    expect(n).toBe(0);
    pciIntxAssert(d);
    expect(n).toBe(0);
    enableIrq(d);
    expect(n).toBe(1);
    expect(catchErr(() => enableIrq(d))).toBeInstanceOf(KernelWarning);
    expect(catchErr(() => requestIntx(d, () => {}, false))).toBeInstanceOf(KernelWarning);
    // Deasserted while disabled: enabling again delivers nothing.
    disableIrq(d);
    pciIntxDeassert(d);
    enableIrq(d);
    expect(n).toBe(1);
    freeIntx(d);
    expect(catchErr(() => freeIntx(d))).toBeInstanceOf(KernelWarning);
  });

  it("an injected request_irq failure attaches nothing; a pin routed nowhere is ENOTCONN; no pin WARNs on assert", () => {
    const d = device(INTX);
    d.kernel.current.fault.arm(1);
    expect(errno(() => requestIntx(d, () => {}, false))).toBe(ENOMEM);
    expect(d.kernel.current.fault.failedSite).toBe("request_irq");
    d.kernel.current.fault.disarm();
    expect(d.hostIrq.intxHandler).toBeUndefined();
    const nc = device({ ...INTX, irq: IRQ_NOTCONNECTED });
    expect(errno(() => requestIntx(nc, () => {}, false))).toBe(ENOTCONN);
    const nopin = device({ ...INTX, interruptPin: 0 });
    expect(catchErr(() => pciIntxAssert(nopin))).toBeInstanceOf(KernelWarning);
  });
});
