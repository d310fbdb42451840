/**
 * Scenario 10: Alignment edge cases: a BAR smaller than the IOMMU page is skipped by QEMU's listener and
 * cannot be exported (dma-buf ranges are whole pages: EINVAL); MAP_FILE refuses an IOVA, length
 * or file offset off the IOAS alignment (EINVAL); and an IOMMU whose smallest page is larger than
 * the kernel's PAGE_SIZE cannot join the IOAS at all (EINVAL at HWPT_ALLOC, the device fails to
 * realize).
 */
import { EINVAL } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { bytes } from "../snapshot.js";
import { GiB, KiB, MiB, TiB, VmWorld } from "../world.js";
import { VmmFatal } from "../vmm.js";
import { bootIommufd, device, mapRam, realize } from "./common.js";

const PAGE = 4n * KiB;

export const alignment: ScenarioDef<VmWorld> = {
  id: "alignment",
  number: 10,
  title: "Alignment: a 2 KiB BAR, unaligned ranges, a 64 KiB-page IOMMU",
  summary:
    "A NIC's 2 KiB register BAR is below the 4 KiB IOMMU page: QEMU's listener does not DMA-map it " +
    "and VFIO cannot export it. dma-buf ranges and MAP_FILE arguments must respect page and IOAS " +
    "alignment (EINVAL). An accelerator behind an IOMMU whose smallest page is 64 KiB cannot be " +
    "attached on a 4 KiB-page host: iommufd refuses the domain and the device fails to realize.",
  setup: () =>
    new VmWorld({
      iommus: [
        { name: "iommu0", kind: "amd-vi" },
        { name: "smmu0", kind: "amd-vi", pgsizeBitmap: (64n * KiB) | (2n * MiB) | GiB },
      ],
      devices: [
        {
          name: "gpu0",
          vendor: 0x10de,
          device: 0x2330,
          classCode: 0x030200,
          iommu: "iommu0",
          bars: [{ index: 0, size: 16n * MiB, gpa: 0xc000_0000n, type: "mem32" }],
        },
        {
          name: "nic",
          vendor: 0x8086,
          device: 0x1521,
          classCode: 0x020000,
          iommu: "iommu0",
          bars: [{ index: 0, size: 2n * KiB, gpa: 0xc100_0000n, type: "mem32" }],
        },
        {
          name: "accel",
          vendor: 0x1d0f,
          device: 0xefa1,
          classCode: 0x120000,
          iommu: "smmu0",
          bars: [{ index: 0, size: MiB, gpa: 0xc200_0000n, type: "mem32" }],
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
    realize(
      "nic",
      "The 2 KiB BAR cannot be exported: every dma-buf range is whole pages (EINVAL); QEMU warns and goes on.",
    ),
    {
      name: "Guest enables decode: gpu0's BAR is mapped, the NIC's 2 KiB BAR is skipped",
      actor: "guest",
      run: ({ world, log }) => {
        log(`IOAS alignment (out_iova_alignment) is ${bytes(world.vmm.iovaAlignment)}`);
        expect(world.vmm.iovaAlignment === PAGE, `alignment is ${world.vmm.iovaAlignment}`);
        for (const d of world.vmm.devices) world.vmm.guestEnableMemory(d);
        expect(!device(world, "nic").bars[0]!.mapped, "the 2 KiB BAR was mapped");
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
      name: "MAP_FILE with an IOVA, length or file offset off the alignment: EINVAL",
      actor: "vmm",
      run: ({ world }) => {
        const ram = world.vmm.ram[0]!;
        const cases: Array<[string, bigint, bigint, bigint]> = [
          ["IOVA", 0n, PAGE, TiB + 0x800n],
          ["length", 0n, PAGE + 0x800n, TiB],
          ["file offset", 0x800n, PAGE, TiB],
        ];
        for (const [what, start, length, iova] of cases) {
          const ret = world.vmm.mapFile(ram.memfd, start, length, iova);
          expect(ret === -EINVAL, `unaligned ${what}: expected -EINVAL, got ${ret}`);
        }
      },
    },
    {
      name: "Hot-plug an accelerator behind a 64 KiB-page IOMMU: iommufd refuses its domain",
      actor: "vmm",
      note: "iommufd pins and maps in PAGE_SIZE units; a domain whose smallest page is larger cannot be added to the IOAS.",
      run: (ctx) => {
        const { log } = ctx;
        try {
          realize("accel").run(ctx);
        } catch (e) {
          expect(e instanceof VmmFatal && e.errno === EINVAL, `unexpected ${String(e)}`);
          log(`realize failed as QEMU's would: ${(e as Error).message}`);
          return;
        }
        throw new Error("the 64 KiB-page domain was accepted");
      },
      expectProbes: { "gpu0→ram": "ram" },
    },
  ],
};
