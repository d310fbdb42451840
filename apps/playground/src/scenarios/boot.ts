/** Scenario 1: Boot with two GPUs and memfd RAM, the QEMU way; both domains hold RAM and every BAR. */
import { type ScenarioDef, expect } from "../scenario.js";
import { bytes } from "../snapshot.js";
import { VmWorld } from "../world.js";
import { bringUp, p2pWrite, twoGpusAndNic } from "./common.js";

export const boot: ScenarioDef<VmWorld> = {
  id: "boot",
  number: 1,
  title: "Boot with two GPUs and memfd RAM",
  summary:
    "IOAS_ALLOC, RAM by MAP_FILE, bind and attach three devices (the second GPU needs its own HWPT), " +
    "one single-range dma-buf per BAR mapped when the guest enables decode. Both domains then " +
    "contain all RAM and every BAR, so P2P works both ways.",
  setup: () => new VmWorld(twoGpusAndNic()),
  steps: [
    ...bringUp,
    {
      name: "Both domains map all RAM and every BAR in full",
      actor: "kernel",
      run: ({ world, log }) => {
        const snap = world.snapshot();
        expect(snap.domains.length === 2, `expected 2 domains, found ${snap.domains.length}`);
        for (const a of snap.ioas.flatMap((i) => i.areas))
          for (const [hwpt, m] of Object.entries(a.mapped)) {
            expect(m === a.length, `${a.label}: ${bytes(m)} of ${bytes(a.length)} in ${hwpt}`);
            log(`${a.label.padEnd(14)} ${bytes(a.length).padStart(8)} mapped in ${hwpt}`);
          }
      },
    },
    {
      name: "P2P both ways: gpu0 → gpu1 BAR2, gpu1 → gpu0 BAR2",
      actor: "device",
      run: ({ world, log }) => {
        log(p2pWrite(world, "gpu0", "gpu1", 2, "ping"));
        log(p2pWrite(world, "gpu1", "gpu0", 2, "pong"));
      },
      expectProbes: { "gpu0→gpu1.bar2": "mmio", "gpu1→gpu0.bar2": "mmio" },
    },
  ],
};
