/**
 * Port of the `iommufd_viommu` fixture of tools/testing/selftests/iommu/iommufd.c: a mock
 * device, a nest-parent HWPT, a mock vIOMMU on it and a nested HWPT made through the vIOMMU;
 * the tests allocate vIOMMUs and vDEVICEs, invalidate device caches through the vIOMMU and
 * check object lifetimes. Variants no_viommu (nothing set up) and mock_viommu.
 */
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  U64_MAX,
} from "@x/iommufd";
import {
  EBUSY,
  EEXIST,
  EINVAL,
  EIO,
  ENOENT,
  ENXIO,
  EOPNOTSUPP,
  EOVERFLOW,
  MAP_FAILED,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import type { kselftest } from "../harness.js";
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_HW_QUEUE_MAX,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_DEV_CACHE_ID_MAX,
  iommu_hwpt_selftest,
  iommu_viommu_invalidate_selftest,
  iommu_viommu_selftest,
  iommufd_vevent_header,
} from "../iommufd-test.js";
import {
  _test_ioctl_destroy,
  type Ctx,
  EXPECT_ERRNO,
  type SelftestEnv,
  ref,
  teardown_iommufd,
  test_cmd_dev_check_cache,
  test_cmd_dev_check_cache_all,
  test_cmd_hwpt_alloc,
  test_cmd_mock_domain,
  test_cmd_mock_domain_replace,
  test_err_mock_domain_replace,
  test_err_ioctl_ioas_unmap,
  test_ioctl_destroy,
  test_ioctl_ioas_alloc,
  test_ioctl_ioas_map,
  test_ioctl_ioas_unmap,
  test_ioctl_set_default_memory_limit,
} from "../iommufd-utils.js";
import {
  test_cmd_hw_queue_alloc,
  test_cmd_hwpt_alloc_iopf,
  test_cmd_hwpt_alloc_nested,
  test_cmd_read_vevents,
  test_cmd_trigger_vevents,
  test_cmd_vdevice_alloc,
  test_cmd_veventq_alloc,
  test_cmd_viommu_alloc,
  test_cmd_viommu_invalidate,
  test_err_hw_queue_alloc,
  test_err_hwpt_alloc_iopf,
  test_err_read_vevents,
  test_err_vdevice_alloc,
  test_err_veventq_alloc,
  test_err_viommu_alloc,
  test_err_viommu_invalidate,
} from "../iommufd-utils-viommu.js";
import { test_cmd_trigger_iopf, test_ioctl_fault_alloc } from "../iommufd-utils-fault.js";

type Kselftest = ReturnType<typeof kselftest<SelftestEnv>>;

/** A C struct array on the test's stack: zeroed user memory, `n` elements of `size` bytes. */
function userArray(t: Ctx, size: number, n: number): bigint {
  const va = t.sys.libc.malloc(size * n);
  t.sys.libc.poke(va, new Uint8Array(size * n));
  return va;
}

/** `struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT }` in user memory. */
export function hwptSelftestData(t: Ctx): bigint {
  const va = userArray(t, iommu_hwpt_selftest.size, 1);
  const bytes = new Uint8Array(iommu_hwpt_selftest.size);
  iommu_hwpt_selftest.set(bytes, "iotlb", IOMMU_TEST_IOTLB_DEFAULT);
  t.sys.libc.poke(va, bytes);
  return va;
}

/** Add the `iommufd_viommu` fixture and its tests to the iommufd.c harness. */
export function registerIommufdViommu(k: Kselftest): void {
  const { FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN, FIXTURE_VARIANT, FIXTURE_VARIANT_ADD, TEST_F } =
    k;

  const iommufd_viommu = FIXTURE(
    "iommufd_viommu",
    () => ({
      fd: -1,
      ioas_id: 0,
      stdev_id: 0,
      hwpt_id: 0,
      nested_hwpt_id: 0,
      device_id: 0,
      viommu_id: 0,
    }),
    FIXTURE_VARIANT<{ viommu: number }>(),
  );
  FIXTURE_SETUP(iommufd_viommu, (self, variant, t) => {
    self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
    self.ioas_id = test_ioctl_ioas_alloc(t);
    test_ioctl_set_default_memory_limit(t);
    if (variant.viommu) {
      const data = hwptSelftestData(t);
      const ids = test_cmd_mock_domain(t, self.ioas_id);
      self.stdev_id = ids.stdev_id;
      self.device_id = ids.idev_id;
      // Allocate a nesting parent hwpt
      self.hwpt_id = test_cmd_hwpt_alloc(
        t,
        self.device_id,
        self.ioas_id,
        IOMMU_HWPT_ALLOC_NEST_PARENT,
      );
      // Allocate a vIOMMU taking refcount of the parent hwpt
      self.viommu_id = test_cmd_viommu_alloc(
        t,
        self.device_id,
        self.hwpt_id,
        IOMMU_VIOMMU_TYPE_SELFTEST,
        0n,
        0,
      );
      // Allocate a regular nested hwpt
      self.nested_hwpt_id = test_cmd_hwpt_alloc_nested(
        t,
        self.device_id,
        self.viommu_id,
        0,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        iommu_hwpt_selftest.size,
      );
    }
  });
  FIXTURE_TEARDOWN(iommufd_viommu, (self, _v, t) => teardown_iommufd(t, self.fd));
  FIXTURE_VARIANT_ADD(iommufd_viommu, "no_viommu", { viommu: 0 });
  FIXTURE_VARIANT_ADD(iommufd_viommu, "mock_viommu", { viommu: 1 });

  TEST_F(iommufd_viommu, "viommu_auto_destroy", () => {});

  TEST_F(iommufd_viommu, "viommu_negative_tests", (self, _v, t) => {
    const device_id = self.device_id;
    const ioas_id = self.ioas_id;
    if (self.device_id) {
      // Negative test -- invalid hwpt (hwpt_id=0)
      test_err_viommu_alloc(t, ENOENT, device_id, 0, IOMMU_VIOMMU_TYPE_SELFTEST, 0n, 0);
      // Negative test -- not a nesting parent hwpt
      const hwpt_id = test_cmd_hwpt_alloc(t, device_id, ioas_id, 0);
      test_err_viommu_alloc(t, EINVAL, device_id, hwpt_id, IOMMU_VIOMMU_TYPE_SELFTEST, 0n, 0);
      test_ioctl_destroy(t, hwpt_id);
      // Negative test -- unsupported viommu type
      test_err_viommu_alloc(t, EOPNOTSUPP, device_id, self.hwpt_id, 0xdead, 0n, 0);
      EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, self.hwpt_id));
      EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, self.viommu_id));
    } else {
      test_err_viommu_alloc(
        t,
        ENOENT,
        self.device_id,
        self.hwpt_id,
        IOMMU_VIOMMU_TYPE_SELFTEST,
        0n,
        0,
      );
    }
  });

  TEST_F(iommufd_viommu, "viommu_alloc_nested_iopf", (self, _v, t) => {
    const data = hwptSelftestData(t);
    const viommu_id = self.viommu_id;
    const dev_id = self.device_id;

    if (!dev_id) t.SKIP("Skipping test for variant no_viommu");

    const { fault_id, fault_fd } = test_ioctl_fault_alloc(t);
    test_err_hwpt_alloc_iopf(
      t,
      ENOENT,
      dev_id,
      viommu_id,
      0xffff_ffff,
      IOMMU_HWPT_FAULT_ID_VALID,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      iommu_hwpt_selftest.size,
    );
    test_err_hwpt_alloc_iopf(
      t,
      EOPNOTSUPP,
      dev_id,
      viommu_id,
      fault_id,
      (IOMMU_HWPT_FAULT_ID_VALID | (1 << 31)) >>> 0,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      iommu_hwpt_selftest.size,
    );
    const iopf_hwpt_id = test_cmd_hwpt_alloc_iopf(
      t,
      dev_id,
      viommu_id,
      fault_id,
      IOMMU_HWPT_FAULT_ID_VALID,
      IOMMU_HWPT_DATA_SELFTEST,
      data,
      iommu_hwpt_selftest.size,
    );

    // Must allocate vdevice before attaching to a nested hwpt
    test_err_mock_domain_replace(t, ENOENT, self.stdev_id, iopf_hwpt_id);
    test_cmd_vdevice_alloc(t, viommu_id, dev_id, 0x99);
    test_cmd_mock_domain_replace(t, self.stdev_id, iopf_hwpt_id);
    EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, iopf_hwpt_id));
    test_cmd_trigger_iopf(t, dev_id, fault_fd);

    test_cmd_mock_domain_replace(t, self.stdev_id, self.ioas_id);
    test_ioctl_destroy(t, iopf_hwpt_id);
    t.sys.libc.close(fault_fd);
    test_ioctl_destroy(t, fault_id);
  });

  TEST_F(iommufd_viommu, "viommu_alloc_with_data", (self, _v, t) => {
    const { libc, PAGE_SIZE } = t.sys;
    const V = iommu_viommu_selftest;
    const data = userArray(t, V.size, 1);
    const field = (name: "in_data" | "out_data" | "out_mmap_offset" | "out_mmap_length") =>
      V.get(libc.peek(data, V.size), name);
    const init = new Uint8Array(V.size);
    V.set(init, "in_data", 0xbeef);
    libc.poke(data, init);
    /** test_err_mmap(): (long)mmap(NULL, length, RW, MAP_SHARED, self->fd, offset) fails. */
    const test_err_mmap = (e: number, length: bigint, offset: bigint) =>
      EXPECT_ERRNO(
        t,
        e,
        BigInt.asIntN(
          64,
          libc.mmap(0n, length, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, offset),
        ),
      );

    if (!self.device_id) t.SKIP("Skipping test for variant no_viommu");

    self.viommu_id = test_cmd_viommu_alloc(
      t,
      self.device_id,
      self.hwpt_id,
      IOMMU_VIOMMU_TYPE_SELFTEST,
      data,
      V.size,
    );
    t.ASSERT_EQ(field("out_data"), field("in_data"));
    const out_mmap_length = field("out_mmap_length") as bigint;
    const out_mmap_offset = field("out_mmap_offset") as bigint;
    const P = BigInt(PAGE_SIZE);

    // Negative mmap tests -- offset and length cannot be changed
    test_err_mmap(ENXIO, out_mmap_length, out_mmap_offset + P);
    test_err_mmap(ENXIO, out_mmap_length, out_mmap_offset + P * 2n);
    test_err_mmap(ENXIO, out_mmap_length / 2n, out_mmap_offset);
    test_err_mmap(ENXIO, out_mmap_length * 2n, out_mmap_offset);

    // Now do a correct mmap for a loopback test
    const test = libc.mmap(
      0n,
      out_mmap_length,
      PROT_READ | PROT_WRITE,
      MAP_SHARED,
      self.fd,
      out_mmap_offset,
    );
    t.ASSERT_NE(MAP_FAILED, test);
    t.ASSERT_EQ(field("in_data"), new DataView(libc.peek(test, 4).buffer).getUint32(0, true));

    // The owner of the mmap region should be blocked
    EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, self.viommu_id));
    libc.munmap(test, out_mmap_length);
  });

  TEST_F(iommufd_viommu, "vdevice_alloc", (self, _v, t) => {
    const { libc } = t.sys;
    const viommu_id = self.viommu_id;
    const dev_id = self.device_id;
    let vdev_id = 0;
    const prev_seq = ref(-1);
    const hdr_size = iommufd_vevent_header.size;
    const vbuf = new Uint8Array(64);

    if (dev_id) {
      // Must allocate vdevice before attaching to a nested hwpt
      test_err_mock_domain_replace(t, ENOENT, self.stdev_id, self.nested_hwpt_id);

      // Test depth lower and upper bounds (mirrors kernel cap)
      const VEVENTQ_MAX_DEPTH = 1 << 19;
      test_err_veventq_alloc(t, EINVAL, viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, 0);
      test_err_veventq_alloc(
        t,
        EINVAL,
        viommu_id,
        IOMMU_VEVENTQ_TYPE_SELFTEST,
        VEVENTQ_MAX_DEPTH + 1,
      );
      let q = test_cmd_veventq_alloc(t, viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, VEVENTQ_MAX_DEPTH);
      libc.close(q.veventq_fd);
      test_ioctl_destroy(t, q.veventq_id);

      // Allocate a vEVENTQ with veventq_depth=2
      q = test_cmd_veventq_alloc(t, viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, 2);
      const { veventq_id, veventq_fd } = q;
      test_err_veventq_alloc(t, EEXIST, viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST, 2);

      // Invalid read counts on an empty vEVENTQ
      t.ASSERT_EQ(-1, libc.read(veventq_fd, vbuf, 0));
      t.ASSERT_EQ(EINVAL, libc.errno);
      t.ASSERT_EQ(-1, libc.read(veventq_fd, vbuf, hdr_size - 1));
      t.ASSERT_EQ(EINVAL, libc.errno);

      // Set vdev_id to 0x99, unset it, and set to 0x88
      vdev_id = test_cmd_vdevice_alloc(t, viommu_id, dev_id, 0x99);
      test_cmd_mock_domain_replace(t, self.stdev_id, self.nested_hwpt_id);
      test_cmd_trigger_vevents(t, dev_id, 1);

      // Invalid read counts on a non-empty vEVENTQ
      t.ASSERT_EQ(-1, libc.read(veventq_fd, vbuf, 0));
      t.ASSERT_EQ(EINVAL, libc.errno);
      // header fits but the event's payload doesn't
      t.ASSERT_EQ(-1, libc.read(veventq_fd, vbuf, hdr_size));
      t.ASSERT_EQ(EINVAL, libc.errno);

      test_cmd_read_vevents(t, veventq_fd, 1, 0x99, prev_seq);
      test_err_vdevice_alloc(t, EEXIST, viommu_id, dev_id, 0x99);
      test_cmd_mock_domain_replace(t, self.stdev_id, self.ioas_id);
      test_ioctl_destroy(t, vdev_id);

      // Try again with 0x88
      vdev_id = test_cmd_vdevice_alloc(t, viommu_id, dev_id, 0x88);
      test_cmd_mock_domain_replace(t, self.stdev_id, self.nested_hwpt_id);
      // Trigger an overflow with three events
      test_cmd_trigger_vevents(t, dev_id, 3);
      test_err_read_vevents(t, EOVERFLOW, veventq_fd, 3, 0x88, prev_seq);
      // Overflow must be gone after the previous reads
      test_cmd_trigger_vevents(t, dev_id, 1);
      test_cmd_read_vevents(t, veventq_fd, 1, 0x88, prev_seq);
      libc.close(veventq_fd);
      test_cmd_mock_domain_replace(t, self.stdev_id, self.ioas_id);
      test_ioctl_destroy(t, vdev_id);
      test_ioctl_destroy(t, veventq_id);
    } else {
      test_err_vdevice_alloc(t, ENOENT, viommu_id, dev_id, 0x99);
    }
  });

  TEST_F(iommufd_viommu, "vdevice_cache", (self, _v, t) => {
    const S = iommu_viommu_invalidate_selftest;
    const inv_reqs = userArray(t, S.size, 2);
    const viommu_id = self.viommu_id;
    const dev_id = self.device_id;
    const num_inv = ref(0);
    /** inv_reqs[i].field = v */
    const set = (i: number, field: "flags" | "vdev_id" | "cache_id", v: number) => {
      const bytes = t.sys.libc.peek(inv_reqs + BigInt(i * S.size), S.size);
      S.set(bytes, field, v);
      t.sys.libc.poke(inv_reqs + BigInt(i * S.size), bytes);
    };

    if (!dev_id) t.SKIP("Skipping test for variant no_viommu");

    const vdev_id = test_cmd_vdevice_alloc(t, viommu_id, dev_id, 0x99);

    test_cmd_dev_check_cache_all(t, dev_id, IOMMU_TEST_DEV_CACHE_DEFAULT);

    // Check data_type by passing zero-length array
    num_inv.v = 0;
    test_cmd_viommu_invalidate(t, viommu_id, inv_reqs, S.size, num_inv);
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: Invalid data_type
    num_inv.v = 1;
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: structure size sanity
    num_inv.v = 1;
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      S.size + 1,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    num_inv.v = 1;
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      1,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid flag is passed
    num_inv.v = 1;
    set(0, "flags", 0xffffffff);
    set(0, "vdev_id", 0x99);
    test_err_viommu_invalidate(
      t,
      EOPNOTSUPP,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid data_uptr when array is not empty
    num_inv.v = 1;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x99);
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      0n,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid entry_len when array is not empty
    num_inv.v = 1;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x99);
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      0,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid cache_id
    num_inv.v = 1;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x99);
    set(0, "cache_id", MOCK_DEV_CACHE_ID_MAX + 1);
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Negative test: invalid vdev_id
    num_inv.v = 1;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x9);
    set(0, "cache_id", 0);
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(0, num_inv.v);

    // Invalidate the 1st cache entry but fail the 2nd request due to invalid flags
    // configuration in the 2nd request.
    num_inv.v = 2;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x99);
    set(0, "cache_id", 0);
    set(1, "flags", 0xffffffff);
    set(1, "vdev_id", 0x99);
    set(1, "cache_id", 1);
    test_err_viommu_invalidate(
      t,
      EOPNOTSUPP,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_dev_check_cache(t, dev_id, 0, 0);
    test_cmd_dev_check_cache(t, dev_id, 1, IOMMU_TEST_DEV_CACHE_DEFAULT);
    test_cmd_dev_check_cache(t, dev_id, 2, IOMMU_TEST_DEV_CACHE_DEFAULT);
    test_cmd_dev_check_cache(t, dev_id, 3, IOMMU_TEST_DEV_CACHE_DEFAULT);

    // Invalidate the 1st cache entry but fail the 2nd request due to invalid cache_id
    // configuration in the 2nd request.
    num_inv.v = 2;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x99);
    set(0, "cache_id", 0);
    set(1, "flags", 0);
    set(1, "vdev_id", 0x99);
    set(1, "cache_id", MOCK_DEV_CACHE_ID_MAX + 1);
    test_err_viommu_invalidate(
      t,
      EINVAL,
      viommu_id,
      inv_reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      S.size,
      num_inv,
    );
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_dev_check_cache(t, dev_id, 0, 0);
    test_cmd_dev_check_cache(t, dev_id, 1, IOMMU_TEST_DEV_CACHE_DEFAULT);
    test_cmd_dev_check_cache(t, dev_id, 2, IOMMU_TEST_DEV_CACHE_DEFAULT);
    test_cmd_dev_check_cache(t, dev_id, 3, IOMMU_TEST_DEV_CACHE_DEFAULT);

    // Invalidate the 2nd cache entry and verify
    num_inv.v = 1;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x99);
    set(0, "cache_id", 1);
    test_cmd_viommu_invalidate(t, viommu_id, inv_reqs, S.size, num_inv);
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_dev_check_cache(t, dev_id, 0, 0);
    test_cmd_dev_check_cache(t, dev_id, 1, 0);
    test_cmd_dev_check_cache(t, dev_id, 2, IOMMU_TEST_DEV_CACHE_DEFAULT);
    test_cmd_dev_check_cache(t, dev_id, 3, IOMMU_TEST_DEV_CACHE_DEFAULT);

    // Invalidate the 3rd and 4th cache entries and verify
    num_inv.v = 2;
    set(0, "flags", 0);
    set(0, "vdev_id", 0x99);
    set(0, "cache_id", 2);
    set(1, "flags", 0);
    set(1, "vdev_id", 0x99);
    set(1, "cache_id", 3);
    test_cmd_viommu_invalidate(t, viommu_id, inv_reqs, S.size, num_inv);
    t.ASSERT_EQ(2, num_inv.v);
    test_cmd_dev_check_cache_all(t, dev_id, 0);

    // Invalidate all cache entries for nested_dev_id[1] and verify
    num_inv.v = 1;
    set(0, "vdev_id", 0x99);
    set(0, "flags", IOMMU_TEST_INVALIDATE_FLAG_ALL);
    test_cmd_viommu_invalidate(t, viommu_id, inv_reqs, S.size, num_inv);
    t.ASSERT_EQ(1, num_inv.v);
    test_cmd_dev_check_cache_all(t, dev_id, 0);
    test_ioctl_destroy(t, vdev_id);
  });

  TEST_F(iommufd_viommu, "hw_queue", (self, _v, t) => {
    const { buffer, PAGE_SIZE } = t.sys;
    const P = BigInt(PAGE_SIZE);
    let iova = MOCK_APERTURE_START;
    const viommu_id = self.viommu_id;
    const hw_queue_id: number[] = [0, 0];

    if (!viommu_id) t.SKIP("Skipping test for variant no_viommu");

    // Fail IOMMU_HW_QUEUE_TYPE_DEFAULT
    test_err_hw_queue_alloc(t, EOPNOTSUPP, viommu_id, IOMMU_HW_QUEUE_TYPE_DEFAULT, 0, iova, P);
    // Fail queue addr and length
    test_err_hw_queue_alloc(t, EINVAL, viommu_id, IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, iova, 0);
    test_err_hw_queue_alloc(t, EOVERFLOW, viommu_id, IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, U64_MAX, P);
    // Fail missing iova
    test_err_hw_queue_alloc(t, ENOENT, viommu_id, IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, iova, P);

    // Map iova
    iova = test_ioctl_ioas_map(t, buffer, P);
    const iova2 = test_ioctl_ioas_map(t, buffer + P, P);

    // Fail index=1 and =MAX; must start from index=0
    test_err_hw_queue_alloc(t, EIO, viommu_id, IOMMU_HW_QUEUE_TYPE_SELFTEST, 1, iova, P);
    test_err_hw_queue_alloc(
      t,
      EINVAL,
      viommu_id,
      IOMMU_HW_QUEUE_TYPE_SELFTEST,
      IOMMU_TEST_HW_QUEUE_MAX,
      iova,
      P,
    );

    // Allocate index=0, declare ownership of the iova
    hw_queue_id[0] = test_cmd_hw_queue_alloc(
      t,
      viommu_id,
      IOMMU_HW_QUEUE_TYPE_SELFTEST,
      0,
      iova,
      P,
    );
    // Fail duplicated index
    test_err_hw_queue_alloc(t, EEXIST, viommu_id, IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, iova, P);
    // Fail unmap, due to iova ownership
    test_err_ioctl_ioas_unmap(t, EBUSY, iova, P);
    // The 2nd page is not pinned, so it can be unmmap
    test_ioctl_ioas_unmap(t, iova2, P);

    // Allocate index=1, with an unaligned case
    hw_queue_id[1] = test_cmd_hw_queue_alloc(
      t,
      viommu_id,
      IOMMU_HW_QUEUE_TYPE_SELFTEST,
      1,
      iova + P / 2n,
      P / 2n,
    );
    // Fail to destroy, due to dependency
    EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, hw_queue_id[0]!));

    // Destroy in descending order
    test_ioctl_destroy(t, hw_queue_id[1]!);
    test_ioctl_destroy(t, hw_queue_id[0]!);
    // Now it can unmap the first page
    test_ioctl_ioas_unmap(t, iova, P);
  });

  TEST_F(iommufd_viommu, "vdevice_tombstone", (self, _v, t) => {
    const viommu_id = self.viommu_id;
    const dev_id = self.device_id;

    if (!dev_id) t.SKIP("Skipping test for variant no_viommu");

    const vdev_id = test_cmd_vdevice_alloc(t, viommu_id, dev_id, 0x99);
    test_ioctl_destroy(t, self.stdev_id);
    EXPECT_ERRNO(t, ENOENT, _test_ioctl_destroy(t.sys, self.fd, vdev_id));
  });
}
