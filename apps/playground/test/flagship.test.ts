import { describe, expect, it } from "vitest";
import { ScenarioRun } from "../src/scenario.js";
import { flagship } from "../src/scenarios/flagship.js";

/** The flagship's story, read from its snapshots and probes step by step. */
describe("flagship", () => {
  const run = new ScenarioRun(flagship);
  const records = run.runTo();
  const at = (name: string) => {
    const r = records.find((x) => x.name.startsWith(name));
    if (!r) throw new Error(`no step "${name}"`);
    return r;
  };
  const areas = (r: (typeof records)[number]) => r.snapshot.ioas.flatMap((i) => i.areas);

  it("gives gpu1 its own HWPT and lets the NIC share gpu0's", () => {
    const r = at("Guest firmware");
    expect(r.snapshot.domains.map((d) => d.devices)).toEqual([["gpu0", "nic"], ["gpu1"]]);
    expect(areas(r).filter((a) => a.kind === "mmio")).toHaveLength(5);
    for (const a of areas(r)) for (const m of Object.values(a.mapped)) expect(m).toBe(a.length);
  });

  it("keeps P2P working across an FLR done with the protocol", () => {
    const r = at("VMM resets gpu1 with the protocol");
    expect(r.lines.some((l) => l.text.includes("IOMMU_IOAS_UNMAP"))).toBe(true);
    expect(r.probes.find((p) => p.name === "gpu0→gpu1.bar2")?.verdict).toBe("mmio");
    expect(areas(r).every((a) => a.live)).toBe(true);
  });

  it("leaves gpu1's areas dead, unmapped from both domains, when the VMM forgets", () => {
    const r = at("The VMM's bug");
    const dead = areas(r).filter((a) => !a.live);
    expect(dead.map((a) => a.label).sort()).toEqual(["gpu1 BAR0", "gpu1 BAR2"]);
    for (const a of dead) expect(Object.values(a.mapped)).toEqual([0n, 0n]);
    // The exporter un-revoked after the reset; iommufd ignored it.
    expect(r.snapshot.dmabufs.filter((b) => b.device === "gpu1").map((b) => b.state)).toEqual([
      "live",
      "live",
    ]);
    expect(r.events.some((e) => e.name === "iommufd:dmabuf_revoke")).toBe(true);
  });

  it("ends clean after the VMM unmaps and maps again", () => {
    const last = records.at(-1)!;
    expect(run.ok).toBe(true);
    expect(areas(last).every((a) => a.live)).toBe(true);
    expect(last.probes.every((p) => p.verdict !== "fault")).toBe(true);
  });
});
