/**
 * Scenario 9: A BAR mapped by VA — the way type1 "supports" P2P — on iommufd: native IOMMU_IOAS_MAP and
 * the VFIO compatibility container's VFIO_IOMMU_MAP_DMA both fail with EFAULT (GUP refuses
 * VM_PFNMAP; "native iommufd will never support this"). QEMU warns and boots without P2P to the
 * BAR; cloud-hypervisor's default policy makes the same failure fatal.
 */
import { EFAULT, errnoName } from "@x/kernel";
import {
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_SET,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_IOMMU_MAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  iommu_vfio_ioas,
  vfio_iommu_type1_dma_map,
} from "@x/iommufd";
import { type ScenarioDef, expect } from "../scenario.js";
import { Vmm, VmmFatal } from "../vmm.js";
import { VmWorld, nicSpec } from "../world.js";
import { GPA, bringUp, device, twoGpusAndNic } from "./common.js";

/** Where the VA-mapped copy of gpu1's BAR0 would go (above the guest's own map). */
const SCRATCH_IOVA = 0x80_0000_0000n;

class VaWorld extends VmWorld {
  barVa = 0n;
}

export const compatVa: ScenarioDef<VaWorld> = {
  id: "compat-va",
  number: 9,
  title: "Mapping a BAR by its VA on iommufd: EFAULT, a warning or a failed boot",
  summary:
    "Before dma-buf support a VMM could only offer iommufd the BAR's mmap address. IOMMU_IOAS_MAP " +
    "and the compat container's VFIO_IOMMU_MAP_DMA both refuse it with EFAULT. QEMU prints " +
    "“IOMMU_IOAS_MAP failed: Bad address, PCI BAR?” and runs without that P2P path; a " +
    "cloud-hypervisor-like VMM aborts the boot.",
  setup: () => {
    const spec = twoGpusAndNic();
    // A NIC for the second VMM: its IOAS needs a domain, or nothing would be pinned (and checked).
    return new VaWorld({
      ...spec,
      devices: [...spec.devices, nicSpec("nic1", "iommu0", 0xc300_0000n)],
    });
  },
  steps: [
    ...bringUp,
    {
      name: "QEMU mmaps gpu1's BAR0 and tries IOMMU_IOAS_MAP on its VA: EFAULT, warning, goes on",
      actor: "vmm",
      run: ({ world, log }) => {
        const dev = device(world, "gpu1");
        const bar = dev.bars.find((b) => b.index === 0)!;
        world.barVa = world.vmm.mmapBar(dev, bar);
        const ret = world.vmm.mapVa(world.barVa, bar.size, SCRATCH_IOVA);
        expect(ret === -EFAULT, `expected -EFAULT, got ${ret}`);
        log("IOMMU_IOAS_MAP failed: Bad address, PCI BAR?", "warn");
        world.vmm.warnBarMapFailed(dev, bar, ret);
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio" },
    },
    {
      name: "The type1 ioctls on /dev/iommu (vfio_compat): VFIO_IOMMU_MAP_DMA of the BAR VA: EFAULT",
      actor: "vmm",
      note: "iommufd's type1 emulation maps through the same pinning path; P2P by VA is one of the features it lacks.",
      run: ({ world, log }) => {
        const libc = world.libc;
        const fd = world.vmm.iommufd;
        const set = iommu_vfio_ioas.encode({
          size: iommu_vfio_ioas.size,
          ioas_id: world.vmm.ioasId,
          op: IOMMU_VFIO_IOAS_SET,
        });
        const ok = libc.ioctl(fd, IOMMU_VFIO_IOAS, set);
        log(`ioctl(IOMMU_VFIO_IOAS, SET ioas=${world.vmm.ioasId}) = ${ok}`, "ioctl");
        expect(ok === 0, `IOMMU_VFIO_IOAS: errno ${libc.errno}`);
        const type = libc.ioctl(fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
        log(`ioctl(VFIO_SET_IOMMU, TYPE1v2) = ${type}`, "ioctl");
        expect(type === 0, `VFIO_SET_IOMMU: errno ${libc.errno}`);
        const bar = device(world, "gpu1").bars.find((b) => b.index === 0)!;
        const map = vfio_iommu_type1_dma_map.encode({
          argsz: vfio_iommu_type1_dma_map.size,
          flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
          vaddr: world.barVa,
          iova: SCRATCH_IOVA,
          size: bar.size,
        });
        const ret = libc.ioctl(fd, VFIO_IOMMU_MAP_DMA, map);
        const errno = libc.errno;
        log(
          `ioctl(VFIO_IOMMU_MAP_DMA, vaddr=BAR0) = ${ret}${ret < 0 ? ` ${errnoName(errno)}` : ""}`,
          "ioctl",
        );
        expect(ret < 0 && errno === EFAULT, `expected EFAULT, got ${ret} / ${errnoName(errno)}`);
      },
    },
    {
      name: "A cloud-hypervisor-like VMM maps the same BAR VA with P2P on: the boot aborts",
      actor: "vmm",
      run: ({ world, log }) => {
        const ch = new Vmm(world.libc, { name: "cloud-hypervisor", barMapFatal: true, log });
        ch.boot();
        ch.addDevice("nic1", world.host.device("nic1").vdev.cdevPath ?? "", []);
        const dev = device(world, "gpu1");
        const bar = dev.bars.find((b) => b.index === 0)!;
        const ret = ch.mapVa(world.barVa, bar.size, GPA.gpu1Bar0);
        try {
          ch.warnBarMapFailed(dev, bar, ret);
        } catch (e) {
          expect(e instanceof VmmFatal && e.errno === EFAULT, `unexpected ${String(e)}`);
          log(`cloud-hypervisor: ${(e as Error).message} — boot aborted`, "error");
          return;
        }
        throw new Error("the failed BAR map did not abort the boot");
      },
    },
  ],
};
