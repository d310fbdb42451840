/**
 * iommufd_utils.h: the helpers the kernel's iommufd selftests are written with, same names and
 * same checks, over the byte-level ioctl interface of a user-space `Libc`.
 *
 * The C macros use `self->fd`, `self->ioas_id` and `_metadata` implicitly; here the one
 * implicit argument is the instance handle `t` (its `self`, its `sys` with the libc and the
 * binary's globals). Conventions as in C:
 * - `_test_*` issue the raw ioctl and return its result (0 or -1 with `libc.errno`); outputs go
 *   to an optional `Ref`, the counterpart of the C out-pointer.
 * - `test_cmd_*` / `test_ioctl_*` ASSERT success and return the outputs.
 * - `test_err_*(e, ...)` are EXPECT_ERRNO: ASSERT the call failed, EXPECT errno == e.
 */
import {
  type FieldSpec,
  type Struct,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
} from "@x/iommufd";
import { type Libc, MAP_FAILED, O_CLOEXEC, O_RDWR, errnoName } from "@x/kernel";
import type { TestMetadata } from "./harness.js";
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_CMD_SIZE,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_DMABUF_GET,
  IOMMU_TEST_OP_DMABUF_REVOKE,
  IOMMU_TEST_OP_MD_CHECK_DMABUF,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  MOCK_DEFAULT_MEMORY_LIMIT,
  MOCK_DEV_CACHE_ID_MAX,
  iommu_test_cmd,
} from "./iommufd-test.js";
import { type UInit, type UStruct, ustruct } from "./ustruct.js";

/**
 * What a selftest binary's constructors set up before main(), plus its libc: the globals every
 * test and helper of iommufd.c / iommufd_fail_nth.c reads.
 */
export interface SelftestEnv {
  readonly libc: Libc;
  readonly PAGE_SIZE: number;
  readonly HUGEPAGE_SIZE: number;
  readonly BUFFER_SIZE: number;
  /** The shared anonymous buffer whose pins every teardown checks. */
  readonly buffer: bigint;
  /** A memfd of BUFFER_SIZE bytes and its shared mapping. */
  readonly mfd: number;
  readonly mfd_buffer: bigint;
  /** /proc/self/task/<tid>/fail-nth of the task the libc runs as. */
  readonly failNth: FailNthFile;
  /**
   * Kernel-side leak and consistency checks, run by the fail_nth sweep after every teardown:
   * one message per violation (pinned pages left, live objects, attachments, non-empty mock
   * domains, broken io_pagetable invariants).
   */
  checkInvariants(): string[];
}

/** The fail-nth control file: write N to fail the N-th injectable point; reads 0 once fired. */
export interface FailNthFile {
  write(nth: number): void;
  read(): number;
}

/** The fixture fields the helpers read implicitly. */
export interface IommufdSelf {
  fd: number;
  ioas_id?: number;
}

export type Ctx = TestMetadata<IommufdSelf, unknown, SelftestEnv>;

/** A C out-pointer: the raw helpers store outputs in `v`. */
export interface Ref<T> {
  v: T;
}

export function ref<T>(v: T): Ref<T> {
  return { v };
}

function ioasId(t: Ctx): number {
  const id = t.self.ioas_id;
  if (id === undefined) throw new TypeError("helper needs self.ioas_id");
  return id;
}

/**
 * The diagnostic printed with a failed check on a system call's result: its errno (the C
 * harness prints file and line instead, which a port does not have).
 */
export function why(t: TestMetadata<unknown, unknown, SelftestEnv>): string {
  return `errno ${errnoName(t.sys.libc.errno)}`;
}

/** EXPECT_ERRNO(expected, cmd): the call must fail (ASSERT), with `expected` (EXPECT). */
export function EXPECT_ERRNO(t: Ctx, expected: number, rc: number | bigint): void {
  t.ASSERT_EQ(-1, rc, `expected ${errnoName(expected)}`);
  t.EXPECT_EQ(expected, t.sys.libc.errno, `${errnoName(expected)} expected, got ${why(t)}`);
}

/**
 * A zeroed `struct iommu_test_cmd` viewed through one union member, header filled in
 * (`.size = sizeof(cmd), .op = op, .id = id`), like the tests' designated initialisers.
 */
export function iommuTestCmd<S extends FieldSpec>(
  member: Struct<S>,
  op: number,
  id: number,
  init: UInit<S> = {},
): UStruct<S> {
  const cmd = ustruct(member, init);
  const h = iommu_test_cmd.header;
  h.set(cmd.$, "size", IOMMU_TEST_CMD_SIZE);
  h.set(cmd.$, "op", op);
  h.set(cmd.$, "id", id);
  return cmd;
}

/**
 * Close the iommufd (must succeed), reopen /dev/iommu and check that no page of the global
 * `buffer` is still pinned (MD_CHECK_REFS, refs 0): the leak detector every fixture runs.
 */
export function teardown_iommufd(t: TestMetadata<unknown, unknown, SelftestEnv>, fd: number): void {
  const { libc, buffer, BUFFER_SIZE } = t.sys;
  if (fd === -1) return;
  t.EXPECT_EQ(0, libc.close(fd), why(t));
  const nfd = libc.open("/dev/iommu", O_RDWR);
  t.EXPECT_NE(-1, nfd);
  const cmd = iommuTestCmd(iommu_test_cmd.check_refs, IOMMU_TEST_OP_MD_CHECK_REFS, 0, {
    length: BUFFER_SIZE,
    uptr: buffer,
  });
  t.EXPECT_EQ(0, libc.ioctl(nfd, IOMMU_TEST_CMD, cmd.$), why(t));
  t.EXPECT_EQ(0, libc.close(nfd), why(t));
}

/** check_refs(ptr, len, refs): every 4 KiB page of the range is pinned exactly `refs` times. */
export function check_refs(t: Ctx, ptr: bigint, length: number | bigint, refs: number): void {
  const cmd = iommuTestCmd(iommu_test_cmd.check_refs, IOMMU_TEST_OP_MD_CHECK_REFS, 0, {
    length,
    uptr: ptr,
    refs,
  });
  t.ASSERT_EQ(0, t.sys.libc.ioctl(t.self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
}

// ---- MOCK_DOMAIN and friends ----------------------------------------------------------------

export interface MockDomainIds {
  stdev_id: number;
  hwpt_id: number;
  idev_id: number;
}

export function _test_cmd_mock_domain(
  sys: SelftestEnv,
  fd: number,
  ioas_id: number,
  out?: Ref<MockDomainIds>,
): number {
  return _test_cmd_mock_domain_flags(sys, fd, ioas_id, undefined, out);
}

/** MOCK_DOMAIN (flags undefined) or MOCK_DOMAIN_FLAGS (device flags given). */
export function _test_cmd_mock_domain_flags(
  sys: SelftestEnv,
  fd: number,
  ioas_id: number,
  flags: number | undefined,
  out?: Ref<MockDomainIds>,
): number {
  const cmd =
    flags === undefined
      ? iommuTestCmd(iommu_test_cmd.mock_domain_flags, IOMMU_TEST_OP_MOCK_DOMAIN, ioas_id)
      : iommuTestCmd(iommu_test_cmd.mock_domain_flags, IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, ioas_id, {
          dev_flags: flags,
        });
  const rc = sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
  if (rc) return rc;
  if (out)
    out.v = { stdev_id: cmd.out_stdev_id, hwpt_id: cmd.out_hwpt_id, idev_id: cmd.out_idev_id };
  return 0;
}

export function test_cmd_mock_domain(t: Ctx, pt_id: number): MockDomainIds {
  const out = ref<MockDomainIds>({ stdev_id: 0, hwpt_id: 0, idev_id: 0 });
  t.ASSERT_EQ(0, _test_cmd_mock_domain(t.sys, t.self.fd, pt_id, out), why(t));
  return out.v;
}

export function test_err_mock_domain(t: Ctx, e: number, pt_id: number): void {
  EXPECT_ERRNO(t, e, _test_cmd_mock_domain(t.sys, t.self.fd, pt_id));
}

export function test_cmd_mock_domain_flags(t: Ctx, pt_id: number, flags: number): MockDomainIds {
  const out = ref<MockDomainIds>({ stdev_id: 0, hwpt_id: 0, idev_id: 0 });
  t.ASSERT_EQ(0, _test_cmd_mock_domain_flags(t.sys, t.self.fd, pt_id, flags, out), why(t));
  return out.v;
}

export function test_err_mock_domain_flags(t: Ctx, e: number, pt_id: number, flags: number): void {
  EXPECT_ERRNO(t, e, _test_cmd_mock_domain_flags(t.sys, t.self.fd, pt_id, flags));
}

export function _test_cmd_mock_domain_replace(
  sys: SelftestEnv,
  fd: number,
  stdev_id: number,
  pt_id: number,
  hwpt?: Ref<number>,
): number {
  const cmd = iommuTestCmd(
    iommu_test_cmd.mock_domain_replace,
    IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
    stdev_id,
    {
      pt_id,
    },
  );
  const rc = sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
  if (rc) return rc;
  if (hwpt) hwpt.v = cmd.pt_id;
  return 0;
}

export function test_cmd_mock_domain_replace(t: Ctx, stdev_id: number, pt_id: number): number {
  const hwpt = ref(0);
  t.ASSERT_EQ(0, _test_cmd_mock_domain_replace(t.sys, t.self.fd, stdev_id, pt_id, hwpt), why(t));
  return hwpt.v;
}

export function test_err_mock_domain_replace(
  t: Ctx,
  e: number,
  stdev_id: number,
  pt_id: number,
): void {
  EXPECT_ERRNO(t, e, _test_cmd_mock_domain_replace(t.sys, t.self.fd, stdev_id, pt_id));
}

export function _test_cmd_hwpt_alloc(
  sys: SelftestEnv,
  fd: number,
  device_id: number,
  pt_id: number,
  flags: number,
  hwpt?: Ref<number>,
): number {
  const cmd = ustruct(iommu_hwpt_alloc, {
    size: iommu_hwpt_alloc.size,
    flags,
    dev_id: device_id,
    pt_id,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_HWPT_ALLOC, cmd.$);
  if (rc) return rc;
  if (hwpt) hwpt.v = cmd.out_hwpt_id;
  return 0;
}

export function test_cmd_hwpt_alloc(
  t: Ctx,
  device_id: number,
  pt_id: number,
  flags: number,
): number {
  const hwpt = ref(0);
  t.ASSERT_EQ(0, _test_cmd_hwpt_alloc(t.sys, t.self.fd, device_id, pt_id, flags, hwpt), why(t));
  return hwpt.v;
}

export function test_err_hwpt_alloc(
  t: Ctx,
  e: number,
  device_id: number,
  pt_id: number,
  flags: number,
): void {
  EXPECT_ERRNO(t, e, _test_cmd_hwpt_alloc(t.sys, t.self.fd, device_id, pt_id, flags));
}

export function _test_cmd_dev_check_cache(
  sys: SelftestEnv,
  fd: number,
  device_id: number,
  cache_id: number,
  expected: number,
): number {
  const cmd = iommuTestCmd(
    iommu_test_cmd.check_dev_cache,
    IOMMU_TEST_OP_DEV_CHECK_CACHE,
    device_id,
    {
      cache_id,
      cache: expected,
    },
  );
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function test_cmd_dev_check_cache(
  t: Ctx,
  device_id: number,
  cache_id: number,
  expected: number,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_dev_check_cache(t.sys, t.self.fd, device_id, cache_id, expected),
    why(t),
  );
}

export function test_cmd_dev_check_cache_all(t: Ctx, device_id: number, expected: number): void {
  for (let i = 0; i <= MOCK_DEV_CACHE_ID_MAX; i++)
    test_cmd_dev_check_cache(t, device_id, i, expected);
}

// ---- accesses ---------------------------------------------------------------------------------

export function _test_cmd_create_access(
  sys: SelftestEnv,
  fd: number,
  ioas_id: number,
  access: Ref<number>,
  flags: number,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.create_access, IOMMU_TEST_OP_CREATE_ACCESS, ioas_id, {
    flags,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
  if (rc) return rc;
  access.v = cmd.out_access_fd;
  return 0;
}

export function test_cmd_create_access(t: Ctx, ioas_id: number, flags: number): number {
  const access = ref(0);
  t.ASSERT_EQ(0, _test_cmd_create_access(t.sys, t.self.fd, ioas_id, access, flags), why(t));
  return access.v;
}

/** An access is destroyed by closing its fd. */
export function _test_cmd_destroy_access(sys: SelftestEnv, access_id: number): number {
  return sys.libc.close(access_id);
}

export function test_cmd_destroy_access(t: Ctx, access_id: number): void {
  t.ASSERT_EQ(0, _test_cmd_destroy_access(t.sys, access_id), why(t));
}

export function _test_cmd_destroy_access_pages(
  sys: SelftestEnv,
  fd: number,
  access_id: number,
  access_pages_id: number,
): number {
  const cmd = iommuTestCmd(
    iommu_test_cmd.destroy_access_pages,
    IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
    access_id,
    {
      access_pages_id,
    },
  );
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function test_cmd_destroy_access_pages(
  t: Ctx,
  access_id: number,
  access_pages_id: number,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_destroy_access_pages(t.sys, t.self.fd, access_id, access_pages_id),
    why(t),
  );
}

export function test_err_destroy_access_pages(
  t: Ctx,
  e: number,
  access_id: number,
  access_pages_id: number,
): void {
  EXPECT_ERRNO(t, e, _test_cmd_destroy_access_pages(t.sys, t.self.fd, access_id, access_pages_id));
}

export function _test_cmd_access_replace_ioas(
  sys: SelftestEnv,
  fd: number,
  access_id: number,
  ioas_id: number,
): number {
  const cmd = iommuTestCmd(
    iommu_test_cmd.access_replace_ioas,
    IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
    access_id,
    {
      ioas_id,
    },
  );
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function test_cmd_access_replace_ioas(t: Ctx, access_id: number, ioas_id: number): void {
  t.ASSERT_EQ(0, _test_cmd_access_replace_ioas(t.sys, t.self.fd, access_id, ioas_id), why(t));
}

// ---- IOAS --------------------------------------------------------------------------------------

export function _test_ioctl_destroy(sys: SelftestEnv, fd: number, id: number): number {
  return sys.libc.ioctl(
    fd,
    IOMMU_DESTROY,
    ustruct(iommu_destroy, { size: iommu_destroy.size, id }).$,
  );
}

export function test_ioctl_destroy(t: Ctx, id: number): void {
  t.ASSERT_EQ(0, _test_ioctl_destroy(t.sys, t.self.fd, id), why(t));
}

export function _test_ioctl_ioas_alloc(sys: SelftestEnv, fd: number, id: Ref<number>): number {
  const cmd = ustruct(iommu_ioas_alloc, { size: iommu_ioas_alloc.size });
  const rc = sys.libc.ioctl(fd, IOMMU_IOAS_ALLOC, cmd.$);
  if (rc) return rc;
  id.v = cmd.out_ioas_id;
  return 0;
}

export function test_ioctl_ioas_alloc(t: Ctx): number {
  const id = ref(0);
  t.ASSERT_EQ(0, _test_ioctl_ioas_alloc(t.sys, t.self.fd, id), why(t));
  t.ASSERT_NE(0, id.v);
  return id.v;
}

const MAP_RW = IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
const MAP_FIXED_RW = IOMMU_IOAS_MAP_FIXED_IOVA | MAP_RW;

export function _test_ioctl_ioas_map(
  sys: SelftestEnv,
  fd: number,
  ioas_id: number,
  buffer: bigint,
  length: number | bigint,
  iova: Ref<bigint>,
  flags: number,
): number {
  const cmd = ustruct(iommu_ioas_map, {
    size: iommu_ioas_map.size,
    flags,
    ioas_id,
    user_va: buffer,
    length,
    iova: flags & IOMMU_IOAS_MAP_FIXED_IOVA ? iova.v : 0n,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_IOAS_MAP, cmd.$);
  iova.v = cmd.iova;
  return rc;
}

export function test_ioctl_ioas_map(t: Ctx, buffer: bigint, length: number | bigint): bigint {
  return test_ioctl_ioas_map_id(t, ioasId(t), buffer, length);
}

export function test_err_ioctl_ioas_map(
  t: Ctx,
  e: number,
  buffer: bigint,
  length: number | bigint,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_ioctl_ioas_map(t.sys, t.self.fd, ioasId(t), buffer, length, ref(0n), MAP_RW),
  );
}

export function test_ioctl_ioas_map_id(
  t: Ctx,
  ioas_id: number,
  buffer: bigint,
  length: number | bigint,
): bigint {
  const iova = ref(0n);
  t.ASSERT_EQ(
    0,
    _test_ioctl_ioas_map(t.sys, t.self.fd, ioas_id, buffer, length, iova, MAP_RW),
    why(t),
  );
  return iova.v;
}

export function test_ioctl_ioas_map_fixed(
  t: Ctx,
  buffer: bigint,
  length: number | bigint,
  iova: bigint,
): void {
  test_ioctl_ioas_map_fixed_id(t, ioasId(t), buffer, length, iova);
}

export function test_ioctl_ioas_map_fixed_id(
  t: Ctx,
  ioas_id: number,
  buffer: bigint,
  length: number | bigint,
  iova: bigint,
): void {
  const r = ref(iova);
  t.ASSERT_EQ(
    0,
    _test_ioctl_ioas_map(t.sys, t.self.fd, ioas_id, buffer, length, r, MAP_FIXED_RW),
    why(t),
  );
  t.ASSERT_EQ(iova, r.v);
}

export function test_err_ioctl_ioas_map_fixed(
  t: Ctx,
  e: number,
  buffer: bigint,
  length: number | bigint,
  iova: bigint,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_ioctl_ioas_map(t.sys, t.self.fd, ioasId(t), buffer, length, ref(iova), MAP_FIXED_RW),
  );
}

/** IOMMU_IOAS_UNMAP; `out_len` receives the bytes the kernel reports as unmapped. */
export function _test_ioctl_ioas_unmap(
  sys: SelftestEnv,
  fd: number,
  ioas_id: number,
  iova: bigint,
  length: number | bigint,
  out_len?: Ref<bigint>,
): number {
  const cmd = ustruct(iommu_ioas_unmap, { size: iommu_ioas_unmap.size, ioas_id, iova, length });
  const rc = sys.libc.ioctl(fd, IOMMU_IOAS_UNMAP, cmd.$);
  if (out_len) out_len.v = cmd.length;
  return rc;
}

export function test_ioctl_ioas_unmap(t: Ctx, iova: bigint, length: number | bigint): void {
  test_ioctl_ioas_unmap_id(t, ioasId(t), iova, length);
}

export function test_ioctl_ioas_unmap_id(
  t: Ctx,
  ioas_id: number,
  iova: bigint,
  length: number | bigint,
): void {
  t.ASSERT_EQ(0, _test_ioctl_ioas_unmap(t.sys, t.self.fd, ioas_id, iova, length), why(t));
}

export function test_err_ioctl_ioas_unmap(
  t: Ctx,
  e: number,
  iova: bigint,
  length: number | bigint,
): void {
  EXPECT_ERRNO(t, e, _test_ioctl_ioas_unmap(t.sys, t.self.fd, ioasId(t), iova, length));
}

export function _test_ioctl_ioas_map_file(
  sys: SelftestEnv,
  fd: number,
  ioas_id: number,
  mfd: number,
  start: number | bigint,
  length: number | bigint,
  iova: Ref<bigint>,
  flags: number,
): number {
  const cmd = ustruct(iommu_ioas_map_file, {
    size: iommu_ioas_map_file.size,
    flags,
    ioas_id,
    fd: mfd,
    start,
    length,
    iova: flags & IOMMU_IOAS_MAP_FIXED_IOVA ? iova.v : 0n,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_IOAS_MAP_FILE, cmd.$);
  iova.v = cmd.iova;
  return rc;
}

export function test_ioctl_ioas_map_file(
  t: Ctx,
  mfd: number,
  start: number | bigint,
  length: number | bigint,
): bigint {
  return test_ioctl_ioas_map_id_file(t, ioasId(t), mfd, start, length);
}

export function test_err_ioctl_ioas_map_file(
  t: Ctx,
  e: number,
  mfd: number,
  start: number | bigint,
  length: number | bigint,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_ioctl_ioas_map_file(t.sys, t.self.fd, ioasId(t), mfd, start, length, ref(0n), MAP_RW),
  );
}

export function test_ioctl_ioas_map_id_file(
  t: Ctx,
  ioas_id: number,
  mfd: number,
  start: number | bigint,
  length: number | bigint,
): bigint {
  const iova = ref(0n);
  t.ASSERT_EQ(
    0,
    _test_ioctl_ioas_map_file(t.sys, t.self.fd, ioas_id, mfd, start, length, iova, MAP_RW),
  );
  return iova.v;
}

export function test_ioctl_ioas_map_fixed_file(
  t: Ctx,
  mfd: number,
  start: number | bigint,
  length: number | bigint,
  iova: bigint,
): void {
  const r = ref(iova);
  t.ASSERT_EQ(
    0,
    _test_ioctl_ioas_map_file(t.sys, t.self.fd, ioasId(t), mfd, start, length, r, MAP_FIXED_RW),
  );
  t.ASSERT_EQ(iova, r.v);
}

export function _test_ioctl_set_temp_memory_limit(
  sys: SelftestEnv,
  fd: number,
  limit: number,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.memory_limit, IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, 0, {
    limit,
  });
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function test_ioctl_set_temp_memory_limit(t: Ctx, limit: number): void {
  t.ASSERT_EQ(0, _test_ioctl_set_temp_memory_limit(t.sys, t.self.fd, limit), why(t));
}

export function test_ioctl_set_default_memory_limit(t: Ctx): void {
  test_ioctl_set_temp_memory_limit(t, MOCK_DEFAULT_MEMORY_LIMIT);
}

// ---- dma-buf -------------------------------------------------------------------------------------

/** DMABUF_GET: the ioctl's return value is the new dma-buf fd (opened O_CLOEXEC). */
export function _test_cmd_get_dmabuf(
  sys: SelftestEnv,
  fd: number,
  length: number,
  out: Ref<number>,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.dmabuf_get, IOMMU_TEST_OP_DMABUF_GET, 0, {
    length,
    open_flags: O_CLOEXEC,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
  if (rc < 0) return rc;
  out.v = rc;
  return 0;
}

export function test_cmd_get_dmabuf(t: Ctx, length: number): number {
  const dfd = ref(-1);
  t.ASSERT_EQ(0, _test_cmd_get_dmabuf(t.sys, t.self.fd, length, dfd), why(t));
  return dfd.v;
}

export function _test_cmd_revoke_dmabuf(
  sys: SelftestEnv,
  fd: number,
  dmabuf_fd: number,
  revoked: boolean,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.dmabuf_revoke, IOMMU_TEST_OP_DMABUF_REVOKE, 0, {
    dmabuf_fd,
    revoked: revoked ? 1 : 0,
  });
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function test_cmd_revoke_dmabuf(t: Ctx, dmabuf_fd: number, revoked: boolean): void {
  t.ASSERT_EQ(0, _test_cmd_revoke_dmabuf(t.sys, t.self.fd, dmabuf_fd, revoked), why(t));
}

/** MD_CHECK_DMABUF on mock HWPT `hwpt_id`: [iova, iova + length) maps the buffer from `offset`. */
export function _test_cmd_check_dmabuf(
  sys: SelftestEnv,
  fd: number,
  hwpt_id: number,
  dmabuf_fd: number,
  iova: bigint,
  length: number | bigint,
  offset: number | bigint,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.check_dmabuf, IOMMU_TEST_OP_MD_CHECK_DMABUF, hwpt_id, {
    dmabuf_fd,
    iova,
    length: BigInt(length),
    offset: BigInt(offset),
  });
  return sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
}

export function test_cmd_check_dmabuf(
  t: Ctx,
  hwpt_id: number,
  dmabuf_fd: number,
  iova: bigint,
  length: number | bigint,
  offset: number | bigint,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_check_dmabuf(t.sys, t.self.fd, hwpt_id, dmabuf_fd, iova, length, offset),
    why(t),
  );
}

// ---- memory -------------------------------------------------------------------------------------

/** memfd_mmap(): a memfd of `length` bytes and a mapping of it (MAP_FAILED on error). */
export function memfd_mmap(
  libc: Libc,
  length: number,
  prot: number,
  flags: number,
): { buf: bigint; mfd: number } {
  const mfd = libc.memfdCreate("buffer", 0);
  if (mfd < 0) return { buf: MAP_FAILED, mfd };
  if (libc.ftruncate(mfd, length)) return { buf: MAP_FAILED, mfd };
  return { buf: libc.mmap(0n, length, prot, flags, mfd, 0), mfd };
}

// ---- dirty tracking --------------------------------------------------------------------------

export function _test_cmd_set_dirty_tracking(
  sys: SelftestEnv,
  fd: number,
  hwpt_id: number,
  enabled: boolean,
): number {
  const cmd = ustruct(iommu_hwpt_set_dirty_tracking, {
    size: iommu_hwpt_set_dirty_tracking.size,
    flags: enabled ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
    hwpt_id,
  });
  return sys.libc.ioctl(fd, IOMMU_HWPT_SET_DIRTY_TRACKING, cmd.$) ? -sys.libc.errno : 0;
}

export function test_cmd_set_dirty_tracking(t: Ctx, hwpt_id: number, enabled: boolean): void {
  t.ASSERT_EQ(0, _test_cmd_set_dirty_tracking(t.sys, t.self.fd, hwpt_id, enabled), why(t));
}

export function _test_cmd_get_dirty_bitmap(
  sys: SelftestEnv,
  fd: number,
  hwpt_id: number,
  length: number | bigint,
  iova: bigint,
  page_size: number | bigint,
  bitmap: bigint,
  flags: number,
): number {
  const cmd = ustruct(iommu_hwpt_get_dirty_bitmap, {
    size: iommu_hwpt_get_dirty_bitmap.size,
    hwpt_id,
    flags,
    iova,
    length,
    page_size,
    data: bitmap,
  });
  return sys.libc.ioctl(fd, IOMMU_HWPT_GET_DIRTY_BITMAP, cmd.$);
}

function test_cmd_get_dirty_bitmap(
  t: Ctx,
  hwpt_id: number,
  length: number | bigint,
  iova: bigint,
  page_size: number | bigint,
  bitmap: bigint,
  flags: number,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_get_dirty_bitmap(t.sys, t.self.fd, hwpt_id, length, iova, page_size, bitmap, flags),
    why(t),
  );
}

/** IOMMU_TEST_OP_DIRTY; as in C a failed ioctl returns 1 (`-ret`), not an errno. */
export function _test_cmd_mock_domain_set_dirty(
  sys: SelftestEnv,
  fd: number,
  hwpt_id: number,
  length: number | bigint,
  iova: bigint,
  page_size: number | bigint,
  bitmap: bigint,
  dirty: Ref<bigint>,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.dirty, IOMMU_TEST_OP_DIRTY, hwpt_id, {
    iova,
    length,
    page_size,
    uptr: bitmap,
  });
  const ret = sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$);
  if (ret) return -ret;
  dirty.v = cmd.out_nr_dirty;
  return 0;
}

function test_cmd_mock_domain_set_dirty(
  t: Ctx,
  hwpt_id: number,
  length: number | bigint,
  iova: bigint,
  page_size: number | bigint,
  bitmap: bigint,
  nr: Ref<bigint>,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_mock_domain_set_dirty(t.sys, t.self.fd, hwpt_id, length, iova, page_size, bitmap, nr),
    why(t),
  );
}

/**
 * Mark every `pteset`-th bit dirty through the mock, then read the bitmap twice: the first read
 * must report whole PTEs, the second only what NO_CLEAR left. set_bit / test_bit address the
 * bitmap bytewise (little endian), so a misaligned pointer works as in C.
 */
export function test_mock_dirty_bitmaps(
  t: Ctx,
  hwpt_id: number,
  length: number | bigint,
  iova: bigint,
  page_size: number,
  pte_page_size: number,
  bitmap: bigint,
  nbits: number,
  flags: number,
): void {
  const { libc } = t.sys;
  const npte = pte_page_size / page_size;
  const pteset = 2 * npte;
  const nr = Math.floor(nbits / pteset) || 1;
  const bytes = Math.ceil(nbits / 8);
  const out_dirty = ref(0n);

  // Mark all even bits as dirty in the mock domain
  const bits = new Uint8Array(bytes);
  for (let i = 0; i < nbits; i += pteset) bits[i >> 3]! |= 1 << (i & 7);
  libc.poke(bitmap, bits);
  test_cmd_mock_domain_set_dirty(t, hwpt_id, length, iova, page_size, bitmap, out_dirty);
  t.ASSERT_EQ(nr, Number(out_dirty.v));

  // Expect all even bits as dirty in the user bitmap
  libc.poke(bitmap, new Uint8Array(bytes));
  test_cmd_get_dirty_bitmap(t, hwpt_id, length, iova, page_size, bitmap, flags);
  let got = libc.peek(bitmap, bytes);
  const test_bit = (n: number) => (got[n >> 3]! >> (n & 7)) & 1;
  for (let i = 0; i < nbits; i += pteset) {
    for (let j = 0; j < pteset; j++) t.ASSERT_EQ(j < npte ? 1 : 0, test_bit(i + j));
    t.ASSERT_EQ(i % pteset ? 0 : 1, test_bit(i));
  }

  libc.poke(bitmap, new Uint8Array(bytes));
  test_cmd_get_dirty_bitmap(t, hwpt_id, length, iova, page_size, bitmap, flags);
  got = libc.peek(bitmap, bytes);
  // It as read already -- expect all zeroes
  for (let i = 0; i < nbits; i += pteset)
    for (let j = 0; j < pteset; j++)
      t.ASSERT_EQ(
        j < npte && flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR ? 1 : 0,
        test_bit(i + j),
      );
}

/** GET_HW_INFO (type DEFAULT, no data): the capabilities word. */
export function test_cmd_get_hw_capabilities(t: Ctx, device_id: number): bigint {
  const cmd = ustruct(iommu_hw_info, { size: iommu_hw_info.size, dev_id: device_id });
  t.ASSERT_EQ(0, t.sys.libc.ioctl(t.self.fd, IOMMU_GET_HW_INFO, cmd.$), why(t));
  return cmd.out_capabilities;
}

/** HWPT_ALLOC with selftest data `{ iotlb 0, pagetable_type }` choosing the mock table. */
export function test_cmd_hwpt_alloc_iommupt(
  t: Ctx,
  device_id: number,
  pt_id: number,
  flags: number,
  pagetable_type: number,
): number {
  const { libc } = t.sys;
  const data = new Uint8Array(8);
  new DataView(data.buffer).setUint32(4, pagetable_type, true);
  const uptr = libc.malloc(8);
  libc.poke(uptr, data);
  const cmd = ustruct(iommu_hwpt_alloc, {
    size: iommu_hwpt_alloc.size,
    flags,
    dev_id: device_id,
    pt_id,
    data_type: IOMMU_HWPT_DATA_SELFTEST,
    data_len: 8,
    data_uptr: uptr,
  });
  t.ASSERT_EQ(0, libc.ioctl(t.self.fd, IOMMU_HWPT_ALLOC, cmd.$), why(t));
  return cmd.out_hwpt_id;
}
