import { EFD_NONBLOCK, EIO } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { pciIntxAssert } from "../src/pci-irq.js";
import type { PciDevSpec } from "../src/pci.js";
import {
  PCI_AF_CTRL,
  PCI_AF_CTRL_FLR,
  PCI_BASE_ADDRESS_0,
  PCI_CAPABILITY_LIST,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_D3hot,
  PCI_DEVICE_ID,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_QSIZE,
  PCI_PM_CTRL,
  PCI_ROM_ADDRESS,
} from "../src/pci-regs.js";
import {
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  encodeIrqSet,
} from "../src/vfio-uapi.js";
import { MiB, type Machine, cfgRead, cfgWrite, gpu, machine } from "./helpers.js";

/**
 * Config-space accesses through the device fd as drivers/vfio/pci/vfio_pci_config.c handles
 * them: which capability a byte belongs to (pci_config_map), the per-capability permission
 * bits (virtual / writable), the BAR sizing emulation and the write hooks.
 */

const CIS = 0x28;

/** No PM capability: MSI (64-bit, per-vector mask) is the first at 0x40, then PCIe, then AF. */
const MSI64: PciDevSpec = {
  vendor: 0x8086,
  device: 0x10fb,
  bars: [{ type: "mem32", size: MiB }],
  msi: { vectors: 8, is64: true, maskbit: true },
  pcie: { flr: true },
  af: true,
};

const ENABLE_QSIZE = PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE;

function efd(m: Machine): number {
  return m.libc.eventfd(0, EFD_NONBLOCK);
}

function drain(m: Machine, fd: number): number {
  const b = new Uint8Array(8);
  if (m.libc.read(fd, b) < 0) return 0;
  return Number(new DataView(b.buffer).getBigUint64(0, true));
}

function setIrqs(m: Machine, fd: number, opts: Parameters<typeof encodeIrqSet>[0]): number {
  const r = m.libc.ioctl(fd, VFIO_DEVICE_SET_IRQS, encodeIrqSet(opts));
  return r < 0 ? -m.libc.errno : r;
}

function msiOn(m: Machine, fd: number, vectors: number): void {
  const data = Array.from({ length: vectors }, () => efd(m));
  const flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  expect(setIrqs(m, fd, { flags, index: VFIO_PCI_MSI_IRQ_INDEX, count: vectors, data })).toBe(0);
}

/** Bytes read through the config region at `off` (any length, any alignment). */
function cfgBytes(m: Machine, fd: number, off: number, len: number): number[] {
  const b = new Uint8Array(len);
  expect(m.libc.pread(fd, b, (7n << 40n) + BigInt(off))).toBe(len);
  return [...b];
}

function cfgWriteBytes(m: Machine, fd: number, off: number, bytes: number[]): void {
  const b = Uint8Array.from(bytes);
  expect(m.libc.pwrite(fd, b, (7n << 40n) + BigInt(off))).toBe(bytes.length);
}

describe("vfio_pci_config: which capability handles a byte", () => {
  it("a dword at the first byte of MSI goes to MSI, whether MSI follows the header or PM", () => {
    for (const pm of [false, true]) {
      const m = machine();
      const { vdev, fd } = gpu(m, { ...MSI64, pm });
      const cap = vdev.pdev.msiCap;
      expect(cap).toBe(pm ? 0x48 : 0x40);
      msiOn(m, fd, 2);
      // The device has MSI enabled; the user's Message Control is virtual and still clear.
      expect(vdev.pdev.readConfig(cap + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_ENABLE).toBe(1);
      expect((cfgRead(m, fd, cap, 4) >>> 16) & PCI_MSI_FLAGS_ENABLE).toBe(0);
    }
  });

  it("AF_CTRL.FLR after a PCIe capability resets through the AF handler; other AF writes do not", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    expect(p.afCap).toBeGreaterThan(p.pcieCap);
    const resets = p.resetCount;
    cfgWrite(m, fd, p.afCap + PCI_AF_CTRL, 1, 0);
    expect(p.resetCount).toBe(resets);
    cfgWrite(m, fd, p.afCap + PCI_AF_CTRL, 1, PCI_AF_CTRL_FLR);
    expect(p.resetCount).toBe(resets + 1);
    // The bit is virtual and reads 0 afterwards (vfio_af_config_write clears it).
    expect(cfgRead(m, fd, p.afCap + PCI_AF_CTRL, 1)).toBe(0);
  });
});

describe("vfio_pci_config: MSI capability permissions (init_pci_cap_msi_perm)", () => {
  it("64-bit with mask bits: address and data virtual, mask bits to the device, the rest read-only", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    const cap = p.msiCap;
    cfgWrite(m, fd, cap + 4, 4, 0xfee01003);
    expect(cfgRead(m, fd, cap + 4, 4) >>> 0).toBe(0xfee01003);
    cfgWrite(m, fd, cap + 8, 4, 0x12345678);
    expect(cfgRead(m, fd, cap + 8, 4)).toBe(0x12345678);
    // Data is a word at 12; bytes 14-15 are reserved and read from the device.
    cfgWrite(m, fd, cap + 12, 4, 0xffffffff);
    expect(cfgRead(m, fd, cap + 12, 4)).toBe(0xffff);
    for (const off of [4, 8, 12]) expect(p.readConfig(cap + off, 4)).toBe(0);
    // Mask bits: not virtual, writable, so they reach the device.
    cfgWrite(m, fd, cap + 16, 4, 0x5a);
    expect(p.readConfig(cap + 16, 4)).toBe(0x5a);
    expect(cfgRead(m, fd, cap + 16, 4)).toBe(0x5a);
    cfgWrite(m, fd, cap + 16, 1, 0xa5);
    expect(p.readConfig(cap + 16, 4)).toBe(0xa5);
    // Pending bits are the device's.
    cfgWrite(m, fd, cap + 20, 4, 0xff);
    expect(cfgRead(m, fd, cap + 20, 4)).toBe(0);
    // Only the low byte of Message Control is virtual; the upper byte is the device's.
    cfgWrite(m, fd, cap + PCI_MSI_FLAGS + 1, 1, 0xfe);
    expect(cfgRead(m, fd, cap + PCI_MSI_FLAGS + 1, 1)).toBe(0x01);
  });

  it("32-bit with mask bits: data at 8, reserved 10-11, mask bits at 12", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, { ...MSI64, msi: { vectors: 4, maskbit: true } });
    const p = vdev.pdev;
    const cap = p.msiCap;
    cfgWrite(m, fd, cap + 4, 4, 0xfee00ffd);
    expect(cfgRead(m, fd, cap + 4, 4) >>> 0).toBe(0xfee00ffd);
    cfgWrite(m, fd, cap + 8, 4, 0xffffffff);
    expect(cfgRead(m, fd, cap + 8, 4)).toBe(0xffff);
    expect(p.readConfig(cap + 8, 4)).toBe(0);
    cfgWrite(m, fd, cap + 12, 4, 0xf);
    expect(p.readConfig(cap + 12, 4)).toBe(0xf);
    expect(cfgRead(m, fd, cap + 12, 4)).toBe(0xf);
  });

  it("without mask bits the capability ends after the data word", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, { ...MSI64, msi: { vectors: 1, is64: true } });
    const cap = vdev.pdev.msiCap;
    cfgWrite(m, fd, cap + 12, 2, 0xbeef);
    expect(cfgRead(m, fd, cap + 12, 2)).toBe(0xbeef);
    expect(vdev.pdev.readConfig(cap + 12, 2)).toBe(0);
  });
});

describe("vfio_msi_config_write: Message Control", () => {
  it("ENABLE only while MSI is on through SET_IRQS; Multiple Message Enable at most the vectors enabled", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    const flags = p.msiCap + PCI_MSI_FLAGS;
    const phys = () => p.readConfig(flags, 2) & ENABLE_QSIZE;
    cfgWrite(m, fd, flags, 2, PCI_MSI_FLAGS_ENABLE | (3 << 4));
    expect(phys()).toBe(0);
    expect(cfgRead(m, fd, flags, 2) & ENABLE_QSIZE).toBe(0);
    msiOn(m, fd, 2);
    expect(vdev.irqType).toBe(VFIO_PCI_MSI_IRQ_INDEX);
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE | (1 << 4));
    cfgWrite(m, fd, flags, 2, PCI_MSI_FLAGS_ENABLE | (3 << 4));
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE | (1 << 4));
    expect(cfgRead(m, fd, flags, 2) & ENABLE_QSIZE).toBe(PCI_MSI_FLAGS_ENABLE | (1 << 4));
    // A smaller Multiple Message Enable is kept as written.
    cfgWrite(m, fd, flags, 2, PCI_MSI_FLAGS_ENABLE);
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE);
  });

  it("a write ending at Message Control writes the virtual flags to the device; one before it does not", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    const cap = p.msiCap;
    const phys = () => p.readConfig(cap + PCI_MSI_FLAGS, 2) & ENABLE_QSIZE;
    msiOn(m, fd, 2);
    // Virtual flags: ENABLE with Multiple Message Enable 0.
    cfgWrite(m, fd, cap + PCI_MSI_FLAGS, 1, PCI_MSI_FLAGS_ENABLE);
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE);
    expect(
      setIrqs(m, fd, {
        flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
        index: 1,
        count: 0,
      }),
    ).toBe(0);
    msiOn(m, fd, 2);
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE | (1 << 4));
    // The capability ID byte: offset 0 + 1 byte stops short of PCI_MSI_FLAGS.
    cfgWrite(m, fd, cap, 1, 0);
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE | (1 << 4));
    // A write past Message Control (the mask bits) leaves the device's flags alone.
    cfgWrite(m, fd, cap + 16, 4, 0);
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE | (1 << 4));
    // The next pointer: offset 1 + 1 byte reaches PCI_MSI_FLAGS, so the fix-up runs.
    cfgWrite(m, fd, cap + 1, 1, 0);
    expect(phys()).toBe(PCI_MSI_FLAGS_ENABLE);
    expect(cfgRead(m, fd, cap, 2)).toBe(p.readConfig(cap, 2));
  });
});

describe("vfio_basic_config_write / _read: the header", () => {
  it("INTERRUPT_LINE is virtual; PIN, the capability pointer and the CIS pointer are read-only", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    const line = p.readConfig(PCI_INTERRUPT_LINE, 1);
    const pin = p.readConfig(PCI_INTERRUPT_PIN, 1);
    cfgWrite(m, fd, PCI_INTERRUPT_LINE, 1, 0x5a);
    expect(cfgRead(m, fd, PCI_INTERRUPT_LINE, 1)).toBe(0x5a);
    expect(p.readConfig(PCI_INTERRUPT_LINE, 1)).toBe(line);
    // A dword at 0x38 (reserved) leaves the next byte, INTERRUPT_LINE, alone.
    cfgWrite(m, fd, 0x38, 4, 0xffffffff);
    expect(cfgRead(m, fd, 0x38, 4)).toBe(0);
    expect(cfgRead(m, fd, PCI_INTERRUPT_LINE, 4)).toBe(0x5a | (pin << 8));
    cfgWrite(m, fd, PCI_INTERRUPT_PIN, 1, 0);
    expect(cfgRead(m, fd, PCI_INTERRUPT_PIN, 1)).toBe(pin);
    cfgWrite(m, fd, PCI_CAPABILITY_LIST, 1, 0);
    expect(cfgRead(m, fd, PCI_CAPABILITY_LIST, 1)).toBe(0x40);
    cfgWrite(m, fd, CIS, 4, 0xffffffff);
    expect(cfgRead(m, fd, CIS, 4)).toBe(0);
  });

  it("COMMAND: IO / MEMORY / MASTER reach the device, INTX_DISABLE reads the user's value", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    const e = efd(m);
    expect(
      setIrqs(m, fd, {
        flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
        index: VFIO_PCI_INTX_IRQ_INDEX,
        count: 1,
        data: [e],
      }),
    ).toBe(0);
    // A one-byte write of the low byte reaches the device.
    cfgWrite(m, fd, PCI_COMMAND, 1, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    expect(p.command & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)).toBe(
      PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
    );
    expect(cfgRead(m, fd, PCI_COMMAND, 2)).toBe(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    // The interrupt fires and is masked in the device (DisINTx); the user still reads it clear.
    pciIntxAssert(p);
    expect(drain(m, e)).toBe(1);
    expect(p.command & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    expect(cfgRead(m, fd, PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE).toBe(0);
    expect(cfgRead(m, fd, PCI_COMMAND + 1, 1)).toBe(0);
    // Rewriting COMMAND without INTX_DISABLE does not unmask the automasked line.
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    expect(drain(m, e)).toBe(0);
    // INTX_DISABLE through a byte write of COMMAND's upper half; twice stays masked.
    cfgWrite(m, fd, PCI_COMMAND + 1, 1, PCI_COMMAND_INTX_DISABLE >> 8);
    expect(vdev.virqDisabled).toBe(true);
    cfgWrite(m, fd, PCI_COMMAND + 1, 1, PCI_COMMAND_INTX_DISABLE >> 8);
    expect(vdev.virqDisabled).toBe(true);
    expect(
      setIrqs(m, fd, {
        flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
        index: VFIO_PCI_INTX_IRQ_INDEX,
        count: 1,
      }),
    ).toBe(0);
    expect(drain(m, e)).toBe(0);
    cfgWrite(m, fd, PCI_COMMAND + 1, 1, 0);
    expect(vdev.virqDisabled).toBe(false);
    // Unmasked with the line still asserted: it fires again.
    expect(drain(m, e)).toBe(1);
  });

  it("MEMORY reads the device's bit; for a no_command_memory function, vfio's", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    // Cleared behind vfio's back: the user sees the device.
    vdev.pdev.writeConfig(PCI_COMMAND, 2, 0);
    expect(cfgRead(m, fd, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY).toBe(0);

    const vf = gpu(m, { ...MSI64, noCommandMemory: true });
    expect(vf.vdev.pdev.command & PCI_COMMAND_MEMORY).toBe(0);
    // vfio_config_init sets MEMORY in vconfig for such a function.
    expect(cfgRead(m, vf.fd, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY).toBe(PCI_COMMAND_MEMORY);
    // The user's write is recorded and read back; memory stays enabled.
    cfgWrite(m, vf.fd, PCI_COMMAND, 2, 0);
    expect(cfgRead(m, vf.fd, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY).toBe(0);
    expect(m.libc.pread(vf.fd, new Uint8Array(4), 0n)).toBe(4);
    cfgWrite(m, vf.fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(cfgRead(m, vf.fd, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY).toBe(PCI_COMMAND_MEMORY);
  });

  it("clearing MEMORY through the fd stops BAR access (__vfio_pci_memory_enabled)", () => {
    const m = machine();
    const { fd } = gpu(m, MSI64);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(m.libc.pread(fd, new Uint8Array(4), 0n)).toBe(4);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    expect(m.libc.pread(fd, new Uint8Array(4), 0n)).toBe(-1);
    expect(m.libc.errno).toBe(EIO);
  });
});

describe("vfio_bar_fixup / vfio_bar_restore", () => {
  const BARS: PciDevSpec = {
    vendor: 0x10de,
    device: 0x1eb8,
    bars: [
      { type: "mem64", size: 8n << 30n, prefetchable: true },
      undefined,
      { type: "mem32", size: MiB },
      { type: "io", size: 64 },
      { type: "mem32", size: 16n },
    ],
    romSize: 0x10000n,
  };

  it("sizing: 64-bit above 4 GiB, 32-bit, I/O, a 16-byte BAR, an unused BAR and the ROM", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, BARS);
    const p = vdev.pdev;
    const phys = Array.from({ length: 7 }, (_, i) => p.readConfig(PCI_BASE_ADDRESS_0 + 4 * i, 4));
    for (let i = 0; i < 6; i++) cfgWrite(m, fd, PCI_BASE_ADDRESS_0 + 4 * i, 4, 0xffffffff);
    cfgWrite(m, fd, PCI_ROM_ADDRESS, 4, 0xffffffff);
    const bars = Array.from(
      { length: 6 },
      (_, i) => cfgRead(m, fd, PCI_BASE_ADDRESS_0 + 4 * i, 4) >>> 0,
    );
    expect(bars).toEqual([0x0000000c, 0xfffffffe, 0xfff00000, 0xffffffc1, 0xfffffff0, 0]);
    expect(cfgRead(m, fd, PCI_ROM_ADDRESS, 4) >>> 0).toBe(0xffff0001);
    // The device's registers are untouched.
    expect(
      Array.from({ length: 7 }, (_, i) => p.readConfig(PCI_BASE_ADDRESS_0 + 4 * i, 4)),
    ).toEqual(phys);
    // An address is kept down to the BAR's size, the type bits come from the resource.
    cfgWrite(m, fd, PCI_BASE_ADDRESS_0 + 8, 4, 0x12345678);
    expect(cfgRead(m, fd, PCI_BASE_ADDRESS_0 + 8, 4)).toBe(0x12300000);
    cfgWrite(m, fd, PCI_BASE_ADDRESS_0 + 4, 4, 0x12345679);
    expect(cfgRead(m, fd, PCI_BASE_ADDRESS_0 + 4, 4)).toBe(0x12345678);
  });

  it("the BARs saved at open are written back when a MEMORY or IO enable finds the device off", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, BARS);
    const p = vdev.pdev;
    const rom = p.readConfig(PCI_ROM_ADDRESS, 4);
    // BAR3, the I/O BAR, holds its port (firmware assignment).
    const bar3 = p.readConfig(PCI_BASE_ADDRESS_0 + 12, 4);
    expect(bar3).not.toBe(0);
    const both = PCI_COMMAND_MEMORY | PCI_COMMAND_IO;
    cfgWrite(m, fd, PCI_COMMAND, 2, both);
    const backdoor = (cmd: number) => {
      p.writeConfig(PCI_ROM_ADDRESS, 4, 0);
      p.writeConfig(PCI_COMMAND, 2, cmd);
    };
    // vfio_need_bar_restore compares BAR0-5 only: a changed ROM alone, decode still on, stays.
    backdoor(both);
    cfgWrite(m, fd, PCI_COMMAND, 2, both);
    expect(p.readConfig(PCI_ROM_ADDRESS, 4)).toBe(0);
    // MEMORY enabled in vconfig, off in the device, the user enables it: restore.
    backdoor(PCI_COMMAND_IO);
    cfgWrite(m, fd, PCI_COMMAND, 2, both);
    expect(p.readConfig(PCI_ROM_ADDRESS, 4)).toBe(rom);
    // IO likewise.
    backdoor(PCI_COMMAND_MEMORY);
    cfgWrite(m, fd, PCI_COMMAND, 2, both);
    expect(p.readConfig(PCI_ROM_ADDRESS, 4)).toBe(rom);
    // Neither enabled by the write: no restore, even with the device's decode off.
    backdoor(0);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(p.readConfig(PCI_ROM_ADDRESS, 4)).toBe(0);
    // A BAR that differs from the one saved at open: restore on any COMMAND write.
    p.writeConfig(PCI_BASE_ADDRESS_0 + 12, 4, 0);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(p.readConfig(PCI_BASE_ADDRESS_0 + 12, 4)).toBe(bar3);
    expect(p.readConfig(PCI_ROM_ADDRESS, 4)).toBe(rom);
  });
});

describe("vfio_pm_config_write / vfio_exp_config_write", () => {
  it("only a write at PMCSR changes the power state", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, { ...MSI64, pm: true });
    const pm = vdev.pdev.pmCap;
    cfgWrite(m, fd, pm, 4, 0x3);
    expect(vdev.pdev.powerState).toBe(PCI_D0);
    cfgWrite(m, fd, pm + PCI_PM_CTRL, 2, PCI_D3hot);
    expect(vdev.pdev.powerState).toBe(PCI_D3hot);
    cfgWrite(m, fd, pm + PCI_PM_CTRL, 2, PCI_D0);
    expect(vdev.pdev.powerState).toBe(PCI_D0);
  });

  it("DEVCTL control bits read back; only a write setting BCR_FLR resets, once", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    const devctl = p.pcieCap + PCI_EXP_DEVCTL;
    const resets = p.resetCount;
    cfgWrite(m, fd, devctl, 2, 0x00f1);
    expect(cfgRead(m, fd, devctl, 2)).toBe(0x00f1);
    expect(p.resetCount).toBe(resets);
    cfgWrite(m, fd, devctl, 2, PCI_EXP_DEVCTL_BCR_FLR | 0x10);
    expect(p.resetCount).toBe(resets + 1);
    cfgWrite(m, fd, devctl, 2, 0x10);
    expect(p.resetCount).toBe(resets + 1);
    expect(cfgRead(m, fd, devctl, 2)).toBe(0x10);
  });
});

describe("vfio_pci_config_rw: aligned chunks", () => {
  it("6 bytes at 2, 3 at 0x3b and 7 at odd offsets go through naturally aligned chunks", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const p = vdev.pdev;
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    const want = [2, 3, 4, 5, 6, 7].map((o) => p.readConfig(o, 1));
    expect(cfgBytes(m, fd, PCI_DEVICE_ID, 6)).toEqual(want);
    const pin = p.readConfig(PCI_INTERRUPT_PIN, 1);
    cfgWriteBytes(m, fd, 0x3b, [0xff, 0x5a, 0x07]);
    expect(cfgBytes(m, fd, 0x3b, 3)).toEqual([0, 0x5a, pin]);
    // 7 bytes from an odd offset: 1, 2, 4 at 1 (read) and 1, 4, 2 at 0x37 (write).
    expect(cfgBytes(m, fd, 1, 7)).toEqual([1, 2, 3, 4, 5, 6, 7].map((o) => p.readConfig(o, 1)));
    cfgWriteBytes(m, fd, 0x37, [0, 0, 0, 0, 0, 0xa5, 0]);
    expect(cfgRead(m, fd, PCI_INTERRUPT_LINE, 1)).toBe(0xa5);
  });

  it("the last bytes of config space read and write without running past its end", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSI64);
    const end = vdev.pdev.cfgSize;
    expect(cfgBytes(m, fd, end - 4, 4)).toEqual([0, 0, 0, 0]);
    expect(cfgBytes(m, fd, end - 3, 3)).toEqual([0, 0, 0]);
    cfgWriteBytes(m, fd, end - 4, [1, 2, 3, 4]);
  });
});
