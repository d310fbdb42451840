import { Kernel, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { pciRoot } from "../src/pci.js";
import {
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_AF,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_DEVICE_ID,
  PCI_EXP_DEVCTL,
  PCI_EXP_FLAGS,
  PCI_INTERRUPT_PIN,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_DATA_32,
  PCI_MSI_MASK_32,
  PCI_PM_PMC,
  PCI_REVISION_ID,
  PCI_STATUS,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
} from "../src/pci-regs.js";
import { pciIntxAssert, requestIntx } from "../src/pci-irq.js";

const KiB = 1024n;

function bus() {
  return pciRoot(new Kernel()).newBus();
}

describe("PCI config header (include/uapi/linux/pci_regs.h layout)", () => {
  it("revision, class code, subsystem IDs sit at their offsets, little endian", () => {
    const d = bus().addDevice({
      vendor: 0x8086,
      device: 0x10d3,
      revision: 0x5a,
      classCode: 0x0c0330,
      subsystemVendor: 0x17aa,
      subsystem: 0x2134,
    });
    // The dword at 0x08: revision in the low byte, class code (prog-if, sub, base) above it.
    expect(d.readConfig(PCI_REVISION_ID, 4) >>> 0).toBe(0x0c03305a);
    expect(d.readConfig(0x0a, 2)).toBe(0x0c03);
    expect(d.readConfig(PCI_SUBSYSTEM_VENDOR_ID, 2)).toBe(0x17aa);
    expect(d.readConfig(PCI_SUBSYSTEM_ID, 2)).toBe(0x2134);
    expect(d.readConfig(PCI_SUBSYSTEM_ID + 1, 1)).toBe(0x21);
  });

  it("the subsystem vendor defaults to the vendor; a function without capabilities has no list", () => {
    const d = bus().addDevice({ vendor: 0x1af4, device: 0x1041 });
    expect(d.readConfig(PCI_SUBSYSTEM_VENDOR_ID, 2)).toBe(0x1af4);
    // PCI_STATUS.CAP_LIST clear and a zero capability pointer: pci_find_capability finds nothing.
    expect(d.readConfig(PCI_STATUS, 2)).toBe(0);
    expect(d.readConfig(PCI_CAPABILITY_LIST, 1)).toBe(0);
    // No PCIe capability: the device ID and the revision are the spec's, nothing overlays them.
    expect(d.readConfig(PCI_DEVICE_ID, 2)).toBe(0x1041);
    d.writeConfig(PCI_REVISION_ID, 4, 0xffffffff);
    expect(d.readConfig(PCI_REVISION_ID, 4) >>> 0).toBe(0x02800000);
  });

  it("functions sharing config-space slabs keep their registers apart, through a reset", () => {
    const b = bus();
    // Enough PCIe and conventional functions to fill several slabs of each size.
    const devs = Array.from({ length: 10 }, (_, i) =>
      b.addDevice({ vendor: 1, device: 0x100 + i, pcie: i % 2 === 0 }),
    );
    for (const [i, d] of devs.entries()) d.writeConfig(PCI_COMMAND, 2, i % 2 ? 0x6 : 0x2);
    for (const [i, d] of devs.entries()) {
      expect(d.readConfig(PCI_DEVICE_ID, 2)).toBe(0x100 + i);
      expect(d.readConfig(PCI_COMMAND, 2)).toBe(i % 2 ? 0x6 : 0x2);
    }
    devs[0]!.hwReset();
    expect(devs[0]!.readConfig(PCI_COMMAND, 2)).toBe(0);
    for (const d of devs.slice(1)) expect(d.readConfig(PCI_COMMAND, 2)).not.toBe(0);
  });

  it("one capability alone (PM, MSI-X, AF) sets STATUS.CAP_LIST", () => {
    const b = bus();
    const pm = b.addDevice({ vendor: 1, device: 1, pm: true });
    const af = b.addDevice({ vendor: 1, device: 2, af: true });
    const msix = b.addDevice({
      vendor: 1,
      device: 3,
      bars: [{ type: "mem32", size: 4n * KiB }],
      msix: { vectors: 4, tableBar: 0, tableOffset: 0 },
    });
    for (const d of [pm, af, msix]) expect(d.readConfig(PCI_STATUS, 2)).toBe(0x10);
  });

  it("INTx pin 0..4 only; pdev->irq follows the slot swizzle onto lines 16..19", () => {
    const b = bus();
    const w = (pin: number) => () => b.addDevice({ vendor: 1, device: 1, interruptPin: pin });
    expect(w(5)).toThrow(KernelWarning);
    expect(w(-1)).toThrow(KernelWarning);
    // pci_swizzle_interrupt_pin: (pin - 1 + slot) % 4; QEMU's PCI hosts route INTA..D to GSI 16..19.
    const s0 = b.addDevice({ vendor: 1, device: 1 });
    const s1 = b.addDevice({ vendor: 1, device: 1, interruptPin: 3 });
    const s2 = b.addDevice({ vendor: 1, device: 1, interruptPin: 4 });
    const s3 = b.addDevice({ vendor: 1, device: 1, interruptPin: 2 });
    const none = b.addDevice({ vendor: 1, device: 1, interruptPin: 0 });
    expect([s0.irq, s1.irq, s2.irq, s3.irq, none.irq]).toEqual([16, 19, 17, 16, 0]);
    expect(s2.readConfig(PCI_INTERRUPT_PIN, 1)).toBe(4);
    expect(s0.intxAsserted).toBe(false);
  });

  it("bus and function names follow pci_name(): domain:bus:slot.fn, two hex digits", () => {
    const root = pciRoot(new Kernel());
    const b1 = root.newBus();
    const b2 = root.newBus();
    expect([b1.name, b2.name]).toEqual(["0000:01", "0000:02"]);
    b1.addDevice({ vendor: 1, device: 1 });
    expect(b1.addDevice({ vendor: 1, device: 1 }).name).toBe("0000:01:01.0");
  });
});

describe("config accessors (drivers/pci/access.c: 1, 2 or 4 bytes, naturally aligned, in range)", () => {
  it("refuses odd sizes, misalignment, negative and out-of-range offsets", () => {
    const conv = bus().addDevice({ vendor: 1, device: 1 });
    const exp = bus().addDevice({ vendor: 1, device: 1, pcie: true });
    const bad = (f: () => unknown) => expect(f).toThrow(KernelWarning);
    bad(() => conv.readConfig(0, 3 as 4));
    bad(() => conv.readConfig(0, 8 as 4));
    bad(() => conv.readConfig(-1, 1));
    bad(() => conv.readConfig(-4, 4));
    bad(() => conv.readConfig(1, 2));
    bad(() => conv.readConfig(2, 4));
    bad(() => conv.writeConfig(6, 4, 0));
    bad(() => conv.readConfig(256, 4));
    bad(() => conv.readConfig(256, 1));
    bad(() => exp.readConfig(4096, 4));
    expect(conv.readConfig(252, 4)).toBe(0);
    expect(conv.readConfig(255, 1)).toBe(0);
    expect(exp.readConfig(4092, 4)).toBe(0);
  });

  it("a byte write changes that byte only", () => {
    const d = bus().addDevice({ vendor: 1, device: 1 });
    d.writeConfig(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    d.writeConfig(PCI_COMMAND, 1, 0x06);
    expect(d.readConfig(PCI_COMMAND, 2)).toBe(PCI_COMMAND_INTX_DISABLE | 0x06);
  });

  it("clearing COMMAND.INTX_DISABLE lets a still-asserted INTx through", () => {
    const d = bus().addDevice({ vendor: 1, device: 1 });
    let fired = 0;
    d.writeConfig(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    requestIntx(d, () => fired++, false);
    pciIntxAssert(d);
    expect(fired).toBe(0);
    // Another write that leaves the bit set delivers nothing.
    d.writeConfig(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE | 0x4);
    expect(fired).toBe(0);
    d.writeConfig(PCI_COMMAND, 2, 0x4);
    expect(fired).toBe(1);
    // Already clear: a write that keeps it clear does not fire again.
    d.writeConfig(PCI_COMMAND, 2, 0);
    expect(fired).toBe(1);
  });
});

describe("capabilities (pci_find_capability over the list at 0x34)", () => {
  it("finds every capability the walk finds, and 0 for an absent ID", () => {
    const d = bus().addDevice({
      vendor: 1,
      device: 1,
      bars: [{ type: "mem32", size: 4n * KiB }],
      pm: true,
      msi: { vectors: 1 },
      pcie: true,
      msix: { vectors: 2, tableBar: 0, tableOffset: 0 },
      af: true,
    });
    const walk = new Map<number, number>();
    for (let p = d.readConfig(PCI_CAPABILITY_LIST, 1); p; p = d.readConfig(p + 1, 1))
      walk.set(d.readConfig(p, 1), p);
    for (const id of [
      PCI_CAP_ID_PM,
      PCI_CAP_ID_MSI,
      PCI_CAP_ID_EXP,
      PCI_CAP_ID_MSIX,
      PCI_CAP_ID_AF,
    ])
      expect(d.findCapability(id)).toBe(walk.get(id));
    expect(walk.size).toBe(5);
    expect(d.findCapability(0x09)).toBe(0);
  });

  it("PM: PMC reads version 3; PCIe: FLAGS version 2, DEVCTL bits 0..14 read/write", () => {
    const d = bus().addDevice({ vendor: 1, device: 1, pm: true, pcie: true });
    expect(d.readConfig(d.pmCap + PCI_PM_PMC, 2)).toBe(0x0003);
    expect(d.readConfig(d.pcieCap + PCI_EXP_FLAGS, 2)).toBe(0x0002);
    d.writeConfig(d.pcieCap + PCI_EXP_DEVCTL, 2, 0xffff);
    expect(d.readConfig(d.pcieCap + PCI_EXP_DEVCTL, 2)).toBe(0x7fff);
  });

  it("AF: the length byte reads PCI_AF_SIZEOF", () => {
    const d = bus().addDevice({ vendor: 1, device: 1, af: true });
    expect(d.readConfig(d.afCap + 2, 1)).toBe(6);
  });

  it("MSI: 32-bit data is 16 bits wide, a 64-bit address high dword is writable, mask bits per vector", () => {
    const b = bus();
    const m32 = b.addDevice({ vendor: 1, device: 1, msi: { vectors: 4, maskbit: true } });
    const m64 = b.addDevice({ vendor: 1, device: 1, msi: { vectors: 1, is64: true } });
    const plain = b.addDevice({ vendor: 1, device: 1, msi: { vectors: 1 } });
    m32.writeConfig(m32.msiCap + PCI_MSI_DATA_32, 4, 0xffffffff);
    expect(m32.readConfig(m32.msiCap + PCI_MSI_DATA_32, 4)).toBe(0xffff);
    // QEMU msi_init: only the mask bits of the vectors the function has are writable.
    m32.writeConfig(m32.msiCap + PCI_MSI_MASK_32, 4, 0xffffffff);
    expect(m32.readConfig(m32.msiCap + PCI_MSI_MASK_32, 4)).toBe(0xf);
    m64.writeConfig(m64.msiCap + PCI_MSI_ADDRESS_HI, 4, 0xfedcba98);
    expect(m64.readConfig(m64.msiCap + PCI_MSI_ADDRESS_HI, 4) >>> 0).toBe(0xfedcba98);
    // No per-vector masking: the dword after the 32-bit capability is not a mask register.
    plain.writeConfig(plain.msiCap + PCI_MSI_MASK_32, 4, 0xffffffff);
    expect(plain.readConfig(plain.msiCap + PCI_MSI_MASK_32, 4)).toBe(0);
  });
});

describe("MSI-X placement (QEMU msix_init checks; Table / PBA offset | BIR registers)", () => {
  const dev = (msix: {
    vectors: number;
    tableBar: number;
    tableOffset: number;
    pbaBar?: number;
    pbaOffset?: number;
  }) =>
    bus().addDevice({
      vendor: 1,
      device: 1,
      bars: [
        { type: "mem32", size: 4n * KiB },
        { type: "io", size: 32 },
        { type: "mem32", size: 64n * KiB },
      ],
      msix,
    });

  it("Table and PBA registers hold offset | BIR", () => {
    const d = dev({ vectors: 8, tableBar: 2, tableOffset: 0x1000, pbaBar: 0, pbaOffset: 0x800 });
    expect(d.readConfig(d.msixCap + PCI_MSIX_TABLE, 4)).toBe(0x1002);
    expect(d.readConfig(d.msixCap + PCI_MSIX_PBA, 4)).toBe(0x800);
  });

  it("1..2048 entries inside a memory BAR, 8-byte aligned; the table may end at the BAR's end", () => {
    expect(dev({ vectors: 1, tableBar: 0, tableOffset: 0 }).msixCap).toBeGreaterThan(0);
    expect(dev({ vectors: 2048, tableBar: 2, tableOffset: 0 }).msixCap).toBeGreaterThan(0);
    expect(
      dev({ vectors: 8, tableBar: 0, tableOffset: 0xf80, pbaBar: 2, pbaOffset: 0 }).msixCap,
    ).toBeGreaterThan(0);
    const bad = (m: Parameters<typeof dev>[0]) => expect(() => dev(m)).toThrow(KernelWarning);
    bad({ vectors: 0, tableBar: 0, tableOffset: 0 });
    bad({ vectors: 2049, tableBar: 2, tableOffset: 0 });
    bad({ vectors: 1, tableBar: 1, tableOffset: 0 });
    bad({ vectors: 1, tableBar: 3, tableOffset: 0 });
    bad({ vectors: 1, tableBar: 7, tableOffset: 0 });
    bad({ vectors: 1, tableBar: 0, tableOffset: 4 });
    bad({ vectors: 8, tableBar: 0, tableOffset: 0xf88, pbaBar: 2, pbaOffset: 0 });
    bad({ vectors: 512, tableBar: 0, tableOffset: 0, pbaBar: 2, pbaOffset: 0 });
    bad({ vectors: 1, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x1000 });
    bad({ vectors: 1, tableBar: 0, tableOffset: 0, pbaBar: 1, pbaOffset: 0 });
  });
});
