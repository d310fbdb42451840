import { EINVAL, ENOENT, U64_MAX } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { IOMMU_IOAS_ALLOC, iommu_ioas_alloc } from "../src/index.js";
import { createSystem, errnoOf } from "./ioctl-helpers.js";

describe("IommufdClient.call", () => {
  it("fills in size as sizeof only when the caller gave none", () => {
    const sys = createSystem();
    expect(sys.fd.call(IOMMU_IOAS_ALLOC, iommu_ioas_alloc, {}).out.size).toBe(
      iommu_ioas_alloc.size,
    );
    // A size below the struct's minimum is the caller's to send: the kernel refuses it.
    expect(errnoOf(() => sys.fd.call(IOMMU_IOAS_ALLOC, iommu_ioas_alloc, { size: 4 }))).toBe(
      EINVAL,
    );
    expect(sys.ctx.objectCount).toBe(1);
  });

  it("a failed call throws the kernel's own error, the one behind errno", () => {
    const sys = createSystem();
    let thrown: unknown;
    try {
      sys.fd.destroy(12345);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBe(sys.libc.lastError);
    expect(sys.libc.lastError?.errno).toBe(ENOENT);
  });

  it("gives back the user buffers a call needed, so repeated calls use no new memory", () => {
    const sys = createSystem();
    const ioasId = sys.fd.ioasAlloc();
    // IOAS_IOVA_RANGES asks with room for four 16-byte ranges: one 64-byte block.
    const block = sys.libc.malloc(64);
    sys.libc.free(block);
    for (let i = 0; i < 3; i++) sys.fd.ioasIovaRanges(ioasId);
    sys.fd.ioasAllowIovas(ioasId, [{ start: 0x1000n, last: 0xffffn }]);
    expect(
      errnoOf(() => sys.fd.hwptAlloc({ devId: 99, ptId: ioasId, data: new Uint8Array(8) })),
    ).toBe(EINVAL);
    expect(sys.libc.malloc(64)).toBe(block);
  });

  it("IOAS_IOVA_RANGES: the holes of the reserved tree, or the kernel's error", () => {
    const sys = createSystem();
    const ioasId = sys.fd.ioasAlloc();
    expect(sys.fd.ioasIovaRanges(ioasId).ranges).toEqual([{ start: 0n, last: U64_MAX }]);
    expect(errnoOf(() => sys.fd.ioasIovaRanges(ioasId + 100))).toBe(ENOENT);
  });
});
