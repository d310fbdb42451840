/**
 * The 1 TiB guest: RAM as one 1 TiB memfd of 1 GiB pages, mapped in sixteen 64 GiB pieces
 * (progress shown), then two GPUs behind different IOMMUs — each new domain is filled with the
 * whole terabyte — and their BARs. Scale comes from runs: 1 GiB folios become 1 GiB IOPTEs.
 */
import { MFD_HUGETLB, MFD_HUGE_1GB } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { bytes } from "../snapshot.js";
import { GiB, TiB, VmWorld } from "../world.js";
import {
  PROBES,
  RAM_PROBE,
  bootIommufd,
  guestEnablesDecode,
  realize,
  twoGpusAndNic,
} from "./common.js";

/** Guest-physical base of the terabyte: RAM starts above the 1 TiB line, clear of any BAR. */
export const HUGE_RAM = 0x100_0000_0000n;

/** gpu0 reads a DMA ring inside the terabyte; P2P probes are the common ones minus the NIC's. */
const HUGE_PROBES = PROBES.filter((p) => !p.name.startsWith("nic")).map((p) =>
  "ram" in p.to ? { ...p, to: { ram: HUGE_RAM + RAM_PROBE } } : p,
);

/**
 * Decision: the RAM probe is judged from the step that turns bus mastering on. Before it, a
 * function with PCI_COMMAND_MASTER clear issues no DMA, so every probe ends without a completion
 * whatever the IOMMU holds; after it, a fault can only mean the probe missed RAM.
 */
const LANDS = { "gpu0→ram": "ram", "gpu0→gpu1.bar2": "mmio", "gpu1→gpu0.bar2": "mmio" } as const;

export const hugeGuest: ScenarioDef<VmWorld> = {
  id: "huge-guest",
  number: 0,
  title: "A 1 TiB guest with two GPUs",
  summary:
    "One terabyte of guest RAM backed by 1 GiB hugetlb pages is mapped with MAP_FILE in 64 GiB " +
    "pieces; attaching each GPU fills a new domain with the whole terabyte. Each domain ends with " +
    "1 GiB IOPTEs for RAM, and P2P between the GPUs still works.",
  long: true,
  setup: () =>
    new VmWorld(
      twoGpusAndNic({
        probes: HUGE_PROBES,
        ramBytes: 2n * TiB,
      }),
    ),
  steps: [
    bootIommufd,
    {
      name: "VMM maps 1 TiB of RAM (1 GiB pages) in sixteen 64 GiB MAP_FILE calls",
      actor: "vmm",
      run: ({ world, progress }) => {
        world.vmm.addRam("ram", HUGE_RAM, TiB, {
          memfdFlags: MFD_HUGETLB | MFD_HUGE_1GB,
          chunk: 64n * GiB,
          progress: (done, total) => progress(done, total, "× 64 GiB mapped"),
        });
      },
    },
    realize(
      "gpu0",
      "The first domain is filled with the whole terabyte: 1,024 folios, 1,024 IOPTEs.",
    ),
    realize("gpu1", "A second IOMMU unit, a second domain, filled the same way."),
    { ...guestEnablesDecode, expectProbes: LANDS },
    {
      name: "Each domain maps the terabyte with 1 GiB IOPTEs",
      actor: "kernel",
      run: ({ world, log }) => {
        for (const d of world.snapshot().domains) {
          const giant = d.levels.reduce((n, l) => n + (l.leaves[String(GiB)] ?? 0), 0);
          expect(giant >= 1024, `${d.label} has only ${giant} 1 GiB leaves`);
          log(`${d.label}: ${giant} leaves of 1 GiB, ${bytes(d.mappedBytes)} mapped`);
        }
      },
      expectProbes: LANDS,
    },
  ],
};
