/**
 * FIXTURE(iommufd_dirty_tracking) of tools/testing/selftests/iommu/iommufd.c: a mock device on an
 * IOAS over a `buffer_size` buffer (hugetlb-backed for the _huge variants), one bit per
 * MOCK_PAGE_SIZE in the bitmap, and the dirty-tracking tests over it.
 */
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  iommu_option,
} from "@x/iommufd";
import {
  EINVAL,
  EOPNOTSUPP,
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import type { kselftest } from "../harness.js";
import {
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_PAGE_SIZE,
} from "../iommufd-test.js";
import {
  type Ctx,
  EXPECT_ERRNO,
  type SelftestEnv,
  teardown_iommufd,
  test_cmd_get_hw_capabilities,
  test_cmd_hwpt_alloc,
  test_cmd_hwpt_alloc_iommupt,
  test_cmd_mock_domain,
  test_cmd_mock_domain_flags,
  test_cmd_set_dirty_tracking,
  test_err_hwpt_alloc,
  test_err_mock_domain_flags,
  test_ioctl_destroy,
  test_ioctl_ioas_alloc,
  test_ioctl_ioas_map_fixed_id,
  test_mock_dirty_bitmaps,
  why,
} from "../iommufd-utils.js";
import { _test_cmd_pasid_attach, _test_cmd_pasid_detach } from "../iommufd-utils-pasid.js";
import { ustruct } from "../ustruct.js";

interface DirtyVariant {
  buffer_size: number;
  hugepages: boolean;
}

/** Register the fixture, its variants and tests on `k` (in iommufd.c's order). */
export function iommufdDirtyTrackingFixture(k: ReturnType<typeof kselftest<SelftestEnv>>): void {
  const { FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN, FIXTURE_VARIANT, FIXTURE_VARIANT_ADD, TEST_F } =
    k;
  const iommufd_dirty_tracking = FIXTURE(
    "iommufd_dirty_tracking",
    () => ({
      fd: -1,
      ioas_id: 0,
      hwpt_id: 0,
      stdev_id: 0,
      idev_id: 0,
      buffer: 0n,
      mmap_buffer_size: 0,
      bitmap: 0n,
      bitmap_size: 0,
      page_size: 0,
    }),
    FIXTURE_VARIANT<DirtyVariant>(),
  );

  FIXTURE_SETUP(iommufd_dirty_tracking, (self, variant, t) => {
    const { libc, HUGEPAGE_SIZE, PAGE_SIZE } = t.sys;
    if (variant.buffer_size < MOCK_PAGE_SIZE)
      t.SKIP("Skipping buffer_size, less than MOCK_PAGE_SIZE");
    self.fd = libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
    let mmap_flags = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED;
    self.mmap_buffer_size = variant.buffer_size;
    if (variant.hugepages) {
      // MAP_POPULATE will cause the kernel to fail mmap if THPs are not available.
      mmap_flags |= MAP_HUGETLB | MAP_POPULATE;
      if (self.mmap_buffer_size < HUGEPAGE_SIZE) self.mmap_buffer_size = HUGEPAGE_SIZE;
    }
    // posix_memalign(HUGEPAGE_SIZE, mmap_buffer_size), then a MAP_FIXED mapping over it.
    const area = libc.mmap(
      0n,
      self.mmap_buffer_size + HUGEPAGE_SIZE,
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS,
      -1,
      0,
    );
    t.ASSERT_NE(MAP_FAILED, area);
    self.buffer = (area + BigInt(HUGEPAGE_SIZE - 1)) & ~BigInt(HUGEPAGE_SIZE - 1);
    const vrc = libc.mmap(
      self.buffer,
      self.mmap_buffer_size,
      PROT_READ | PROT_WRITE,
      mmap_flags,
      -1,
      0,
    );
    t.ASSERT_EQ(self.buffer, vrc);
    self.page_size = MOCK_PAGE_SIZE;
    self.bitmap_size = variant.buffer_size / self.page_size;
    // Provision with an extra (PAGE_SIZE) for the unaligned case
    const bitmap_bytes = Math.ceil(self.bitmap_size / 8) + PAGE_SIZE;
    self.bitmap = libc.mmap(
      0n,
      Math.ceil(bitmap_bytes / PAGE_SIZE) * PAGE_SIZE,
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS,
      -1,
      0,
    );
    t.ASSERT_NE(MAP_FAILED, self.bitmap);
    self.ioas_id = test_ioctl_ioas_alloc(t);
    // Enable 1M mock IOMMU hugepages
    if (!variant.hugepages) {
      const cmd = ustruct(iommu_option, {
        size: iommu_option.size,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_SET,
        object_id: self.ioas_id,
        val64: 0,
      });
      t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    }
    const ids = test_cmd_mock_domain(t, self.ioas_id);
    self.stdev_id = ids.stdev_id;
    self.hwpt_id = ids.hwpt_id;
    self.idev_id = ids.idev_id;
  });

  FIXTURE_TEARDOWN(iommufd_dirty_tracking, (self, _v, t) => teardown_iommufd(t, self.fd));

  const KiB = 1024;
  const MiB = 1024 * KiB;
  // half of an u8 index bitmap
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty8k", {
    buffer_size: 8 * KiB,
    hugepages: false,
  });
  // one u8 index bitmap
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty16k", {
    buffer_size: 16 * KiB,
    hugepages: false,
  });
  // one u32 index bitmap
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty64k", {
    buffer_size: 64 * KiB,
    hugepages: false,
  });
  // one u64 index bitmap
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty128k", {
    buffer_size: 128 * KiB,
    hugepages: false,
  });
  // two u64 index and trailing end bitmap
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty320k", {
    buffer_size: 320 * KiB,
    hugepages: false,
  });
  // 4K bitmap (64M IOVA range)
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty64M", {
    buffer_size: 64 * MiB,
    hugepages: false,
  });
  // 4K bitmap (64M IOVA range)
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty64M_huge", {
    buffer_size: 64 * MiB,
    hugepages: true,
  });
  // 8K bitmap (128M IOVA range)
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty128M", {
    buffer_size: 128 * MiB,
    hugepages: false,
  });
  // 8K bitmap (128M IOVA range)
  FIXTURE_VARIANT_ADD(iommufd_dirty_tracking, "domain_dirty128M_huge", {
    buffer_size: 128 * MiB,
    hugepages: true,
  });

  TEST_F(iommufd_dirty_tracking, "enforce_dirty", (self, _v, t) => {
    const ioas_id = test_ioctl_ioas_alloc(t);
    const hwpt_id = test_cmd_hwpt_alloc(
      t,
      self.idev_id,
      self.ioas_id,
      IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    );
    let stddev_id = test_cmd_mock_domain(t, hwpt_id).stdev_id;
    test_err_mock_domain_flags(t, EINVAL, hwpt_id, MOCK_FLAGS_DEVICE_NO_DIRTY);
    test_ioctl_destroy(t, stddev_id);
    test_ioctl_destroy(t, hwpt_id);
    const ids = test_cmd_mock_domain_flags(t, ioas_id, MOCK_FLAGS_DEVICE_NO_DIRTY);
    stddev_id = ids.stdev_id;
    test_err_hwpt_alloc(t, EOPNOTSUPP, ids.idev_id, ioas_id, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    test_ioctl_destroy(t, stddev_id);
  });

  TEST_F(iommufd_dirty_tracking, "set_dirty_tracking", (self, _v, t) => {
    const hwpt_id = test_cmd_hwpt_alloc(
      t,
      self.idev_id,
      self.ioas_id,
      IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    );
    const stddev_id = test_cmd_mock_domain(t, hwpt_id).stdev_id;
    test_cmd_set_dirty_tracking(t, hwpt_id, true);
    test_cmd_set_dirty_tracking(t, hwpt_id, false);
    test_ioctl_destroy(t, stddev_id);
    test_ioctl_destroy(t, hwpt_id);
  });

  TEST_F(iommufd_dirty_tracking, "pasid_set_dirty_tracking", (self, _v, t) => {
    const pasid = 100;
    let dev_flags = MOCK_FLAGS_DEVICE_PASID;
    // Regular case
    const hwpt_id = test_cmd_hwpt_alloc(
      t,
      self.idev_id,
      self.ioas_id,
      IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    );
    let stddev_id = test_cmd_mock_domain_flags(t, hwpt_id, dev_flags).stdev_id;
    t.ASSERT_EQ(0, _test_cmd_pasid_attach(t.sys, self.fd, stddev_id, pasid, hwpt_id), why(t));
    test_cmd_set_dirty_tracking(t, hwpt_id, true);
    test_cmd_set_dirty_tracking(t, hwpt_id, false);
    t.ASSERT_EQ(0, _test_cmd_pasid_detach(t.sys, self.fd, stddev_id, pasid), why(t));
    test_ioctl_destroy(t, stddev_id);

    // A device whose IOMMU cannot track dirty pages
    dev_flags |= MOCK_FLAGS_DEVICE_NO_DIRTY;
    const ioas_id = test_ioctl_ioas_alloc(t);
    stddev_id = test_cmd_mock_domain_flags(t, ioas_id, dev_flags).stdev_id;
    EXPECT_ERRNO(t, EINVAL, _test_cmd_pasid_attach(t.sys, self.fd, stddev_id, pasid, hwpt_id));

    test_ioctl_destroy(t, stddev_id);
    test_ioctl_destroy(t, hwpt_id);
  });

  TEST_F(iommufd_dirty_tracking, "device_dirty_capability", (self, _v, t) => {
    const hwpt_id = test_cmd_hwpt_alloc(t, self.idev_id, self.ioas_id, 0);
    const stddev_id = test_cmd_mock_domain(t, hwpt_id).stdev_id;
    const caps = test_cmd_get_hw_capabilities(t, self.idev_id);
    t.ASSERT_EQ(IOMMU_HW_CAP_DIRTY_TRACKING, caps & IOMMU_HW_CAP_DIRTY_TRACKING);
    test_ioctl_destroy(t, stddev_id);
    test_ioctl_destroy(t, hwpt_id);
  });

  function getDirtyBitmap(
    self: ReturnType<typeof iommufd_dirty_tracking.init>,
    variant: DirtyVariant,
    t: Ctx,
    flags: number,
  ): void {
    const page_size = variant.hugepages ? MOCK_HUGE_PAGE_SIZE : MOCK_PAGE_SIZE;
    const pagetable_type = variant.hugepages ? MOCK_IOMMUPT_HUGE : MOCK_IOMMUPT_DEFAULT;
    test_ioctl_ioas_map_fixed_id(
      t,
      self.ioas_id,
      self.buffer,
      variant.buffer_size,
      MOCK_APERTURE_START,
    );
    const hwpt_id = test_cmd_hwpt_alloc_iommupt(
      t,
      self.idev_id,
      self.ioas_id,
      IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      pagetable_type,
    );
    test_cmd_set_dirty_tracking(t, hwpt_id, true);
    const run = (bitmap: bigint) =>
      test_mock_dirty_bitmaps(
        t,
        hwpt_id,
        variant.buffer_size,
        MOCK_APERTURE_START,
        self.page_size,
        page_size,
        bitmap,
        self.bitmap_size,
        flags,
      );
    run(self.bitmap);
    // PAGE_SIZE unaligned bitmap
    run(self.bitmap + 2048n);
    // u64 unaligned bitmap
    run(self.bitmap + 0xff1n);
    test_ioctl_destroy(t, hwpt_id);
  }

  TEST_F(iommufd_dirty_tracking, "get_dirty_bitmap", (self, variant, t) =>
    getDirtyBitmap(self, variant, t, 0),
  );
  TEST_F(iommufd_dirty_tracking, "get_dirty_bitmap_no_clear", (self, variant, t) =>
    getDirtyBitmap(self, variant, t, IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR),
  );
}
