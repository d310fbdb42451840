/**
 * Scenario 5: Import while revoked: a dma-buf whose device has memory decode off cannot be mapped
 * (ENODEV, nothing created). OpenVMM's fix orders the kernel's COMMAND.MEMORY enable before the
 * IOAS import.
 */
import { ENODEV } from "@x/kernel";
import { PCI_COMMAND, PCI_COMMAND_MEMORY } from "@x/vfio-pci";
import { type ScenarioDef, expect } from "../scenario.js";
import { VmWorld } from "../world.js";
import { bootIommufd, device, mapRam, realize, twoGpusAndNic } from "./common.js";

export const importRevoked: ScenarioDef<VmWorld> = {
  id: "import-revoked",
  number: 5,
  title: "Importing a revoked dma-buf: ENODEV until decode is on",
  summary:
    "The guest sizes gpu1's BARs with memory decode off, which revokes their dma-bufs. A VMM that " +
    "imports before enabling decode in the kernel gets ENODEV and no area; enabling first, then " +
    "MAP_FILE, works.",
  setup: () => new VmWorld(twoGpusAndNic()),
  steps: [
    bootIommufd,
    mapRam,
    realize("gpu0"),
    realize("gpu1"),
    {
      name: "Guest sizes gpu1's BARs: COMMAND.MEMORY off in the kernel (the dma-bufs are revoked)",
      actor: "guest",
      run: ({ world }) => {
        const dev = device(world, "gpu1");
        world.vmm.kernelConfigWrite(dev, PCI_COMMAND, 2, dev.command & ~PCI_COMMAND_MEMORY);
        const bufs = world.snapshot().dmabufs.filter((b) => b.device === "gpu1");
        expect(
          bufs.every((b) => b.state === "revoked"),
          "gpu1's dma-bufs are not revoked",
        );
      },
    },
    {
      name: "VMM imports gpu1's BAR2 before enabling decode: ENODEV, nothing created",
      actor: "vmm",
      note: "The private interconnect refuses a revoked buffer; the failed MAP_FILE leaves no area, attachment or IOPTE behind.",
      run: ({ world, log }) => {
        const bar = device(world, "gpu1").bars.find((b) => b.index === 2)!;
        const before = world.snapshot().ioas.flatMap((i) => i.areas).length;
        const ret = world.vmm.mapFile(bar.dmabufFd, 0n, bar.size, bar.gpa);
        expect(ret === -ENODEV, `expected -ENODEV, got ${ret}`);
        const after = world.snapshot().ioas.flatMap((i) => i.areas).length;
        expect(before === after, "a failed import left an area");
        log("no area was created");
      },
    },
    {
      name: "Correct order: guest enables decode (kernel first), then the VMM maps",
      actor: "guest",
      run: ({ world }) => {
        for (const d of world.vmm.devices) world.vmm.guestEnableMemory(d);
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "gpu1→gpu0.bar2": "mmio" },
    },
  ],
};
