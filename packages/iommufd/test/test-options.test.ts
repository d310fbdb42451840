/**
 * The options a loaded iommufd starts with, and the CONFIG_IOMMUFD_TEST switches that change
 * them (@x/iommufd/testing).
 */
import { Kernel } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { iommufdInit } from "../src/ioctls.js";
import { IOPT_ALLOC_IOVA, IoPagetable } from "../src/io-pagetable.js";
import { iommufdOptions } from "../src/main.js";
import {
  TEMP_MEMORY_LIMIT_DEFAULT,
  setDmabufPinImporter,
  setDmabufReadbackKind,
  setTempMemoryLimit,
  setTrackerMutant,
} from "../src/testing.js";
import { PAGE, RW, TestExporter, ctx } from "./pages-helpers.js";

describe("iommufd module options", () => {
  it("a freshly loaded module behaves as merged: 64 KiB temp memory, CPU read-back, no dma_buf_pin", () => {
    const kernel = new Kernel();
    iommufdInit(kernel);
    expect(iommufdOptions(kernel)).toEqual({
      tempMemoryLimit: TEMP_MEMORY_LIMIT_DEFAULT,
      dmabufReadbackKind: "cpu",
      dmabufPinImporter: false,
      trackerMutant: false,
    });
    expect(TEMP_MEMORY_LIMIT_DEFAULT).toBe(65536);
    // iopt_map_dmabuf of the merged series attaches dynamically and never calls dma_buf_pin.
    const iopt = new IoPagetable(kernel);
    const exp = new TestExporter(kernel, 4n * PAGE, true);
    iopt.mapFilePages(ctx, 0n, exp.fd(), 0n, PAGE, RW, IOPT_ALLOC_IOVA);
    expect(exp.pins).toBe(0);
    iopt.unmapAll();
  });

  it("each switch writes the loaded module's options; limit 0 restores TEMP_MEMORY_LIMIT", () => {
    const kernel = new Kernel();
    iommufdInit(kernel);
    setTempMemoryLimit(kernel, 16);
    setDmabufReadbackKind(kernel, "mmio");
    setDmabufPinImporter(kernel, true);
    setTrackerMutant(kernel, true);
    expect(iommufdOptions(kernel)).toEqual({
      tempMemoryLimit: 16,
      dmabufReadbackKind: "mmio",
      dmabufPinImporter: true,
      trackerMutant: true,
    });
    setTempMemoryLimit(kernel, 0);
    setTrackerMutant(kernel, false);
    expect(iommufdOptions(kernel).tempMemoryLimit).toBe(TEMP_MEMORY_LIMIT_DEFAULT);
    expect(iommufdOptions(kernel).trackerMutant).toBe(false);
  });

  it("a limit that is not a byte count is refused and changes nothing", () => {
    const kernel = new Kernel();
    iommufdInit(kernel);
    setTempMemoryLimit(kernel, 24);
    expect(() => setTempMemoryLimit(kernel, -1)).toThrow(new RangeError("bad limit -1"));
    expect(() => setTempMemoryLimit(kernel, 1.5)).toThrow(new RangeError("bad limit 1.5"));
    expect(iommufdOptions(kernel).tempMemoryLimit).toBe(24);
  });

  it("the switches need a loaded module", () => {
    const kernel = new Kernel();
    expect(() => setTrackerMutant(kernel, true)).toThrow(/iommufd is not loaded/);
    expect(() => setTempMemoryLimit(kernel, 16)).toThrow(/iommufd is not loaded/);
    // Without a module an io_pagetable sees the frozen defaults.
    expect(iommufdOptions(kernel).trackerMutant).toBe(false);
    expect(Object.isFrozen(iommufdOptions(kernel))).toBe(true);
  });
});
