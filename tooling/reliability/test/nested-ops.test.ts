import { IOMMU_DOMAIN_NESTED, IOMMU_READ, iommuDeviceDma, iommuIovaToPhys } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import { runProgram } from "../src/fuzz-uapi.js";
import { NESTING_DEVICE, PAGE } from "../src/machine.js";
import { nestingProblem } from "../src/nesting-check.js";
import type { Op } from "../src/sequence.js";
import { world } from "./helpers.js";

const IOVA_BASE = 1n << 20n;
const dev = NESTING_DEVICE;

/** The vSMMU bring-up on a bound SMMUv3 device over an IOAS holding the memfd at slot 0. */
const bringUp: Op[] = [
  { k: "devOpen", dev },
  { k: "ioasAlloc" },
  { k: "mapFile", ioas: 0, off: 0, pages: 16, slot: 0 },
  { k: "vsmmuSetup", ioas: 0, vsid: 1, slot: 0 },
];

describe("nesting ops on the machine's SMMUv3", () => {
  it("bring up a vSMMU whose device DMA walks the guest table written into the memfd", () => {
    const { machine, runner, checker } = world([]);
    for (const op of bringUp) {
      expect([op.k, runner.step(op)]).toEqual([op.k, 0]);
      checker.check();
    }
    const iommuDev = machine.devices[dev]!.pdev.iommuDev!;
    expect(iommuDev.domain?.type).toBe(IOMMU_DOMAIN_NESTED);
    // IOVA page 2 -> IPA slot 0 + 6 pages (the table the op wrote) -> the memfd's 7th page.
    const [run] = iommuDeviceDma(iommuDev, 2n * PAGE + 8n, 8n, IOMMU_READ);
    expect(run!.paddr).toBe(iommuIovaToPhys(iommuDev.domain!.parent!, IOVA_BASE + 6n * PAGE) + 8n);
    // The nesting rule holds, and would catch a parent outside every IOAS.
    expect(nestingProblem(machine.devices[dev]!, [])).toMatch(/is in no IOAS/);
    // A guest command with no vSID behind it is EIO; the known vSID converts.
    const bad: Op = {
      k: "invalidate",
      viommu: 0,
      cmds: [
        { kind: "nhAll", vsid: 0 },
        { kind: "cfgiCd", vsid: 3 },
      ],
    };
    expect(runner.step(bad)).toBe(5);
    const good: Op = {
      k: "invalidate",
      viommu: 0,
      cmds: [
        { kind: "cfgiCd", vsid: 1 },
        { kind: "nhVa", vsid: 0 },
      ],
    };
    expect(runner.step(good)).toBe(0);
    // A guest STE with a bit outside NESTING_ALLOWED is EIO.
    expect(runner.step({ k: "nestedAlloc", dev, viommu: 0, ste: "bad", slot: 0 })).toBe(5);
    // The parent is busy while the vIOMMU and the nested HWPT hold it.
    expect(runner.step({ k: "destroy", obj: 2 })).toBe(16);
    runner.teardown();
    checker.checkQuiesced();
  });

  it("a program through nesting, a process death and a reopen stays clean", () => {
    const ops: Op[] = [
      ...bringUp,
      { k: "veventqAlloc", viommu: 0 },
      { k: "nestedDma", dev, page: 5 },
      { k: "nestedAlloc", dev, viommu: 0, ste: "bad", slot: 0 },
      { k: "nestedAlloc", dev, viommu: 0, ste: "bypass", slot: 0 },
      { k: "attach", dev, pt: 4 },
      { k: "nestedDma", dev, page: 1 },
      { k: "die" },
      ...bringUp,
      { k: "iommufdReopen" },
      { k: "vsmmuSetup", ioas: 0, vsid: 2, slot: 1 },
    ];
    const s = runProgram(ops);
    expect(s.steps).toBe(ops.length);
  });
});
