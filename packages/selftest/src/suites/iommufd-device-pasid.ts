/**
 * FIXTURE(iommufd_device_pasid) of tools/testing/selftests/iommu/iommufd.c: PASID attach,
 * replace and detach on a PASID-capable mock device against PASID-compatible (IOMMU_HWPT_ALLOC_
 * PASID) and incompatible domains, the RID/PASID compatibility rule
 * (drivers/iommu/iommufd/device.c iommufd_hwpt_pasid_compat), the mock's injected ENOMEM on a
 * replace of PASID 1024 that the core must roll back, and an IOPF on a PASID.
 */
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
} from "@x/iommufd";
import { EBUSY, EINVAL, ENOMEM, O_RDWR } from "@x/kernel";
import type { kselftest } from "../harness.js";
import {
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_FLAGS_DEVICE_PASID,
  iommu_hwpt_selftest,
} from "../iommufd-test.js";
import {
  EXPECT_ERRNO,
  type SelftestEnv,
  teardown_iommufd,
  test_cmd_hwpt_alloc,
  test_cmd_mock_domain_flags,
  test_cmd_mock_domain_replace,
  test_err_mock_domain_replace,
  test_ioctl_destroy,
  test_ioctl_ioas_alloc,
} from "../iommufd-utils.js";
import { test_cmd_trigger_iopf_pasid, test_ioctl_fault_alloc } from "../iommufd-utils-fault.js";
import {
  _test_cmd_pasid_attach,
  test_cmd_pasid_attach,
  test_cmd_pasid_check_hwpt,
  test_cmd_pasid_detach,
  test_cmd_pasid_replace,
  test_err_pasid_attach,
  test_err_pasid_replace,
} from "../iommufd-utils-pasid.js";
import {
  test_cmd_hwpt_alloc_iopf,
  test_cmd_hwpt_alloc_nested,
  test_cmd_viommu_alloc,
} from "../iommufd-utils-viommu.js";
import { hwptSelftestData } from "./iommufd-viommu.js";

type Kselftest = ReturnType<typeof kselftest<SelftestEnv>>;

/** Add the `iommufd_device_pasid` fixture and its test to the iommufd.c harness. */
export function registerIommufdDevicePasid(k: Kselftest): void {
  const { FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN, FIXTURE_VARIANT, FIXTURE_VARIANT_ADD, TEST_F } =
    k;

  const iommufd_device_pasid = FIXTURE(
    "iommufd_device_pasid",
    () => ({
      fd: -1,
      ioas_id: 0,
      hwpt_id: 0,
      stdev_id: 0,
      device_id: 0,
      no_pasid_stdev_id: 0,
      no_pasid_device_id: 0,
    }),
    FIXTURE_VARIANT<{ pasid_capable: boolean }>(),
  );
  FIXTURE_SETUP(iommufd_device_pasid, (self, variant, t) => {
    self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
    self.ioas_id = test_ioctl_ioas_alloc(t);
    const dev = test_cmd_mock_domain_flags(t, self.ioas_id, MOCK_FLAGS_DEVICE_PASID);
    self.stdev_id = dev.stdev_id;
    self.hwpt_id = dev.hwpt_id;
    self.device_id = dev.idev_id;
    if (!variant.pasid_capable) {
      const no_pasid = test_cmd_mock_domain_flags(t, self.ioas_id, 0);
      self.no_pasid_stdev_id = no_pasid.stdev_id;
      self.no_pasid_device_id = no_pasid.idev_id;
    }
  });
  FIXTURE_TEARDOWN(iommufd_device_pasid, (self, _v, t) => teardown_iommufd(t, self.fd));
  FIXTURE_VARIANT_ADD(iommufd_device_pasid, "no_pasid", { pasid_capable: false });
  FIXTURE_VARIANT_ADD(iommufd_device_pasid, "has_pasid", { pasid_capable: true });

  TEST_F(iommufd_device_pasid, "pasid_attach", (self, variant, t) => {
    const data = hwptSelftestData(t);
    const sizeof_data = iommu_hwpt_selftest.size;
    const nested_hwpt_id = [0, 0, 0];
    const check = (pasid: number, hwpt_id: number) =>
      test_cmd_pasid_check_hwpt(t.sys, self.fd, self.stdev_id, pasid, hwpt_id);
    let pasid = 100;

    // Detaching a PASID that was never attached is not an error
    test_cmd_pasid_detach(t, pasid);

    // Two nested hwpts sharing one nesting parent
    const parent_hwpt_id = test_cmd_hwpt_alloc(
      t,
      self.device_id,
      self.ioas_id,
      IOMMU_HWPT_ALLOC_NEST_PARENT,
    );
    for (const i of [0, 1])
      nested_hwpt_id[i] = test_cmd_hwpt_alloc_nested(
        t,
        self.device_id,
        parent_hwpt_id,
        IOMMU_HWPT_ALLOC_PASID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        sizeof_data,
      );

    // Fault queue and an IOPF-capable nested hwpt
    const { fault_id, fault_fd } = test_ioctl_fault_alloc(t);
    const iopf_hwpt_id = test_cmd_hwpt_alloc_iopf(
      t,
      self.device_id,
      parent_hwpt_id,
      fault_id,
      IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );

    // A nested hwpt on a vIOMMU
    const viommu_id = test_cmd_viommu_alloc(
      t,
      self.device_id,
      parent_hwpt_id,
      IOMMU_VIOMMU_TYPE_SELFTEST,
      0n,
      0,
    );
    nested_hwpt_id[2] = test_cmd_hwpt_alloc_nested(
      t,
      self.device_id,
      viommu_id,
      IOMMU_HWPT_ALLOC_PASID,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      sizeof_data,
    );

    const s2_hwpt_id = test_cmd_hwpt_alloc(t, self.device_id, self.ioas_id, IOMMU_HWPT_ALLOC_PASID);

    // RID on a domain that is not PASID-compatible: no PASID attach
    test_cmd_mock_domain_replace(t, self.stdev_id, parent_hwpt_id);
    test_err_pasid_attach(t, EINVAL, pasid, s2_hwpt_id);

    // RID on a PASID-compatible domain: PASID attach works, and the RID can no longer move to
    // an incompatible one
    test_cmd_mock_domain_replace(t, self.stdev_id, s2_hwpt_id);
    test_cmd_pasid_attach(t, pasid, nested_hwpt_id[0]!);
    test_err_mock_domain_replace(t, EINVAL, self.stdev_id, parent_hwpt_id);
    test_cmd_pasid_detach(t, pasid);
    t.ASSERT_EQ(0, check(pasid, 0));

    if (!variant.pasid_capable) {
      // A PASID-compatible domain still serves a device without PASID on its RID
      test_cmd_mock_domain_replace(t, self.no_pasid_stdev_id, nested_hwpt_id[0]!);
      test_cmd_mock_domain_replace(t, self.no_pasid_stdev_id, self.ioas_id);
      // but such a device has no PASID to attach, whatever the domain
      EXPECT_ERRNO(
        t,
        EINVAL,
        _test_cmd_pasid_attach(t.sys, self.fd, self.no_pasid_stdev_id, pasid, parent_hwpt_id),
      );
      EXPECT_ERRNO(
        t,
        EINVAL,
        _test_cmd_pasid_attach(t.sys, self.fd, self.no_pasid_stdev_id, pasid, s2_hwpt_id),
      );
    }

    // A domain allocated without IOMMU_HWPT_ALLOC_PASID: EINVAL, nothing attached
    test_err_pasid_attach(t, EINVAL, pasid, parent_hwpt_id);
    t.ASSERT_EQ(0, check(pasid, 0));

    // An IOAS is not a domain for a PASID: EINVAL, nothing attached
    test_err_pasid_attach(t, EINVAL, pasid, self.ioas_id);
    t.ASSERT_EQ(0, check(pasid, 0));

    test_cmd_pasid_attach(t, pasid, s2_hwpt_id);
    t.ASSERT_EQ(0, check(pasid, s2_hwpt_id));

    // Attach never overwrites; that is what replace is for
    test_err_pasid_attach(t, EBUSY, pasid, nested_hwpt_id[0]!);

    test_cmd_pasid_detach(t, pasid);
    t.ASSERT_EQ(0, check(pasid, 0));

    test_cmd_pasid_attach(t, pasid, nested_hwpt_id[0]!);
    t.ASSERT_EQ(0, check(pasid, nested_hwpt_id[0]!));

    test_err_pasid_attach(t, EBUSY, pasid, nested_hwpt_id[0]!);

    test_cmd_pasid_detach(t, pasid);

    // Replace
    pasid = 200;
    // Replace needs an attached PASID
    test_err_pasid_replace(t, EINVAL, pasid, s2_hwpt_id);

    test_cmd_pasid_attach(t, pasid, s2_hwpt_id);
    t.ASSERT_EQ(0, check(pasid, s2_hwpt_id));

    // Replace with an IOAS fails and keeps the old domain
    test_err_pasid_replace(t, EINVAL, pasid, self.ioas_id);
    t.ASSERT_EQ(0, check(pasid, s2_hwpt_id));

    test_cmd_pasid_replace(t, pasid, nested_hwpt_id[0]!);
    t.ASSERT_EQ(0, check(pasid, nested_hwpt_id[0]!));

    test_cmd_pasid_replace(t, pasid, nested_hwpt_id[1]!);
    t.ASSERT_EQ(0, check(pasid, nested_hwpt_id[1]!));

    test_cmd_pasid_detach(t, pasid);

    // The mock fails a replace of PASID 1024 with ENOMEM; the old domain must stay
    pasid = 1024;
    test_cmd_pasid_attach(t, pasid, s2_hwpt_id);
    t.ASSERT_EQ(0, check(pasid, s2_hwpt_id));

    test_err_pasid_replace(t, ENOMEM, pasid, nested_hwpt_id[0]!);
    t.ASSERT_EQ(0, check(pasid, s2_hwpt_id));

    test_cmd_pasid_detach(t, pasid);

    // An IOPF-capable hwpt on PASID 2048
    pasid = 2048;
    test_cmd_pasid_attach(t, pasid, iopf_hwpt_id);
    t.ASSERT_EQ(0, check(pasid, iopf_hwpt_id));

    test_cmd_trigger_iopf_pasid(t, self.device_id, pasid, fault_fd);

    test_cmd_pasid_replace(t, pasid, s2_hwpt_id);
    t.ASSERT_EQ(0, check(pasid, s2_hwpt_id));

    test_cmd_pasid_detach(t, pasid);

    test_ioctl_destroy(t, iopf_hwpt_id);
    t.sys.libc.close(fault_fd);
    test_ioctl_destroy(t, fault_id);

    // The RID leaves the s2 hwpt
    test_cmd_mock_domain_replace(t, self.stdev_id, self.ioas_id);
  });
}
