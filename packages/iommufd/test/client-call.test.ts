import { EINVAL, ENOENT } from "@x/kernel";
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
});
