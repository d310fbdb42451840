/**
 * The PASID ops of IOMMU_TEST_CMD (drivers/iommu/iommufd/selftest.c): attach, replace and
 * detach one PASID of a selftest object's mock device through iommufd's device API, and
 * check which HWPT a PASID is attached to. Each takes the selftest object's id (ENOENT).
 */
import { type IommuDomain, iommuPasidDomain } from "@x/iommu-pgtable";
import {
  IOMMUFD_OBJ_ANY,
  IOMMUFD_OBJ_HWPT_NESTED,
  IOMMUFD_OBJ_HWPT_PAGING,
  iommufdDeviceAttach,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  ucmdRespond,
} from "@x/iommufd";
import { EINVAL, fail } from "@x/kernel";
import {
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
  iommu_test_cmd,
} from "./iommufd-test.js";
import { type TestOp, type TestUcmd, ucmdMember, withSelftestObj } from "./test-cmd.js";

/**
 * PASID_ATTACH: the HWPT id used is written back to `pt_id`; a failed write-back detaches
 * again. @see iommufd_test_pasid_attach
 */
function pasidAttach(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.pasid_attach);
  withSelftestObj(ucmd.ctx, u.cmd.id, (sobj) => {
    const idev = sobj.idev!;
    u.cmd.pt_id = iommufdDeviceAttach(idev, u.cmd.pt_id, u.cmd.pasid);
    try {
      ucmdRespond(u);
    } catch (e) {
      iommufdDeviceDetach(idev, u.cmd.pasid);
      throw e;
    }
  });
  return 0;
}

/** PASID_REPLACE (the pasid_attach member). @see iommufd_test_pasid_replace */
function pasidReplace(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.pasid_attach);
  withSelftestObj(ucmd.ctx, u.cmd.id, (sobj) => {
    u.cmd.pt_id = iommufdDeviceReplace(sobj.idev!, u.cmd.pt_id, u.cmd.pasid);
    ucmdRespond(u);
  });
  return 0;
}

/** PASID_DETACH: succeeds whether or not the PASID was attached. @see iommufd_test_pasid_detach */
function pasidDetach(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.pasid_detach);
  withSelftestObj(ucmd.ctx, u.cmd.id, (sobj) => iommufdDeviceDetach(sobj.idev!, u.cmd.pasid));
  return 0;
}

/**
 * PASID_CHECK_HWPT: `hwpt_id` 0 asks that nothing is attached at `pasid`; otherwise it names
 * a paging or nested HWPT (ENOENT, another object EINVAL) whose domain must be the attached
 * one. A mismatch is EINVAL. @see iommufd_test_pasid_check_hwpt
 */
function pasidCheckHwpt(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.pasid_check);
  const ctx = ucmd.ctx;
  withSelftestObj(ctx, u.cmd.id, (sobj) => {
    const attached = iommuPasidDomain(sobj.mdev!, u.cmd.pasid);
    if (!u.cmd.hwpt_id) {
      if (attached) fail(EINVAL, `pasid ${u.cmd.pasid} is attached`);
      return;
    }
    ctx.withObject(u.cmd.hwpt_id, IOMMUFD_OBJ_ANY, (obj) => {
      if (obj.type !== IOMMUFD_OBJ_HWPT_PAGING && obj.type !== IOMMUFD_OBJ_HWPT_NESTED)
        fail(EINVAL, `object ${u.cmd.hwpt_id} is not a HWPT`);
      const domain = (obj as { domain?: IommuDomain }).domain;
      if (attached !== domain) fail(EINVAL, `pasid ${u.cmd.pasid} is not on that HWPT`);
    });
  });
  return 0;
}

export const pasidOps: ReadonlyArray<readonly [number, TestOp]> = [
  [IOMMU_TEST_OP_PASID_ATTACH, pasidAttach],
  [IOMMU_TEST_OP_PASID_REPLACE, pasidReplace],
  [IOMMU_TEST_OP_PASID_DETACH, pasidDetach],
  [IOMMU_TEST_OP_PASID_CHECK_HWPT, pasidCheckHwpt],
];
