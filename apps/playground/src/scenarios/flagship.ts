/**
 * The flagship: two GPUs and a NIC in one VM, P2P DMA between them, an FLR done the right way
 * (unmap → reset → map), then the same FLR by a VMM that forgets the protocol — the kernel
 * revokes, the area stays dead, DMA faults, a new map at the same IOVA is EEXIST until the VMM
 * unmaps — and the recovery.
 */
import { EEXIST, KernelError } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { VmWorld } from "../world.js";
import { GPA, bringUp, device, p2pWrite, twoGpusAndNic } from "./common.js";

const allLive = {
  "gpu0→ram": "ram",
  "gpu0→gpu1.bar2": "mmio",
  "gpu1→gpu0.bar2": "mmio",
  "nic→gpu1.bar2": "mmio",
} as const;

export const flagship: ScenarioDef<VmWorld> = {
  id: "flagship",
  number: 0,
  title: "Two GPUs and a NIC: P2P, FLR done right, then a VMM that forgets to remap",
  summary:
    "A QEMU-like VMM boots a guest with memfd RAM, two GPUs behind different IOMMUs and a NIC. " +
    "BARs are exported as dma-bufs and mapped at their guest-physical addresses, so the devices " +
    "reach each other peer to peer. An FLR with the unmap → reset → map protocol keeps P2P working; " +
    "the same FLR without it leaves a dead area that faults until the VMM unmaps and maps again.",
  setup: () => new VmWorld(twoGpusAndNic()),
  steps: [
    ...bringUp,
    {
      name: "gpu0 writes into gpu1's BAR2 peer to peer",
      actor: "device",
      note: "The write goes through gpu0's domain: the IOVA is gpu1's guest-physical BAR address, the IOPTE points at gpu1's MMIO.",
      run: ({ world, log }) => log(p2pWrite(world, "gpu0", "gpu1", 2, "frame#1")),
      expectProbes: allLive,
    },
    {
      name: "VMM resets gpu1 with the protocol: unmap BARs → VFIO_DEVICE_RESET → map again",
      actor: "vmm",
      note: "Pre-reset clears COMMAND (vfio revokes, QEMU's listener unmaps), the reset runs, restoring COMMAND makes vfio un-revoke and QEMU map the same dma-bufs again.",
      run: ({ world }) => world.vmm.reset(device(world, "gpu1")),
      expectProbes: allLive,
    },
    {
      name: "The VMM's bug: it now resets gpu1 without unmapping first",
      actor: "vmm",
      note: "VFIO revokes the dma-buf during the reset; iommufd unmaps it from every domain and marks the area dead. The un-revoke after the reset is ignored: iommufd never remaps.",
      run: ({ world }) => {
        world.vmm.forgetsRemap = true;
        world.vmm.reset(device(world, "gpu1"));
      },
      expectProbes: { ...allLive, "gpu0→gpu1.bar2": "fault", "nic→gpu1.bar2": "fault" },
    },
    {
      name: "The VMM tries to map gpu1's BAR2 again at the same IOVA: EEXIST",
      actor: "vmm",
      note: "The dead area still owns the IOVA range until user space unmaps it.",
      run: ({ world, log }) => {
        const bar = device(world, "gpu1").bars.find((b) => b.index === 2)!;
        const ret = world.vmm.mapFile(bar.dmabufFd, 0n, bar.size, GPA.gpu1Bar2);
        expect(ret === -EEXIST, `MAP_FILE over the dead area returned ${ret}, expected -EEXIST`);
        log("the dead area still occupies the range");
      },
      expectProbes: { ...allLive, "gpu0→gpu1.bar2": "fault", "nic→gpu1.bar2": "fault" },
    },
    {
      name: "Recovery: IOAS_UNMAP the dead areas, MAP_FILE the (un-revoked) dma-bufs again",
      actor: "vmm",
      run: ({ world }) => {
        world.vmm.forgetsRemap = false;
        const dev = device(world, "gpu1");
        for (const bar of dev.bars) {
          const un = world.vmm.unmap(bar.gpa, bar.size);
          if (un < 0) throw new KernelError(-un, "unmap dead area");
          const ret = world.vmm.mapFile(bar.dmabufFd, 0n, bar.size, bar.gpa);
          if (ret < 0) throw new KernelError(-ret, "map again");
        }
      },
      expectProbes: allLive,
    },
    {
      name: "gpu0 writes into gpu1's BAR2 again",
      actor: "device",
      run: ({ world, log }) => log(p2pWrite(world, "gpu0", "gpu1", 2, "frame#2")),
      expectProbes: allLive,
    },
  ],
};
