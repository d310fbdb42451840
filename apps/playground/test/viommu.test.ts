import { describe, expect, it } from "vitest";
import { ScenarioRun } from "../src/scenario.js";
import { viommu } from "../src/scenarios/viommu.js";

/** The vIOMMU scenario's story, read from its records step by step. */
describe("viommu", () => {
  const run = new ScenarioRun(viommu);
  const records = run.runTo();
  const at = (name: string) => {
    const r = records.find((x) => x.name.startsWith(name));
    if (!r) throw new Error(`no step "${name}"`);
    return r;
  };
  const ioctls = (name: string) =>
    at(name)
      .lines.filter((l) => l.kind === "ioctl")
      .map((l) => l.text);

  it("runs every step with every check holding", () => {
    const failures = records
      .filter((r) => !r.ok)
      .map((r) => `${r.name}: ${r.error ?? ""} ${r.violations.join("; ")}`);
    expect(failures).toEqual([]);
    expect(records).toHaveLength(viommu.steps.length);
  });

  it("allocates the stage-2 parent, the vIOMMU, the vDEVICE and the nested HWPT through the uAPI", () => {
    expect(ioctls("VMM realizes the vSMMU").some((t) => t.includes("NEST_PARENT"))).toBe(true);
    expect(ioctls("VMM realizes the vSMMU").some((t) => t.includes("IOMMU_VIOMMU_ALLOC"))).toBe(
      true,
    );
    expect(ioctls("VMM: IOMMU_VDEVICE_ALLOC").some((t) => t.includes("vSID=0x8"))).toBe(true);
    expect(ioctls("Guest writes gpu0's STE").some((t) => t.includes("ARM_SMMUV3"))).toBe(true);
  });

  it("forwards the guest's TLBI with IOMMU_HWPT_INVALIDATE, one command handled", () => {
    expect(ioctls("Guest queues CMD_TLBI_NH_VA")).toEqual([
      expect.stringMatching(/IOMMU_HWPT_INVALIDATE.* 1 command\(s\)\) = 0/),
    ]);
  });

  it("reports the stage-1 fault to the guest and keeps the stage-2 fault with the host", () => {
    expect(
      at("gpu0 DMAs to an IOVA the guest never mapped").lines.some((l) =>
        l.text.includes("F_TRANSLATION"),
      ),
    ).toBe(true);
    expect(
      at("gpu0's P2P DMA through the nested domain").lines.some((l) => l.text.includes("stage-2")),
    ).toBe(true);
  });

  it("ends with nothing pinned, open or allocated", () => {
    expect(at("Teardown").ok).toBe(true);
  });
});
