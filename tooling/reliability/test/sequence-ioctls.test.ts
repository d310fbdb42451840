/**
 * The runner issues its iommufd calls as raw ioctls and keeps what the kernel answered (ids,
 * IOVAs it picked): a program that uses every answer in a later call succeeds step by step.
 */
import { EOPNOTSUPP } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { NESTING_DEVICE } from "../src/machine.js";
import type { Op } from "../src/sequence.js";
import { world } from "./helpers.js";

const nest = NESTING_DEVICE;

/** Each op needs an id or IOVA an earlier one got back. */
const OPS: readonly Op[] = [
  { k: "rlimitMode", mm: true },
  { k: "ioasAlloc" },
  { k: "ioasAlloc" },
  { k: "devOpen", dev: 0 },
  { k: "devOpen", dev: nest },
  { k: "hugePages", ioas: 0, on: false },
  { k: "allowIovas", ioas: 0, slot: 0, pages: 64 },
  { k: "allowIovas", ioas: 0, slot: 0, pages: 0 },
  // Where the kernel picks: the unmap only succeeds at the IOVA it answered.
  { k: "map", ioas: 0, memfd: false, off: 0, pages: 2, slot: null, readOnly: false },
  { k: "unmap", ioas: 0, area: 0 },
  { k: "mapFile", ioas: 0, off: 0, pages: 4, slot: 1 },
  { k: "copy", src: 0, dst: 1, area: 0, slot: null },
  { k: "unmap", ioas: 1, area: 0 },
  { k: "hwptAlloc", dev: 0, ioas: 0 },
  { k: "unmapRange", ioas: 0, slot: 1, pages: 4 },
  { k: "map", ioas: 0, memfd: true, off: 0, pages: 1, slot: 2, readOnly: true },
  { k: "unmapAll", ioas: 0 },
  { k: "nestParentAlloc", dev: nest, ioas: 0 },
  { k: "viommuAlloc", dev: nest, parent: 0 },
  { k: "vdeviceAlloc", viommu: 0, dev: nest, vsid: 1 },
  { k: "veventqAlloc", viommu: 0 },
];

/**
 * The machine's IOMMUs have no dirty tracking: on the runner's HWPT (not ENOENT, a wrong id)
 * both calls are EOPNOTSUPP; then that HWPT ([ioas 0, ioas 1, hwpt, …]) is destroyed.
 */
const ON_THE_HWPT: readonly (readonly [Op, number])[] = [
  [{ k: "dirtyTracking", hwpt: 0, on: true }, EOPNOTSUPP],
  [{ k: "dirtyBitmap", hwpt: 0, slot: 1, pages: 4, noClear: false }, EOPNOTSUPP],
  [{ k: "destroy", obj: 2 }, 0],
];

describe("the runner's iommufd ioctls", () => {
  it("keep the kernel's answers: every op of a program built on them succeeds", () => {
    const { runner, checker } = world([]);
    for (const op of OPS) {
      expect([op.k, runner.step(op)]).toEqual([op.k, 0]);
      checker.check();
    }
    for (const [op, errno] of ON_THE_HWPT) {
      expect([op.k, runner.step(op)]).toEqual([op.k, errno]);
      checker.check();
    }
    runner.teardown();
    checker.checkQuiesced();
  });
});
