/**
 * Scenario 8: The type1 contrast. One BAR (gpu1's BAR0), reached two ways by the NIC: through a legacy
 * type1 container that mapped the BAR's mmap by scraping PFNs, and through iommufd with the
 * BAR's dma-buf. A reset and then a close of gpu1: iommufd's revoke makes the NIC's DMA fault;
 * the type1 mapping keeps reaching the old MMIO — the use-after-free, made visible.
 */
import type { ProbeResult, ScenarioDef } from "../scenario.js";
import { Type1Container } from "../type1.js";
import { VmWorld } from "../world.js";
import { GPA, bootIommufd, device, mapRam, realize, twoGpusAndNic } from "./common.js";

class ContrastWorld extends VmWorld {
  type1: Type1Container | undefined;
  /** The legacy VMM's mmap of gpu1's BAR0. */
  barVa = 0n;

  override probe(): ProbeResult[] {
    const out = super.probe();
    out.push(
      this.type1
        ? this.type1.probe("nic→gpu1.bar0 (type1)", GPA.gpu1Bar0)
        : {
            name: "nic→gpu1.bar0 (type1)",
            iova: GPA.gpu1Bar0,
            verdict: "fault",
            detail: "no type1 mapping yet",
          },
    );
    return out;
  }
}

const IOMMUFD = "nic→gpu1.bar0 (iommufd)";
const TYPE1 = "nic→gpu1.bar0 (type1)";

export const type1Contrast: ScenarioDef<ContrastWorld> = {
  id: "type1-contrast",
  number: 8,
  title: "type1 vs iommufd: a BAR's lifetime after reset and close",
  summary:
    "A legacy type1 container maps gpu1's BAR0 by VA: GUP refuses the VM_PFNMAP mmap, so type1 " +
    "scrapes the PFNs and maps them with no lifetime tie. iommufd maps the same BAR through its " +
    "dma-buf. When gpu1 is reset and then closed, iommufd's revoke makes the NIC's DMA fault, while " +
    "the type1 mapping keeps translating to the old MMIO.",
  setup: () =>
    new ContrastWorld(
      twoGpusAndNic({
        vmm: { forgetsRemap: true },
        probes: [{ name: IOMMUFD, from: "nic", to: { device: "gpu1", bar: 0 } }],
      }),
    ),
  steps: [
    bootIommufd,
    mapRam,
    realize("gpu1"),
    realize("nic"),
    {
      name: "Guest enables decode; iommufd maps gpu1's BARs through their dma-bufs",
      actor: "guest",
      run: ({ world }) => {
        for (const d of world.vmm.devices) world.vmm.guestEnableMemory(d);
      },
      expectProbes: { [IOMMUFD]: "mmio", [TYPE1]: "fault" },
    },
    {
      name: "Legacy VMM: mmap gpu1's BAR0 and VFIO_IOMMU_MAP_DMA its VA into a type1 container",
      actor: "vmm",
      note: "GUP refuses VM_PFNMAP (EFAULT); type1 falls back to follow_pfn and maps the raw PFNs: not refcounted, not accounted, no notifier.",
      run: ({ world, log }) => {
        const dev = device(world, "gpu1");
        const bar = dev.bars.find((b) => b.index === 0)!;
        const va = world.vmm.mmapBar(dev, bar);
        world.barVa = va;
        world.type1 = new Type1Container(world.kernel, world.libc.process.mm, world.host, "iommu0");
        const type1 = world.type1;
        const how = world.kernel.runAs(world.libc.task, () =>
          type1.mapDma(va, GPA.gpu1Bar0, bar.size),
        );
        log(
          `type1 mapped ${dev.name} BAR0 by ${how === "pfnmap" ? "scraping PFNs from the VMA" : "pinning"}`,
        );
      },
      expectProbes: { [IOMMUFD]: "mmio", [TYPE1]: "mmio" },
    },
    {
      name: "gpu1 is reset (VFIO_DEVICE_RESET zaps the BAR mmap, revokes the dma-bufs)",
      actor: "vmm",
      run: ({ world }) => world.vmm.reset(device(world, "gpu1")),
      expectProbes: { [IOMMUFD]: "fault", [TYPE1]: "stale" },
    },
    {
      name: "The VMM unmaps the BAR mmap and closes gpu1: the BAR can go to another owner",
      actor: "vmm",
      note: "Nothing tells type1: its IOPTEs still point at gpu1's MMIO, which a new owner of gpu1 would now be using.",
      run: ({ world }) => {
        const dev = device(world, "gpu1");
        const bar = dev.bars.find((b) => b.index === 0)!;
        if (world.libc.munmap(world.barVa, bar.size) < 0)
          throw new Error("munmap of the BAR failed");
        world.vmm.closeDevice(dev);
      },
      expectProbes: { [IOMMUFD]: "fault", [TYPE1]: "stale" },
    },
  ],
};
