/**
 * @x/iommufd/testing — the CONFIG_IOMMUFD_TEST counterpart: what only tests, @x/selftest and
 * the reliability tooling touch.
 *
 * - The switches of a loaded module's `IommufdOptions` (test-options.ts): the temp memory limit
 *   of IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, the DMABUF read-back kind, the pinning importer and
 *   the tracker mutant of the race explorer.
 * - The types of the IOMMU_TEST_CMD hook (`IommufdModule.registerTestCmd`).
 * - The invariant checker (invariants.ts), for quiescent points of tests and fuzzers.
 */
export {
  type DmabufReadbackKind,
  type IommufdOptions,
  TEMP_MEMORY_LIMIT_DEFAULT,
} from "./iommufd-options.js";
export { type InvariantOptions, checkInvariants, totalNpinned } from "./invariants.js";
export type { SelftestHooks, TestCmdHandler } from "./main.js";
export {
  setDmabufPinImporter,
  setDmabufReadbackKind,
  setTempMemoryLimit,
  setTrackerMutant,
} from "./test-options.js";
