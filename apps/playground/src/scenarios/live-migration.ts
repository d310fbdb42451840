/**
 * Live migration with IOMMU dirty tracking: a GPU keeps DMA-writing guest RAM while QEMU runs
 * pre-copy rounds — tracking on for every HWPT, all RAM sent once, then the pages the IOMMU saw
 * written are read-and-cleared from the bitmap and sent again, round after round, until few
 * remain; the device stops, the last bitmap is read and its pages sent. The destination then
 * holds every byte the device wrote.
 *
 * QEMU's path: vfio_container_set_dirty_page_tracking and vfio_container_query_dirty_bitmap
 * (hw/vfio/container-base.c) → iommufd_set_dirty_page_tracking / iommufd_query_dirty_bitmap
 * (hw/vfio/iommufd.c) → iommufd_backend_set_dirty_tracking / iommufd_backend_get_dirty_bitmap
 * (backends/iommufd.c). The guest's CPU writes are KVM's dirty log, not modelled here: only the
 * device writes.
 */
import { PAGE_SIZE } from "@x/kernel";
import { vfioPciDmaWrite } from "@x/vfio-pci";
import { iommufdQueryDirtyBitmap, iommufdSetDirtyPageTracking } from "../qemu/dirty.js";
import { QemuWorld } from "../qemu/qemu-world.js";
import { type ScenarioDef, type StepDef, expect } from "../scenario.js";
import { MiB, gpuSpec } from "../world.js";
import {
  bindStep,
  containerStep,
  guestDecodeStep,
  iovaRangesStep,
  listener,
  memoryBackend,
  realizeRest,
} from "./qemu.js";

const RAM_SIZE = 16n * MiB;
const PAGES = Number(RAM_SIZE / BigInt(PAGE_SIZE));
/** Pre-copy stops once a round leaves no more than this many dirty pages. */
const STOP_COPY_PAGES = 16;

/** The migration's state: the destination's RAM and what the device wrote where. */
class MigrationWorld extends QemuWorld {
  readonly dest = new Uint8Array(PAGES * PAGE_SIZE);
  /** Page → the last stamp the device wrote there. */
  readonly written = new Map<number, string>();
  /** The last pre-copy round's dirty pages, sent with the stop-and-copy. */
  pendingDirty: number[] = [];
  private seed = 1;
  round = 0;

  /** The device writes `n` pages chosen by a fixed LCG, each stamped with round and page. */
  deviceWrites(n: number): void {
    const vdev = this.host.device("gpu0").vdev;
    for (let i = 0; i < n; i++) {
      this.seed = (this.seed * 1103515245 + 12345) % 2 ** 31;
      const page = (this.seed >>> 8) % PAGES;
      const stamp = `round ${this.round} page ${page} write ${i}`;
      vfioPciDmaWrite(vdev, BigInt(page * PAGE_SIZE), new TextEncoder().encode(stamp));
      this.written.set(page, stamp);
    }
  }

  /** Send pages from QEMU's RAM to the destination, one read of QEMU's mapping per run of pages. */
  send(pages: Iterable<number>): number {
    const ram = this.qemu.ram[0];
    if (!ram) throw new Error("no RAM");
    const sorted = [...pages].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; ) {
      const first = sorted[i] ?? 0;
      let n = 1;
      while (sorted[i + n] === first + n) n++;
      const off = first * PAGE_SIZE;
      this.dest.set(this.libc.peek(ram.va + BigInt(off), n * PAGE_SIZE), off);
      i += n;
    }
    return sorted.length;
  }
}

type Step = StepDef<MigrationWorld>;

const allPages = (): number[] => Array.from({ length: PAGES }, (_, p) => p);

const steps: Step[] = [
  memoryBackend("memfd", RAM_SIZE),
  bindStep("gpu0", "iommufd_cdev_attach (hw/vfio/iommufd.c) for the one function."),
  containerStep("gpu0"),
  iovaRangesStep,
  listener("memfd"),
  realizeRest("gpu0"),
  guestDecodeStep,
  {
    name: "The guest's driver starts gpu0: it DMA-writes 512 pages of guest RAM",
    actor: "device",
    run: ({ world, log }) => {
      world.deviceWrites(512);
      log(`${world.written.size} distinct pages written`);
    },
  },
  {
    name: "Migration starts: IOMMU_HWPT_SET_DIRTY_TRACKING on every HWPT, then the bulk copy",
    actor: "vmm",
    note: "vfio_listener_log_global_start → iommufd_set_dirty_page_tracking. The first round sends all RAM; the device goes on writing meanwhile.",
    run: ({ world, log, round }) => {
      iommufdSetDirtyPageTracking(world.qemu, true);
      world.round = 1;
      world.deviceWrites(1024);
      const sent = world.send(allPages());
      round("bulk", sent);
      log(`sent all ${sent} pages; the device wrote 1024 pages during the copy`);
    },
  },
  {
    name: "Pre-copy rounds: read-and-clear the bitmap, send the dirty pages, until few remain",
    actor: "vmm",
    note: "vfio_container_query_dirty_bitmap → iommufd_query_dirty_bitmap (IOMMU_HWPT_GET_DIRTY_BITMAP, read and clear) each iteration; the device writes fewer pages each round, so the dirty set shrinks.",
    run: ({ world, log, round }) => {
      let burst = 256;
      for (;;) {
        const dirty = iommufdQueryDirtyBitmap(world.qemu, 0n, RAM_SIZE);
        world.round++;
        round(`round ${world.round - 1}`, dirty.length);
        if (dirty.length <= STOP_COPY_PAGES) {
          log(`${dirty.length} dirty pages: small enough to stop and copy`);
          world.pendingDirty = dirty;
          return;
        }
        world.deviceWrites(burst);
        world.send(dirty);
        log(
          `round ${world.round - 1}: ${dirty.length} dirty pages sent; the device wrote ${burst} more`,
        );
        burst = Math.max(4, burst >> 2);
        expect(world.round < 32, "pre-copy does not converge");
      }
    },
  },
  {
    name: "Stop-and-copy: the device stops, the last bitmap is read, its pages sent",
    actor: "vmm",
    note: "The VM and the device are stopped; the final sync reads the bitmap once more, tracking goes off (vfio_listener_log_global_stop).",
    run: ({ world, log, round }) => {
      world.deviceWrites(3);
      const dirty = iommufdQueryDirtyBitmap(world.qemu, 0n, RAM_SIZE);
      const last = new Set([...world.pendingDirty, ...dirty]);
      round("stop-copy", last.size);
      world.send(last);
      iommufdSetDirtyPageTracking(world.qemu, false);
      log(`${last.size} pages sent with the device stopped`);
    },
  },
  {
    name: "The destination holds every byte the device wrote, and all of RAM",
    actor: "kernel",
    run: ({ world, log }) => {
      const ram = world.qemu.ram[0];
      if (!ram) throw new Error("no RAM");
      for (const [page, stamp] of world.written) {
        const off = page * PAGE_SIZE;
        const got = new TextDecoder().decode(world.dest.subarray(off, off + stamp.length));
        expect(
          got === stamp,
          `page ${page}: destination has "${got}", the device wrote "${stamp}"`,
        );
      }
      const src = world.libc.peek(ram.va, Number(RAM_SIZE));
      const bad = src.findIndex((b, i) => world.dest[i] !== b);
      expect(bad < 0, `destination differs from the source at ${bad}`);
      log(`${world.written.size} device-written pages and all ${PAGES} pages match`);
    },
  },
  {
    name: "Migration done: the source QEMU tears down; nothing left",
    actor: "vmm",
    run: ({ world }) => {
      world.qemu.detach(world.dev("gpu0"));
      world.qemu.freeRam();
      const left = world.leftovers();
      expect(left.length === 0, left.join("; "));
    },
  },
];

export const liveMigration: ScenarioDef<MigrationWorld> = {
  id: "live-migration",
  number: 0,
  title: "Live migration: pre-copy rounds over the IOMMU's dirty bitmap",
  summary:
    "A GPU DMA-writes guest RAM while QEMU migrates the VM: dirty tracking on the HWPT, a bulk copy, " +
    "then rounds of read-and-clear of the dirty bitmap and resend until few pages remain, a final " +
    "stop-and-copy — and the destination holds every byte the device wrote.",
  setup: () =>
    new MigrationWorld({
      iommus: [{ name: "iommu0", kind: "vt-d" }],
      devices: [gpuSpec("gpu0", "iommu0", 0xc000_0000n, 0x38_0000_0000n, 256n * MiB)],
      probes: [{ name: "gpu0→ram", from: "gpu0", to: { ram: 0x10_0000n } }],
    }),
  steps,
};
