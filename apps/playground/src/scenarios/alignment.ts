/**
 * §6.10 Alignment edge cases: an IOMMU whose smallest page is 64 KiB makes the IOAS alignment
 * 64 KiB, so QEMU skips a 16 KiB BAR; dma-buf ranges must be page aligned (EINVAL); MAP_FILE
 * refuses an IOVA or a file offset that breaks the IOAS alignment (EINVAL).
 */
import { EINVAL } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { bytes } from "../snapshot.js";
import { GiB, KiB, MiB, TiB, VmWorld } from "../world.js";
import { bootIommufd, device, mapRam, realize } from "./common.js";

const ALIGN = 64n * KiB;

export const alignment: ScenarioDef<VmWorld> = {
  id: "alignment",
  number: 10,
  title: "Alignment: 64 KiB IOMMU pages, a 16 KiB BAR, unaligned ranges",
  summary:
    "The host IOMMU offers 64 KiB as its smallest page (like a 64 KiB-granule SMMU). The IOAS " +
    "alignment follows, QEMU's listener skips a BAR that is not a multiple of it, VFIO rejects a " +
    "dma-buf range that is not page aligned, and iommufd rejects a MAP_FILE whose IOVA or file " +
    "offset breaks the alignment.",
  setup: () =>
    new VmWorld({
      iommus: [{ name: "smmu0", kind: "amd-vi", pgsizeBitmap: ALIGN | (2n * MiB) | GiB }],
      devices: [
        {
          name: "gpu0",
          vendor: 0x10de,
          device: 0x2330,
          classCode: 0x030200,
          iommu: "smmu0",
          bars: [{ index: 0, size: 16n * MiB, gpa: 0xc000_0000n, type: "mem32" }],
        },
        {
          name: "nic",
          vendor: 0x8086,
          device: 0x1521,
          classCode: 0x020000,
          iommu: "smmu0",
          bars: [{ index: 0, size: 16n * KiB, gpa: 0xc100_0000n, type: "mem32" }],
        },
      ],
      probes: [
        { name: "gpu0→ram", from: "gpu0", to: { ram: 0x10_0000n } },
        { name: "gpu0→nic.bar0", from: "gpu0", to: { device: "nic", bar: 0 } },
      ],
    }),
  steps: [
    bootIommufd,
    mapRam,
    realize("gpu0"),
    realize("nic"),
    {
      name: "The IOAS alignment is the domain's smallest page: 64 KiB",
      actor: "vmm",
      run: ({ world, log }) => {
        expect(world.vmm.iovaAlignment === ALIGN, `alignment is ${world.vmm.iovaAlignment}`);
        log(`IOAS_IOVA_RANGES out_iova_alignment = ${bytes(world.vmm.iovaAlignment)}`);
      },
    },
    {
      name: "Guest enables decode: gpu0's BAR is mapped, the NIC's 16 KiB BAR is skipped",
      actor: "guest",
      run: ({ world }) => {
        for (const d of world.vmm.devices) world.vmm.guestEnableMemory(d);
        expect(!device(world, "nic").bars[0]!.mapped, "the 16 KiB BAR was mapped");
      },
      expectProbes: { "gpu0→ram": "ram", "gpu0→nic.bar0": "fault" },
    },
    {
      name: "A dma-buf range that is not page aligned: EINVAL",
      actor: "vmm",
      run: ({ world }) => {
        const dev = device(world, "gpu0");
        const fd = world.vmm.exportBar(dev, dev.bars[0]!, [{ offset: 0x800n, length: 64n * KiB }]);
        expect(fd === -EINVAL, `expected -EINVAL, got ${fd}`);
      },
    },
    {
      name: "MAP_FILE at an IOVA or file offset off the 64 KiB alignment: EINVAL",
      actor: "vmm",
      run: ({ world }) => {
        const ram = world.vmm.ram[0]!;
        const atIova = world.vmm.mapFile(ram.memfd, 0n, ALIGN, TiB + 0x1000n);
        expect(atIova === -EINVAL, `unaligned IOVA: expected -EINVAL, got ${atIova}`);
        const atOffset = world.vmm.mapFile(ram.memfd, 0x800n, ALIGN, TiB);
        expect(atOffset === -EINVAL, `unaligned offset: expected -EINVAL, got ${atOffset}`);
      },
    },
  ],
};
