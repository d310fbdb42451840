/**
 * Scenario 2: Guest BAR sizing / memory-decode toggle: MEM 1→0 reaches vfio first (revoke: iommufd
 * unmaps every domain, the area is dead), then QEMU's listener unmaps the area; MEM 0→1
 * un-revokes and the listener maps the dma-buf again. No step leaves a stale IOPTE.
 */
import { PCI_COMMAND, PCI_COMMAND_MEMORY } from "@x/vfio-pci";
import { type ScenarioDef, expect } from "../scenario.js";
import { VmWorld } from "../world.js";
import { bringUp, device, twoGpusAndNic } from "./common.js";

const p2pOff = {
  "gpu0→gpu1.bar2": "fault",
  "nic→gpu1.bar2": "fault",
  "gpu1→gpu0.bar2": "mmio",
} as const;

export const memToggle: ScenarioDef<VmWorld> = {
  id: "mem-toggle",
  number: 2,
  title: "Guest BAR sizing: memory decode off and on again",
  summary:
    "The guest clears COMMAND.MEMORY on gpu1 to size its BARs. vfio-pci revokes the BAR dma-bufs " +
    "before QEMU even sees the write, so iommufd unmaps them from both domains (dead areas); QEMU's " +
    "listener then unmaps the areas. Setting MEMORY again un-revokes and QEMU maps them anew.",
  setup: () => new VmWorld(twoGpusAndNic()),
  steps: [
    ...bringUp,
    {
      name: "Guest clears MEM on gpu1: the kernel sees the write first and revokes",
      actor: "guest",
      note: "Only the kernel half of QEMU's vfio_pci_write_config has run: the areas are still there, dead, with no IOPTE in any domain.",
      run: ({ world }) => {
        const dev = device(world, "gpu1");
        world.vmm.kernelConfigWrite(dev, PCI_COMMAND, 2, dev.command & ~PCI_COMMAND_MEMORY);
        const dead = world
          .snapshot()
          .ioas.flatMap((i) => i.areas)
          .filter((a) => !a.live);
        expect(dead.length === 2, `expected gpu1's 2 areas dead, found ${dead.length}`);
      },
      expectProbes: p2pOff,
    },
    {
      name: "QEMU's listener removes gpu1's BAR sections: IOAS_UNMAP of the dead areas",
      actor: "vmm",
      run: ({ world }) => {
        const dev = device(world, "gpu1");
        world.vmm.emulateCommand(dev, dev.command & ~PCI_COMMAND_MEMORY);
        const areas = world.snapshot().ioas.flatMap((i) => i.areas);
        expect(!areas.some((a) => a.label.startsWith("gpu1")), "gpu1 areas left after unmap");
      },
      expectProbes: p2pOff,
    },
    {
      name: "Guest sets MEM again: vfio un-revokes, QEMU maps the same dma-bufs",
      actor: "guest",
      run: ({ world }) => world.vmm.guestEnableMemory(device(world, "gpu1")),
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "nic→gpu1.bar2": "mmio", "gpu1→gpu0.bar2": "mmio" },
    },
  ],
};
