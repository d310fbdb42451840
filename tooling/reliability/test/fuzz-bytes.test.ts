import { IOMMU_IOAS_ALLOC, iommu_ioas_alloc } from "@x/iommufd";
import { EBADF, EEXIST, EINVAL, ENOMEM, ENOTTY } from "@x/kernel";
import { VFIO_DEVICE_FEATURE } from "@x/vfio-pci";
import { describe, expect, it } from "vitest";
import { DOCUMENTED_ERRNOS, errnoDocumented } from "../src/errnos.js";
import { IOCTL_TARGETS, fuzzBytes } from "../src/fuzz-bytes.js";
import { snapshot } from "../src/snapshot.js";
import { world } from "./helpers.js";

const INPUTS = Number(process.env.RELIABILITY_TEST_INPUTS ?? 1500);

describe("byte fuzzing", () => {
  it(`${INPUTS} random and mutated structs: success or a documented errno, no trace on error`, () => {
    const r = fuzzBytes({ seed: 20261125, inputs: INPUTS });
    expect(r.failures).toEqual([]);
    expect(r.inputs).toBe(INPUTS);
    expect(r.successes).toBeGreaterThan(0);
    // Every ioctl row was exercised.
    for (const t of IOCTL_TARGETS) expect(r.perCall[t.call]).toBeGreaterThan(0);
  });

  it("has an errno row for every fuzzed ioctl, and rows are exact", () => {
    for (const t of IOCTL_TARGETS) expect(DOCUMENTED_ERRNOS[t.call].length).toBeGreaterThan(0);
    expect(errnoDocumented("IOMMU_IOAS_MAP", EEXIST)).toBe(true);
    expect(errnoDocumented("IOMMU_DESTROY", EEXIST)).toBe(false);
    expect(errnoDocumented("IOMMU_OTHER", ENOTTY)).toBe(true);
    expect(errnoDocumented("IOMMU_IOAS_UNMAP", EBADF)).toBe(false);
  });

  it("snapshots see a change and only a change", () => {
    const w = world();
    const scope = w.checker.scope;
    const a = snapshot(scope);
    expect(snapshot(scope)).toBe(a);
    // A failing ioctl (flags set on IOAS_ALLOC: EOPNOTSUPP) changes nothing ...
    const libc = w.machine.libc;
    const bad = iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size, flags: 1 });
    expect(libc.ioctl(w.runner.iommufdFd, IOMMU_IOAS_ALLOC, bad)).toBe(-1);
    expect(snapshot(scope)).toBe(a);
    // ... a successful one does.
    const good = iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size });
    expect(libc.ioctl(w.runner.iommufdFd, IOMMU_IOAS_ALLOC, good)).toBe(0);
    expect(snapshot(scope)).not.toBe(a);
    expect(errnoDocumented("IOMMU_IOAS_ALLOC", EINVAL)).toBe(true);
  });

  it("regression B1: DMA_BUF with nr_ranges 0xffffffff is ENOMEM, not a crash", () => {
    const w = world([{ k: "ioasAlloc" }, { k: "devOpen", dev: 0 }]);
    const hex = "280000000b000100020000000300000000000000ffffffff00001400000000000080000000000000";
    const bytes = Uint8Array.from(hex.match(/../g)!, (h) => Number.parseInt(h, 16));
    const before = snapshot(w.checker.scope);
    expect(w.machine.libc.ioctl(w.runner.deviceFd(0), VFIO_DEVICE_FEATURE, bytes)).toBe(-1);
    expect(w.machine.libc.errno).toBe(ENOMEM);
    expect(snapshot(w.checker.scope)).toBe(before);
  });
});
