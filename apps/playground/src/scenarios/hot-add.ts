/**
 * Scenario 6: Hot-add a device behind an incompatible IOMMU after a BAR was revoked: the new domain is
 * filled with every live area and skips the dead one; after the VMM unmaps and maps the dead BAR
 * again, both domains get it.
 */
import { KernelError } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { VmWorld } from "../world.js";
import { bootIommufd, device, mapRam, realize, twoGpusAndNic } from "./common.js";

export const hotAdd: ScenarioDef<VmWorld> = {
  id: "hot-add",
  number: 6,
  title: "Hot-adding a device while an area is dead",
  summary:
    "gpu0 and the NIC share one domain. A forgetful reset leaves gpu0's BAR areas dead. gpu1 is " +
    "hot-plugged behind another IOMMU, so QEMU allocates a second HWPT: iommufd fills it with RAM " +
    "and the NIC's BAR, tracks the dead areas without mapping them. Unmapping and mapping gpu0's " +
    "BARs again puts them in both domains.",
  setup: () => new VmWorld(twoGpusAndNic({ vmm: { forgetsRemap: true } })),
  steps: [
    bootIommufd,
    mapRam,
    realize("gpu0"),
    realize("nic"),
    {
      name: "Guest enables decode on gpu0 and the NIC",
      actor: "guest",
      run: ({ world }) => {
        for (const d of world.vmm.devices) world.vmm.guestEnableMemory(d);
      },
      expectProbes: { "gpu0→ram": "ram" },
    },
    {
      name: "Forgetful VMM resets gpu0: its BAR areas are dead",
      actor: "vmm",
      run: ({ world }) => world.vmm.reset(device(world, "gpu0")),
    },
    realize(
      "gpu1",
      "Hot-plug: gpu1's IOMMU refuses the existing domain (EINVAL), QEMU allocates a second HWPT, which iommufd fills.",
    ),
    {
      name: "The new domain holds RAM and the NIC's BAR, and nothing of gpu0's dead areas",
      actor: "kernel",
      run: ({ world, log }) => {
        const areas = world.snapshot().ioas.flatMap((i) => i.areas);
        for (const a of areas) {
          const values = Object.values(a.mapped);
          expect(values.length === 2, `${a.label} is not tracked in 2 domains`);
          if (a.live)
            expect(
              values.every((m) => m === a.length),
              `${a.label} not fully mapped`,
            );
          else
            expect(
              values.every((m) => m === 0n),
              `dead ${a.label} has IOPTEs`,
            );
          log(`${a.label}: ${a.live ? "live, mapped in both" : "dead, mapped in neither"}`);
        }
      },
    },
    {
      name: "Guest enables decode on gpu1; the VMM recovers gpu0's BARs (unmap + map)",
      actor: "vmm",
      run: ({ world }) => {
        world.vmm.guestEnableMemory(device(world, "gpu1"));
        for (const bar of device(world, "gpu0").bars) {
          const un = world.vmm.unmap(bar.gpa, bar.size);
          const ret = un < 0 ? un : world.vmm.mapFile(bar.dmabufFd, 0n, bar.size, bar.gpa);
          if (ret < 0) throw new KernelError(-ret, `remap gpu0 BAR${bar.index}`);
        }
      },
      expectProbes: { "gpu1→gpu0.bar2": "mmio", "gpu0→gpu1.bar2": "mmio", "nic→gpu1.bar2": "mmio" },
    },
  ],
};
