/**
 * The vfio-pci module and its driver binding (drivers/vfio/pci/vfio_pci.c): module init, probe
 * of a function, the driver data it leaves, remove.
 */
import { Kernel, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { VfioPciModule, loadVfioPci } from "../src/vfio-pci.js";
import { GPU, machine } from "./helpers.js";

describe("vfio_pci_init / vfio_pci_probe / vfio_pci_remove", () => {
  it("the loaded module is found from its kernel, once; a second load is refused", () => {
    const kernel = new Kernel();
    expect(VfioPciModule.of(kernel)).toBeUndefined();
    const mod = loadVfioPci(kernel);
    expect(VfioPciModule.of(kernel)).toBe(mod);
    expect(() => loadVfioPci(kernel)).toThrow(KernelWarning);
    expect(VfioPciModule.of(kernel)).toBe(mod);
  });

  it("probe binds a function once (a bound device is not probed again); remove unbinds it", () => {
    const m = machine();
    const pdev = m.bus.addDevice(GPU);
    expect(m.mod.device(pdev)).toBeUndefined();
    const vdev = m.mod.probe(pdev);
    expect(m.mod.device(pdev)).toBe(vdev);
    expect(() => m.mod.probe(pdev)).toThrow(KernelWarning);
    // The refused probe registered nothing: one cdev, still the first device's.
    expect(m.mod.device(pdev)).toBe(vdev);
    expect(m.kernel.hasDevice("/dev/vfio/devices/vfio0")).toBe(true);
    expect(m.kernel.hasDevice("/dev/vfio/devices/vfio1")).toBe(false);
    m.mod.remove(vdev);
    expect(m.mod.device(pdev)).toBeUndefined();
    expect(m.kernel.hasDevice("/dev/vfio/devices/vfio0")).toBe(false);
    // Unbound, the function can be probed again.
    expect(m.mod.probe(pdev).pdev).toBe(pdev);
  });
});
