import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../src/demo.js";
import { ScenarioRun, type StepRecord } from "../src/scenario.js";
import { scenarioById } from "../src/scenarios/index.js";

const runs = new Map<string, StepRecord[]>();

/** The records of a scenario's full run (runs are deterministic, so one run serves every test). */
function run(id: string): StepRecord[] {
  let records = runs.get(id);
  if (!records) {
    const def = scenarioById(id);
    if (!def) throw new Error(`no scenario ${id}`);
    records = new ScenarioRun(def).runTo();
    runs.set(id, records);
  }
  return records;
}

function lines(records: readonly StepRecord[], kind?: string): string[] {
  return records.flatMap((r) => r.lines.filter((l) => !kind || l.kind === kind).map((l) => l.text));
}

describe("the qemu scenarios", () => {
  it("memfd RAM is mapped by fd, anonymous RAM by VA; the IOVA probe's EMSGSIZE is tolerated", () => {
    const memfd = run("qemu");
    const anon = run("qemu-anon");
    expect(lines(memfd)).toContainEqual(
      expect.stringMatching(/IOMMU_IOAS_MAP_FILE, fd=\d+ start=0x0 len=128 MiB iova=0x0\) = 0/),
    );
    expect(lines(anon)).toContainEqual(
      expect.stringMatching(/IOMMU_IOAS_MAP, va=0x[0-9a-f]+ len=128 MiB iova=0x0\) = 0/),
    );
    expect(lines(memfd)).toContainEqual(
      expect.stringMatching(/F_ADD_SEALS, F_SEAL_GROW\|F_SEAL_SHRINK\|F_SEAL_SEAL\) = 0/),
    );
    for (const records of [memfd, anon])
      expect(lines(records, "tolerated")).toContainEqual(
        expect.stringMatching(/IOMMU_IOAS_IOVA_RANGES, ioas=\d+, num_iovas=0\) = -1 EMSGSIZE/),
      );
  });

  it("one IOMMU: one HWPT for both functions; two IOMMUs: EINVAL is tolerated and a second HWPT made", () => {
    const one = run("qemu");
    const two = run("qemu-two-iommus");
    const domains = (r: StepRecord[], name: RegExp) =>
      r.find((x) => name.test(x.name))?.snapshot.domains.length;
    expect(domains(one, /^nic0: joins/)).toBe(1);
    expect(domains(two, /^nic0: the existing HWPT is refused/)).toBe(2);
    expect(lines(two, "tolerated")).toContainEqual(
      expect.stringMatching(/nic0, VFIO_DEVICE_ATTACH_IOMMUFD_PT, pt_id=\d+\) = -1 EINVAL/),
    );
    expect(lines(one, "tolerated").some((l) => /ATTACH_IOMMUFD_PT/.test(l))).toBe(false);
  });

  it("ends with no area, domain, dma-buf or open device", () => {
    for (const id of ["qemu", "qemu-anon", "qemu-two-iommus", "qemu-anon-two-iommus"]) {
      const last = run(id).at(-1)?.snapshot;
      expect(last?.ioas).toEqual([]);
      expect(last?.domains).toEqual([]);
      expect(last?.dmabufs).toEqual([]);
      expect(last?.devices.every((d) => !d.open)).toBe(true);
    }
  });
});

describe("the live-migration scenario", () => {
  afterEach(() => vi.restoreAllMocks());

  it("records the dirty pages of every round: all RAM first, then shrinking rounds", () => {
    const records = run("live-migration");
    const rounds = records.flatMap((r) => r.rounds);
    expect(rounds[0]).toEqual({ label: "bulk", dirtyPages: 4096 });
    const precopy = rounds.filter((r) => r.label.startsWith("round"));
    expect(precopy.length).toBeGreaterThan(1);
    for (let i = 1; i < precopy.length; i++)
      expect(precopy[i]?.dirtyPages).toBeLessThan(precopy[i - 1]?.dirtyPages ?? 0);
    expect(precopy.at(-1)?.dirtyPages).toBeLessThanOrEqual(16);
    expect(rounds.at(-1)?.label).toBe("stop-copy");
  });

  it("the CLI prints the rounds", () => {
    const out: string[] = [];
    vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
    expect(main(["live-migration"])).toBe(0);
    expect(out.join("\n")).toMatch(/round 1 +\d+ dirty pages █+/);
  });
});
