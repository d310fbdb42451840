import { vfioPciDmaRead, vfioPciDmaWrite } from "@x/vfio-pci";
import { describe, expect, it } from "vitest";
import { ScenarioRun } from "../src/scenario.js";
import { RAM_PROBE } from "../src/scenarios/common.js";
import { HUGE_RAM, hugeGuest } from "../src/scenarios/huge-guest.js";
import { TiB } from "../src/world.js";

describe("huge-guest: the RAM probe reaches the terabyte", () => {
  it("lands in RAM, and bytes written by one GPU read back through the other, at every step with bus mastering on", () => {
    const run = new ScenarioRun(hugeGuest);
    let landed = 0;
    while (!run.done) {
      const r = run.step();
      expect(r.ok, `step ${r.index + 1} "${r.name}"`).toBe(true);
      const probe = r.probes.find((p) => p.name === "gpu0→ram");
      expect(probe).toBeDefined();
      if (!probe) continue;
      expect(probe.iova >= HUGE_RAM && probe.iova < HUGE_RAM + TiB).toBe(true);
      if (probe.detail.includes("bus mastering disabled")) {
        expect(probe.verdict).toBe("fault");
        continue;
      }
      expect(probe.verdict, `step ${r.index + 1}: ${probe.detail}`).toBe("ram");
      const pattern = Uint8Array.from({ length: 8 }, (_, i) => 0xa0 + r.index * 8 + i);
      vfioPciDmaWrite(run.world.host.device("gpu1").vdev, probe.iova, pattern);
      expect(vfioPciDmaRead(run.world.host.device("gpu0").vdev, probe.iova, 8)).toEqual(pattern);
      landed++;
    }
    // Decode on, then the leaf check: both steps run with bus mastering on.
    expect(landed).toBe(2);
  });

  it("fails its checks when the RAM probe points outside RAM", () => {
    const outside = {
      ...hugeGuest,
      setup: () => {
        const world = hugeGuest.setup();
        const i = world.probes.findIndex((p) => p.name === "gpu0→ram");
        world.probes[i] = { name: "gpu0→ram", from: "gpu0", to: { ram: RAM_PROBE } };
        return world;
      },
    };
    const records = new ScenarioRun(outside).runTo();
    const bad = records.filter((r) => !r.ok);
    expect(bad.map((r) => r.index)).toEqual([4, 5]);
    for (const r of bad)
      expect(r.probeMismatches).toEqual([
        expect.stringMatching(/^probe gpu0→ram: expected ram, got fault \(IOMMU fault/),
      ]);
  });
});
