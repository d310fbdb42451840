/**
 * Scenario 14: virtio-mem style churn: a hot-pluggable memory region plugged and unplugged block by
 * block (one MAP_FILE / IOAS_UNMAP each) while the GPU BARs stay mapped. A type1 container counts
 * its mappings against dma_entry_limit (65,535 by default, reported as DMA_AVAIL, which QEMU's
 * virtio-mem check reads); iommufd keeps no such count.
 */
import { KernelError, MFD_HUGETLB, MFD_HUGE_2MB } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { GiB, MiB, VmWorld } from "../world.js";
import { bringUp, twoGpusAndNic } from "./common.js";

const BLOCK = 2n * MiB;
/** 4 GiB of 2 MiB blocks: enough churn to matter, small enough for every CI run. */
const BLOCKS = 2048;
const REGION = 0x100_0000_0000n;
const TYPE1_DMA_ENTRY_LIMIT = 65_535;

class ChurnWorld extends VmWorld {
  memfd = -1;
  plugged = 0;
}

function plug(world: ChurnWorld, index: number): void {
  const off = BigInt(index) * BLOCK;
  const ret = world.vmm.mapFile(world.memfd, off, BLOCK, REGION + off, true);
  if (ret < 0) throw new KernelError(-ret, `plug block ${index}`);
}

function unplug(world: ChurnWorld, index: number): void {
  const off = BigInt(index) * BLOCK;
  const ret = world.vmm.unmap(REGION + off, BLOCK, true);
  if (ret < 0) throw new KernelError(-ret, `unplug block ${index}`);
}

export const churn: ScenarioDef<ChurnWorld> = {
  id: "churn",
  number: 14,
  title: "virtio-mem churn: thousands of block mappings next to mapped BARs",
  summary:
    "A 4 GiB virtio-mem region (2 MiB hugetlb blocks) is plugged block by block — one MAP_FILE " +
    "and one area each — then half is unplugged and plugged again, then all of it goes in one " +
    "IOAS_UNMAP, while the GPUs keep reaching each other's BARs. Nothing counts the areas against " +
    "a limit, unlike type1's dma_entry_limit.",
  long: true,
  setup: () => new ChurnWorld(twoGpusAndNic()),
  steps: [
    ...bringUp,
    {
      name: `Plug ${BLOCKS.toLocaleString("en")} blocks of 2 MiB (one MAP_FILE each)`,
      actor: "vmm",
      run: ({ world, log, progress }) => {
        world.memfd = world.vmm.createMemfd(
          "virtio-mem0",
          BigInt(BLOCKS) * BLOCK,
          MFD_HUGETLB | MFD_HUGE_2MB,
        );
        for (let i = 0; i < BLOCKS; i++) {
          plug(world, i);
          if ((i + 1) % 256 === 0) progress(i + 1, BLOCKS, "blocks plugged");
        }
        world.plugged = BLOCKS;
        log(
          `${BLOCKS} areas; a type1 container would report DMA_AVAIL = ${TYPE1_DMA_ENTRY_LIMIT - BLOCKS} left of ${TYPE1_DMA_ENTRY_LIMIT}`,
        );
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio" },
    },
    {
      name: "Unplug every other block, then plug them back",
      actor: "vmm",
      run: ({ world, progress }) => {
        for (let i = 0; i < BLOCKS; i += 2) unplug(world, i);
        progress(1, 2, "half unplugged");
        const areas = world.ioases()[0]!.iopt.areas().length;
        expect(areas === world.vmm.ram.length + BLOCKS / 2 + 5, `unexpected area count ${areas}`);
        for (let i = 0; i < BLOCKS; i += 2) plug(world, i);
        progress(2, 2, "plugged back");
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "gpu1→gpu0.bar2": "mmio" },
    },
    {
      name: "Unplug the whole region in one IOAS_UNMAP",
      actor: "vmm",
      run: ({ world, log }) => {
        const ret = world.vmm.unmap(REGION, BigInt(BLOCKS) * BLOCK);
        if (ret < 0) throw new KernelError(-ret, "unplug region");
        log(`${(BigInt(BLOCKS) * BLOCK) / GiB} GiB unplugged, the BARs untouched`);
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio" },
    },
  ],
};
