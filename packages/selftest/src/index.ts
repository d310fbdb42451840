/**
 * @x/selftest — the kernel's iommufd selftests on the model.
 *
 * - Machines: `createTestSystem()` (Kernel + iommufd + the selftest module + a Libc) and
 *   `createSelftestEnv()` (plus a selftest binary's globals: buffer, mfd, fail-nth).
 * - Kernel side: `iommufdTestInit` (IOMMU_TEST_CMD), the mock IOMMU and bus, the selftest
 *   dma-buf exporter.
 * - User side: the kselftest harness, the iommufd_utils.h helpers, the fail_nth sweep, and the
 *   ported suites (`selftestBinaries()`).
 */
export * from "./harness.js";
export * from "./ustruct.js";
export * from "./iommufd-test.js";
export * from "./iommufd-utils.js";
export * from "./fail-nth.js";
export * from "./test-system.js";
export { iommufdTestInit, SelftestObj } from "./selftest.js";
export type { TestOp, TestUcmd } from "./test-cmd.js";
export { MockDev, MockDomain, MockIommu, MockIommuDriver, mockDevCreate } from "./mock-iommu.js";
export {
  iommufdTestDmaBufIommufdMap,
  iommufdTestDmabufGet,
  iommufdTestDmabufRevoke,
  isIommufdTestDmabuf,
} from "./mock-dmabuf.js";
export {
  type SelftestBinary,
  iommufdFailNthSuite,
  iommufdSuite,
  selftestBinaries,
} from "./suites/index.js";
