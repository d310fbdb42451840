/**
 * Port of `iommufd_ioas.alloc_hwpt_nested` (tools/testing/selftests/iommu/iommufd.c): nested
 * HWPTs on a nest parent — allocation errors, the IOTLB words, IOMMU_HWPT_INVALIDATE's entry
 * rules and written-back count, and replacing the device's domain between nested, fault and
 * paging HWPTs.
 */
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
} from "@x/iommufd";
import { EBUSY, EFAULT, EINVAL, ENOENT, EOPNOTSUPP } from "@x/kernel";
import {
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  iommu_hwpt_invalidate_selftest,
  iommu_hwpt_selftest,
} from "../iommufd-test.js";
import {
  type Ctx,
  EXPECT_ERRNO,
  _test_ioctl_destroy,
  ref,
  test_cmd_hwpt_alloc,
  test_cmd_mock_domain_replace,
  test_err_hwpt_alloc,
  test_err_mock_domain_replace,
  test_ioctl_destroy,
} from "../iommufd-utils.js";
import {
  test_cmd_hwpt_alloc_iopf,
  test_cmd_hwpt_alloc_nested,
  test_cmd_hwpt_check_iotlb,
  test_cmd_hwpt_check_iotlb_all,
  test_cmd_hwpt_invalidate,
  test_err_hwpt_alloc_iopf,
  test_err_hwpt_alloc_nested,
  test_err_hwpt_invalidate,
} from "../iommufd-utils-viommu.js";
import { test_cmd_trigger_iopf, test_ioctl_fault_alloc } from "../iommufd-utils-fault.js";
import { hwptSelftestData } from "./iommufd-viommu.js";

/** The `iommufd_ioas` fields the test reads. */
interface IoasSelf {
  fd: number;
  ioas_id: number;
  stdev_id: number;
  device_id: number;
}

const UINT32_MAX = 0xffff_ffff;

/** TEST_F(iommufd_ioas, alloc_hwpt_nested) */
export function alloc_hwpt_nested(self: IoasSelf, t: Ctx): void {
  const { PAGE_SIZE, libc } = t.sys;
  const min_data_len = 4; // offsetofend(struct iommu_hwpt_selftest, iotlb)
  const data = hwptSelftestData(t);
  const sizeof_data = iommu_hwpt_selftest.size;
  const S = iommu_hwpt_invalidate_selftest;
  const inv_reqs = libc.malloc(S.size * 2);
  libc.poke(inv_reqs, new Uint8Array(S.size * 2));
  /** inv_reqs[i].field = v */
  const set = (i: number, field: "flags" | "iotlb_id", v: number) => {
    const at = inv_reqs + BigInt(i * S.size);
    const bytes = libc.peek(at, S.size);
    S.set(bytes, field, v);
    libc.poke(at, bytes);
  };
  const nested_hwpt_id = [0, 0];
  const num_inv = ref(0);
  let parent_hwpt_id = 0;

  if (self.device_id) {
    // Negative tests
    test_err_hwpt_alloc(t, ENOENT, self.ioas_id, self.device_id, 0);
    test_err_hwpt_alloc(t, EINVAL, self.device_id, self.device_id, 0);
    test_err_hwpt_alloc(
      t,
      EOPNOTSUPP,
      self.device_id,
      self.ioas_id,
      IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_FAULT_ID_VALID,
    );

    parent_hwpt_id = test_cmd_hwpt_alloc(
      t,
      self.device_id,
      self.ioas_id,
      IOMMU_HWPT_ALLOC_NEST_PARENT,
    );
    const parent_hwpt_id_not_work = test_cmd_hwpt_alloc(t, self.device_id, self.ioas_id, 0);

    // Negative nested tests
    test_err_hwpt_alloc_nested(
      t,
      EINVAL,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_NONE,
      data,
      sizeof_data,
    );
    test_err_hwpt_alloc_nested(
      t,
      EOPNOTSUPP,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST + 1,
      data,
      sizeof_data,
    );
    test_err_hwpt_alloc_nested(
      t,
      EINVAL,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      min_data_len - 1,
    );
    test_err_hwpt_alloc_nested(
      t,
      EFAULT,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      0n,
      sizeof_data,
    );
    test_err_hwpt_alloc_nested(
      t,
      EOPNOTSUPP,
      self.device_id,
      parent_hwpt_id,
      IOMMU_HWPT_ALLOC_NEST_PARENT,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    test_err_hwpt_alloc_nested(
      t,
      EINVAL,
      self.device_id,
      parent_hwpt_id_not_work,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );

    // Allocate two nested hwpts sharing one common parent hwpt
    const { fault_id, fault_fd } = test_ioctl_fault_alloc(t);
    nested_hwpt_id[0] = test_cmd_hwpt_alloc_nested(
      t,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    nested_hwpt_id[1] = test_cmd_hwpt_alloc_nested(
      t,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    test_err_hwpt_alloc_iopf(
      t,
      ENOENT,
      self.device_id,
      parent_hwpt_id,
      UINT32_MAX,
      IOMMU_HWPT_FAULT_ID_VALID,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    const iopf_hwpt_id = test_cmd_hwpt_alloc_iopf(
      t,
      self.device_id,
      parent_hwpt_id,
      fault_id,
      IOMMU_HWPT_FAULT_ID_VALID,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    test_cmd_hwpt_check_iotlb_all(t, nested_hwpt_id[0]!, IOMMU_TEST_IOTLB_DEFAULT);
    test_cmd_hwpt_check_iotlb_all(t, nested_hwpt_id[1]!, IOMMU_TEST_IOTLB_DEFAULT);

    // Negative test: a nested hwpt on top of a nested hwpt
    test_err_hwpt_alloc_nested(
      t,
      EINVAL,
      self.device_id,
      nested_hwpt_id[0]!,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    // Negative test: parent hwpt now cannot be freed
    EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, parent_hwpt_id));

    // hwpt_invalidate does not support a parent hwpt
    num_inv.v = 1;
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      parent_hwpt_id,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Check data_type by passing zero-length array
    num_inv.v = 0;
    test_cmd_hwpt_invalidate(
      t,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: Invalid data_type
    num_inv.v = 1;
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: structure size sanity
    num_inv.v = 1;
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size + 1,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    num_inv.v = 1;
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      1,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: entry_len is bounded by PAGE_SIZE
    num_inv.v = 1;
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      PAGE_SIZE + 1,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: entry_num is bounded
    const IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX = 1 << 19;
    num_inv.v = IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX + 1;
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid flag is passed
    num_inv.v = 1;
    set(0, "flags", 0xffffffff);
    test_err_hwpt_invalidate(
      t,
      EOPNOTSUPP,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid data_uptr when array is not empty
    num_inv.v = 1;
    set(0, "flags", 0);
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      0n,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid entry_len when array is not empty
    num_inv.v = 1;
    set(0, "flags", 0);
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      0,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid iotlb_id
    num_inv.v = 1;
    set(0, "flags", 0);
    set(0, "iotlb_id", MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1);
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Invalidate the 1st iotlb entry but fail the 2nd request due to invalid flags
    // configuration in the 2nd request.
    num_inv.v = 2;
    set(0, "flags", 0);
    set(0, "iotlb_id", 0);
    set(1, "flags", 0xffffffff);
    set(1, "iotlb_id", 1);
    test_err_hwpt_invalidate(
      t,
      EOPNOTSUPP,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 0, 0);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 1, IOMMU_TEST_IOTLB_DEFAULT);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 2, IOMMU_TEST_IOTLB_DEFAULT);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 3, IOMMU_TEST_IOTLB_DEFAULT);

    // Invalidate the 1st iotlb entry but fail the 2nd request due to invalid iotlb_id
    // configuration in the 2nd request.
    num_inv.v = 2;
    set(0, "flags", 0);
    set(0, "iotlb_id", 0);
    set(1, "flags", 0);
    set(1, "iotlb_id", MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1);
    test_err_hwpt_invalidate(
      t,
      EINVAL,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 0, 0);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 1, IOMMU_TEST_IOTLB_DEFAULT);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 2, IOMMU_TEST_IOTLB_DEFAULT);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 3, IOMMU_TEST_IOTLB_DEFAULT);

    // Invalidate the 2nd iotlb entry and verify
    num_inv.v = 1;
    set(0, "flags", 0);
    set(0, "iotlb_id", 1);
    test_cmd_hwpt_invalidate(
      t,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 0, 0);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 1, 0);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 2, IOMMU_TEST_IOTLB_DEFAULT);
    test_cmd_hwpt_check_iotlb(t, nested_hwpt_id[0]!, 3, IOMMU_TEST_IOTLB_DEFAULT);

    // Invalidate the 3rd and 4th iotlb entries and verify
    num_inv.v = 2;
    set(0, "flags", 0);
    set(0, "iotlb_id", 2);
    set(1, "flags", 0);
    set(1, "iotlb_id", 3);
    test_cmd_hwpt_invalidate(
      t,
      nested_hwpt_id[0]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(2, num_inv.v);
    test_cmd_hwpt_check_iotlb_all(t, nested_hwpt_id[0]!, 0);

    // Invalidate all iotlb entries for nested_hwpt_id[1] and verify
    num_inv.v = 1;
    set(0, "flags", IOMMU_TEST_INVALIDATE_FLAG_ALL);
    test_cmd_hwpt_invalidate(
      t,
      nested_hwpt_id[1]!,
      inv_reqs,
      IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_hwpt_check_iotlb_all(t, nested_hwpt_id[1]!, 0);

    // Attach device to nested_hwpt_id[0] that then will be busy
    test_cmd_mock_domain_replace(t, self.stdev_id, nested_hwpt_id[0]!);
    EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, nested_hwpt_id[0]!));

    // Switch from nested_hwpt_id[0] to nested_hwpt_id[1]
    test_cmd_mock_domain_replace(t, self.stdev_id, nested_hwpt_id[1]!);
    EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, nested_hwpt_id[1]!));
    test_ioctl_destroy(t, nested_hwpt_id[0]!);

    // Switch from nested_hwpt_id[1] to iopf_hwpt_id
    test_cmd_mock_domain_replace(t, self.stdev_id, iopf_hwpt_id);
    EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, iopf_hwpt_id));
    // Trigger an IOPF on the device
    test_cmd_trigger_iopf(t, self.device_id, fault_fd);

    // Detach from nested_hwpt_id[1] and destroy it
    test_cmd_mock_domain_replace(t, self.stdev_id, parent_hwpt_id);
    test_ioctl_destroy(t, nested_hwpt_id[1]!);
    test_ioctl_destroy(t, iopf_hwpt_id);

    // Detach from the parent hw_pagetable and destroy it
    test_cmd_mock_domain_replace(t, self.stdev_id, self.ioas_id);
    test_ioctl_destroy(t, parent_hwpt_id);
    test_ioctl_destroy(t, parent_hwpt_id_not_work);
    libc.close(fault_fd);
    test_ioctl_destroy(t, fault_id);
  } else {
    test_err_hwpt_alloc(t, ENOENT, self.device_id, self.ioas_id, 0);
    test_err_hwpt_alloc_nested(
      t,
      ENOENT,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    test_err_hwpt_alloc_nested(
      t,
      ENOENT,
      self.device_id,
      parent_hwpt_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );
    test_err_mock_domain_replace(t, ENOENT, self.stdev_id, nested_hwpt_id[0]!);
    test_err_mock_domain_replace(t, ENOENT, self.stdev_id, nested_hwpt_id[1]!);
  }
}
