/**
 * The machine most scenarios share — two GPUs behind different IOMMU units and a NIC that shares
 * the first GPU's unit, 4 GiB of memfd RAM split around the 32-bit MMIO hole — and the steps
 * that bring such a VM up the way QEMU does.
 */
import { MFD_HUGETLB, MFD_HUGE_1GB } from "@x/kernel";
import { vfioPciDmaWrite } from "@x/vfio-pci";
import { type StepDef, expect } from "../scenario.js";
import { hex } from "../snapshot.js";
import { GiB, type ProbeSpec, type VmWorld, type VmWorldSpec, gpuSpec, nicSpec } from "../world.js";

/** Guest-physical layout (a q35-like machine). */
export const GPA = {
  lowRam: 0n,
  lowRamSize: 3n * GiB,
  highRam: 4n * GiB,
  highRamSize: GiB,
  gpu0Bar0: 0xc000_0000n,
  gpu1Bar0: 0xc100_0000n,
  nicBar0: 0xc200_0000n,
  gpu0Bar2: 0x38_0000_0000n,
  gpu1Bar2: 0x38_4000_0000n,
} as const;

/** An address in guest RAM the probes read (a DMA ring, say). */
export const RAM_PROBE = 0x10_0000n;

export const PROBES: readonly ProbeSpec[] = [
  { name: "gpu0→ram", from: "gpu0", to: { ram: RAM_PROBE } },
  { name: "gpu0→gpu1.bar2", from: "gpu0", to: { device: "gpu1", bar: 2 } },
  { name: "gpu1→gpu0.bar2", from: "gpu1", to: { device: "gpu0", bar: 2 } },
  { name: "nic→gpu1.bar2", from: "nic", to: { device: "gpu1", bar: 2 } },
];

export function twoGpusAndNic(over: Partial<VmWorldSpec> = {}): VmWorldSpec {
  return {
    iommus: [
      { name: "iommu0", kind: "amd-vi" },
      { name: "iommu1", kind: "vt-d" },
    ],
    devices: [
      gpuSpec("gpu0", "iommu0", GPA.gpu0Bar0, GPA.gpu0Bar2),
      gpuSpec("gpu1", "iommu1", GPA.gpu1Bar0, GPA.gpu1Bar2),
      nicSpec("nic", "iommu0", GPA.nicBar0),
    ],
    probes: PROBES,
    ...over,
  };
}

type Step = StepDef<VmWorld>;

export const bootIommufd: Step = {
  name: "VMM opens /dev/iommu and allocates the IOAS",
  actor: "vmm",
  run: ({ world }) => world.vmm.boot(),
};

export const mapRam: Step = {
  name: "VMM maps guest RAM (memfd, 1 GiB pages) with IOMMU_IOAS_MAP_FILE",
  actor: "vmm",
  note: "QEMU's dma_map_file path: RAM is mapped by (fd, offset), so the mapping survives a change of owning process.",
  run: ({ world }) => {
    const flags = MFD_HUGETLB | MFD_HUGE_1GB;
    world.vmm.addRam("ram-below-4g", GPA.lowRam, GPA.lowRamSize, { memfdFlags: flags });
    world.vmm.addRam("ram-above-4g", GPA.highRam, GPA.highRamSize, { memfdFlags: flags });
  },
};

/** Realize a host device in the VMM with its BARs at their spec GPAs. */
export function realize(name: string, note?: string): Step {
  return {
    name: `VMM realizes ${name}: open cdev, BIND_IOMMUFD, attach, export BARs as dma-bufs`,
    actor: "vmm",
    ...(note ? { note } : {}),
    run: ({ world }) => {
      const spec = world.host.device(name).spec;
      world.vmm.addDevice(
        name,
        world.host.device(name).vdev.cdevPath ?? "",
        spec.bars.map((b) => ({ index: b.index, gpa: b.gpa })),
      );
    },
  };
}

export function device(world: VmWorld, name: string) {
  const d = world.vmm.devices.find((x) => x.name === name);
  if (!d) throw new Error(`${name} is not realized`);
  return d;
}

export const guestEnablesDecode: Step = {
  name: "Guest firmware turns on memory decode and bus mastering; the VMM maps every BAR",
  actor: "guest",
  note: "Each COMMAND write reaches vfio-pci first; QEMU's memory listener then adds the BAR sections and maps their dma-bufs at their guest-physical addresses.",
  run: ({ world }) => {
    for (const d of world.vmm.devices) world.vmm.guestEnableMemory(d);
  },
  expectProbes: {
    "gpu0→ram": "ram",
    "gpu0→gpu1.bar2": "mmio",
    "gpu1→gpu0.bar2": "mmio",
    "nic→gpu1.bar2": "mmio",
  },
};

/** The standard bring-up: iommufd, RAM, gpu0, gpu1 (own HWPT), nic (shares gpu0's), decode on. */
export const bringUp: readonly Step[] = [
  bootIommufd,
  mapRam,
  realize("gpu0", "No HWPT exists yet: QEMU allocates one on the IOAS."),
  realize(
    "gpu1",
    "gpu1 sits behind another IOMMU unit: attaching to gpu0's HWPT fails with EINVAL, so QEMU allocates a second HWPT on the same IOAS.",
  ),
  realize("nic", "The NIC shares gpu0's IOMMU unit, so it attaches to the existing HWPT."),
  guestEnablesDecode,
];

/** `from` writes `text` at the start of `to`'s BAR by P2P DMA; the BAR's memory must hold it. */
export function p2pWrite(
  world: VmWorld,
  from: string,
  to: string,
  bar: number,
  text: string,
): string {
  const target = device(world, to).bars.find((b) => b.index === bar);
  if (!target) throw new Error(`${to} has no BAR${bar}`);
  const data = new TextEncoder().encode(text);
  vfioPciDmaWrite(world.host.device(from).vdev, target.gpa, data);
  const phys = new Uint8Array(data.length);
  world.kernel.mem.readPhys(world.host.device(to).pdev.resource(bar).start, phys);
  const seen = new TextDecoder().decode(phys);
  expect(seen === text, `${to} BAR${bar} holds "${seen}", expected "${text}"`);
  return `${from} wrote "${text}" at ${hex(target.gpa)}; ${to} BAR${bar} holds it`;
}
