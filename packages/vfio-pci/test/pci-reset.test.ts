import { EINVAL, EIO, ENOTTY, Kernel, isKernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { type PciDevSpec, pciRoot } from "../src/pci.js";
import {
  PCI_AF_CTRL,
  PCI_AF_CTRL_FLR,
  PCI_BASE_ADDRESS_0,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_D1,
  PCI_D2,
  PCI_D3hot,
  PCI_PM_CAP_D1,
  PCI_PM_CAP_D2,
  PCI_PM_CTRL,
  PCI_PM_PMC,
  PCI_PM_CTRL_NO_SOFT_RESET,
} from "../src/pci-regs.js";

const MiB = 1n << 20n;

function machine() {
  const kernel = new Kernel();
  const bus = pciRoot(kernel).newBus();
  const events: Array<{ name: string; data: unknown }> = [];
  kernel.trace.on((r) => {
    if (r.name.startsWith("pci:")) events.push({ name: r.name, data: r.data });
  });
  return { kernel, bus, events };
}

function errnoOf(f: () => unknown): number | undefined {
  try {
    f();
  } catch (e) {
    if (isKernelError(e)) return e.errno;
    throw e;
  }
  return undefined;
}

const base = { vendor: 1, device: 1, bars: [{ type: "mem32", size: MiB }] } as const;

describe("reset methods in pci_reset_fn_methods order (drivers/pci/pci.c)", () => {
  it("FLR only with DEVCAP.FLR; AF FLR needs both TP and FLR; PM reset needs NoSoftRst-; bus reset needs a lone function", () => {
    const { bus } = machine();
    const add = (spec: Partial<PciDevSpec>) => bus.addDevice({ ...base, ...spec });
    // pcie_reset_flr: no DEVCAP.FLR, so the PM reset is next.
    expect(add({ pcie: { flr: false }, pm: true }).resetMethod()).toBe("pm");
    expect(add({ pcie: { flr: true }, pm: true }).resetMethod()).toBe("flr");
    // pci_af_flr: ENOTTY unless the capability has both TP and FLR.
    expect(add({ af: { flr: true, tp: false }, pm: true }).resetMethod()).toBe("pm");
    expect(add({ af: { flr: false, tp: true }, pm: true }).resetMethod()).toBe("pm");
    expect(add({ pm: true, af: { flr: true, tp: true } }).resetMethod()).toBe("af_flr");
    // Config bytes that happen to look like AF_CAP bits are not an AF capability.
    expect(add({ device: 0x0306, pm: true }).resetMethod()).toBe("pm");
    // pci_pm_reset: ENOTTY with NoSoftRst+; pci_parent_bus_reset: ENOTTY with a sibling.
    expect(add({ pm: { noSoftReset: true } }).resetMethod()).toBeUndefined();
    expect(add({ pm: { noSoftReset: false } }).resetMethod()).toBe("pm");
    expect(add({}).resetMethod()).toBeUndefined();
    const { bus: lone } = machine();
    expect(lone.addDevice(base).resetMethod()).toBe("bus");
  });

  it("each method resets the function and is the one reported", () => {
    const { bus, events } = machine();
    const af = bus.addDevice({ ...base, af: true });
    const pm = bus.addDevice({ ...base, pm: true });
    for (const d of [af, pm]) {
      d.enableDevice();
      d.tryResetFunction();
      expect(d.resetCount).toBe(1);
      expect(d.command & PCI_COMMAND_MEMORY).toBeTruthy();
    }
    const { bus: lone, events: loneEvents } = machine();
    const only = lone.addDevice(base);
    only.tryResetFunction();
    expect(only.resetCount).toBe(1);
    expect(events.filter((e) => e.name === "pci:reset").map((e) => e.data)).toEqual([
      { dev: af.name, method: "af_flr" },
      { dev: pm.name, method: "pm" },
    ]);
    expect(loneEvents.map((e) => e.data)).toEqual([{ dev: only.name, method: "bus" }]);
  });

  it("__pci_reset_function_locked without a method is ENOTTY and resets nothing", () => {
    const { bus } = machine();
    const a = bus.addDevice(base);
    bus.addDevice(base);
    a.enableDevice();
    expect(errnoOf(() => a.resetFunctionLocked())).toBe(ENOTTY);
    expect(a.resetCount).toBe(0);
    expect(a.command & PCI_COMMAND_MEMORY).toBeTruthy();
  });

  it("AF_CTRL.FLR does nothing when AF_CAP does not advertise FLR", () => {
    const { bus } = machine();
    const d = bus.addDevice({ ...base, af: { flr: false, tp: true } });
    d.enableDevice();
    d.writeConfig(d.afCap + PCI_AF_CTRL, 1, PCI_AF_CTRL_FLR);
    expect(d.resetCount).toBe(0);
    expect(d.command & PCI_COMMAND_MEMORY).toBeTruthy();
  });

  it("a bus reset is reported once for the bus and brings a D3hot function back in D0", () => {
    const { bus, events } = machine();
    const d = bus.addDevice({ ...base, pm: { noSoftReset: true } });
    d.enableDevice();
    d.setPowerState(PCI_D3hot);
    events.length = 0;
    bus.resetBus();
    // pci_dev_save_and_disable wakes the function first; a reset leaves PMCSR in D0.
    expect(d.powerState).toBe(PCI_D0);
    expect(d.readConfig(d.pmCap + PCI_PM_CTRL, 2)).toBe(PCI_PM_CTRL_NO_SOFT_RESET);
    expect(d.command & PCI_COMMAND_MEMORY).toBeTruthy();
    expect(events).toEqual([{ name: "pci:reset", data: { dev: bus.name, method: "bus" } }]);
  });
});

describe("power states (pci_set_power_state, pci_raw_set_power_state)", () => {
  it("a state outside D0..D3hot is EINVAL and writes nothing", () => {
    const { bus } = machine();
    const d = bus.addDevice({ ...base, pm: true });
    for (const s of [4, 5, -1]) expect(errnoOf(() => d.setPowerState(s))).toBe(EINVAL);
    expect(d.powerState).toBe(PCI_D0);
  });

  it("without a PM capability the call changes nothing in config space", () => {
    const { bus } = machine();
    const d = bus.addDevice(base);
    d.setPowerState(PCI_D3hot);
    expect(d.command).toBe(0);
    expect(d.powerState).toBe(PCI_D0);
  });

  it("PMCSR changes are reported once per change; only D3hot -> D0 resets", () => {
    const { bus, events } = machine();
    const d = bus.addDevice({ ...base, pm: true });
    d.enableDevice();
    const pmcsr = d.pmCap + PCI_PM_CTRL;
    d.writeConfig(pmcsr, 2, PCI_D0);
    expect(events).toEqual([]);
    // D1 -> D0 keeps the function's context (no soft reset from D1).
    d.writeConfig(pmcsr, 2, 1);
    d.writeConfig(pmcsr, 2, PCI_D0);
    expect(d.resetCount).toBe(0);
    expect(d.command & PCI_COMMAND_MEMORY).toBeTruthy();
    d.setPowerState(PCI_D3hot);
    d.setPowerState(PCI_D0);
    expect(d.resetCount).toBe(1);
    expect(events.map((e) => e.data)).toEqual([
      { dev: d.name, from: 0, to: 1 },
      { dev: d.name, from: 1, to: 0 },
      { dev: d.name, from: 0, to: 3 },
      { dev: d.name, from: 3, to: 0 },
    ]);
  });

  it("only goes deeper from a low-power state: D3hot -> D1 and D2 -> D1 are EINVAL, D1 -> D2 -> D3hot is not", () => {
    const { bus, events } = machine();
    const d = bus.addDevice({ ...base, pm: { d1: true, d2: true } });
    expect(d.readConfig(d.pmCap + PCI_PM_PMC, 2) & (PCI_PM_CAP_D1 | PCI_PM_CAP_D2)).toBe(
      PCI_PM_CAP_D1 | PCI_PM_CAP_D2,
    );
    d.setPowerState(PCI_D2);
    expect(errnoOf(() => d.setPowerState(PCI_D1))).toBe(EINVAL);
    expect(d.powerState).toBe(PCI_D2);
    d.setPowerState(PCI_D3hot);
    for (const s of [PCI_D1, PCI_D2]) expect(errnoOf(() => d.setPowerState(s))).toBe(EINVAL);
    // Asking for the state it is in is no transition at all.
    d.setPowerState(PCI_D3hot);
    d.setPowerState(PCI_D0);
    d.setPowerState(PCI_D1);
    d.setPowerState(PCI_D2);
    expect(events.map((e) => e.data)).toEqual([
      { dev: d.name, from: 0, to: 2 },
      { dev: d.name, from: 2, to: 3 },
      { dev: d.name, from: 3, to: 0 },
      { dev: d.name, from: 0, to: 1 },
      { dev: d.name, from: 1, to: 2 },
    ]);
  });

  it("D1 / D2 without their PMC bit is EIO, and the EINVAL of a shallower state comes first", () => {
    const { bus, events } = machine();
    const d = bus.addDevice({ ...base, pm: { d2: true } });
    expect(errnoOf(() => d.setPowerState(PCI_D1))).toBe(EIO);
    d.setPowerState(PCI_D2);
    const e = bus.addDevice({ ...base, pm: true });
    expect(e.readConfig(e.pmCap + PCI_PM_PMC, 2) & (PCI_PM_CAP_D1 | PCI_PM_CAP_D2)).toBe(0);
    for (const s of [PCI_D1, PCI_D2]) expect(errnoOf(() => e.setPowerState(s))).toBe(EIO);
    e.setPowerState(PCI_D3hot);
    expect(errnoOf(() => e.setPowerState(PCI_D1))).toBe(EINVAL);
    expect([d.powerState, e.powerState]).toEqual([PCI_D2, PCI_D3hot]);
    expect(events.map((x) => x.data)).toEqual([
      { dev: d.name, from: 0, to: 2 },
      { dev: e.name, from: 0, to: 3 },
    ]);
  });

  it("a function in D3hot does not master the bus", () => {
    const { bus } = machine();
    const d = bus.addDevice({ ...base, pm: { noSoftReset: true } });
    d.setMaster(true);
    expect(d.busMaster).toBe(true);
    d.setPowerState(PCI_D3hot);
    expect(d.busMaster).toBe(false);
  });
});

describe("pci_enable_device (pci_enable_resources) and pci_save_state", () => {
  it("COMMAND.IO for I/O BARs, COMMAND.MEMORY for memory BARs, each only when present", () => {
    const { bus } = machine();
    const io = bus.addDevice({ vendor: 1, device: 1, bars: [{ type: "io", size: 32 }] });
    io.setMaster(true);
    io.enableDevice();
    expect(io.command).toBe(PCI_COMMAND_IO | PCI_COMMAND_MASTER);
    const mem = bus.addDevice(base);
    mem.enableDevice();
    expect(mem.command).toBe(PCI_COMMAND_MEMORY);
  });

  it("pci_save_state keeps the header and the capabilities, not the extended space", () => {
    const { bus } = machine();
    const d = bus.addDevice({ ...base, pcie: true });
    const s = d.saveState();
    expect(s.config.length).toBeLessThanOrEqual(256);
    expect(s.config.length).toBeGreaterThan(PCI_BASE_ADDRESS_0);
  });
});
