/**
 * fail_nth everywhere: the TEST_FAIL_NTH sweep (tools/testing/selftests/iommu/iommufd_fail_nth.c) over any program of
 * `Op`s. The program runs once with nothing armed; then, on a fresh machine each time, with
 * the 1st, 2nd, 3rd … injectable point of the user task armed (from the first op on), until a
 * run no longer reaches its armed point. After every step the cross-package checker runs;
 * the op the injected failure hit must leave the machine's snapshot as it was (failure leaves
 * no trace); after every run the program closes its descriptors and the quiesced check demands
 * that nothing is left (no pin, charge, dma-buf, context or device reference). Errnos are not
 * judged here (the injected failure surfaces as whatever the site returns), exactly like
 * iommufd_fail_nth.c; a WARN, any non-KernelError exception or a broken invariant fails.
 *
 * @x/selftest's sweep (TEST_FAIL_NTH) is bound to its kselftest harness and fixtures, so this
 * driver is its own; the semantics (arming, "not consumed" ends the sweep, the 1000-iteration cap) match.
 * The playground app is not a dependency of this package: the sweep runs over `VMM_CORPUS`,
 * VMM-like programs built from the same public APIs, and over generated fuzz programs.
 */
import fc from "fast-check";
import { Checker } from "./checker.js";
import { errorText } from "./fuzz-uapi.js";
import { Machine, NESTING_DEVICE } from "./machine.js";
import { type Op, Runner, programArb } from "./sequence.js";
import { snapshot, snapshotDiff } from "./snapshot.js";

/** The cap fail_nth_next() in iommufd_fail_nth.c asserts (iteration below 1000). */
const FAIL_NTH_MAX_ITERATIONS = 1000;

export interface SweepResult {
  readonly name: string;
  /** Injected failures (runs whose armed point was reached). */
  points: number;
  /** How often each site was the one failed. */
  readonly sites: Record<string, number>;
  ms: number;
  failure: { nth: number; site: string | undefined; error: string } | undefined;
}

/**
 * Ops whose failure may keep part of their effect, as the kernel documents: UNMAP keeps the
 * areas removed before the failing one; revoke triggers (hot reset among them) revoke before
 * the step that fails (drivers/vfio/pci/vfio_pci_core.c); SET_IRQS on an MSI / MSI-X block already enabled
 * re-points vector by vector and, on a failure, leaves every vector from `start` up to the
 * failing one de-assigned (vfio_msi_set_block in drivers/vfio/pci/vfio_pci_intrs.c). And
 * vsmmuSetup is several calls, a VMM's vSMMU bring-up (nested-ops.ts): the calls before the one
 * that fails have succeeded and stay. For these the checker still runs.
 */
const TRACE_ALLOWED: ReadonlySet<Op["k"]> = new Set([
  "unmap",
  "unmapRange",
  "unmapAll",
  "memory",
  "power",
  "reset",
  "flr",
  "hotReset",
  "setIrqs",
  "vsmmuSetup",
]);

/**
 * Run `ops` on a fresh machine with the `nth` point armed (0: nothing). `out` learns whether
 * the armed point fired and where, even when the run then throws.
 */
function runArmed(
  ops: readonly Op[],
  nth: number,
  out: { fired: boolean; site: string | undefined },
): void {
  const machine = new Machine();
  const runner = new Runner(machine, false);
  const checker = new Checker({
    kernel: machine.kernel,
    tasks: machine.tasks,
    devices: machine.devices,
  });
  const fault = machine.libc.task.fault;
  if (nth) fault.arm(nth);
  const scope = checker.scope;
  try {
    for (const op of ops) {
      // Until the armed point fires, remember the state: the op it fails in must leave none.
      const before = fault.read() !== 0 ? snapshot(scope) : undefined;
      const ret = runner.step(op);
      if (before !== undefined && fault.read() === 0 && ret > 0 && !TRACE_ALLOWED.has(op.k)) {
        const after = snapshot(scope);
        if (after !== before) {
          throw new Error(
            `${op.k} failed by injection but left a trace:\n${snapshotDiff(before, after)}`,
          );
        }
      }
      checker.check();
    }
  } finally {
    out.fired = nth !== 0 && fault.read() === 0;
    out.site = fault.failedSite;
    fault.disarm();
  }
  runner.teardown();
  checker.checkQuiesced();
}

/** Sweep every injectable point of `ops`. */
export function failNthSweep(
  name: string,
  ops: readonly Op[],
  cap = FAIL_NTH_MAX_ITERATIONS,
): SweepResult {
  const t0 = performance.now();
  const res: SweepResult = { name, points: 0, sites: {}, ms: 0, failure: undefined };
  for (let nth = 0; nth <= cap; nth++) {
    const out = { fired: false, site: undefined as string | undefined };
    try {
      runArmed(ops, nth, out);
    } catch (e) {
      res.failure = { nth, site: out.site, error: errorText(e) };
      break;
    }
    if (nth === 0) continue;
    if (!out.fired) break;
    res.points++;
    if (out.site) res.sites[out.site] = (res.sites[out.site] ?? 0) + 1;
    if (nth === cap)
      res.failure = { nth, site: out.site, error: `more than ${cap} injectable points` };
  }
  res.ms = performance.now() - t0;
  return res;
}

const guestRam = (pages: number, slot: number | null): Op => ({
  k: "map",
  ioas: 0,
  memfd: true,
  off: 0,
  pages,
  slot,
  readOnly: false,
});

/**
 * VMM-like programs: QEMU-style boot with memfd RAM and a passed-through GPU whose BAR is
 * mapped for P2P, the right and the wrong revoke protocols, resets, an mdev-like in-kernel
 * access pinning guest RAM (and refused on the BAR, I10) while RAM is unmapped under it, close
 * with live mappings.
 */
export const VMM_CORPUS: Readonly<Record<string, readonly Op[]>> = {
  boot: [
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "attach", dev: 0, pt: 0 },
    guestRam(16, 0),
    { k: "memory", dev: 0, on: true },
    { k: "dmabufExport", dev: 0, off: 0, pages: 4 },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 4, slot: 4 },
    { k: "devOpen", dev: 1 },
    { k: "attach", dev: 1, pt: 0 },
    { k: "unmap", ioas: 0, area: 1 },
    { k: "unmapAll", ioas: 0 },
  ],
  "revoke-right-protocol": [
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "attach", dev: 0, pt: 0 },
    { k: "memory", dev: 0, on: true },
    { k: "dmabufExport", dev: 0, off: 0, pages: 2 },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 2, slot: 1 },
    { k: "unmap", ioas: 0, area: 0 },
    { k: "memory", dev: 0, on: false },
    { k: "memory", dev: 0, on: true },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 2, slot: 1 },
  ],
  "revoke-wrong-protocol": [
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "attach", dev: 0, pt: 0 },
    guestRam(4, 0),
    { k: "memory", dev: 0, on: true },
    { k: "dmabufExport", dev: 0, off: 0, pages: 2 },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 2, slot: 2 },
    { k: "flr", dev: 0 },
    { k: "power", dev: 0, d3hot: true },
    { k: "power", dev: 0, d3hot: false },
    { k: "reset", dev: 0 },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 2, slot: 3 },
    { k: "devClose", dev: 0 },
  ],
  "two-ioas-copy": [
    { k: "ioasAlloc" },
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "hwptAlloc", dev: 0, ioas: 1 },
    { k: "attach", dev: 0, pt: 2 },
    { k: "map", ioas: 0, memfd: false, off: 0, pages: 8, slot: 0, readOnly: false },
    { k: "copy", src: 0, dst: 1, area: 0, slot: 3 },
    { k: "attach", dev: 0, pt: 0 },
    { k: "mapFile", ioas: 1, off: 8, pages: 4, slot: 6 },
    { k: "detach", dev: 0 },
    { k: "destroy", obj: 2 },
  ],
  "access-pin-and-unmap": [
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "attach", dev: 0, pt: 0 },
    guestRam(8, 0),
    { k: "accessCreate", ioas: 0, pin: true },
    { k: "accessPages", access: 0, area: 0, pages: 4, write: true },
    { k: "accessRw", access: 0, area: 0, write: true },
    { k: "memory", dev: 0, on: true },
    { k: "dmabufExport", dev: 0, off: 0, pages: 2 },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 2, slot: 4 },
    { k: "accessPages", access: 0, area: 1, pages: 2, write: false },
    { k: "unmap", ioas: 0, area: 0 },
    { k: "accessClose", access: 0 },
  ],
  "close-with-mappings": [
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "devOpen", dev: 1 },
    { k: "attach", dev: 0, pt: 0 },
    { k: "attach", dev: 1, pt: 0 },
    guestRam(8, null),
    { k: "memory", dev: 1, on: true },
    { k: "dmabufExport", dev: 1, off: 8, pages: 4 },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 4, slot: null },
    { k: "iommufdReopen" },
    { k: "devClose", dev: 1 },
    { k: "dmabufClose", buf: 0 },
  ],
  /**
   * QEMU's interrupt bring-up (hw/vfio/pci.c): a sealed memfd as guest RAM, INTx with a
   * resample (unmask) eventfd, then INTx off and MSI-X on (first one vector, then grown),
   * MSI, ERR and REQ, interrupts raised and read, hot reset info and a hot reset, close.
   */
  "irq-bring-up": [
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "attach", dev: 0, pt: 0 },
    { k: "sealedCreate" },
    { k: "addSeals", mfd: 0, seals: 0x2 | 0x4 },
    { k: "mapSealed", ioas: 0, mfd: 0, pages: 2 },
    { k: "mapMsi", ioas: 0, pages: 1 },
    { k: "memory", dev: 0, on: true },
    { k: "eventfdCreate", semaphore: false },
    { k: "eventfdCreate", semaphore: false },
    { k: "irqInfo", dev: 0, index: 0 },
    { k: "setIrqs", dev: 0, index: 0, action: "trigger", start: 0, count: 1, efds: [0, -1, -1] },
    { k: "setIrqs", dev: 0, index: 0, action: "unmaskFd", start: 0, count: 1, efds: [1, -1, -1] },
    { k: "raise", dev: 0, vector: null },
    { k: "eventfdRead", efd: 0 },
    { k: "setIrqs", dev: 0, index: 0, action: "disable", start: 0, count: 0, efds: [] },
    { k: "setIrqs", dev: 0, index: 2, action: "trigger", start: 0, count: 1, efds: [0, -1, -1] },
    { k: "setIrqs", dev: 0, index: 2, action: "trigger", start: 0, count: 3, efds: [0, 1, 0] },
    { k: "raise", dev: 0, vector: 1 },
    { k: "eventfdRead", efd: 1 },
    { k: "setIrqs", dev: 0, index: 3, action: "trigger", start: 0, count: 1, efds: [1, -1, -1] },
    { k: "setIrqs", dev: 0, index: 4, action: "trigger", start: 0, count: 1, efds: [0, -1, -1] },
    { k: "hotResetInfo", dev: 0, room: 2 },
    { k: "hotReset", dev: 0, count: 0 },
    { k: "setIrqs", dev: 0, index: 2, action: "disable", start: 0, count: 0, efds: [] },
    { k: "setIrqs", dev: 0, index: 1, action: "trigger", start: 0, count: 2, efds: [1, 0, -1] },
    { k: "raise", dev: 0, vector: 0 },
    { k: "eventfdClose", efd: 0 },
    { k: "devClose", dev: 0 },
  ],
  /**
   * A vSMMU on the nesting device (QEMU's hw/arm/smmuv3-accel.c path): guest RAM in an IOAS, the
   * nest parent, vIOMMU, vDEVICE and a nested HWPT from the guest's STE, the device attached;
   * a vEVENTQ, guest invalidations, device DMA through both stages, close.
   */
  "vsmmu-bring-up": [
    { k: "devOpen", dev: NESTING_DEVICE },
    { k: "ioasAlloc" },
    { k: "mapFile", ioas: 0, off: 0, pages: 16, slot: 0 },
    { k: "vsmmuSetup", ioas: 0, vsid: 1, slot: 0 },
    { k: "veventqAlloc", viommu: 0 },
    {
      k: "invalidate",
      viommu: 0,
      cmds: [
        { kind: "cfgiCd", vsid: 1 },
        { kind: "nhVa", vsid: 0 },
      ],
    },
    { k: "nestedDma", dev: NESTING_DEVICE, page: 2 },
    { k: "devClose", dev: NESTING_DEVICE },
  ],
};

/** `count` generated programs of up to `maxLength` ops from `seed` (the fuzz corpus). */
export function fuzzCorpus(seed: number, count: number, maxLength = 16): Op[][] {
  return fc.sample(programArb(maxLength), { seed, numRuns: count });
}
