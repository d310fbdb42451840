/**
 * §6.14 virtio-mem style churn: a hot-pluggable memory region plugged and unplugged block by
 * block (one MAP_FILE / IOAS_UNMAP each) while a GPU BAR stays mapped. Past 65,535 mappings a
 * type1 container would refuse more (dma_entry_limit); iommufd has no entry limit.
 */
import { KernelError, MFD_HUGETLB, MFD_HUGE_2MB } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { GiB, MiB, VmWorld } from "../world.js";
import { bringUp, twoGpusAndNic } from "./common.js";

const BLOCK = 2n * MiB;
/** One more block than type1's default dma_entry_limit allows mappings. */
const BLOCKS = 65_536;
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
  title: "virtio-mem churn: 65,536 block mappings next to a mapped BAR",
  summary:
    "A 128 GiB virtio-mem region (2 MiB hugetlb blocks) is plugged block by block — one MAP_FILE " +
    "each, 65,536 areas, one more than a type1 container's dma_entry_limit allows — then half is " +
    "unplugged and plugged again, while the GPUs keep mapping each other's BARs.",
  long: true,
  setup: () => new ChurnWorld(twoGpusAndNic()),
  steps: [
    ...bringUp,
    {
      name: `Plug ${BLOCKS.toLocaleString("en")} blocks of 2 MiB (one MAP_FILE each)`,
      actor: "vmm",
      run: ({ world, log, progress }) => {
        world.memfd = world.vmm.createMemfd("virtio-mem0", BigInt(BLOCKS) * BLOCK, MFD_HUGETLB | MFD_HUGE_2MB);
        for (let i = 0; i < BLOCKS; i++) {
          plug(world, i);
          if ((i + 1) % 4096 === 0) progress(i + 1, BLOCKS, "blocks plugged");
        }
        world.plugged = BLOCKS;
        log(`${BLOCKS} areas; a type1 container stops at dma_entry_limit = ${TYPE1_DMA_ENTRY_LIMIT}`);
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
        log(`${BigInt(BLOCKS) * BLOCK / GiB} GiB unplugged, the BARs untouched`);
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio" },
    },
  ],
};
