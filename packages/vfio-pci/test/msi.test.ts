/**
 * The host side of MSI (drivers/pci/msi/msi.c: msi_capability_init, pci_msi_domain_write_msg,
 * __pci_msi_desc_mask_irq) and the device side of a message (PCI Local Bus 3.0 §6.8.1: a
 * masked vector sets its Pending bit): where each register sits for a 32- and a 64-bit
 * capability, Multiple Message Enable, and the Mask / Pending Bits.
 */
import { Kernel } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { pciRoot } from "../src/pci.js";
import {
  PCI_IRQ_MSI,
  pciAllocIrqVectors,
  pciFreeIrqVectors,
  pciMsiRaise,
  requestIrq,
  freeIrq,
} from "../src/pci-irq.js";
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER } from "../src/pci-regs.js";

function msiDevice(msi: { vectors: 1 | 2 | 4 | 8; is64?: boolean; maskbit?: boolean }) {
  const kernel = new Kernel();
  const d = pciRoot(kernel).newBus().addDevice({ vendor: 0x8086, device: 0x10, bars: [], msi });
  d.writeConfig(PCI_COMMAND, 2, PCI_COMMAND_MASTER);
  return d;
}

describe("MSI: the capability's registers as pci_alloc_irq_vectors programs them", () => {
  it("64-bit with per-vector masking: address at 4 / 8, data at 12, mask at 16, pending at 20", () => {
    const d = msiDevice({ vectors: 8, is64: true, maskbit: true });
    const cap = d.msiCap;
    d.writeConfig(cap + 8, 4, 0x1234);
    expect(pciAllocIrqVectors(d, 1, 4, PCI_IRQ_MSI)).toBe(4);
    const irq0 = d.hostIrq.vectors[0]!;
    expect(d.readConfig(cap + 4, 4)).toBe(0xfee00000);
    expect(d.readConfig(cap + 8, 4)).toBe(0);
    expect(d.readConfig(cap + 12, 2)).toBe(irq0 & 0xffff);
    // Multiple Message Capable 8 (3 << 1) kept; Multiple Message Enable log2(4) = 2; enabled.
    expect(d.readConfig(cap + 2, 2)).toBe(0x180 | (3 << 1) | (2 << 4) | 1);
    // INTx is off while MSI is on (pci_intx_for_msi).
    expect(d.readConfig(PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE).toBe(PCI_COMMAND_INTX_DISABLE);

    const fired: number[] = [];
    requestIrq(d, 1, () => fired.push(1));
    requestIrq(d, 2, () => fired.push(2));
    d.writeConfig(cap + 16, 4, 1 << 2);
    expect(pciMsiRaise(d, 2)).toBe(false);
    expect(d.readConfig(cap + 20, 4)).toBe(1 << 2);
    expect(pciMsiRaise(d, 1)).toBe(true);
    // Past the enabled vectors (4): nothing is sent.
    expect(pciMsiRaise(d, 4)).toBe(false);
    expect(fired).toEqual([1]);
    freeIrq(d, 1);
    freeIrq(d, 2);
    pciFreeIrqVectors(d);
    expect(d.readConfig(cap + 2, 2)).toBe(0x180 | (3 << 1));
    expect(d.readConfig(PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE).toBe(0);
  });

  it("32-bit without masking: data at 8; every enabled vector is sent", () => {
    const d = msiDevice({ vectors: 2 });
    const cap = d.msiCap;
    expect(pciAllocIrqVectors(d, 1, 2, PCI_IRQ_MSI)).toBe(2);
    expect(d.readConfig(cap + 4, 4)).toBe(0xfee00000);
    expect(d.readConfig(cap + 8, 2)).toBe(d.hostIrq.vectors[0]! & 0xffff);
    expect(d.readConfig(cap + 2, 2)).toBe((1 << 1) | (1 << 4) | 1);
    const fired: number[] = [];
    requestIrq(d, 1, () => fired.push(1));
    expect(pciMsiRaise(d, 1)).toBe(true);
    expect(fired).toEqual([1]);
  });
});
