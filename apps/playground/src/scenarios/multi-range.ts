/**
 * Scenario 7: Multi-range dma-bufs (QEMU's sparse BAR): creation succeeds, MAP_FILE refuses more than
 * one range (EOPNOTSUPP) and QEMU downgrades it to its once-only P2P warning; alioth exports one
 * single-range dma-buf per piece, and those map.
 */
import { EOPNOTSUPP, KernelError } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { hex } from "../snapshot.js";
import { MiB, VmWorld } from "../world.js";
import { bringUp, device, twoGpusAndNic } from "./common.js";

/** gpu1's BAR0 with the MSI-X table page range carved out, as QEMU's sparse mmap has it. */
const PIECES = [
  { offset: 0n, length: 8n * MiB },
  { offset: 8n * MiB + 64n * 1024n, length: 8n * MiB - 64n * 1024n },
] as const;

export const multiRange: ScenarioDef<VmWorld> = {
  id: "multi-range",
  number: 7,
  title: "Sparse BARs: one multi-range dma-buf fails, one dma-buf per piece works",
  summary:
    "QEMU exports a BAR whose MSI-X table is carved out as one dma-buf with a range per mmap piece. " +
    "VFIO accepts it, but the iommufd interconnect takes only single-range buffers: MAP_FILE is " +
    "EOPNOTSUPP and QEMU prints its P2P warning once. Google alioth exports each piece as its own " +
    "single-range dma-buf and maps them at the pieces' addresses.",
  setup: () => new VmWorld(twoGpusAndNic()),
  steps: [
    ...bringUp,
    {
      name: "QEMU-style: re-export gpu1's BAR0 as one dma-buf of two ranges and map it",
      actor: "vmm",
      run: ({ world, log }) => {
        const dev = device(world, "gpu1");
        const bar = dev.bars.find((b) => b.index === 0)!;
        const un = world.vmm.unmap(bar.gpa, bar.size);
        if (un < 0) throw new KernelError(-un, "unmap BAR0");
        bar.mapped = false;
        const fd = world.vmm.exportBar(dev, bar, [...PIECES]);
        expect(fd >= 0, "the multi-range export failed");
        const ret = world.vmm.mapFile(fd, 0n, PIECES[0].length + PIECES[1].length, bar.gpa);
        expect(ret === -EOPNOTSUPP, `expected -EOPNOTSUPP, got ${ret}`);
        world.vmm.warnBarMapFailed(dev, bar, ret);
        log("the multi-range dma-buf exists; iommufd refused it");
      },
    },
    {
      name: "alioth-style: one single-range dma-buf per piece, each mapped at its own address",
      actor: "vmm",
      run: ({ world, log }) => {
        const dev = device(world, "gpu1");
        const bar = dev.bars.find((b) => b.index === 0)!;
        for (const p of PIECES) {
          const fd = world.vmm.exportBar(dev, bar, [p]);
          const ret = fd < 0 ? fd : world.vmm.mapFile(fd, 0n, p.length, bar.gpa + p.offset);
          if (ret < 0) throw new KernelError(-ret, `piece at ${hex(p.offset)}`);
        }
        const areas = world
          .snapshot()
          .ioas.flatMap((i) => i.areas)
          .filter((a) => a.label === "gpu1 BAR0");
        expect(areas.length === 2 && areas.every((a) => a.live), "expected two live pieces");
        log("MSI-X table page range left unmapped between the pieces");
      },
    },
  ],
};
