/**
 * IOMMU_TEST_OP_TRIGGER_IOPF (drivers/iommu/iommufd/selftest.c): the mock device issues one
 * page request, which the iommu core hands to the fault queue of the HWPT attached at its PASID.
 */
import {
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_FLAGS_PASID_VALID,
  getIommufdDevice,
  iommufdReportDeviceFault,
} from "@x/iommufd";
import { IOMMU_NO_PASID } from "@x/iommu-pgtable";
import { IOMMU_TEST_OP_TRIGGER_IOPF, iommu_test_cmd } from "./iommufd-test.js";
import { type TestOp, type TestUcmd, ucmdMember } from "./test-cmd.js";

/**
 * TRIGGER_IOPF: a single-request group (LAST_PAGE, PASID_VALID unless the PASID is
 * IOMMU_NO_PASID) from the device `dev_id` (ENOENT); delivery failures are not reported.
 * @see iommufd_test_trigger_iopf
 */
function triggerIopf(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.trigger_iopf);
  const idev = getIommufdDevice(ucmd.ctx, u.cmd.dev_id);
  try {
    let flags = IOMMU_PGFAULT_FLAGS_LAST_PAGE;
    if (u.cmd.pasid !== IOMMU_NO_PASID) flags |= IOMMU_PGFAULT_FLAGS_PASID_VALID;
    const { pasid, grpid, perm, addr } = u.cmd;
    iommufdReportDeviceFault(idev, { flags, pasid, grpid, perm, addr });
  } finally {
    ucmd.ctx.putObject(idev);
  }
  return 0;
}

export const iopfOps: ReadonlyArray<readonly [number, TestOp]> = [
  [IOMMU_TEST_OP_TRIGGER_IOPF, triggerIopf],
];
