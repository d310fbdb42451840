/**
 * iommufd_utils.h, the nesting and vIOMMU helpers: nested HWPT allocation, IOTLB checks,
 * HWPT/vIOMMU invalidation, vIOMMU and vDEVICE allocation. Same names, arguments and checks as
 * the C helpers; a C pointer argument is a user address here (0n for NULL), and the `size_t
 * *nreqs` in/out argument of the invalidation helpers is a `Ref<number>`.
 */
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  iommu_hwpt_alloc,
  iommu_hwpt_invalidate,
  iommu_vdevice_alloc,
  iommu_viommu_alloc,
} from "@x/iommufd";
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  iommu_test_cmd,
} from "./iommufd-test.js";
import {
  type Ctx,
  EXPECT_ERRNO,
  type Ref,
  type SelftestEnv,
  iommuTestCmd,
  ref,
  why,
} from "./iommufd-utils.js";
import { ustruct } from "./ustruct.js";

/** _test_cmd_hwpt_alloc with a fault id and driver data (the C helper's full form). */
export function _test_cmd_hwpt_alloc_data(
  sys: SelftestEnv,
  fd: number,
  device_id: number,
  pt_id: number,
  fault_id: number,
  flags: number,
  hwpt: Ref<number> | undefined,
  data_type: number,
  data: bigint,
  data_len: number,
): number {
  const cmd = ustruct(iommu_hwpt_alloc, {
    size: iommu_hwpt_alloc.size,
    flags,
    dev_id: device_id,
    pt_id,
    data_type,
    data_len,
    data_uptr: data,
    fault_id,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_HWPT_ALLOC, cmd.$);
  if (rc) return rc;
  if (hwpt) hwpt.v = cmd.out_hwpt_id;
  return 0;
}

export function test_cmd_hwpt_alloc_nested(
  t: Ctx,
  device_id: number,
  pt_id: number,
  flags: number,
  data_type: number,
  data: bigint,
  data_len: number,
): number {
  const hwpt = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_hwpt_alloc_data(t.sys, t.self.fd, device_id, pt_id, 0, flags, hwpt, data_type, data, data_len),
    why(t),
  );
  return hwpt.v;
}

export function test_err_hwpt_alloc_nested(
  t: Ctx,
  e: number,
  device_id: number,
  pt_id: number,
  flags: number,
  data_type: number,
  data: bigint,
  data_len: number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_alloc_data(t.sys, t.self.fd, device_id, pt_id, 0, flags, ref(0), data_type, data, data_len),
  );
}

export function test_err_hwpt_alloc_iopf(
  t: Ctx,
  e: number,
  device_id: number,
  pt_id: number,
  fault_id: number,
  flags: number,
  data_type: number,
  data: bigint,
  data_len: number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_alloc_data(t.sys, t.self.fd, device_id, pt_id, fault_id, flags, ref(0), data_type, data, data_len),
  );
}

/** test_cmd_hwpt_check_iotlb: IOTLB word `iotlb_id` of a mock nested HWPT is `expected`. */
export function test_cmd_hwpt_check_iotlb(
  t: Ctx,
  hwpt_id: number,
  iotlb_id: number,
  expected: number,
): void {
  const cmd = iommuTestCmd(iommu_test_cmd.check_iotlb, IOMMU_TEST_OP_MD_CHECK_IOTLB, hwpt_id, {
    iotlb_id,
    iotlb: expected,
  });
  t.ASSERT_EQ(0, t.sys.libc.ioctl(t.self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
}

export function test_cmd_hwpt_check_iotlb_all(t: Ctx, hwpt_id: number, expected: number): void {
  for (let i = 0; i <= MOCK_NESTED_DOMAIN_IOTLB_ID_MAX; i++)
    test_cmd_hwpt_check_iotlb(t, hwpt_id, i, expected);
}

/** _test_cmd_hwpt_invalidate: `nreqs` goes in as entry_num and comes back as the handled count. */
export function _test_cmd_hwpt_invalidate(
  sys: SelftestEnv,
  fd: number,
  hwpt_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): number {
  const cmd = ustruct(iommu_hwpt_invalidate, {
    size: iommu_hwpt_invalidate.size,
    hwpt_id,
    data_type,
    data_uptr: reqs,
    entry_len: lreq,
    entry_num: nreqs.v,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_HWPT_INVALIDATE, cmd.$);
  nreqs.v = cmd.entry_num;
  return rc;
}

export function test_cmd_hwpt_invalidate(
  t: Ctx,
  hwpt_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_hwpt_invalidate(t.sys, t.self.fd, hwpt_id, reqs, data_type, lreq, nreqs),
    why(t),
  );
}

export function test_err_hwpt_invalidate(
  t: Ctx,
  e: number,
  hwpt_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_invalidate(t.sys, t.self.fd, hwpt_id, reqs, data_type, lreq, nreqs),
  );
}

export function test_cmd_viommu_invalidate(
  t: Ctx,
  viommu: number,
  reqs: bigint,
  lreq: number,
  nreqs: Ref<number>,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_hwpt_invalidate(
      t.sys,
      t.self.fd,
      viommu,
      reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      lreq,
      nreqs,
    ),
    why(t),
  );
}

export function test_err_viommu_invalidate(
  t: Ctx,
  e: number,
  viommu_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_invalidate(t.sys, t.self.fd, viommu_id, reqs, data_type, lreq, nreqs),
  );
}

export function _test_cmd_viommu_alloc(
  sys: SelftestEnv,
  fd: number,
  device_id: number,
  hwpt_id: number,
  type: number,
  flags: number,
  viommu_id: Ref<number> | undefined,
  data: bigint,
  data_len: number,
): number {
  const cmd = ustruct(iommu_viommu_alloc, {
    size: iommu_viommu_alloc.size,
    flags,
    type,
    dev_id: device_id,
    hwpt_id,
    data_uptr: data,
    data_len,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_VIOMMU_ALLOC, cmd.$);
  if (rc) return rc;
  if (viommu_id) viommu_id.v = cmd.out_viommu_id;
  return 0;
}

export function test_cmd_viommu_alloc(
  t: Ctx,
  device_id: number,
  hwpt_id: number,
  type: number,
  data: bigint,
  data_len: number,
): number {
  const id = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_viommu_alloc(t.sys, t.self.fd, device_id, hwpt_id, type, 0, id, data, data_len),
    why(t),
  );
  return id.v;
}

export function test_err_viommu_alloc(
  t: Ctx,
  e: number,
  device_id: number,
  hwpt_id: number,
  type: number,
  data: bigint,
  data_len: number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_viommu_alloc(t.sys, t.self.fd, device_id, hwpt_id, type, 0, ref(0), data, data_len),
  );
}

export function _test_cmd_vdevice_alloc(
  sys: SelftestEnv,
  fd: number,
  viommu_id: number,
  idev_id: number,
  virt_id: bigint | number,
  vdev_id: Ref<number> | undefined,
): number {
  const cmd = ustruct(iommu_vdevice_alloc, {
    size: iommu_vdevice_alloc.size,
    viommu_id,
    dev_id: idev_id,
    virt_id,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_VDEVICE_ALLOC, cmd.$);
  if (rc) return rc;
  if (vdev_id) vdev_id.v = cmd.out_vdevice_id;
  return 0;
}

export function test_cmd_vdevice_alloc(
  t: Ctx,
  viommu_id: number,
  idev_id: number,
  virt_id: bigint | number,
): number {
  const id = ref(0);
  t.ASSERT_EQ(0, _test_cmd_vdevice_alloc(t.sys, t.self.fd, viommu_id, idev_id, virt_id, id), why(t));
  return id.v;
}

export function test_err_vdevice_alloc(
  t: Ctx,
  e: number,
  viommu_id: number,
  idev_id: number,
  virt_id: bigint | number,
): void {
  EXPECT_ERRNO(t, e, _test_cmd_vdevice_alloc(t.sys, t.self.fd, viommu_id, idev_id, virt_id, ref(0)));
}
