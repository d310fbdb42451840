/**
 * The CONFIG_IOMMUFD_TEST switches of a loaded iommufd: each writes the `IommufdOptions` its
 * `IommufdModule` owns. Exported through `@x/iommufd/testing` only.
 */
import type { Kernel } from "@x/kernel";
import {
  type DmabufReadbackKind,
  type IommufdOptions,
  TEMP_MEMORY_LIMIT_DEFAULT,
} from "./iommufd-options.js";
import { IommufdModule } from "./main.js";

function moduleOptions(kernel: Kernel): IommufdOptions {
  const module = IommufdModule.of(kernel);
  if (!module) throw new Error("iommufd is not loaded into this kernel (iommufdInit)");
  return module.options;
}

/** IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: 0 restores the default. @see iommufd_test_memory_limit */
export function setTempMemoryLimit(kernel: Kernel, bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < 0) throw new RangeError(`bad limit ${bytes}`);
  moduleOptions(kernel).tempMemoryLimit = bytes === 0 ? TEMP_MEMORY_LIMIT_DEFAULT : bytes;
}

/** The kind domain read-backs of DMABUF pages get: "cpu" (as merged, default) or "mmio". */
export function setDmabufReadbackKind(kernel: Kernel, kind: DmabufReadbackKind): void {
  moduleOptions(kernel).dmabufReadbackKind = kind;
}

/** Act as a pinning importer (dma_buf_pin at map, the 2026 behaviour). Default off. */
export function setDmabufPinImporter(kernel: Kernel, pin: boolean): void {
  moduleOptions(kernel).dmabufPinImporter = pin;
}

/** Turn the tracker mutant (see `IommufdOptions.trackerMutant`) on or off. */
export function setTrackerMutant(kernel: Kernel, on: boolean): void {
  moduleOptions(kernel).trackerMutant = on;
}
