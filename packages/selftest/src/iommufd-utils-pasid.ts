/**
 * The helpers of iommufd_utils.h for PASID attachment and IOMMU_GET_HW_INFO, with the
 * conventions of iommufd-utils.ts (`_test_*` raw, `test_cmd_*` ASSERT, `test_err_*`
 * EXPECT_ERRNO). The PASID helpers act on `self.stdev_id`, as the C macros do.
 */
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_TEST_CMD,
  iommu_hw_info,
} from "@x/iommufd";
import {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_TEST_HW_INFO_SIZE,
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
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

/** A fixture with a selftest device the PASID macros use. */
type PasidCtx = Ctx & { readonly self: { stdev_id: number } };

function pasidCmd(sys: SelftestEnv, fd: number, op: number, id: number, pasid: number, pt: number) {
  const cmd = iommuTestCmd(iommu_test_cmd.pasid_attach, op, id, { pasid, pt_id: pt });
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function _test_cmd_pasid_attach(
  sys: SelftestEnv,
  fd: number,
  stdev_id: number,
  pasid: number,
  pt_id: number,
): number {
  return pasidCmd(sys, fd, IOMMU_TEST_OP_PASID_ATTACH, stdev_id, pasid, pt_id);
}

export function test_cmd_pasid_attach(t: PasidCtx, pasid: number, hwpt_id: number): void {
  const { sys, self } = t;
  t.ASSERT_EQ(0, _test_cmd_pasid_attach(sys, self.fd, self.stdev_id, pasid, hwpt_id), why(t));
}

export function test_err_pasid_attach(t: PasidCtx, e: number, pasid: number, hwpt_id: number) {
  const { sys, self } = t;
  EXPECT_ERRNO(t, e, _test_cmd_pasid_attach(sys, self.fd, self.stdev_id, pasid, hwpt_id));
}

export function _test_cmd_pasid_replace(
  sys: SelftestEnv,
  fd: number,
  stdev_id: number,
  pasid: number,
  pt_id: number,
): number {
  return pasidCmd(sys, fd, IOMMU_TEST_OP_PASID_REPLACE, stdev_id, pasid, pt_id);
}

export function test_cmd_pasid_replace(t: PasidCtx, pasid: number, hwpt_id: number): void {
  const { sys, self } = t;
  t.ASSERT_EQ(0, _test_cmd_pasid_replace(sys, self.fd, self.stdev_id, pasid, hwpt_id), why(t));
}

export function test_err_pasid_replace(t: PasidCtx, e: number, pasid: number, hwpt_id: number) {
  const { sys, self } = t;
  EXPECT_ERRNO(t, e, _test_cmd_pasid_replace(sys, self.fd, self.stdev_id, pasid, hwpt_id));
}

export function _test_cmd_pasid_detach(
  sys: SelftestEnv,
  fd: number,
  stdev_id: number,
  pasid: number,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.pasid_detach, IOMMU_TEST_OP_PASID_DETACH, stdev_id, {
    pasid,
  });
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function test_cmd_pasid_detach(t: PasidCtx, pasid: number): void {
  const { sys, self } = t;
  t.ASSERT_EQ(0, _test_cmd_pasid_detach(sys, self.fd, self.stdev_id, pasid), why(t));
}

/** The ioctl's result: 0 when `pasid` is attached to `hwpt_id` (0: to nothing). */
export function test_cmd_pasid_check_hwpt(
  sys: SelftestEnv,
  fd: number,
  stdev_id: number,
  pasid: number,
  hwpt_id: number,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.pasid_check, IOMMU_TEST_OP_PASID_CHECK_HWPT, stdev_id, {
    pasid,
    hwpt_id,
  });
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

/** What `_test_cmd_get_hw_info` hands back through its out-pointers. */
interface HwInfoOut {
  capabilities?: Ref<bigint>;
  max_pasid?: Ref<number>;
}

/**
 * IOMMU_GET_HW_INFO with `data_len` bytes at `data` (0n: NULL); a type other than DEFAULT is
 * passed with IOMMU_HW_INFO_FLAG_INPUT_TYPE. On success the reply must be the selftest's
 * 8-byte struct iommu_test_hw_info, the bytes past it zeroed, `test_reg` and `flags` as the
 * mock sets them (the C helper checks these with assert()).
 */
export function _test_cmd_get_hw_info(
  t: Ctx,
  device_id: number,
  data_type: number,
  data: bigint,
  data_len: number,
  out: HwInfoOut = {},
): number {
  const { libc } = t.sys;
  const cmd = ustruct(iommu_hw_info, {
    size: iommu_hw_info.size,
    dev_id: device_id,
    data_len,
    data_type,
    data_uptr: data,
    out_capabilities: 0,
  });
  if (data_type !== IOMMU_HW_INFO_TYPE_DEFAULT) cmd.flags |= IOMMU_HW_INFO_FLAG_INPUT_TYPE;
  const rc = libc.ioctl(t.self.fd, IOMMU_GET_HW_INFO, cmd.$);
  if (rc) return rc;
  t.ASSERT_EQ(IOMMU_HW_INFO_TYPE_SELFTEST, cmd.data_type);
  t.ASSERT_EQ(IOMMU_TEST_HW_INFO_SIZE, cmd.data_len);
  if (data) {
    const bytes = libc.peek(data, data_len);
    for (let idx = cmd.data_len; idx < data_len; idx++) t.ASSERT_EQ(0, bytes[idx]);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    if (data_len >= 8) t.ASSERT_EQ(IOMMU_HW_INFO_SELFTEST_REGVAL, view.getUint32(4, true));
    if (data_len >= 4) t.ASSERT_EQ(0, view.getUint32(0, true));
  }
  if (out.max_pasid) out.max_pasid.v = cmd.out_max_pasid_log2;
  if (out.capabilities) out.capabilities.v = BigInt(cmd.out_capabilities);
  return 0;
}

export function test_cmd_get_hw_info(
  t: Ctx,
  device_id: number,
  data_type: number,
  data: bigint,
  data_len: number,
): void {
  t.ASSERT_EQ(0, _test_cmd_get_hw_info(t, device_id, data_type, data, data_len), why(t));
}

export function test_err_get_hw_info(
  t: Ctx,
  e: number,
  device_id: number,
  data_type: number,
  data: bigint,
  data_len: number,
): void {
  EXPECT_ERRNO(t, e, _test_cmd_get_hw_info(t, device_id, data_type, data, data_len));
}

/** test_cmd_get_hw_info_pasid(device_id, &max_pasid): the device's PASID width. */
export function test_cmd_get_hw_info_pasid(t: Ctx, device_id: number): number {
  const max_pasid = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_get_hw_info(t, device_id, IOMMU_HW_INFO_TYPE_DEFAULT, 0n, 0, { max_pasid }),
    why(t),
  );
  return max_pasid.v;
}
