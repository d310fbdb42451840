/**
 * IOMMU_TEST_CMD itself: framing, op errnos in the kernel's order, and no trace on failure.
 * Written with the package's own harness and helpers.
 */
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IotlbGather,
  iommuReadAndClearDirty,
} from "@x/iommu-pgtable";
import {
  E2BIG,
  EBADE,
  EBADF,
  EBADFD,
  EFAULT,
  EINVAL,
  EIO,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  O_RDWR,
} from "@x/kernel";
import { IOMMU_HWPT_ALLOC, iommu_hwpt_alloc } from "@x/iommufd";
import { it } from "vitest";
import {
  EXPECT_ERRNO,
  IOMMU_TEST_CMD,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  MOCK_APERTURE_START,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_IOMMUPT_HUGE,
  MOCK_PAGE_SIZE,
  MockIommu,
  _test_cmd_destroy_access_pages,
  _test_cmd_mock_domain_flags,
  _test_cmd_check_dmabuf,
  _test_cmd_revoke_dmabuf,
  createSelftestEnv,
  iommuTestCmd,
  iommu_test_cmd,
  kselftest,
  registerVitest,
  test_cmd_create_access,
  test_cmd_check_dmabuf,
  test_cmd_get_dmabuf,
  test_cmd_mock_domain,
  test_cmd_hwpt_alloc,
  test_cmd_mock_domain_flags,
  test_err_mock_domain,
  test_err_mock_domain_flags,
  test_ioctl_ioas_alloc,
  test_ioctl_ioas_map_file,
  test_ioctl_ioas_map_fixed,
  ustruct,
  why,
} from "../src/index.js";

const { harness, FIXTURE, FIXTURE_SETUP, TEST_F } = kselftest(() =>
  createSelftestEnv({ bufferSize: 16 * 4096, hugeAligned: true }),
);

const test_cmd = FIXTURE("test_cmd", () => ({ fd: -1, ioas_id: 0 }));
FIXTURE_SETUP(test_cmd, (self, _v, t) => {
  self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
  t.ASSERT_NE(-1, self.fd);
  self.ioas_id = test_ioctl_ioas_alloc(t);
});

TEST_F(test_cmd, "framing", (self, _v, t) => {
  const { libc } = t.sys;
  const cmd = ustruct(
    iommu_test_cmd.memory_limit,
    { op: IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, limit: 64 },
    8,
  );
  cmd.size = 67;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.size = 73;
  cmd.$[72] = 1;
  EXPECT_ERRNO(t, E2BIG, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.$[72] = 0;
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
  cmd.size = 68;
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
  // Decision (not checked against a running kernel): __reserved is not checked by the test dispatcher.
  cmd.__reserved = 1;
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
  cmd.__reserved = 0;
  cmd.op = 99;
  EXPECT_ERRNO(t, EOPNOTSUPP, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.op = IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT;
  cmd.limit = 11;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.limit = 12;
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
});

TEST_F(test_cmd, "mock_domain_errors_leave_nothing", (self, _v, t) => {
  const mock = MockIommu.of(t.sys.libc.kernel);
  test_err_mock_domain(t, ENOENT, 0);
  EXPECT_ERRNO(t, EINVAL, _test_cmd_mock_domain_flags(t.sys, self.fd, self.ioas_id, 1 << 1));
  t.ASSERT_EQ(0, mock.devices.size);
  t.ASSERT_EQ(0, mock.domains.size);
  const a = test_cmd_mock_domain(t, self.ioas_id);
  const b = test_cmd_mock_domain_flags(t, self.ioas_id, MOCK_FLAGS_DEVICE_PASID);
  // The second device reuses the IOAS's automatic domain.
  t.ASSERT_EQ(a.hwpt_id, b.hwpt_id);
  t.ASSERT_EQ(2, mock.devices.size);
  t.ASSERT_EQ(1, mock.domains.size);
  t.ASSERT_NE(a.stdev_id, a.idev_id);
});

TEST_F(test_cmd, "dev_check_cache", (self, _v, t) => {
  const { libc } = t.sys;
  const { idev_id } = test_cmd_mock_domain(t, self.ioas_id);
  const cmd = iommuTestCmd(iommu_test_cmd.check_dev_cache, IOMMU_TEST_OP_DEV_CHECK_CACHE, idev_id, {
    cache_id: 3,
    cache: IOMMU_TEST_DEV_CACHE_DEFAULT,
  });
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
  cmd.cache_id = 4;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.cache_id = 0;
  cmd.cache = 1;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.id = self.ioas_id;
  EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
});

TEST_F(test_cmd, "md_check_map_and_refs", (self, _v, t) => {
  const { libc, buffer, PAGE_SIZE } = t.sys;
  const { hwpt_id } = test_cmd_mock_domain(t, self.ioas_id);
  test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE * 2, MOCK_APERTURE_START);
  const map = iommuTestCmd(iommu_test_cmd.check_map, IOMMU_TEST_OP_MD_CHECK_MAP, hwpt_id, {
    iova: MOCK_APERTURE_START,
    length: PAGE_SIZE * 2,
    uptr: buffer,
  });
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, map.$), why(t));
  map.iova += BigInt(MOCK_PAGE_SIZE);
  map.uptr += BigInt(MOCK_PAGE_SIZE);
  map.length = BigInt(MOCK_PAGE_SIZE);
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, map.$), why(t));
  map.uptr += 1n;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, map.$));
  map.uptr = buffer + BigInt(PAGE_SIZE);
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, map.$));
  map.id = self.ioas_id;
  EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_TEST_CMD, map.$));
  const refs = iommuTestCmd(iommu_test_cmd.check_refs, IOMMU_TEST_OP_MD_CHECK_REFS, 0, {
    length: PAGE_SIZE * 2,
    uptr: buffer,
    refs: 1,
  });
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, refs.$), why(t));
  refs.refs = 0;
  EXPECT_ERRNO(t, EIO, libc.ioctl(self.fd, IOMMU_TEST_CMD, refs.$));
  refs.uptr += 8n;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, refs.$));
});

TEST_F(test_cmd, "dirty_op_and_mock_dirty_ops", (self, _v, t) => {
  const { libc, buffer, PAGE_SIZE } = t.sys;
  const { idev_id } = test_cmd_mock_domain(t, self.ioas_id);
  const mock = MockIommu.of(libc.kernel);
  const plainId = test_cmd_hwpt_alloc(t, idev_id, self.ioas_id, 0);
  const before = new Set(mock.domains);
  const hwptId = test_cmd_hwpt_alloc(t, idev_id, self.ioas_id, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
  const dom = [...mock.domains].find((d) => !before.has(d))!.domain;
  t.ASSERT_TRUE(dom.dirtyOps !== undefined);
  t.ASSERT_EQ(2, [...mock.domains].filter((d) => d.domain.dirtyOps === undefined).length);
  // A NO_DIRTY device can't take the dirty-tracking domain.
  test_err_mock_domain_flags(t, EINVAL, hwptId, MOCK_FLAGS_DEVICE_NO_DIRTY);
  test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE * 4, MOCK_APERTURE_START);
  const bitmap = libc.malloc(8);
  libc.poke(bitmap, new Uint8Array([0b01010101]));
  const cmd = iommuTestCmd(iommu_test_cmd.dirty, IOMMU_TEST_OP_DIRTY, hwptId, {
    iova: MOCK_APERTURE_START,
    length: BigInt(MOCK_PAGE_SIZE * 8),
    page_size: BigInt(MOCK_PAGE_SIZE),
    uptr: bitmap,
  });
  // Not tracking yet; a domain without dirty ops is never tracking.
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.id = plainId;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.id = hwptId;
  dom.dirtyOps!.setDirtyTracking(dom, true);
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
  t.ASSERT_EQ(4, cmd.out_nr_dirty);
  const seen: bigint[] = [];
  iommuReadAndClearDirty(dom, MOCK_APERTURE_START, BigInt(MOCK_PAGE_SIZE * 8), 0, {
    bitmap: { set: (iova) => seen.push((iova - MOCK_APERTURE_START) / BigInt(MOCK_PAGE_SIZE)) },
    gather: new IotlbGather(),
  });
  t.ASSERT_EQ(4, seen.length);
  seen.forEach((page, i) => {
    t.ASSERT_EQ(BigInt(i * 2), page);
  });
  for (const bad of [{ page_size: 0n }, { length: 0n }, { iova: 1n }, { uptr: 0n }]) {
    const c = iommuTestCmd(iommu_test_cmd.dirty, IOMMU_TEST_OP_DIRTY, hwptId, {
      iova: MOCK_APERTURE_START,
      length: BigInt(MOCK_PAGE_SIZE * 8),
      page_size: BigInt(MOCK_PAGE_SIZE),
      uptr: bitmap,
      ...bad,
    });
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_TEST_CMD, c.$));
  }
  cmd.uptr = 8n;
  EXPECT_ERRNO(t, EFAULT, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
});

TEST_F(test_cmd, "huge_pagetable", (self, _v, t) => {
  const { libc } = t.sys;
  const { idev_id } = test_cmd_mock_domain(t, self.ioas_id);
  const data = libc.malloc(8);
  libc.poke(data, new Uint8Array([0, 0, 0, 0, MOCK_IOMMUPT_HUGE, 0, 0, 0]));
  const cmd = ustruct(iommu_hwpt_alloc, {
    size: iommu_hwpt_alloc.size,
    dev_id: idev_id,
    pt_id: self.ioas_id,
    data_type: 0xdead,
    data_len: 8,
    data_uptr: data,
  });
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_HWPT_ALLOC, cmd.$), why(t));
  const mock = MockIommu.of(libc.kernel);
  const huge = [...mock.domains].find((d) => d.domain.pgsizeBitmap === ((1n << 20n) | 4096n));
  t.ASSERT_TRUE(huge !== undefined);
  cmd.data_len = 3;
  EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_HWPT_ALLOC, cmd.$));
});

TEST_F(test_cmd, "access_errors", (self, _v, t) => {
  const { libc, buffer, PAGE_SIZE } = t.sys;
  EXPECT_ERRNO(t, EBADFD, _test_cmd_destroy_access_pages(t.sys, self.fd, self.fd, 0));
  test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE * 2, MOCK_APERTURE_START);
  const plain = test_cmd_create_access(t, self.ioas_id, 0);
  const pin = test_cmd_create_access(t, self.ioas_id, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
  const cmd = iommuTestCmd(iommu_test_cmd.access_pages, IOMMU_TEST_OP_ACCESS_PAGES, plain, {
    iova: MOCK_APERTURE_START,
    length: PAGE_SIZE,
    uptr: buffer,
  });
  EXPECT_ERRNO(t, EOPNOTSUPP, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.id = pin;
  cmd.length = 16n * 1024n * 1024n + 1n;
  EXPECT_ERRNO(t, ENOMEM, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.length = BigInt(PAGE_SIZE);
  cmd.flags = 2;
  EXPECT_ERRNO(t, EOPNOTSUPP, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  cmd.flags = 0;
  cmd.uptr = buffer + BigInt(PAGE_SIZE);
  const pinned = libc.kernel.mem.totalPinned();
  EXPECT_ERRNO(t, EBADE, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$));
  t.ASSERT_EQ(pinned, libc.kernel.mem.totalPinned());
  cmd.uptr = buffer;
  t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
  t.ASSERT_EQ(0, cmd.out_access_pages_id);
  t.ASSERT_EQ(pinned + 1, libc.kernel.mem.totalPinned());
  t.ASSERT_EQ(0, libc.close(pin), why(t));
  t.ASSERT_EQ(pinned, libc.kernel.mem.totalPinned());
  t.ASSERT_EQ(0, libc.close(plain), why(t));
});

TEST_F(test_cmd, "dmabuf_get_revoke", (self, _v, t) => {
  const { libc } = t.sys;
  const dfd = test_cmd_get_dmabuf(t, 4096);
  t.ASSERT_GE(dfd, 0);
  t.ASSERT_EQ(true, libc.process.files.cloexec(dfd));
  t.ASSERT_EQ(0, _test_cmd_revoke_dmabuf(t.sys, self.fd, dfd, true), why(t));
  EXPECT_ERRNO(t, EINVAL, _test_cmd_revoke_dmabuf(t.sys, self.fd, self.fd, true));
  t.ASSERT_EQ(0, libc.close(dfd), why(t));
});

/*
 * MD_CHECK_DMABUF after IOMMU_IOAS_MAP_FILE of a selftest dma-buf: the mock domain maps the
 * buffer page for page from the offset, and each of selftest.c's checks has its errno: the
 * HWPT (ENOENT), the fd (EBADF, EINVAL for a file that is no dma-buf), alignment and the end
 * of the buffer (EINVAL), a translation that differs (EINVAL).
 */
TEST_F(test_cmd, "md_check_dmabuf", (self, _v, t) => {
  const { libc } = t.sys;
  const P = BigInt(MOCK_PAGE_SIZE);
  const { hwpt_id } = test_cmd_mock_domain(t, self.ioas_id);
  const dfd = test_cmd_get_dmabuf(t, 16 * MOCK_PAGE_SIZE);
  const iova = test_ioctl_ioas_map_file(t, dfd, 4n * P, 8n * P);
  test_cmd_check_dmabuf(t, hwpt_id, dfd, iova, 8n * P, 4n * P);
  test_cmd_check_dmabuf(t, hwpt_id, dfd, iova + 2n * P, 2n * P, 6n * P);
  const check = (id: number, fd: number, at: bigint, len: bigint, off: bigint) =>
    _test_cmd_check_dmabuf(t.sys, self.fd, id, fd, at, len, off);
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, dfd, iova, 8n * P, 0n));
  EXPECT_ERRNO(t, ENOENT, check(self.ioas_id, dfd, iova, 8n * P, 4n * P));
  EXPECT_ERRNO(t, EBADF, check(hwpt_id, 999, iova, 8n * P, 4n * P));
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, self.fd, iova, 8n * P, 4n * P));
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, dfd, iova + 1n, 8n * P, 4n * P));
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, dfd, iova, 8n * P - 1n, 4n * P));
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, dfd, iova, 8n * P, 4n * P + 1n));
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, dfd, iova, 8n * P, 9n * P));
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, dfd, iova, P, -P & ((1n << 64n) - 1n)));
  // Past the mapping the domain translates to nothing.
  EXPECT_ERRNO(t, EINVAL, check(hwpt_id, dfd, iova, 9n * P, 4n * P));
  t.ASSERT_EQ(0, libc.close(dfd), why(t));
});

registerVitest(harness.instances(), it);
