/**
 * vIOMMU: an ARM guest with an accelerated virtual SMMUv3. The VMM keeps stage 2 (guest RAM
 * and a peer GPU's BAR, the BAR as a dma-buf) in a NEST_PARENT HWPT; the guest's SMMU driver
 * builds its CD and stage-1 table in its own RAM, and its STE becomes a nested HWPT on the
 * host SMMU's vIOMMU. Device DMA walks both stages; the guest's TLB invalidations and faults
 * travel through IOMMU_HWPT_INVALIDATE and the vEVENTQ.
 */
import { IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, IommufdVeventq } from "@x/iommufd";
import type { IommuFault } from "@x/iommu-pgtable";
import { KernelError, MAP_SHARED, PROT_READ, PROT_WRITE } from "@x/kernel";
import { PCI_COMMAND, PCI_COMMAND_MEMORY, vfioPciDmaWrite } from "@x/vfio-pci";
import { GuestSmmuDriver } from "../guest-smmu.js";
import { mappedIn } from "../iommu-hw.js";
import { type ScenarioDef, type StepDef, expect } from "../scenario.js";
import { hex } from "../snapshot.js";
import { VirtSmmu } from "../vsmmu.js";
import { MiB, VmWorld, type VmWorldSpec, gpuSpec } from "../world.js";
import { bootIommufd, device, realize } from "./common.js";

/** Guest-physical layout of an arm64 "virt"-like machine. */
const RAM = 0x4000_0000n;
const RAM_SIZE = 256n * MiB;
const GPU0_BAR0 = 0x1000_0000n;
const GPU1_BAR0 = 0x1100_0000n;
const GPU0_BAR2 = 0x80_0000_0000n;
const GPU1_BAR2 = 0x80_0200_0000n;
const BAR2_SIZE = 32n * MiB;
/** Guest RAM the guest's SMMU driver keeps its CD and tables in, and its two DMA buffers. */
const SMMU_POOL = RAM + 0x100_0000n;
const BUF_A = RAM + 0x200_0000n;
const BUF_B = RAM + 0x200_1000n;
/** IOVAs of the guest's stage 1. */
const IOVA_BUF = 0x8000_0000n;
const IOVA_P2P = 0x9000_0000n;
const IOVA_UNMAPPED = 0xa000_0000n;
const ASID = 3n;
const VSID = 0x8n;

const EVT_ID_TRANSLATION_FAULT = 0x10n;

/** The VM world plus the vSMMU, the guest's SMMU driver and the VMM's view of guest RAM. */
class ViommuWorld extends VmWorld {
  readonly vsmmu = new VirtSmmu(this.vmm);
  guest: GuestSmmuDriver | undefined;
  /** Guest RAM as the VMM process maps it. */
  ramVa = 0n;

  peek(ipa: bigint, n: number): string {
    return new TextDecoder().decode(this.vmm.libc.peek(this.ramVa + (ipa - RAM), n));
  }
}

function spec(): VmWorldSpec {
  return {
    iommus: [{ name: "smmu0", kind: "smmuv3" }],
    devices: [
      gpuSpec("gpu0", "smmu0", GPU0_BAR0, GPU0_BAR2, BAR2_SIZE),
      gpuSpec("gpu1", "smmu0", GPU1_BAR0, GPU1_BAR2, BAR2_SIZE),
    ],
    probes: [{ name: "gpu1→ram", from: "gpu1", to: { ram: BUF_A } }],
  };
}

type Step = StepDef<ViommuWorld>;

/** gpu0 writes `text` at `iova` through whatever its STE says. */
function gpu0Write(world: ViommuWorld, iova: bigint, text: string): void {
  vfioPciDmaWrite(world.host.device("gpu0").vdev, iova, new TextEncoder().encode(text));
}

/** gpu0's DMA at `iova` faults; the fault as the host SMMU recorded it. */
function gpu0Faults(world: ViommuWorld, iova: bigint): IommuFault {
  const dev = world.host.device("gpu0").pdev.iommuDev!;
  const before = dev.faultCount;
  try {
    gpu0Write(world, iova, "x");
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
  }
  expect(dev.faultCount === before + 1, `gpu0's DMA at ${hex(iova)} did not fault`);
  return dev.faults.at(-1)!;
}

/** Events queued on the vEVENTQ and not read yet. */
function queuedEvents(world: ViommuWorld): number {
  const q = [...(world.ctx()?.objectsInOrder() ?? [])].find((o) => o instanceof IommufdVeventq);
  return q instanceof IommufdVeventq ? q.numEvents : 0;
}

const mapRam: Step = {
  name: "VMM maps 256 MiB of guest RAM at 1 GiB (MAP_FILE) and maps it into its own address space",
  actor: "vmm",
  run: ({ world }) => {
    const block = world.vmm.addRam("ram", RAM, RAM_SIZE);
    const libc = world.vmm.libc;
    world.ramVa = libc.mmap(0n, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, block.memfd, 0n);
  },
};

export const viommu: ScenarioDef<ViommuWorld> = {
  id: "viommu",
  number: 0,
  title: "vIOMMU: a guest's SMMUv3 stage 1 nested on the VMM's stage 2",
  summary:
    "The VMM backs the guest's SMMUv3 with a host vIOMMU: NEST_PARENT stage 2 with RAM and a peer " +
    "BAR, a vDEVICE per guest StreamID, the guest's STE as a nested HWPT. DMA walks the guest's " +
    "table; a stale TLB entry lives until the forwarded TLBI; stage-1 faults reach the vEVENTQ; " +
    "a revoked and unmapped peer BAR faults at stage 2.",
  setup: () => new ViommuWorld(spec()),
  steps: [
    bootIommufd,
    mapRam,
    realize("gpu0"),
    realize("gpu1"),
    {
      name: "Guest firmware enables decode and bus mastering; the VMM maps both GPUs' BARs (P2P)",
      actor: "guest",
      run: ({ world }) => {
        for (const d of world.vmm.devices) world.vmm.guestEnableMemory(d);
      },
      expectProbes: { "gpu1→ram": "ram" },
    },
    {
      name: "VMM realizes the vSMMU: NEST_PARENT stage-2 HWPT for gpu0, then IOMMU_VIOMMU_ALLOC",
      actor: "vmm",
      note: "The stage-2 HWPT is filled from the IOAS like any paging HWPT: guest RAM and gpu1's BAR2 dma-buf are already in it. gpu0 starts on it, as a guest SMMU in bypass.",
      run: ({ world, log }) => {
        world.vsmmu.realize(device(world, "gpu0"));
        log(`stage 2: HWPT ${world.vsmmu.s2}; vIOMMU ${world.vsmmu.viommu}`);
      },
    },
    {
      name: `VMM: IOMMU_VDEVICE_ALLOC gpu0 as vSID ${hex(VSID)}, and a vEVENTQ for the guest's event queue`,
      actor: "vmm",
      run: ({ world }) => {
        world.vsmmu.addDevice(device(world, "gpu0"), VSID);
        world.vsmmu.allocEventQueue(64);
      },
    },
    {
      name: "Guest SMMU driver builds a CD and a stage-1 table in its RAM: a buffer and gpu1's BAR2",
      actor: "guest",
      note: "Everything the guest writes is guest-physical; the host SMMU will read the CD and the tables through stage 2.",
      run: ({ world, log }) => {
        const mem = {
          write: (ipa: bigint, b: Uint8Array) => world.vmm.libc.poke(world.ramVa + (ipa - RAM), b),
        };
        const guest = new GuestSmmuDriver(mem, SMMU_POOL, ASID);
        guest.map(IOVA_BUF, BUF_A);
        guest.map(IOVA_P2P, GPU1_BAR2);
        world.guest = guest;
        log(
          `CD at ${hex(guest.cd)}: ${hex(IOVA_BUF)} -> ${hex(BUF_A)}, ${hex(IOVA_P2P)} -> ${hex(GPU1_BAR2)}`,
        );
      },
    },
    {
      name: "Guest writes gpu0's STE (stage-1 translate); the VMM installs it as a nested HWPT",
      actor: "vmm",
      note: "IOMMU_HWPT_ALLOC on the vIOMMU with IOMMU_HWPT_DATA_ARM_SMMUV3: the driver keeps the STE fields a guest may set (anything else is EIO), then gpu0 is attached to the nested HWPT.",
      run: ({ world, log }) => {
        const [ste0, ste1] = world.guest!.steS1();
        const hwpt = world.vsmmu.installSte(device(world, "gpu0"), ste0, ste1);
        log(`gpu0 on nested HWPT ${hwpt}`);
      },
    },
    {
      name: "gpu0 DMA-writes its buffer: IOVA -> IPA by the guest's table, IPA -> PA by stage 2",
      actor: "device",
      run: ({ world, log }) => {
        gpu0Write(world, IOVA_BUF, "nested!");
        const seen = world.peek(BUF_A, 7);
        expect(seen === "nested!", `guest buffer holds "${seen}"`);
        log(`${hex(IOVA_BUF)} -> IPA ${hex(BUF_A)}: "${seen}"`);
      },
    },
    {
      name: "gpu0 writes into gpu1's BAR2 by P2P through both stages",
      actor: "device",
      run: ({ world, log }) => {
        const text = "p2p via s1+s2";
        gpu0Write(world, IOVA_P2P, text);
        const phys = new Uint8Array(text.length);
        world.kernel.mem.readPhys(world.host.device("gpu1").pdev.resource(2).start, phys);
        const seen = new TextDecoder().decode(phys);
        expect(seen === text, `gpu1 BAR2 holds "${seen}"`);
        log(`gpu1 BAR2 holds "${seen}"`);
      },
    },
    {
      name: "Guest points the buffer IOVA at another page without a TLBI: DMA still uses the old one",
      actor: "guest",
      note: "The SMMU caches stage-1 translations tagged by VMID and ASID; until the guest's invalidation reaches it, the stale entry wins, as on hardware.",
      run: ({ world, log }) => {
        world.guest!.map(IOVA_BUF, BUF_B);
        gpu0Write(world, IOVA_BUF, "stale");
        expect(world.peek(BUF_A, 5) === "stale", "the write did not use the cached translation");
        expect(world.peek(BUF_B, 5) !== "stale", "the new page was written before the TLBI");
        log("the write went to the old page");
      },
    },
    {
      name: "Guest queues CMD_TLBI_NH_VA; the VMM forwards it with IOMMU_HWPT_INVALIDATE",
      actor: "vmm",
      run: ({ world, log }) => {
        const { ret, done } = world.vsmmu.invalidate([world.guest!.tlbiVa(IOVA_BUF)]);
        expect(ret === 0 && done === 1, `HWPT_INVALIDATE = ${ret}, ${done} handled`);
        gpu0Write(world, IOVA_BUF, "fresh");
        expect(world.peek(BUF_B, 5) === "fresh", "the write did not reach the new page");
        log("after the TLBI the write reaches the new page");
      },
    },
    {
      name: "gpu0 DMAs to an IOVA the guest never mapped: a stage-1 fault, delivered on the vEVENTQ",
      actor: "device",
      note: "The host driver hands stage-1 events of a stream with a vDEVICE to the vIOMMU, the StreamID replaced by the guest's vSID.",
      run: ({ world, log }) => {
        const f = gpu0Faults(world, IOVA_UNMAPPED);
        expect(f.stage === 1, `fault at stage ${f.stage}`);
        const events = world.vsmmu.readEvents();
        expect(events.length === 1, `${events.length} events on the vEVENTQ`);
        const [evt0, , addr] = events[0]!.evt;
        expect((evt0! & 0xffn) === EVT_ID_TRANSLATION_FAULT, `event id ${hex(evt0! & 0xffn)}`);
        expect(evt0! >> 32n === VSID, `event StreamID ${hex(evt0! >> 32n)}`);
        expect(addr === IOVA_UNMAPPED, `event address ${hex(addr!)}`);
        log(
          `F_TRANSLATION for vSID ${hex(VSID)} at ${hex(addr!)} (type ${IOMMU_VEVENTQ_TYPE_ARM_SMMUV3})`,
        );
      },
    },
    {
      name: "Guest turns off gpu1's memory decode: vfio-pci revokes its dma-bufs, stage 2 loses the BAR",
      actor: "guest",
      run: ({ world }) => {
        const gpu1 = device(world, "gpu1");
        world.vmm.kernelConfigWrite(gpu1, PCI_COMMAND, 2, gpu1.command & ~PCI_COMMAND_MEMORY);
        const bufs = world.snapshot().dmabufs.filter((b) => b.device === "gpu1");
        expect(
          bufs.every((b) => b.state === "revoked"),
          "gpu1's dma-bufs are not revoked",
        );
      },
    },
    {
      name: "VMM removes gpu1's BAR sections: IOAS_UNMAP of the P2P range from every domain",
      actor: "vmm",
      run: ({ world, log }) => {
        const gpu1 = device(world, "gpu1");
        for (const bar of gpu1.bars) world.vmm.unmapBar(bar);
        const s2 = world.hwpts().find((h) => h.id === world.vsmmu.s2)!;
        const left = mappedIn(s2.domain!, GPU1_BAR2, BAR2_SIZE);
        expect(left === 0n, `${left} bytes of gpu1 BAR2 still in stage 2`);
        log("stage 2 has no IOPTE for gpu1's BAR2");
      },
    },
    {
      name: "gpu0's P2P DMA through the nested domain now faults at stage 2 (the host's, not the guest's)",
      actor: "device",
      note: "Stage 1 still maps the IOVA; the IPA has no stage-2 IOPTE. Stage-2 events stay with the host driver, so the vEVENTQ gets nothing.",
      run: ({ world, log }) => {
        const f = gpu0Faults(world, IOVA_P2P);
        expect(f.stage === 2, `fault at stage ${f.stage}`);
        expect(queuedEvents(world) === 0, "a stage-2 fault reached the vEVENTQ");
        log(`stage-2 ${f.reason} at ${hex(f.iova)}`);
      },
    },
    {
      name: "Teardown: gpu0 back on stage 2, nested HWPT, vDEVICE, vEVENTQ and vIOMMU destroyed, VMM exits",
      actor: "vmm",
      run: ({ world, log }) => {
        world.vsmmu.teardown([device(world, "gpu0")]);
        world.vmm.libc.munmap(world.ramVa, RAM_SIZE);
        world.vmm.shutdown();
        const left = world.leftovers();
        expect(left.length === 0, `left behind: ${left.join(", ")}`);
        log("nothing pinned, open or allocated");
      },
    },
  ],
};
