/**
 * PASID attach / replace / detach through IOMMU_TEST_CMD: every failure in the order the
 * kernel checks (iommufd's device.c, then the iommu core, then the mock driver) and no trace
 * of it afterwards.
 */
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  iommu_hwpt_alloc,
} from "@x/iommufd";
import { EBUSY, EINVAL, EIO, ENOENT, ENOMEM, O_RDWR } from "@x/kernel";
import { it } from "vitest";
import {
  EXPECT_ERRNO,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_PASID_WIDTH,
  MockIommu,
  kselftest,
  registerVitest,
  test_cmd_hwpt_alloc,
  test_cmd_mock_domain_flags,
  test_cmd_mock_domain_replace,
  test_err_mock_domain_replace,
  test_ioctl_ioas_alloc,
  ustruct,
  why,
} from "../src/index.js";
import {
  _test_cmd_trigger_iopf,
  test_cmd_trigger_iopf_pasid,
  test_ioctl_fault_alloc,
} from "../src/iommufd-utils-fault.js";
import {
  _test_cmd_pasid_attach,
  _test_cmd_pasid_detach,
  _test_cmd_pasid_replace,
  test_cmd_pasid_attach,
  test_cmd_pasid_check_hwpt,
  test_cmd_pasid_detach,
  test_cmd_pasid_replace,
  test_err_pasid_attach,
  test_err_pasid_replace,
} from "../src/iommufd-utils-pasid.js";
import { createSelftestEnv } from "../src/test-system.js";

const { harness, FIXTURE, FIXTURE_SETUP, TEST_F } = kselftest(() =>
  createSelftestEnv({ bufferSize: 16 * 4096, hugeAligned: true }),
);

const pasid = FIXTURE("pasid", () => ({
  fd: -1,
  ioas_id: 0,
  stdev_id: 0,
  plain_stdev_id: 0,
  s2: 0,
  s2b: 0,
  parent: 0,
}));
FIXTURE_SETUP(pasid, (self, _v, t) => {
  self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
  t.ASSERT_NE(-1, self.fd);
  self.ioas_id = test_ioctl_ioas_alloc(t);
  const dev = test_cmd_mock_domain_flags(t, self.ioas_id, MOCK_FLAGS_DEVICE_PASID);
  self.stdev_id = dev.stdev_id;
  self.plain_stdev_id = test_cmd_mock_domain_flags(t, self.ioas_id, 0).stdev_id;
  self.s2 = test_cmd_hwpt_alloc(t, dev.idev_id, self.ioas_id, IOMMU_HWPT_ALLOC_PASID);
  self.s2b = test_cmd_hwpt_alloc(t, dev.idev_id, self.ioas_id, IOMMU_HWPT_ALLOC_PASID);
  self.parent = test_cmd_hwpt_alloc(t, dev.idev_id, self.ioas_id, IOMMU_HWPT_ALLOC_NEST_PARENT);
});

/** Every mock device's RID and PASID domains, and the live mock domains. */
function state(t: { sys: { libc: { kernel: Parameters<typeof MockIommu.of>[0] } } }): string {
  const mock = MockIommu.of(t.sys.libc.kernel);
  const devs = [...mock.devices].map((d) => ({
    rid: d.domain?.id,
    pasids: [...d.pasidArray].map(([p, dom]) => [p, dom.id]),
  }));
  return JSON.stringify({ devs, domains: mock.domains.size });
}

TEST_F(pasid, "errors_in_order_leave_nothing", (self, _v, t) => {
  const { sys } = t;
  const fails = (e: number, fn: () => number) => {
    const before = state(t);
    t.ASSERT_EQ(-1, fn());
    t.EXPECT_EQ(e, sys.libc.errno, why(t));
    const after = state(t);
    t.EXPECT_TRUE(before === after, `changed: ${before} -> ${after}`);
  };
  const attach = (p: number, pt: number, stdev = self.stdev_id) =>
    _test_cmd_pasid_attach(sys, self.fd, stdev, p, pt);
  const replace = (p: number, pt: number) =>
    _test_cmd_pasid_replace(sys, self.fd, self.stdev_id, p, pt);

  // The RID is on the IOAS's automatic domain, which is not PASID-compatible.
  fails(EINVAL, () => attach(100, self.s2));
  test_cmd_mock_domain_replace(t, self.stdev_id, self.s2);
  const rows: Array<[string, number, () => number]> = [
    ["no such selftest object", ENOENT, () => attach(100, self.s2, self.ioas_id)],
    ["no such pt", ENOENT, () => attach(100, 9999)],
    ["pt that is not an IOAS or HWPT", EINVAL, () => attach(100, self.stdev_id)],
    ["HWPT without IOMMU_HWPT_ALLOC_PASID", EINVAL, () => attach(100, self.parent)],
    ["IOAS: its automatic domain is not PASID-compatible", EINVAL, () => attach(100, self.ioas_id)],
    ["the RID is attached already", EBUSY, () => attach(0, self.s2)],
    ["PASID beyond max_pasids", EINVAL, () => attach(1 << MOCK_PASID_WIDTH, self.s2)],
    ["replace of a PASID not attached", EINVAL, () => replace(200, self.s2)],
  ];
  for (const [what, e, fn] of rows) {
    t.TH_LOG(what);
    fails(e, fn);
  }

  test_cmd_pasid_attach(t, 100, self.s2);
  t.ASSERT_EQ(0, test_cmd_pasid_check_hwpt(sys, self.fd, self.stdev_id, 100, self.s2));
  fails(EBUSY, () => attach(100, self.s2b));
  fails(EINVAL, () => replace(100, self.ioas_id));
  fails(EINVAL, () => test_cmd_pasid_check_hwpt(sys, self.fd, self.stdev_id, 100, self.s2b));
  fails(EINVAL, () => test_cmd_pasid_check_hwpt(sys, self.fd, self.stdev_id, 100, 0));
  fails(EINVAL, () => test_cmd_pasid_check_hwpt(sys, self.fd, self.stdev_id, 100, self.ioas_id));
  // While a PASID is attached the RID may only move to a PASID-compatible HWPT.
  test_err_mock_domain_replace(t, EINVAL, self.stdev_id, self.parent);
  test_cmd_mock_domain_replace(t, self.stdev_id, self.s2b);
  test_cmd_pasid_replace(t, 100, self.s2b);
  t.ASSERT_EQ(0, test_cmd_pasid_check_hwpt(sys, self.fd, self.stdev_id, 100, self.s2b));
  test_cmd_pasid_detach(t, 100);
  test_cmd_pasid_detach(t, 100);
  t.ASSERT_EQ(0, test_cmd_pasid_check_hwpt(sys, self.fd, self.stdev_id, 100, 0));

  // A device without PASID support: max_pasids is 1, so every PASID is beyond it.
  test_cmd_mock_domain_replace(t, self.plain_stdev_id, self.s2);
  fails(EINVAL, () => attach(100, self.s2, self.plain_stdev_id));
});

TEST_F(pasid, "pasid_1024_replace_rolls_back", (self, _v, t) => {
  test_cmd_mock_domain_replace(t, self.stdev_id, self.s2);
  test_cmd_pasid_attach(t, 1024, self.s2);
  // The mock fails every second set_dev_pasid of PASID 1024: the replace, which changes nothing.
  test_err_pasid_replace(t, ENOMEM, 1024, self.s2b);
  t.ASSERT_EQ(0, test_cmd_pasid_check_hwpt(t.sys, self.fd, self.stdev_id, 1024, self.s2));
  test_cmd_pasid_replace(t, 1024, self.s2b);
  test_cmd_pasid_detach(t, 1024);
  // Detaching reset the mock's count: the next attach succeeds.
  test_cmd_pasid_attach(t, 1024, self.s2);
  test_cmd_pasid_detach(t, 1024);
  test_err_pasid_attach(t, EINVAL, 1024, self.parent);
});

TEST_F(pasid, "iopf_on_a_pasid", (self, _v, t) => {
  const { libc } = t.sys;
  const { fault_id, fault_fd } = test_ioctl_fault_alloc(t);
  const devId = test_cmd_mock_domain_flags(t, self.s2, MOCK_FLAGS_DEVICE_PASID);
  const cmd = ustruct(iommu_hwpt_alloc, {
    size: iommu_hwpt_alloc.size,
    flags: IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
    dev_id: devId.idev_id,
    pt_id: self.ioas_id,
    fault_id,
  });
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_HWPT_ALLOC, cmd.$), why(t));
  const iopf = cmd.out_hwpt_id;
  const stdev = devId.stdev_id;
  t.ASSERT_EQ(0, _test_cmd_pasid_attach(t.sys, self.fd, stdev, 2048, iopf), why(t));
  test_cmd_trigger_iopf_pasid(t, devId.idev_id, 2048, fault_fd);
  // Nothing is attached at PASID 100: the request is dropped and there is nothing to read.
  t.ASSERT_EQ(-EIO, _test_cmd_trigger_iopf(t.sys, self.fd, devId.idev_id, 100, fault_fd));
  // An unknown device: ENOENT from the op itself.
  EXPECT_ERRNO(t, ENOENT, _test_cmd_trigger_iopf(t.sys, self.fd, self.ioas_id, 2048, fault_fd));
  t.ASSERT_EQ(0, _test_cmd_pasid_detach(t.sys, self.fd, stdev, 2048), why(t));
  t.ASSERT_EQ(0, libc.close(fault_fd));
});

registerVitest(harness.instances(), it);
