/**
 * Scenario 4: A buggy VMM that forgets to remap (cloud-hypervisor #8895's situation): the reset revokes,
 * the VMM never unmaps, DMA to the range faults, MAP_FILE at the same IOVA is EEXIST, and the
 * exporter's un-revoke does not bring anything back — only IOAS_UNMAP + MAP_FILE does.
 */
import { EEXIST, KernelError } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { VmWorld } from "../world.js";
import { bringUp, device, twoGpusAndNic } from "./common.js";

const gpu1Dead = {
  "gpu0→gpu1.bar2": "fault",
  "nic→gpu1.bar2": "fault",
  "gpu1→gpu0.bar2": "mmio",
} as const;

export const forgotRemap: ScenarioDef<VmWorld> = {
  id: "forgot-remap",
  number: 4,
  title: "A VMM that forgets to unmap and remap around a reset",
  summary:
    "The VMM issues VFIO_DEVICE_RESET on gpu1 without touching the IOAS. vfio revokes and, since " +
    "the guest left memory decode on, un-revokes within the same ioctl; iommufd unmapped the BARs " +
    "on the revoke and ignores the un-revoke. The dma-bufs are LIVE, the areas dead, DMA faults, and " +
    "the only way back is IOAS_UNMAP followed by a new MAP_FILE.",
  setup: () => new VmWorld(twoGpusAndNic({ vmm: { forgetsRemap: true } })),
  steps: [
    ...bringUp,
    {
      name: "Forgetful VMM resets gpu1 (no unmap before, no map after)",
      actor: "vmm",
      run: ({ world }) => world.vmm.reset(device(world, "gpu1")),
      expectProbes: gpu1Dead,
    },
    {
      name: "The exporter un-revoked, iommufd did not remap: dma-bufs LIVE, areas dead",
      actor: "kernel",
      run: ({ world, log }) => {
        const snap = world.snapshot();
        const bufs = snap.dmabufs.filter((b) => b.device === "gpu1");
        const dead = snap.ioas.flatMap((i) => i.areas).filter((a) => !a.live);
        expect(
          bufs.every((b) => b.state === "live"),
          "gpu1's dma-bufs are not live",
        );
        expect(dead.length === 2, `expected gpu1's two areas dead, found ${dead.length}`);
        log(`${bufs.length} dma-bufs live, ${dead.length} areas dead with no IOPTE`);
      },
      expectProbes: gpu1Dead,
    },
    {
      name: "MAP_FILE at the same IOVA fails with EEXIST",
      actor: "vmm",
      run: ({ world }) => {
        const bar = device(world, "gpu1").bars.find((b) => b.index === 2)!;
        const ret = world.vmm.mapFile(bar.dmabufFd, 0n, bar.size, bar.gpa);
        expect(ret === -EEXIST, `expected -EEXIST, got ${ret}`);
      },
      expectProbes: gpu1Dead,
    },
    {
      name: "Recovery: IOAS_UNMAP, then MAP_FILE the same dma-bufs",
      actor: "vmm",
      run: ({ world }) => {
        for (const bar of device(world, "gpu1").bars) {
          const un = world.vmm.unmap(bar.gpa, bar.size);
          const ret = un < 0 ? un : world.vmm.mapFile(bar.dmabufFd, 0n, bar.size, bar.gpa);
          if (ret < 0) throw new KernelError(-ret, `remap BAR${bar.index}`);
        }
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "nic→gpu1.bar2": "mmio", "gpu1→gpu0.bar2": "mmio" },
    },
  ],
};
