/**
 * Scenario 3: FLR via the VMM and QEMU's pre-reset ordering. Clearing COMMAND before forcing D0 keeps
 * the BARs revoked through the reset; the pre-2025 order (D0 first) lets a device in D3hot decode
 * memory again for a moment — the dma-bufs come back LIVE right before the reset.
 */
import type { TraceRecord } from "@x/kernel";
import { PCI_COMMAND, PCI_D0, PCI_D3hot } from "@x/vfio-pci";
import { type ScenarioDef, expect } from "../scenario.js";
import { VmWorld } from "../world.js";
import { bringUp, device, twoGpusAndNic } from "./common.js";

/** Events of `dev`'s dma-bufs becoming LIVE in `events` (one per buffer). */
function liveTransitions(events: readonly TraceRecord[], pciName: string): number {
  return events.filter((e) => {
    const d = e.data as { dev?: string; state?: string };
    return e.name === "vfio-pci:dmabuf" && d.dev === pciName && d.state === "live";
  }).length;
}

function resetInOrder(world: VmWorld, name: string, order: "command-first" | "d0-first"): number {
  const dev = device(world, name);
  const command = dev.command;
  const { records } = world.kernel.trace.record(() => {
    if (order === "command-first") {
      world.vmm.quiesce(dev);
      world.vmm.setPowerRaw(dev, PCI_D0);
    } else {
      world.vmm.setPowerRaw(dev, PCI_D0);
      world.vmm.quiesce(dev);
    }
    world.vmm.deviceReset(dev);
  });
  world.vmm.guestConfigWrite(dev, PCI_COMMAND, 2, command);
  return liveTransitions(records, world.host.device(name).pdev.name);
}

export const flrOrder: ScenarioDef<VmWorld> = {
  id: "flr-order",
  number: 3,
  title: "FLR through the VMM: why COMMAND is cleared before D0",
  summary:
    "Both GPUs sit in D3hot (their dma-bufs revoked, their BARs unmapped by the VMM) when the VMM " +
    "resets them. In the 2025 order (clear COMMAND, then D0) nothing becomes reachable before the " +
    "reset. In the old order (D0 first) vfio sees memory enabled again and un-revokes the dma-bufs " +
    "for a moment. Either way the VMM maps the BARs again once the guest turns decode back on.",
  setup: () => new VmWorld(twoGpusAndNic()),
  steps: [
    ...bringUp,
    {
      name: "Guest puts both GPUs into D3hot; QEMU unmaps their BARs first",
      actor: "guest",
      run: ({ world }) => {
        for (const n of ["gpu0", "gpu1"]) world.vmm.guestSetPower(device(world, n), PCI_D3hot);
        const bufs = world.snapshot().dmabufs.filter((b) => b.device.startsWith("gpu"));
        expect(
          bufs.every((b) => b.state === "revoked"),
          "D3hot did not revoke every GPU dma-buf",
        );
      },
      expectProbes: { "gpu0→gpu1.bar2": "fault", "gpu1→gpu0.bar2": "fault" },
    },
    {
      name: "VMM resets gpu1 in the 2025 order: COMMAND cleared, then D0, then the reset",
      actor: "vmm",
      run: ({ world, log }) => {
        const n = resetInOrder(world, "gpu1", "command-first");
        expect(n === 0, `a dma-buf became live before the reset completed (${n} times)`);
        log("the dma-bufs stayed revoked until the guest enabled decode after the reset");
      },
      expectProbes: { "gpu1→gpu0.bar2": "fault", "nic→gpu1.bar2": "mmio" },
    },
    {
      name: "VMM resets gpu0 in the old order: D0 first — a transient re-enable",
      actor: "vmm",
      note: "vfio un-revokes as soon as the device is back in D0 with MEMORY set, and revokes again when COMMAND is cleared.",
      run: ({ world, log }) => {
        const n = resetInOrder(world, "gpu0", "d0-first");
        expect(n === 2, `expected both of gpu0's dma-bufs un-revoked for a moment, saw ${n}`);
        log("gpu0's two dma-bufs were LIVE for a moment while the VMM was about to reset it");
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "gpu1→gpu0.bar2": "mmio" },
    },
    {
      name: "The guest issues an FLR itself (PCIe DEVCTL.BCR_FLR); QEMU wraps it the same way",
      actor: "guest",
      note: "vfio-pci traps the DEVCTL write and resets the function, revoking around it; QEMU clears COMMAND first and restores it after, so the BARs are unmapped across the FLR and mapped again.",
      run: ({ world }) => {
        const { records } = world.kernel.trace.record(() =>
          world.vmm.guestFlr(device(world, "gpu1")),
        );
        const flr = records.some(
          (e) => e.name === "pci:reset" && (e.data as { method?: string }).method === "flr",
        );
        expect(flr, "no function-level reset happened");
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "nic→gpu1.bar2": "mmio" },
    },
  ],
};
