/**
 * Scenario 11: Device close and process exit: the exporter's cleanup turns every dma-buf of the device
 * into a zombie (permanently revoked), the IOAS keeps the dead areas until they are unmapped,
 * a reopened device needs new dma-bufs, and tearing everything down leaks nothing.
 */
import { KernelError } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { VmWorld } from "../world.js";
import { bringUp, device, twoGpusAndNic } from "./common.js";

export const deviceClose: ScenarioDef<VmWorld> = {
  id: "device-close",
  number: 11,
  title: "Device close: zombie dma-bufs, dead areas, reopen, clean exit",
  summary:
    "The VMM closes gpu1 (fds and all) without unmapping first, as a crashing device thread would. " +
    "vfio-pci's cleanup revokes its dma-bufs for good (zombies), iommufd unmaps them everywhere " +
    "and keeps the dead areas. Reopening gpu1 gives new dma-bufs; the old areas must be unmapped " +
    "before the new ones map. At exit nothing stays pinned or attached.",
  setup: () => new VmWorld(twoGpusAndNic({ vmm: { forgetsRemap: true } })),
  steps: [
    ...bringUp,
    {
      name: "VMM closes gpu1's dma-buf fds and device fd without unmapping",
      actor: "vmm",
      note: "iommufd still holds its own reference on each dma-buf, so the buffers outlive the fds: closing the device fd is what revokes them.",
      run: ({ world }) => {
        world.vmm.closeDevice(device(world, "gpu1"));
        const bufs = world.snapshot().dmabufs.filter((b) => b.device === "gpu1");
        expect(
          bufs.length === 2 && bufs.every((b) => b.state === "zombie"),
          "gpu1's dma-bufs are not zombies",
        );
      },
      expectProbes: { "gpu0→gpu1.bar2": "fault", "nic→gpu1.bar2": "fault" },
    },
    {
      name: "VMM reopens gpu1: new dma-bufs; the old areas are still dead",
      actor: "vmm",
      run: ({ world, log }) => {
        const dev = device(world, "gpu1");
        world.vmm.reopenDevice(dev);
        world.vmm.guestEnableMemory(dev);
        const dead = world
          .snapshot()
          .ioas.flatMap((i) => i.areas)
          .filter((a) => !a.live);
        expect(dead.length === 2, `expected the two old areas still dead, found ${dead.length}`);
        log("MAP_FILE of the new dma-bufs failed with EEXIST: the dead areas own the range");
      },
      expectProbes: { "gpu0→gpu1.bar2": "fault" },
    },
    {
      name: "VMM unmaps the dead areas and maps the new dma-bufs",
      actor: "vmm",
      run: ({ world }) => {
        world.vmm.forgetsRemap = false;
        for (const bar of device(world, "gpu1").bars) {
          const un = world.vmm.unmap(bar.gpa, bar.size);
          const ret = un < 0 ? un : world.vmm.mapFile(bar.dmabufFd, 0n, bar.size, bar.gpa);
          if (ret < 0) throw new KernelError(-ret, `map new dma-buf of BAR${bar.index}`);
          bar.mapped = true;
        }
        const bufs = world.snapshot().dmabufs.filter((b) => b.device === "gpu1");
        expect(!bufs.some((b) => b.state === "zombie"), "a zombie outlived its last unmap");
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "nic→gpu1.bar2": "mmio" },
    },
    {
      name: "VMM exits: devices closed, IOAS emptied, /dev/iommu closed — nothing leaks",
      actor: "vmm",
      run: ({ world, log }) => {
        world.vmm.shutdown();
        const pinned = world.kernel.mem.totalPinned();
        expect(pinned === 0, `${pinned} pages still pinned`);
        const live = world.snapshot().dmabufs;
        expect(live.length === 0, `${live.length} dma-bufs still exist`);
        log("no page pinned, no dma-buf left, no attachment");
      },
    },
  ],
};
