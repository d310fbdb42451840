/**
 * Scenario 13: Fault-injection sweep, iommufd_fail_nth style: the bring-up of scenario 1 (boot) is run again and
 * again with the N-th injectable point of the VMM's task failing (N = 1, 2, … until a run no
 * longer reaches the armed point). After every failing run the model must be whole — invariants
 * hold, no domain half-filled — and after the process exits nothing may stay pinned or alive.
 */
import { MFD_HUGETLB, MFD_HUGE_2MB } from "@x/kernel";
import { type ScenarioDef, expect } from "../scenario.js";
import { MiB, VmWorld, type VmWorldSpec, gpuSpec } from "../world.js";

/** A small machine so each of the hundreds of runs is quick. */
const SPEC: VmWorldSpec = {
  iommus: [
    { name: "iommu0", kind: "amd-vi" },
    { name: "iommu1", kind: "vt-d" },
  ],
  devices: [
    gpuSpec("gpu0", "iommu0", 0xc000_0000n, 0x38_0000_0000n, 64n * MiB),
    gpuSpec("gpu1", "iommu1", 0xc100_0000n, 0x38_0400_0000n, 64n * MiB),
  ],
};

const CAP = 400;

/** The bring-up under test; any failure stops it, as QEMU would stop. */
function bringUp(world: VmWorld): void {
  const vmm = world.vmm;
  vmm.boot();
  vmm.addRam("ram", 0n, 32n * MiB, { memfdFlags: MFD_HUGETLB | MFD_HUGE_2MB });
  for (const name of ["gpu0", "gpu1"]) {
    const d = world.host.device(name);
    vmm.addDevice(
      name,
      d.vdev.cdevPath ?? "",
      d.spec.bars.map((b) => ({ index: b.index, gpa: b.gpa })),
    );
  }
  for (const d of vmm.devices) vmm.guestEnableMemory(d);
}

interface Outcome {
  readonly site: string | undefined;
  /** Injectable points the run reached. */
  readonly reached: number;
  readonly error: string | undefined;
  readonly problems: string[];
}

/** One run with the `nth` point failing; returns what failed and what was found broken. */
function runWithFailure(nth: number): Outcome {
  const world = new VmWorld(SPEC);
  const fault = world.libc.task.fault;
  let error: string | undefined;
  fault.arm(nth);
  try {
    bringUp(world);
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  const site = fault.read() === 0 ? fault.failedSite : undefined;
  const reached = fault.sitesHit.length;
  fault.disarm();
  const problems = world.check();
  // Process exit: every descriptor closed, in table order, as the kernel does.
  world.kernel.runAs(world.libc.task, () => world.libc.process.files.closeAll());
  const pinned = world.kernel.mem.totalPinned();
  if (pinned) problems.push(`${pinned} pages still pinned after exit`);
  for (const [name, d] of world.host.devices)
    for (const b of d.vdev.dmabufs)
      problems.push(`${name}: a dma-buf is still ${b.state} after exit`);
  return { site, reached, error, problems };
}

class SweepWorld extends VmWorld {
  points = 0;
  /** Points the clean run reached: the sweep's expected length, for its progress. */
  cleanPoints = 0;
  readonly sites = new Map<string, number>();
}

export const failNth: ScenarioDef<SweepWorld> = {
  id: "fail-nth",
  number: 13,
  title: "Fault injection: fail every allocation of the bring-up in turn",
  summary:
    "The bring-up of the boot scenario (IOAS, RAM, two GPUs with their own domains, BAR dma-bufs mapped) is " +
    "replayed with the 1st, 2nd, 3rd … injectable allocation of the VMM's task failing, until a run " +
    "passes every point. Each failing run must leave the model consistent (invariants, every live " +
    "area fully mapped in every domain) and, once the process exits, nothing pinned or attached.",
  long: true,
  setup: () => new SweepWorld(SPEC),
  steps: [
    {
      name: "A clean run of the bring-up",
      actor: "vmm",
      run: ({ world, log }) => {
        const clean = runWithFailure(0);
        world.cleanPoints = clean.reached;
        expect(clean.error === undefined, `the clean run failed: ${clean.error}`);
        expect(clean.problems.length === 0, clean.problems.join("; "));
        log(
          `clean run: booted through ${clean.reached} injectable points, nothing left behind at exit`,
        );
      },
    },
    {
      name: "Fail the N-th injectable point, N = 1, 2, … until the run goes past every point",
      actor: "kernel",
      run: ({ world, log, progress }) => {
        for (let nth = 1; nth <= CAP; nth++) {
          const o = runWithFailure(nth);
          if (o.site === undefined) {
            world.points = nth - 1;
            break;
          }
          world.sites.set(o.site, (world.sites.get(o.site) ?? 0) + 1);
          expect(
            o.problems.length === 0,
            `failing point ${nth} (${o.site}): ${o.problems.join("; ")}`,
          );
          const total = Math.max(world.cleanPoints, nth);
          if (nth % 25 === 0) progress(nth, total, `points swept (last: ${o.site})`);
        }
        expect(world.points > 0, `the sweep never ended within ${CAP} points`);
        progress(world.points, world.points, "points swept");
        log(`${world.points} injectable points, each failed once, nothing broken or leaked`);
        for (const [site, n] of [...world.sites].sort((a, b) => b[1] - a[1]))
          log(`  ${String(n).padStart(4)} × ${site}`);
      },
    },
  ],
};
