/**
 * @x/iommufd — /dev/iommu: IOAS, io_pagetable, pages, HWPT, devices, accesses, vfio_compat.
 *
 * Entry points: `iommufdInit(kernel)` loads the module (registers /dev/iommu); user space then
 * talks to it through bytes (`libc.ioctl(fd, IOMMU_*, buf)`, layouts in uapi.ts) or the typed
 * `IommufdClient`; drivers bind devices through device.ts; @x/selftest adds IOMMU_TEST_CMD
 * through `IommufdModule.registerTestCmd`.
 */
export * from "./uapi.js";
export * from "./main.js";
export * from "./ioctls.js";
export * from "./ioas.js";
export * from "./hw-pagetable.js";
export * from "./device.js";
export * from "./access.js";
export * from "./access-core.js";
export * from "./vfio-compat.js";
export * from "./viommu.js";
export * from "./client.js";
export * from "./accounting.js";
export * from "./iommu-domain.js";
export * from "./io-pagetable.js";
export * from "./io-pagetable-area.js";
export * from "./pages.js";
export * from "./dmabuf-import.js";
export * from "./invariants.js";
export { IOVA_BITMAP_MAX_PAGES, IovaBitmap, type IovaBitmapFn } from "./iova-bitmap.js";
export { IntervalTree, IntervalNode } from "./interval-tree.js";
export {
  BATCH_CPU_MEMORY,
  BATCH_MMIO,
  MAX_NPFNS,
  TEMP_MEMORY_LIMIT_DEFAULT,
  setTempMemoryLimit,
  tempMemoryLimit,
} from "./pfn-batch.js";
export { dmabufReadbackKind, setDmabufReadbackKind } from "./pfn-reader.js";
