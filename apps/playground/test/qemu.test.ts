import { afterEach, describe, expect, it, vi } from "vitest";
import { VFIO_REGION_INFO_CAP_MSIX_MAPPABLE } from "@x/vfio-pci";
import { main } from "../src/demo.js";
import type { QemuWorld } from "../src/qemu/qemu-world.js";
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

describe("QEMU's BAR areas", () => {
  it("without MSIX_MAPPABLE the table page is carved out; the two-range dma-buf is EOPNOTSUPP to map, and QEMU warns", () => {
    const def = scenarioById("qemu");
    if (!def) throw new Error("no qemu scenario");
    const r = new ScenarioRun(def);
    const realized = r.runTo(def.steps.findIndex((s) => s.name.startsWith("gpu0: GET_INFO")));
    expect(realized.every((x) => x.ok)).toBe(true);
    const world = r.world as QemuWorld;
    const gpu = world.dev("gpu0");
    const bar0 = gpu.regions.get(0);
    if (!bar0) throw new Error("no BAR0 region");
    expect(bar0.caps).toContain(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
    expect(world.qemu.mmapAreas(gpu, 0, bar0)).toEqual([{ offset: 0n, size: bar0.size }]);
    // An older kernel without the capability: vfio_pci_fixup_msix_region splits the BAR.
    const areas = world.qemu.mmapAreas(gpu, 0, { ...bar0, caps: [] });
    expect(areas).toEqual([
      { offset: 0n, size: 0x1_0000n },
      { offset: 0x1_1000n, size: bar0.size - 0x1_1000n },
    ]);
    const fd = world.qemu.createDmaBuf(
      gpu,
      0,
      areas.map((a) => ({ offset: a.offset, length: a.size })),
    );
    expect(fd).toBeGreaterThanOrEqual(0);
    const bar = {
      index: 0,
      offset: bar0.offset,
      size: bar0.size,
      gpa: 0xc000_0000n,
      dmabufFd: fd,
      mapped: false,
      areas,
    };
    world.vmm.mapBar(gpu.pv, bar);
    expect(bar.mapped).toBe(false);
    expect(world.vmm.p2pWarned).toBe(true);
    // The VMM's console still writes into the last step's log.
    const log = r.records.at(-1)?.lines.map((l) => l.text) ?? [];
    expect(log).toContainEqual(
      expect.stringMatching(
        /IOMMU_IOAS_MAP_FILE, fd=\d+ start=0x0 len=64 KiB iova=0xc0000000\) = -1 EOPNOTSUPP/,
      ),
    );
    expect(world.check()).toEqual([]);
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
