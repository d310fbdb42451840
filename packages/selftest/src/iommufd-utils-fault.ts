/**
 * The fault-queue helpers of iommufd_utils.h: allocate a fault queue, and trigger one page
 * request then read it and answer it through the fault fd.
 */
import {
  IOMMUFD_PAGE_RESP_SUCCESS,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_PGFAULT_SIZE,
  IOMMU_TEST_CMD,
  iommu_fault_alloc,
} from "@x/iommufd";
import { EIO } from "@x/kernel";
import {
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_PGFAULT_PERM_WRITE,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  iommu_test_cmd,
} from "./iommufd-test.js";
import { type Ctx, type Ref, type SelftestEnv, iommuTestCmd, ref, why } from "./iommufd-utils.js";
import { ustruct } from "./ustruct.js";

export function _test_ioctl_fault_alloc(
  sys: SelftestEnv,
  fd: number,
  fault_id: Ref<number>,
  fault_fd: Ref<number>,
): number {
  const cmd = ustruct(iommu_fault_alloc, { size: iommu_fault_alloc.size });
  const ret = sys.libc.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, cmd.$);
  if (ret) return ret;
  fault_id.v = cmd.out_fault_id;
  fault_fd.v = cmd.out_fault_fd;
  return 0;
}

/** test_ioctl_fault_alloc(&fault_id, &fault_fd): both must come back non-zero. */
export function test_ioctl_fault_alloc(t: Ctx): { fault_id: number; fault_fd: number } {
  const fault_id = ref(0);
  const fault_fd = ref(0);
  t.ASSERT_EQ(0, _test_ioctl_fault_alloc(t.sys, t.self.fd, fault_id, fault_fd), why(t));
  t.ASSERT_NE(0, fault_id.v);
  t.ASSERT_NE(0, fault_fd.v);
  return { fault_id: fault_id.v, fault_fd: fault_fd.v };
}

/**
 * TRIGGER_IOPF (grpid 2, READ|WRITE at 0xdeadbeaf), then read one struct iommu_hwpt_pgfault
 * and answer its cookie with SUCCESS; -EIO when either returns nothing.
 */
export function _test_cmd_trigger_iopf(
  sys: SelftestEnv,
  fd: number,
  device_id: number,
  pasid: number,
  fault_fd: number,
): number {
  const { libc } = sys;
  const cmd = iommuTestCmd(iommu_test_cmd.trigger_iopf, IOMMU_TEST_OP_TRIGGER_IOPF, 0, {
    dev_id: device_id,
    pasid,
    grpid: 0x2,
    perm: IOMMU_PGFAULT_PERM_READ | IOMMU_PGFAULT_PERM_WRITE,
    addr: 0xdeadbeafn,
  });
  const ret = libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
  if (ret) return ret;
  const fault = new Uint8Array(IOMMU_HWPT_PGFAULT_SIZE);
  if (libc.read(fault_fd, fault) <= 0) return -EIO;
  const response = new Uint8Array(8);
  const cookie = new DataView(fault.buffer).getUint32(36, true);
  new DataView(response.buffer).setUint32(0, cookie, true);
  new DataView(response.buffer).setUint32(4, IOMMUFD_PAGE_RESP_SUCCESS, true);
  if (libc.write(fault_fd, response) <= 0) return -EIO;
  return 0;
}

/** test_cmd_trigger_iopf(device_id, fault_fd): with PASID 0x1. */
export function test_cmd_trigger_iopf(t: Ctx, device_id: number, fault_fd: number): void {
  t.ASSERT_EQ(0, _test_cmd_trigger_iopf(t.sys, t.self.fd, device_id, 0x1, fault_fd), why(t));
}

export function test_cmd_trigger_iopf_pasid(
  t: Ctx,
  device_id: number,
  pasid: number,
  fault_fd: number,
): void {
  t.ASSERT_EQ(0, _test_cmd_trigger_iopf(t.sys, t.self.fd, device_id, pasid, fault_fd), why(t));
}
