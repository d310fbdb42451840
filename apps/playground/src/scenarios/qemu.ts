/**
 * QEMU's own bring-up of a q35 guest with two vfio-pci functions on an iommufd backend, step by
 * step in QEMU's order and with QEMU's struct filling, then the guest's use of the devices, the
 * two kinds of reset, and the teardown — ending with nothing pinned and no object left.
 *
 * Four runs: guest RAM from memory-backend-memfd (MAP_FILE) or anonymous (MAP by VA), the two
 * functions behind one IOMMU unit (they share a HWPT) or two (autodomains allocates a second).
 * Every errno QEMU expects is logged as tolerated; anything QEMU treats as fatal fails the step.
 */
import { X86_MSI_RANGE_END, X86_MSI_RANGE_START } from "@x/iommu-pgtable";
import { PAGE_SIZE } from "@x/kernel";
import {
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  pciIntxAssert,
  pciIntxDeassert,
  pciMsiRaise,
  vfioPciDmaWrite,
} from "@x/vfio-pci";
import { iommufdQueryDirtyBitmap, iommufdSetDirtyPageTracking } from "../qemu/dirty.js";
import type { RamKind } from "../qemu/machine.js";
import { QemuWorld } from "../qemu/qemu-world.js";
import {
  eventNotifierTestAndClear,
  vfioMsixEnable,
  vfioMsixVectorUse,
} from "../qemu/interrupts.js";
import { type ScenarioDef, type StepDef, expect } from "../scenario.js";
import { hex } from "../snapshot.js";
import { MiB, type VmWorldSpec, gpuSpec, nicSpec } from "../world.js";

/** Guest-physical layout: 128 MiB of RAM below the 32-bit MMIO window, BARs above it. */
const GPA = {
  ram: 0n,
  ramSize: 128n * MiB,
  gpuBar0: 0xc000_0000n,
  nicBar0: 0xc200_0000n,
  gpuBar2: 0x38_0000_0000n,
} as const;

/** Where the NIC's receive ring sits in guest RAM. */
const RX_RING = 0x20_0000n;

type Step = StepDef<QemuWorld>;

function spec(twoIommus: boolean): VmWorldSpec {
  return {
    iommus: twoIommus
      ? [
          { name: "iommu0", kind: "amd-vi" },
          { name: "iommu1", kind: "vt-d" },
        ]
      : [{ name: "iommu0", kind: "vt-d" }],
    devices: [
      // 16 MSI-X vectors, the table 64 KiB into the register BAR.
      {
        ...gpuSpec("gpu0", "iommu0", GPA.gpuBar0, GPA.gpuBar2, 256n * MiB),
        msix: { vectors: 16, tableBar: 0, tableOffset: 0x1_0000 },
      },
      // No FLR and alone on its bus: QEMU resets it with a bus reset.
      {
        ...nicSpec("nic0", twoIommus ? "iommu1" : "iommu0", GPA.nicBar0),
        flr: false,
        ownBus: true,
      },
    ],
    probes: [
      { name: "gpu0→ram", from: "gpu0", to: { ram: RX_RING } },
      { name: "gpu0→nic0.bar0", from: "gpu0", to: { device: "nic0", bar: 0 } },
      { name: "nic0→gpu0.bar2", from: "nic0", to: { device: "gpu0", bar: 2 } },
    ],
  };
}

const p2pLive = { "gpu0→ram": "ram", "gpu0→nic0.bar0": "mmio", "nic0→gpu0.bar2": "mmio" } as const;

export function memoryBackend(kind: RamKind, size: bigint = GPA.ramSize): Step {
  return kind === "memfd"
    ? {
        name: "memory-backend-memfd: memfd_create(MFD_ALLOW_SEALING), ftruncate, F_ADD_SEALS, mmap",
        actor: "vmm",
        note: "qemu_memfd_create (util/memfd.c) from memfd_backend_memory_alloc (backends/hostmem-memfd.c), then qemu_ram_mmap: the size is set before the seals, since F_SEAL_GROW would refuse it afterwards.",
        run: ({ world }) => {
          world.qemu.memfdBackend("pc.ram", GPA.ram, size);
        },
      }
    : {
        name: "Anonymous guest RAM: mmap(MAP_PRIVATE|MAP_ANONYMOUS)",
        actor: "vmm",
        note: "qemu_anon_ram_alloc (util/oslib-posix.c) through qemu_ram_mmap: no fd, so the listener will map RAM by virtual address.",
        run: ({ world }) => {
          world.qemu.anonRam("pc.ram", GPA.ram, size);
        },
      };
}

export function listener(kind: RamKind): Step {
  return {
    name:
      kind === "memfd"
        ? "Memory listener maps guest RAM by fd: IOMMU_IOAS_MAP_FILE"
        : "Memory listener maps guest RAM by VA: IOMMU_IOAS_MAP",
    actor: "vmm",
    note: "vfio_listener_register replays every section (vfio_container_region_add, hw/vfio/listener.c); iommufd_cdev_map (hw/vfio/iommufd.c) uses MAP_FILE for a shared RAMBlock with an fd, MAP otherwise. A RAM map failure is fatal.",
    run: ({ world }) => world.qemu.listenerRegister(),
  };
}

/** vfio_pci_realize after the attach: info, regions, config, BARs, interrupts, notifiers. */
export function realizeRest(name: string): Step {
  return {
    name: `${name}: GET_INFO, GET_HW_INFO, region and IRQ info, config space, BAR mmaps and dma-bufs, INTx, notifiers`,
    actor: "vmm",
    note: "vfio_device_get_info (hw/vfio/device.c), the host IOMMU device's GET_HW_INFO, vfio_pci_populate_device, vfio_pci_config_setup, vfio_region_mmap and vfio_region_create_dma_buf (hw/vfio/region.c), vfio_intx_enable and the ERR/REQ notifiers (hw/vfio/pci.c).",
    run: ({ world }) => {
      const q = world.qemu;
      const dev = world.dev(name);
      q.getDeviceInfo(dev);
      q.getHwInfo(dev);
      q.populateDevice(dev);
      q.configSetup(dev);
      q.barsRegister(
        dev,
        dev.host.spec.bars.map((b) => ({ index: b.index, gpa: b.gpa })),
      );
      expect(
        dev.pv.bars.every((b) => b.dmabufFd >= 0),
        `${name}: a BAR has no dma-buf`,
      );
      q.interruptSetup(dev);
      q.registerNotifiers(dev);
    },
  };
}

export function bindStep(name: string, note: string): Step {
  return {
    name: `${name}: open the VFIO cdev, connect the iommufd backend, VFIO_DEVICE_BIND_IOMMUFD`,
    actor: "vmm",
    note,
    run: ({ world }) => {
      world.qemu.cdevOpenAndBind(world.host.device(name));
    },
  };
}

/** The first device makes the container and its first HWPT. */
export function containerStep(name: string): Step {
  return {
    name: `${name}: IOMMU_IOAS_ALLOC, then autodomains: GET_HW_INFO, HWPT_ALLOC, ATTACH_IOMMUFD_PT`,
    actor: "vmm",
    note: "iommufd_cdev_attach and iommufd_cdev_autodomains_get (hw/vfio/iommufd.c): the container is new, so there is no HWPT to try; the HWPT asks for dirty tracking when the IOMMU reports it.",
    run: ({ world }) => {
      expect(world.qemu.containerGet(), "a container existed already");
      world.qemu.autodomainsGet(world.dev(name));
    },
  };
}

export const iovaRangesStep: Step = {
  name: "IOMMU_IOAS_IOVA_RANGES: the EMSGSIZE probe, then the list — the MSI window is a hole",
  actor: "vmm",
  note: "iommufd_cdev_get_info_iova_range (hw/vfio/iommufd.c): with a device attached, the IOMMU's reserved interrupt range 0xfee00000–0xfeefffff is no longer usable IOVA.",
  run: ({ world, log }) => {
    world.qemu.getIovaRanges();
    const r = world.qemu.iovaRanges;
    const hole =
      r.some((x) => x.last === X86_MSI_RANGE_START - 1n) &&
      r.some((x) => x.start === X86_MSI_RANGE_END + 1n);
    expect(hole, "no hole at the MSI window");
    log(`hole: ${hex(X86_MSI_RANGE_START)}..${hex(X86_MSI_RANGE_END)}`);
  },
};

export const guestDecodeStep: Step = {
  name: "Guest firmware writes COMMAND = MEMORY|MASTER: the listener maps each BAR's dma-buf",
  actor: "guest",
  note: "vfio_pci_write_config: the kernel sees the write first, then the BAR sections appear and vfio_container_region_add maps them with MAP_FILE on the dma-buf fd.",
  run: ({ world }) => {
    for (const d of world.qemu.devices)
      world.qemu.guestWriteCommand(d, d.pv.command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    for (const d of world.qemu.devices)
      for (const b of d.pv.bars) expect(b.mapped, `${d.name} BAR${b.index} is not DMA-mapped`);
  },
};

/** The function asserts INTA# until its interrupt status is serviced. */
function deviceIntx(world: QemuWorld, name: string): void {
  pciIntxAssert(world.host.device(name).pdev);
}

function p2p(world: QemuWorld, text: string): string[] {
  const out: string[] = [];
  const nicBar = world.dev("nic0").pv.bars.find((b) => b.index === 0);
  if (!nicBar) throw new Error("nic0 has no BAR0");
  const data = new TextEncoder().encode(text);
  vfioPciDmaWrite(world.host.device("gpu0").vdev, nicBar.gpa, data);
  const phys = new Uint8Array(data.length);
  world.kernel.mem.readPhys(world.host.device("nic0").pdev.resource(0).start, phys);
  expect(new TextDecoder().decode(phys) === text, "nic0 BAR0 does not hold gpu0's write");
  out.push(`gpu0 wrote "${text}" at ${hex(nicBar.gpa)}: nic0's BAR0 holds it`);
  const pkt = new TextEncoder().encode(`rx:${text}`);
  vfioPciDmaWrite(world.host.device("nic0").vdev, RX_RING, pkt);
  const ram = world.qemu.ram[0];
  if (!ram) throw new Error("no RAM");
  const seen = new TextDecoder().decode(world.libc.peek(ram.va + RX_RING - ram.gpa, pkt.length));
  expect(seen === `rx:${text}`, `QEMU reads "${seen}" at the RX ring`);
  out.push(`nic0 DMA-wrote "rx:${text}" at ${hex(RX_RING)}: QEMU reads it at its RAM VA`);
  return out;
}

function qemuSteps(kind: RamKind, twoIommus: boolean): Step[] {
  return [
    memoryBackend(kind),
    bindStep(
      "gpu0",
      "iommufd_cdev_getfd then iommufd_cdev_connect_and_bind (hw/vfio/iommufd.c): iommufd_backend_connect (backends/iommufd.c) opens /dev/iommu for the first user and probes IOMMU_IOAS_CHANGE_PROCESS for CPR; an error there only blocks cpr-transfer.",
    ),
    containerStep("gpu0"),
    iovaRangesStep,
    listener(kind),
    realizeRest("gpu0"),
    bindStep("nic0", "The backend already has its user: /dev/iommu is not opened again."),
    {
      name: twoIommus
        ? "nic0: the existing HWPT is refused (EINVAL, another IOMMU), so a second HWPT on the IOAS"
        : "nic0: joins gpu0's HWPT (same IOMMU)",
      actor: "vmm",
      note: "iommufd_cdev_attach_container: the container exists, so no IOAS, no IOVA-range read, no listener replay; autodomains tries each HWPT first, EINVAL meaning incompatible.",
      run: ({ world }) => {
        const nic = world.dev("nic0");
        world.qemu.autodomainsGet(nic);
        const hwpts = world.vmm.hwpts.length;
        expect(hwpts === (twoIommus ? 2 : 1), `${hwpts} HWPTs`);
      },
    },
    realizeRest("nic0"),
    { ...guestDecodeStep, expectProbes: p2pLive },
    {
      name: "Guest driver enables MSI-X on gpu0 (all masked), then unmasks vector 0",
      actor: "guest",
      note: "vfio_msix_enable: INTx off, MSI-X on with one unsignalled vector (fd -1); vfio_msix_vector_do_use: with NORESIZE, growing is a disable and a re-enable with the eventfds.",
      run: ({ world, log }) => {
        const q = world.qemu;
        const gpu = world.dev("gpu0");
        if (!gpu.msixCap) {
          log("gpu0 has no MSI-X capability: the guest stays on INTx");
          return;
        }
        q.guestWriteMsixControl(gpu, true, true);
        vfioMsixEnable(q.sys, gpu);
        q.guestWriteMsixControl(gpu, true, false);
        vfioMsixVectorUse(q.sys, gpu, 0);
        const fd = gpu.irq.msixFds[0] ?? -1;
        expect(fd >= 0, "vector 0 has no eventfd");
        expect(pciMsiRaise(world.host.device("gpu0").pdev, 0), "gpu0's vector 0 did not fire");
        const n = eventNotifierTestAndClear(q.sys, fd);
        expect(n === 1n, `vector 0's eventfd counter is ${n}, expected 1`);
        log(
          "gpu0 raised MSI-X vector 0; QEMU read its eventfd and notifies the guest (msix_notify)",
        );
      },
    },
    {
      name: "nic0 raises INTx: the kernel masks the line, QEMU drains the eventfd, the guest EOIs",
      actor: "device",
      note: "vfio_intx_interrupt (hw/vfio/pci.c), without KVM irqfds: QEMU reads the eventfd, asserts the guest's line and disables the BAR mmaps (the listener unmaps them) so BAR accesses trap as EOI; vfio_pci_intx_eoi UNMASKs the line the kernel auto-masked; the mmap timer maps the BARs again.",
      run: ({ world, log }) => {
        const q = world.qemu;
        const nic = world.dev("nic0");
        expect(nic.irq.intxFd >= 0, "nic0 has no INTx eventfd");
        deviceIntx(world, "nic0");
        expect(q.intxInterrupt(nic), "the INTx eventfd was not signalled");
        expect(
          nic.pv.bars.every((b) => !b.mapped),
          "BARs stayed mapped while INTx was pending",
        );
        pciIntxDeassert(world.host.device("nic0").pdev);
        log("the guest's handler clears nic0's interrupt and EOIs through a trapped BAR access");
        q.intxEoiAndRemap(nic);
        expect(
          nic.pv.bars.every((b) => b.mapped),
          "BARs not mapped again after the EOI",
        );
      },
      expectProbes: p2pLive,
    },
    {
      name: "nic0 ↔ gpu0 peer to peer, and nic0 DMA into guest RAM",
      actor: "device",
      run: ({ world, log }) => {
        for (const l of p2p(world, "pkt#1")) log(l);
      },
      expectProbes: p2pLive,
    },
    {
      name: "Dirty logging as migration does it: tracking on every HWPT, nic0 writes RAM, the bitmap",
      actor: "vmm",
      note: "vfio_container_set_dirty_page_tracking and vfio_container_query_dirty_bitmap (hw/vfio/container-base.c) → iommufd_backend_set_dirty_tracking / iommufd_backend_get_dirty_bitmap (backends/iommufd.c): every HWPT was allocated with DIRTY_TRACKING, their bitmaps add up in one buffer.",
      run: ({ world, log, round }) => {
        const q = world.qemu;
        iommufdSetDirtyPageTracking(q, true);
        iommufdQueryDirtyBitmap(q, GPA.ram, GPA.ramSize);
        const pages = [0x300, 0x301, 0x4000];
        for (const p of pages)
          vfioPciDmaWrite(
            world.host.device("nic0").vdev,
            BigInt(p * PAGE_SIZE),
            new TextEncoder().encode(`rx page ${p}`),
          );
        const dirty = iommufdQueryDirtyBitmap(q, GPA.ram, GPA.ramSize);
        round("nic0 writes", dirty.length);
        expect(
          dirty.length === pages.length && pages.every((p) => dirty.includes(p)),
          `dirty pages ${dirty.join(",")}, expected ${pages.join(",")}`,
        );
        const again = iommufdQueryDirtyBitmap(q, GPA.ram, GPA.ramSize);
        expect(again.length === 0, `${again.length} pages still dirty after read-and-clear`);
        iommufdSetDirtyPageTracking(q, false);
        log(`the bitmap named exactly the ${pages.length} pages nic0 wrote, then none`);
      },
      expectProbes: p2pLive,
    },
    {
      name: "gpu0 reset (FLR): pre-reset unmaps, VFIO_DEVICE_RESET, post-reset; the guest maps again",
      actor: "vmm",
      note: "vfio_pci_reset (hw/vfio/pci.c): vfio_pci_pre_reset disables the interrupts and clears COMMAND (the kernel revokes, the listener unmaps), the function has FLR so VFIO_DEVICE_RESET, vfio_pci_post_reset re-enables INTx and zeroes the BAR registers; the guest's COMMAND write maps the BARs again.",
      run: ({ world, log }) => {
        const gpu = world.dev("gpu0");
        const command = gpu.pv.command;
        const how = world.qemu.reset(gpu);
        expect(how === "device", `gpu0 reset by ${how}`);
        expect(
          gpu.pv.bars.every((b) => !b.mapped),
          "a BAR stayed mapped across the reset",
        );
        world.qemu.guestWriteCommand(gpu, command);
        log("unmap → reset → map: the dma-bufs are live again");
      },
      expectProbes: p2pLive,
    },
    {
      name: "nic0 reset (no FLR): the hot-reset path of its bus",
      actor: "vmm",
      note: "vfio_pci_reset picks vfio_pci_hot_reset_one → iommufd_cdev_pci_hot_reset (hw/vfio/iommufd.c) for a function without FLR but with a PM reset: GET_PCI_HOT_RESET_INFO probed with argsz 12 (ENOSPC gives the count), then VFIO_DEVICE_PCI_HOT_RESET with count 0 from the cdev; a failure falls back to VFIO_DEVICE_RESET's PM reset.",
      run: ({ world, log }) => {
        const nic = world.dev("nic0");
        const command = nic.pv.command;
        const how = world.qemu.reset(nic);
        expect(how === "hot", `nic0 reset by ${how}, not by a bus reset`);
        world.qemu.guestWriteCommand(nic, command);
        log(
          "nic0 reset by a secondary-bus reset: it is alone on its bus and owned by this iommufd",
        );
      },
      expectProbes: p2pLive,
    },
    {
      name: "After both resets: P2P and RAM DMA work again",
      actor: "device",
      run: ({ world, log }) => {
        for (const l of p2p(world, "pkt#2")) log(l);
      },
      expectProbes: p2pLive,
    },
    {
      name: "device_del of both functions: notifiers, interrupts, BAR unmaps, DETACH, DESTROY",
      actor: "vmm",
      note: "vfio_exitfn, vfio_pci_finalize and iommufd_cdev_detach (hw/vfio/iommufd.c): the last device on a HWPT destroys it, the last device of the container unmaps RAM and destroys the IOAS, then the device fd closes and the backend disconnects.",
      run: ({ world }) => {
        for (const d of [...world.qemu.devices].reverse()) world.qemu.detach(d);
        expect(world.vmm.hwpts.length === 0, "a HWPT is left");
      },
    },
    {
      name: "QEMU exits: the memory backend goes; nothing pinned, no dma-buf, no object left",
      actor: "vmm",
      run: ({ world, log }) => {
        world.qemu.freeRam();
        const left = world.leftovers();
        expect(left.length === 0, left.join("; "));
        log("no page pinned, no dma-buf, no binding, no iommufd object");
      },
    },
  ];
}

function qemuScenario(id: string, kind: RamKind, twoIommus: boolean): ScenarioDef<QemuWorld> {
  const ram = kind === "memfd" ? "memfd RAM (MAP_FILE)" : "anonymous RAM (MAP by VA)";
  const units = twoIommus ? "two IOMMUs" : "one IOMMU";
  return {
    id,
    number: 0,
    title: `QEMU's sequence: q35, ${ram}, two functions behind ${units}`,
    summary:
      "QEMU's own system calls in QEMU's order: the memory backend, the iommufd backend and its CPR probe, " +
      "cdev bind, IOAS and autodomains, the IOVA ranges with the MSI hole, the listener's RAM maps, the " +
      "device realize (info, regions, BAR mmaps and dma-bufs, interrupts), the guest's COMMAND and MSI-X " +
      "writes, interrupts through eventfds, P2P, dirty logging over every HWPT, an FLR and a bus reset with " +
      "unmap → reset → map, and " +
      "the teardown that leaves nothing behind.",
    setup: () => new QemuWorld(spec(twoIommus)),
    steps: qemuSteps(kind, twoIommus),
  };
}

export const qemu = qemuScenario("qemu", "memfd", false);
export const qemuAnon = qemuScenario("qemu-anon", "anon", false);
export const qemuTwoIommus = qemuScenario("qemu-two-iommus", "memfd", true);
export const qemuAnonTwoIommus = qemuScenario("qemu-anon-two-iommus", "anon", true);
