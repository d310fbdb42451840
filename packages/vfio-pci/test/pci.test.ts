import { EAGAIN, ENOTTY, Kernel, isKernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { pciRoot } from "../src/pci.js";
import {
  IORESOURCE_IO,
  IORESOURCE_MEM,
  IORESOURCE_MEM_64,
  IORESOURCE_PREFETCH,
  PCI_AF_CTRL,
  PCI_AF_CTRL_FLR,
  PCI_BASE_ADDRESS_0,
  PCI_CAP_ID_AF,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_D3hot,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
  PCI_ROM_ADDRESS,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
} from "../src/pci-regs.js";

const MiB = 1n << 20n;

function machine() {
  const kernel = new Kernel();
  const bus = pciRoot(kernel).newBus();
  return { kernel, bus };
}

describe("PCI function model", () => {
  it("lays out BARs: 32/64-bit memory, prefetchable, I/O, the unused upper half, the ROM", () => {
    const { kernel, bus } = machine();
    const d = bus.addDevice({
      vendor: 0x10de,
      device: 0x1234,
      bars: [
        { type: "mem64", size: 16n * MiB, prefetchable: true },
        undefined,
        { type: "mem32", size: 64n * 1024n },
        { type: "io", size: 32 },
      ],
      romSize: 64n * 1024n,
      pm: true,
      pcie: { flr: true },
    });
    expect(d.readConfig(0, 2)).toBe(0x10de);
    expect(d.readConfig(2, 2)).toBe(0x1234);
    const r0 = d.resource(0);
    expect(r0.flags).toBe(IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64);
    expect(r0.len).toBe(16n * MiB);
    expect(r0.start % (16n * MiB)).toBe(0n);
    expect(d.resource(1).flags).toBe(0);
    expect(d.p2pProviders[1]).toBeUndefined();
    expect(d.p2pProviders[0]?.owner).toBe(d);
    expect(d.resource(2).flags).toBe(IORESOURCE_MEM);
    expect(d.resource(3).flags).toBe(IORESOURCE_IO);
    expect(d.p2pProviders[3]).toBeUndefined();
    expect(d.resource(6).len).toBe(64n * 1024n);
    // BAR registers hold the assigned addresses with their type bits.
    const lo = d.readConfig(PCI_BASE_ADDRESS_0, 4);
    const hi = d.readConfig(PCI_BASE_ADDRESS_0 + 4, 4);
    expect(BigInt(hi) * 2n ** 32n + BigInt(lo & ~0xf)).toBe(r0.start);
    expect(lo & 0xf).toBe(0xc);
    expect(d.readConfig(PCI_BASE_ADDRESS_0 + 12, 4) & 1).toBe(1);
    // The BAR is an MMIO region of the machine: no struct page, reachable by address.
    expect(kernel.mem.mmioRegionAt(r0.start)).toBe(r0.region);
    expect(pciRoot(kernel).barAt(r0.start + 5n)).toEqual({ dev: d, bar: 0 });
    expect(d.readConfig(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST).toBeTruthy();
    expect(d.findCapability(PCI_CAP_ID_PM)).toBeGreaterThan(0);
    expect(d.findCapability(PCI_CAP_ID_EXP)).toBeGreaterThan(0);
    expect(d.findCapability(PCI_CAP_ID_AF)).toBe(0);
  });

  it("answers BAR sizing: all-ones in, size mask out, and the address back", () => {
    const { bus } = machine();
    const d = bus.addDevice({
      vendor: 1,
      device: 2,
      bars: [
        { type: "mem32", size: 1n * MiB },
        { type: "mem64", size: 256n * MiB },
      ],
      romSize: 0x8000n,
    });
    const orig = d.readConfig(PCI_BASE_ADDRESS_0, 4);
    d.writeConfig(PCI_BASE_ADDRESS_0, 4, 0xffffffff);
    expect(d.readConfig(PCI_BASE_ADDRESS_0, 4) >>> 0).toBe(0xfff00000);
    d.writeConfig(PCI_BASE_ADDRESS_0, 4, orig);
    expect(d.readConfig(PCI_BASE_ADDRESS_0, 4)).toBe(orig);
    // 256 MiB 64-bit BAR: the low dword sizes with its type bits, the high one to all ones.
    d.writeConfig(PCI_BASE_ADDRESS_0 + 4, 4, 0xffffffff);
    d.writeConfig(PCI_BASE_ADDRESS_0 + 8, 4, 0xffffffff);
    expect(d.readConfig(PCI_BASE_ADDRESS_0 + 4, 4) >>> 0).toBe(0xf0000004);
    expect(d.readConfig(PCI_BASE_ADDRESS_0 + 8, 4) >>> 0).toBe(0xffffffff);
    d.writeConfig(PCI_ROM_ADDRESS, 4, 0xffffffff);
    expect(d.readConfig(PCI_ROM_ADDRESS, 4) >>> 0).toBe(0xffff8001);
  });

  it("COMMAND decode bits gate memory decode; D3hot stops it", () => {
    const { bus } = machine();
    const d = bus.addDevice({
      vendor: 1,
      device: 2,
      bars: [{ type: "mem32", size: MiB }],
      pm: true,
    });
    expect(d.decodesMemory).toBe(false);
    d.enableDevice();
    expect(d.command & PCI_COMMAND_MEMORY).toBeTruthy();
    expect(d.decodesMemory).toBe(true);
    d.setPowerState(PCI_D3hot);
    expect(d.powerState).toBe(PCI_D3hot);
    expect(d.decodesMemory).toBe(false);
  });

  it("leaving D3hot resets a NoSoftRst- function but not a NoSoftRst+ one", () => {
    const { bus } = machine();
    const a = bus.addDevice({
      vendor: 1,
      device: 2,
      bars: [{ type: "mem32", size: MiB }],
      pm: true,
    });
    const b = bus.addDevice({
      vendor: 1,
      device: 3,
      bars: [{ type: "mem32", size: MiB }],
      pm: { noSoftReset: true },
    });
    for (const d of [a, b]) {
      d.enableDevice();
      d.setPowerState(PCI_D3hot);
      d.setPowerState(PCI_D0);
    }
    expect(a.command).toBe(0);
    expect(a.readConfig(PCI_BASE_ADDRESS_0, 4)).toBe(0);
    expect(b.command & PCI_COMMAND_MEMORY).toBeTruthy();
  });

  it("FLR through DEVCTL.BCR_FLR and AF_CTRL.FLR only when advertised; the bit reads 0", () => {
    const { bus } = machine();
    const withFlr = bus.addDevice({
      vendor: 1,
      device: 2,
      bars: [{ type: "mem32", size: MiB }],
      pcie: { flr: true },
    });
    const noFlr = bus.addDevice({
      vendor: 1,
      device: 3,
      bars: [{ type: "mem32", size: MiB }],
      pcie: { flr: false },
    });
    const af = bus.addDevice({
      vendor: 1,
      device: 4,
      bars: [{ type: "mem32", size: MiB }],
      af: { flr: true, tp: true },
    });
    for (const d of [withFlr, noFlr, af]) d.enableDevice();
    for (const d of [withFlr, noFlr])
      d.writeConfig(d.pcieCap + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR);
    af.writeConfig(af.afCap + PCI_AF_CTRL, 1, PCI_AF_CTRL_FLR);
    expect(withFlr.resetCount).toBe(1);
    expect(withFlr.command).toBe(0);
    expect(withFlr.readConfig(withFlr.pcieCap + PCI_EXP_DEVCTL, 2) & PCI_EXP_DEVCTL_BCR_FLR).toBe(
      0,
    );
    expect(noFlr.resetCount).toBe(0);
    expect(af.resetCount).toBe(1);
  });

  it("function reset saves and restores config; EAGAIN when the device lock is held; ENOTTY without a method", () => {
    const { bus } = machine();
    const d = bus.addDevice({
      vendor: 1,
      device: 2,
      bars: [{ type: "mem32", size: MiB }],
      pcie: { flr: true },
    });
    const other = bus.addDevice({ vendor: 1, device: 3, bars: [{ type: "mem32", size: MiB }] });
    d.enableDevice();
    d.setMaster(true);
    const before = d.config.slice();
    d.tryResetFunction();
    expect(d.resetCount).toBe(1);
    expect(d.config).toEqual(before);
    d.deviceLock.lock();
    expect(() => d.tryResetFunction()).toThrow(expect.objectContaining({ errno: EAGAIN }));
    d.deviceLock.unlock();
    expect(d.resetCount).toBe(1);
    // Two functions on the bus and no FLR / PM: no method.
    let err: unknown;
    try {
      other.tryResetFunction();
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, ENOTTY)).toBe(true);
  });

  it("a bus reset resets every function and restores each one's config", () => {
    const { bus } = machine();
    const a = bus.addDevice({ vendor: 1, device: 2, bars: [{ type: "mem32", size: MiB }] });
    const b = bus.addDevice({
      vendor: 1,
      device: 3,
      bars: [{ type: "mem32", size: MiB }],
      pm: true,
    });
    a.enableDevice();
    b.enableDevice();
    b.setMaster(true);
    const snap = [a.config.slice(), b.config.slice()];
    bus.resetBus();
    expect([a.resetCount, b.resetCount]).toEqual([1, 1]);
    expect([a.config, b.config]).toEqual(snap);
    expect(b.command & PCI_COMMAND_MASTER).toBeTruthy();
    a.deviceLock.lock();
    expect(() => bus.resetBus()).toThrow(expect.objectContaining({ errno: EAGAIN }));
    a.deviceLock.unlock();
  });

  it("PMCSR, PCIe and AF capabilities chain from the capability pointer", () => {
    const { bus } = machine();
    const d = bus.addDevice({ vendor: 1, device: 2, pm: true, pcie: true, af: true });
    const seen: number[] = [];
    for (let p = d.readConfig(0x34, 1); p; p = d.readConfig(p + 1, 1))
      seen.push(d.readConfig(p, 1));
    expect(seen).toEqual([PCI_CAP_ID_PM, PCI_CAP_ID_EXP, PCI_CAP_ID_AF]);
    expect(d.readConfig(d.pmCap + PCI_PM_CTRL, 2) & 3).toBe(PCI_D0);
    expect(d.cfgSize).toBe(4096);
    expect(d.readConfig(PCI_COMMAND, 2)).toBe(0);
  });
});
