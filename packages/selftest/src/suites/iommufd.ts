/**
 * Port of tools/testing/selftests/iommu/iommufd.c: its tests of the IOAS, map/unmap/copy, IOVA
 * allocation, reserved and allowed ranges, mock domains, accesses, DMABUF, the ABI framing checks
 * and the VFIO compat checks, step by step under the kernel's names; the dirty-tracking,
 * nesting and vIOMMU fixtures live in their own files and are registered here in the kernel's
 * order.
 *
 * The binary's globals (`buffer`, `mfd`, `mfd_buffer`, BUFFER_SIZE = 16 pages) come from the
 * env factory, which runs once per instance on a fresh machine.
 */
import {
  CAP_IPC_LOCK,
  E2BIG,
  EFD_CLOEXEC,
  O_CLOEXEC,
  POLLIN,
  ENOSPC,
  EOPNOTSUPP,
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_HUGETLB,
  MAP_POPULATE,
  MAP_SHARED,
  MAP_PRIVATE,
  MFD_ALLOW_SEALING,
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  O_RDONLY,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  EADDRINUSE,
  EBUSY,
  EEXIST,
  EFAULT,
  EINVAL,
  EMSGSIZE,
  ENODEV,
  ENOENT,
  ENOTTY,
} from "@x/kernel";
import {
  IOMMUFD_CMD_BASE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_OPTION_RLIMIT_MODE,
  IOPT_PAGES_ACCOUNT_MM,
  IOPT_PAGES_ACCOUNT_NONE,
  IOPT_PAGES_ACCOUNT_USER,
  VFIO_API_VERSION,
  VFIO_CHECK_EXTENSION,
  VFIO_GET_API_VERSION,
  IOMMUFD_TYPE,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  IOMMU_VIOMMU_ALLOC,
  type Struct,
  U64_MAX,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  _IO,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_invalidate,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_change_process,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_iova_range,
  iommu_option,
  iommu_vdevice_alloc,
  iommu_vfio_ioas,
  iommu_viommu_alloc,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_info_cap_header,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_dma_avail,
  vfio_iova_range,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
} from "@x/iommufd";
import { kselftest } from "../harness.js";
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_PAGE_SIZE,
  MOCK_PASID_WIDTH,
  iommu_test_cmd,
} from "../iommufd-test.js";
import {
  type Ctx,
  EXPECT_ERRNO,
  type SelftestEnv,
  why,
  _test_ioctl_destroy,
  _test_ioctl_ioas_map,
  _test_ioctl_ioas_unmap,
  ref,
  test_cmd_hwpt_alloc,
  test_cmd_revoke_dmabuf,
  test_err_destroy_access_pages,
  test_err_hwpt_alloc,
  test_err_mock_domain,
  test_ioctl_ioas_map_fixed_file,
  test_ioctl_ioas_unmap_id,
  check_refs,
  iommuTestCmd,
  memfd_mmap,
  teardown_iommufd,
  test_cmd_access_replace_ioas,
  test_cmd_create_access,
  test_cmd_destroy_access,
  test_cmd_destroy_access_pages,
  test_cmd_dev_check_cache_all,
  test_cmd_get_dmabuf,
  test_cmd_mock_domain,
  test_cmd_mock_domain_flags,
  test_cmd_mock_domain_replace,
  test_err_ioctl_ioas_map,
  test_err_ioctl_ioas_map_file,
  test_err_ioctl_ioas_map_fixed,
  test_err_ioctl_ioas_unmap,
  test_err_mock_domain_replace,
  test_ioctl_destroy,
  test_ioctl_ioas_alloc,
  test_ioctl_ioas_map,
  test_ioctl_ioas_map_file,
  test_ioctl_ioas_map_fixed,
  test_ioctl_ioas_map_id,
  test_ioctl_ioas_map_id_file,
  test_ioctl_ioas_unmap,
  test_ioctl_set_default_memory_limit,
  test_ioctl_set_temp_memory_limit,
} from "../iommufd-utils.js";
import {
  test_cmd_get_hw_info,
  test_cmd_get_hw_info_pasid,
  test_err_get_hw_info,
} from "../iommufd-utils-pasid.js";
import { fork, waitpid } from "../test-fork.js";
import { ustruct } from "../ustruct.js";
import { iommufdDirtyTrackingFixture } from "./iommufd-dirty-tracking.js";
import { alloc_hwpt_nested } from "./iommufd-nested.js";
import { registerIommufdDevicePasid } from "./iommufd-device-pasid.js";
import { registerIommufdViommu } from "./iommufd-viommu.js";

/** ffs(): 1-based index of the lowest set bit, 0 for 0. */
function ffs(x: number): number {
  return x === 0 ? 0 : 31 - Math.clz32(x & -x) + 1;
}

/** A deterministic rand() (xorshift32) so every run of a test sees the same values. */
function makeRand(seed = 1): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s & 0x7fffffff;
  };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** memcmp(a, b, len) == 0 on user memory. */
function memeq(t: Ctx, a: bigint, b: bigint, len: number): boolean {
  return equalBytes(t.sys.libc.peek(a, len), t.sys.libc.peek(b, len));
}

function shuffle(rand: () => number, array: bigint[]): void {
  for (let i = 0; i !== array.length; i++) {
    const tmp = array[i]!;
    const other = rand() % (array.length - i);
    array[i] = array[other]!;
    array[other] = tmp;
  }
}

/** is_filled(): every byte of `len` at `va` equals `c`. */
function is_filled(t: Ctx, va: bigint, c: number, len: number): boolean {
  return t.sys.libc.peek(va, len).every((b) => b === c);
}

/**
 * ioctl_check_buf(): run `cmd` on the struct at `buffer` (its first u32 is argsz) and check the
 * kernel wrote nothing past argsz.
 */
function ioctl_check_buf(t: Ctx, fd: number, cmd: number): void {
  const { libc, buffer, BUFFER_SIZE } = t.sys;
  const cmd_len = new DataView(libc.peek(buffer, 4).buffer).getUint32(0, true);
  libc.poke(buffer + BigInt(cmd_len), new Uint8Array(BUFFER_SIZE - cmd_len).fill(0xaa));
  t.ASSERT_EQ(0, libc.ioctl(fd, cmd, buffer), why(t));
  t.ASSERT_EQ(true, is_filled(t, buffer + BigInt(cmd_len), 0xaa, BUFFER_SIZE - cmd_len));
}

/** check_vfio_info_cap_chain(): walk the capability chain GET_INFO left in `buffer`. */
function check_vfio_info_cap_chain(t: Ctx, info_cmd: { argsz: number; cap_offset: number }): void {
  const { libc, buffer } = t.sys;
  const hdr = vfio_info_cap_header;
  t.ASSERT_GE(info_cmd.argsz, info_cmd.cap_offset + hdr.size);
  let cap = info_cmd.cap_offset;
  for (;;) {
    const head = hdr.decode(libc.peek(buffer + BigInt(cap), hdr.size));
    const cap_size = head.next ? head.next - cap : info_cmd.argsz - cap;
    switch (head.id) {
      case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: {
        const s = vfio_iommu_type1_info_cap_iova_range;
        const data = s.decode(libc.peek(buffer + BigInt(cap), s.size));
        const range = vfio_iova_range.decode(
          libc.peek(buffer + BigInt(cap + s.size), vfio_iova_range.size),
        );
        t.ASSERT_EQ(1, data.version);
        t.ASSERT_EQ(1, data.nr_iovas);
        t.EXPECT_EQ(MOCK_APERTURE_START, range.start);
        t.EXPECT_EQ(MOCK_APERTURE_LAST, range.end);
        break;
      }
      case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
        t.ASSERT_EQ(1, head.version);
        t.ASSERT_EQ(vfio_iommu_type1_info_dma_avail.size, cap_size);
        break;
      default:
        t.ASSERT_EQ(false, true);
    }
    if (!head.next) break;
    t.ASSERT_GE(info_cmd.argsz, head.next + hdr.size);
    t.ASSERT_GE(head.next, cap);
    cap = head.next;
  }
}

/** Clear CAP_IPC_LOCK from the effective set (libcap's cap_get_proc/cap_set_flag/cap_set_proc). */
function drop_cap_ipc_lock(t: Ctx): void {
  const { libc } = t.sys;
  const caps = libc.capget();
  t.ASSERT_NE(
    -1,
    libc.capset(
      caps.effective.filter((c) => c !== CAP_IPC_LOCK),
      caps.permitted,
    ),
  );
}

/**
 * The number after `tag` in /proc/<pid>/status, -1 when the file or the tag is missing. The C
 * helper scans with fgets/fscanf; this reads the file and matches line by line.
 */
function get_proc_status_value(t: Ctx, pid: number, tag: string): number {
  const { libc } = t.sys;
  const fd = libc.open(`/proc/${pid}/status`, O_RDONLY);
  if (fd < 0) return -1;
  const buf = new Uint8Array(4096);
  const n = libc.pread(fd, buf, 0);
  libc.close(fd);
  for (const line of new TextDecoder().decode(buf.subarray(0, Math.max(n, 0))).split("\n")) {
    const [name, value] = line.split(/\s+/);
    if (name === tag && value !== undefined) return Number(value);
  }
  return -1;
}

function get_vm_pinned(t: Ctx, pid: number): number {
  return get_proc_status_value(t, pid, "VmPin:");
}

function get_vm_locked(t: Ctx, pid: number): number {
  return get_proc_status_value(t, pid, "VmLck:");
}

/**
 * The suite of iommufd.c as a harness; `createEnv` builds a fresh machine with the binary's
 * globals for every instance.
 */
export function iommufdSuite(createEnv: () => SelftestEnv) {
  const k = kselftest(createEnv);
  const {
    harness,
    FIXTURE,
    FIXTURE_SETUP,
    FIXTURE_TEARDOWN,
    FIXTURE_VARIANT,
    FIXTURE_VARIANT_ADD,
    TEST_F,
  } = k;

  // ---- FIXTURE(iommufd) -------------------------------------------------------------------

  const iommufd = FIXTURE("iommufd", () => ({ fd: -1 }));
  FIXTURE_SETUP(iommufd, (self, _v, t) => {
    self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
  });
  FIXTURE_TEARDOWN(iommufd, (self, _v, t) => teardown_iommufd(t, self.fd));

  TEST_F(iommufd, "simple_close", () => {});

  TEST_F(iommufd, "cmd_fail", (self, _v, t) => {
    const { libc } = t.sys;
    const cmd = ustruct(iommu_destroy, { size: iommu_destroy.size, id: 0 });
    // object id is invalid
    EXPECT_ERRNO(t, ENOENT, _test_ioctl_destroy(t.sys, self.fd, 0));
    // Bad pointer
    EXPECT_ERRNO(t, EFAULT, libc.ioctl(self.fd, IOMMU_DESTROY, 0n));
    // Unknown ioctl
    EXPECT_ERRNO(t, ENOTTY, libc.ioctl(self.fd, _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE - 1), cmd.$));
  });

  TEST_F(iommufd, "cmd_length", (self, _v, t) => {
    const { libc } = t.sys;
    // struct { struct _struct cmd; uint8_t extra; }: `extra` sits right after the struct.
    function TEST_LENGTH<S extends Struct<never>>(s: S, ioctlNum: number, last: string): void {
      const min_size = s.endOf(last as never);
      const cmd = new Uint8Array(s.size + 8);
      const dv = new DataView(cmd.buffer);
      const setSize = (n: number) => dv.setUint32(0, n, true);
      setSize(min_size - 1);
      cmd[s.size] = 0xff;
      EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, ioctlNum, cmd));
      setSize(s.size + 1);
      EXPECT_ERRNO(t, E2BIG, libc.ioctl(self.fd, ioctlNum, cmd));
      setSize(s.size);
      const rc = libc.ioctl(self.fd, ioctlNum, cmd);
      const old_errno = libc.errno;
      setSize(s.size + 1);
      cmd[s.size] = 0;
      if (rc) EXPECT_ERRNO(t, old_errno, libc.ioctl(self.fd, ioctlNum, cmd));
      else t.ASSERT_EQ(0, libc.ioctl(self.fd, ioctlNum, cmd), why(t));
    }
    const L = (s: unknown, n: number, last: string) => TEST_LENGTH(s as Struct<never>, n, last);
    L(iommu_destroy, IOMMU_DESTROY, "id");
    L(iommu_hw_info, IOMMU_GET_HW_INFO, "__reserved");
    L(iommu_hwpt_alloc, IOMMU_HWPT_ALLOC, "__reserved");
    L(iommu_hwpt_invalidate, IOMMU_HWPT_INVALIDATE, "__reserved");
    L(iommu_ioas_alloc, IOMMU_IOAS_ALLOC, "out_ioas_id");
    L(iommu_ioas_iova_ranges, IOMMU_IOAS_IOVA_RANGES, "out_iova_alignment");
    L(iommu_ioas_allow_iovas, IOMMU_IOAS_ALLOW_IOVAS, "allowed_iovas");
    L(iommu_ioas_map, IOMMU_IOAS_MAP, "iova");
    L(iommu_ioas_copy, IOMMU_IOAS_COPY, "src_iova");
    L(iommu_ioas_unmap, IOMMU_IOAS_UNMAP, "length");
    L(iommu_option, IOMMU_OPTION, "val64");
    L(iommu_vfio_ioas, IOMMU_VFIO_IOAS, "__reserved");
    L(iommu_ioas_map_file, IOMMU_IOAS_MAP_FILE, "iova");
    L(iommu_viommu_alloc, IOMMU_VIOMMU_ALLOC, "out_viommu_id");
    L(iommu_vdevice_alloc, IOMMU_VDEVICE_ALLOC, "virt_id");
    L(iommu_ioas_change_process, IOMMU_IOAS_CHANGE_PROCESS, "__reserved");
  });

  TEST_F(iommufd, "unmap_cmd", (self, _v, t) => {
    const { libc, PAGE_SIZE } = t.sys;
    const unmap_cmd = ustruct(vfio_iommu_type1_dma_unmap, {
      iova: MOCK_APERTURE_START,
      size: PAGE_SIZE,
    });
    unmap_cmd.argsz = 1;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$));
    unmap_cmd.argsz = vfio_iommu_type1_dma_unmap.size;
    unmap_cmd.flags = 1 << 31;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$));
    unmap_cmd.flags = 0;
    EXPECT_ERRNO(t, ENODEV, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$));
  });

  TEST_F(iommufd, "info_cmd", (self, _v, t) => {
    const { libc } = t.sys;
    const info_cmd = ustruct(vfio_iommu_type1_info);
    // Invalid argsz
    info_cmd.argsz = 1;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, VFIO_IOMMU_GET_INFO, info_cmd.$));
    info_cmd.argsz = vfio_iommu_type1_info.size;
    EXPECT_ERRNO(t, ENODEV, libc.ioctl(self.fd, VFIO_IOMMU_GET_INFO, info_cmd.$));
  });

  TEST_F(iommufd, "vfio_ioas", (self, _v, t) => {
    const { libc } = t.sys;
    const vfio_ioas_cmd = ustruct(iommu_vfio_ioas, {
      size: iommu_vfio_ioas.size,
      op: IOMMU_VFIO_IOAS_GET,
    });
    // ENODEV if there is no compat ioas
    EXPECT_ERRNO(t, ENODEV, libc.ioctl(self.fd, IOMMU_VFIO_IOAS, vfio_ioas_cmd.$));
    // Invalid id for set
    vfio_ioas_cmd.op = IOMMU_VFIO_IOAS_SET;
    EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_VFIO_IOAS, vfio_ioas_cmd.$));
    // Valid id for set
    const ioas_id = test_ioctl_ioas_alloc(t);
    vfio_ioas_cmd.ioas_id = ioas_id;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_VFIO_IOAS, vfio_ioas_cmd.$), why(t));
    // Same id comes back from get
    vfio_ioas_cmd.op = IOMMU_VFIO_IOAS_GET;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_VFIO_IOAS, vfio_ioas_cmd.$), why(t));
    t.ASSERT_EQ(ioas_id, vfio_ioas_cmd.ioas_id);
    // Clear works
    vfio_ioas_cmd.op = IOMMU_VFIO_IOAS_CLEAR;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_VFIO_IOAS, vfio_ioas_cmd.$), why(t));
    vfio_ioas_cmd.op = IOMMU_VFIO_IOAS_GET;
    EXPECT_ERRNO(t, ENODEV, libc.ioctl(self.fd, IOMMU_VFIO_IOAS, vfio_ioas_cmd.$));
  });

  // ---- FIXTURE(iommufd_ioas) ----------------------------------------------------------------

  interface IoasVariant {
    mock_domains: number;
    memory_limit: number;
    pasid_capable: boolean;
  }
  // ---- FIXTURE(change_process) ------------------------------------------------------------

  const change_process = FIXTURE(
    "change_process",
    () => ({ fd: -1, ioas_id: 0 }),
    FIXTURE_VARIANT<{ accounting: number }>(),
  );
  FIXTURE_SETUP(change_process, (self, variant, t) => {
    self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
    drop_cap_ipc_lock(t);
    if (variant.accounting !== IOPT_PAGES_ACCOUNT_NONE) {
      const set_limit_cmd = ustruct(iommu_option, {
        size: iommu_option.size,
        option_id: IOMMU_OPTION_RLIMIT_MODE,
        op: IOMMU_OPTION_OP_SET,
        val64: variant.accounting === IOPT_PAGES_ACCOUNT_MM ? 1 : 0,
      });
      t.ASSERT_EQ(0, t.sys.libc.ioctl(self.fd, IOMMU_OPTION, set_limit_cmd.$), why(t));
    }
    self.ioas_id = test_ioctl_ioas_alloc(t);
    test_cmd_mock_domain(t, self.ioas_id);
  });
  FIXTURE_TEARDOWN(change_process, (self, _v, t) => teardown_iommufd(t, self.fd));
  FIXTURE_VARIANT_ADD(change_process, "account_none", { accounting: IOPT_PAGES_ACCOUNT_NONE });
  FIXTURE_VARIANT_ADD(change_process, "account_user", { accounting: IOPT_PAGES_ACCOUNT_USER });
  FIXTURE_VARIANT_ADD(change_process, "account_mm", { accounting: IOPT_PAGES_ACCOUNT_MM });

  TEST_F(change_process, "basic", (self, variant, t) => {
    const { libc, buffer, PAGE_SIZE, mfd } = t.sys;
    const parent = libc.getpid();
    const cmd = ustruct(iommu_ioas_change_process, { size: iommu_ioas_change_process.size });
    // Expect failure if non-file maps exist
    let iova = test_ioctl_ioas_map(t, buffer, PAGE_SIZE);
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_IOAS_CHANGE_PROCESS, cmd.$));
    test_ioctl_ioas_unmap(t, iova, PAGE_SIZE);
    // Change process works in current process.
    iova = test_ioctl_ioas_map_file(t, mfd, 0, PAGE_SIZE);
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_CHANGE_PROCESS, cmd.$), why(t));
    // Change process works in another process
    const child = fork(t, (c) => {
      const nlock = PAGE_SIZE / 1024;
      const self_pid = c.sys.libc.getpid();
      // Parent accounts for locked memory before
      c.ASSERT_EQ(nlock, get_vm_pinned(c, parent));
      if (variant.accounting === IOPT_PAGES_ACCOUNT_MM)
        c.ASSERT_EQ(nlock, get_vm_locked(c, parent));
      c.ASSERT_EQ(0, get_vm_pinned(c, self_pid));
      c.ASSERT_EQ(0, get_vm_locked(c, self_pid));
      c.ASSERT_EQ(0, c.sys.libc.ioctl(self.fd, IOMMU_IOAS_CHANGE_PROCESS, cmd.$), why(c));
      // Child accounts for locked memory after
      c.ASSERT_EQ(0, get_vm_pinned(c, parent));
      c.ASSERT_EQ(0, get_vm_locked(c, parent));
      c.ASSERT_EQ(nlock, get_vm_pinned(c, self_pid));
      if (variant.accounting === IOPT_PAGES_ACCOUNT_MM)
        c.ASSERT_EQ(nlock, get_vm_locked(c, self_pid));
      return 0;
    });
    t.ASSERT_NE(-1, child.pid);
    t.ASSERT_EQ(child.pid, waitpid(t, child));
  });

  const iommufd_ioas = FIXTURE(
    "iommufd_ioas",
    () => ({
      fd: -1,
      ioas_id: 0,
      stdev_id: 0,
      hwpt_id: 0,
      device_id: 0,
      base_iova: 0n,
      device_pasid_id: 0,
    }),
    FIXTURE_VARIANT<IoasVariant>(),
  );
  FIXTURE_SETUP(iommufd_ioas, (self, variant, t) => {
    self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
    self.ioas_id = test_ioctl_ioas_alloc(t);
    if (!variant.memory_limit) test_ioctl_set_default_memory_limit(t);
    else test_ioctl_set_temp_memory_limit(t, variant.memory_limit);
    for (let i = 0; i !== variant.mock_domains; i++) {
      const ids = test_cmd_mock_domain(t, self.ioas_id);
      self.stdev_id = ids.stdev_id;
      self.hwpt_id = ids.hwpt_id;
      self.device_id = ids.idev_id;
      test_cmd_dev_check_cache_all(t, self.device_id, IOMMU_TEST_DEV_CACHE_DEFAULT);
      self.base_iova = MOCK_APERTURE_START;
    }
    if (variant.pasid_capable)
      self.device_pasid_id = test_cmd_mock_domain_flags(
        t,
        self.ioas_id,
        MOCK_FLAGS_DEVICE_PASID,
      ).idev_id;
  });
  FIXTURE_TEARDOWN(iommufd_ioas, (self, _v, t) => {
    test_ioctl_set_default_memory_limit(t);
    teardown_iommufd(t, self.fd);
  });
  FIXTURE_VARIANT_ADD(iommufd_ioas, "no_domain", {
    mock_domains: 0,
    memory_limit: 0,
    pasid_capable: false,
  });
  FIXTURE_VARIANT_ADD(iommufd_ioas, "mock_domain", {
    mock_domains: 1,
    memory_limit: 0,
    pasid_capable: true,
  });
  FIXTURE_VARIANT_ADD(iommufd_ioas, "two_mock_domain", {
    mock_domains: 2,
    memory_limit: 0,
    pasid_capable: false,
  });
  FIXTURE_VARIANT_ADD(iommufd_ioas, "mock_domain_limit", {
    mock_domains: 1,
    memory_limit: 16,
    pasid_capable: false,
  });

  TEST_F(iommufd_ioas, "ioas_destroy", (self, _v, t) => {
    if (self.stdev_id) {
      // IOAS cannot be freed while a device has a HWPT using it
      EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, self.ioas_id));
    } else {
      // Can allocate and manually free an IOAS table
      test_ioctl_destroy(t, self.ioas_id);
    }
  });

  TEST_F(iommufd_ioas, "alloc_hwpt_nested", (self, _v, t) => alloc_hwpt_nested(self, t));

  TEST_F(iommufd_ioas, "ioas_area_destroy", (self, _v, t) => {
    // Adding an area does not change ability to destroy
    test_ioctl_ioas_map_fixed(t, t.sys.buffer, t.sys.PAGE_SIZE, self.base_iova);
    if (self.stdev_id) EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, self.ioas_id));
    else test_ioctl_destroy(t, self.ioas_id);
  });

  TEST_F(iommufd_ioas, "hwpt_attach", (self, _v, t) => {
    // Create a device attached directly to a hwpt
    if (self.stdev_id) test_cmd_mock_domain(t, self.hwpt_id);
    else test_err_mock_domain(t, ENOENT, self.hwpt_id);
  });

  TEST_F(iommufd_ioas, "get_hw_info", (self, variant, t) => {
    const { libc } = t.sys;
    // The C buffers are uninitialised stack: start them as garbage, not zeroes.
    const stackBuffer = (len: number) => {
      const va = libc.malloc(len);
      libc.poke(va, new Uint8Array(len).fill(0xaa));
      return va;
    };
    const buffer_exact = { va: stackBuffer(8), len: 8 };
    const buffer_larger = { va: stackBuffer(16), len: 16 };
    const buffer_smaller = { va: stackBuffer(4), len: 4 };
    if (self.device_id) {
      // Provide a zero-size user_buffer
      test_cmd_get_hw_info(t, self.device_id, IOMMU_HW_INFO_TYPE_DEFAULT, 0n, 0);
      // Provide a user_buffer with exact size
      test_cmd_get_hw_info(
        t,
        self.device_id,
        IOMMU_HW_INFO_TYPE_DEFAULT,
        buffer_exact.va,
        buffer_exact.len,
      );
      // Request for a wrong data_type, and a correct one
      test_err_get_hw_info(
        t,
        EOPNOTSUPP,
        self.device_id,
        IOMMU_HW_INFO_TYPE_SELFTEST + 1,
        buffer_exact.va,
        buffer_exact.len,
      );
      test_cmd_get_hw_info(
        t,
        self.device_id,
        IOMMU_HW_INFO_TYPE_SELFTEST,
        buffer_exact.va,
        buffer_exact.len,
      );
      // A larger buffer: the kernel zeroes the bytes past its struct.
      test_cmd_get_hw_info(
        t,
        self.device_id,
        IOMMU_HW_INFO_TYPE_DEFAULT,
        buffer_larger.va,
        buffer_larger.len,
      );
      // A smaller buffer: the fields that fit are still written.
      test_cmd_get_hw_info(
        t,
        self.device_id,
        IOMMU_HW_INFO_TYPE_DEFAULT,
        buffer_smaller.va,
        buffer_smaller.len,
      );
      t.ASSERT_EQ(0, test_cmd_get_hw_info_pasid(t, self.device_id));
      if (variant.pasid_capable)
        t.ASSERT_EQ(MOCK_PASID_WIDTH, test_cmd_get_hw_info_pasid(t, self.device_pasid_id));
    } else {
      test_err_get_hw_info(
        t,
        ENOENT,
        self.device_id,
        IOMMU_HW_INFO_TYPE_DEFAULT,
        buffer_exact.va,
        buffer_exact.len,
      );
      test_err_get_hw_info(
        t,
        ENOENT,
        self.device_id,
        IOMMU_HW_INFO_TYPE_DEFAULT,
        buffer_larger.va,
        buffer_larger.len,
      );
    }
  });

  TEST_F(iommufd_ioas, "area", (self, _v, t) => {
    const { buffer, PAGE_SIZE } = t.sys;
    const P = BigInt(PAGE_SIZE);
    // Unmap fails if nothing is mapped
    for (let i = 0n; i !== 10n; i++) test_err_ioctl_ioas_unmap(t, ENOENT, i * P, PAGE_SIZE);
    // Unmap works
    for (let i = 0n; i !== 10n; i++)
      test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE, self.base_iova + i * P);
    for (let i = 0n; i !== 10n; i++) test_ioctl_ioas_unmap(t, self.base_iova + i * P, PAGE_SIZE);
    // Split fails
    test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE * 2, self.base_iova + 16n * P);
    test_err_ioctl_ioas_unmap(t, ENOENT, self.base_iova + 16n * P, PAGE_SIZE);
    test_err_ioctl_ioas_unmap(t, ENOENT, self.base_iova + 17n * P, PAGE_SIZE);
    // Over map fails
    test_err_ioctl_ioas_map_fixed(t, EEXIST, buffer, PAGE_SIZE * 2, self.base_iova + 16n * P);
    test_err_ioctl_ioas_map_fixed(t, EEXIST, buffer, PAGE_SIZE, self.base_iova + 16n * P);
    test_err_ioctl_ioas_map_fixed(t, EEXIST, buffer, PAGE_SIZE, self.base_iova + 17n * P);
    test_err_ioctl_ioas_map_fixed(t, EEXIST, buffer, PAGE_SIZE * 2, self.base_iova + 15n * P);
    test_err_ioctl_ioas_map_fixed(t, EEXIST, buffer, PAGE_SIZE * 3, self.base_iova + 15n * P);
    // unmap all works
    test_ioctl_ioas_unmap(t, 0n, U64_MAX);
    // Unmap all succeeds on an empty IOAS
    test_ioctl_ioas_unmap(t, 0n, U64_MAX);
  });

  TEST_F(iommufd_ioas, "area_auto_iova", (self, _v, t) => {
    const { libc, buffer, PAGE_SIZE } = t.sys;
    const test_cmd = iommuTestCmd(
      iommu_test_cmd.add_reserved,
      IOMMU_TEST_OP_ADD_RESERVED,
      self.ioas_id,
      {
        start: PAGE_SIZE * 4,
        length: PAGE_SIZE * 100,
      },
    );
    const rangesVa = libc.malloc(iommu_iova_range.size);
    const setRange = (start: bigint, last: bigint) =>
      libc.poke(rangesVa, iommu_iova_range.encode({ start, last }));
    const allow_cmd = ustruct(iommu_ioas_allow_iovas, {
      size: iommu_ioas_allow_iovas.size,
      ioas_id: self.ioas_id,
      num_iovas: 1,
      allowed_iovas: rangesVa,
    });
    const iovas: bigint[] = [];
    // Simple 4k pages
    for (let i = 0; i !== 10; i++) iovas[i] = test_ioctl_ioas_map(t, buffer, PAGE_SIZE);
    for (let i = 0; i !== 10; i++) test_ioctl_ioas_unmap(t, iovas[i]!, PAGE_SIZE);
    // Kernel automatically aligns IOVAs properly
    for (let i = 0; i !== 10; i++) {
      const length = PAGE_SIZE * (i + 1);
      if (self.stdev_id) iovas[i] = test_ioctl_ioas_map(t, buffer, length);
      else iovas[i] = test_ioctl_ioas_map(t, 1n << 31n, length);
      t.EXPECT_EQ(0, iovas[i]! % (1n << BigInt(ffs(length) - 1)));
    }
    for (let i = 0; i !== 10; i++) test_ioctl_ioas_unmap(t, iovas[i]!, PAGE_SIZE * (i + 1));
    // Avoids a reserved region
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, test_cmd.$), why(t));
    for (let i = 0; i !== 10; i++) {
      const length = PAGE_SIZE * (i + 1);
      iovas[i] = test_ioctl_ioas_map(t, buffer, length);
      const iova = iovas[i]!;
      t.EXPECT_EQ(0, iova % (1n << BigInt(ffs(length) - 1)));
      t.EXPECT_EQ(false, iova > test_cmd.start && iova < test_cmd.start + test_cmd.length);
    }
    for (let i = 0; i !== 10; i++) test_ioctl_ioas_unmap(t, iovas[i]!, PAGE_SIZE * (i + 1));
    // Allowed region intersects with a reserved region
    setRange(BigInt(PAGE_SIZE), BigInt(PAGE_SIZE * 600));
    EXPECT_ERRNO(t, EADDRINUSE, libc.ioctl(self.fd, IOMMU_IOAS_ALLOW_IOVAS, allow_cmd.$));
    // Allocate from an allowed region
    let start: bigint;
    let last: bigint;
    if (self.stdev_id) {
      start = MOCK_APERTURE_START + BigInt(PAGE_SIZE);
      last = MOCK_APERTURE_START + BigInt(PAGE_SIZE * 600) - 1n;
    } else {
      start = BigInt(PAGE_SIZE * 200);
      last = BigInt(PAGE_SIZE * 600) - 1n;
    }
    setRange(start, last);
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_ALLOW_IOVAS, allow_cmd.$), why(t));
    for (let i = 0; i !== 10; i++) {
      const length = PAGE_SIZE * (i + 1);
      iovas[i] = test_ioctl_ioas_map(t, buffer, length);
      const iova = iovas[i]!;
      const len = BigInt(length);
      t.EXPECT_EQ(0, iova % (1n << BigInt(ffs(length) - 1)));
      t.EXPECT_EQ(true, iova >= start);
      t.EXPECT_EQ(true, iova <= last);
      t.EXPECT_EQ(true, iova + len > start);
      t.EXPECT_EQ(true, iova + len <= last + 1n);
    }
    for (let i = 0; i !== 10; i++) test_ioctl_ioas_unmap(t, iovas[i]!, PAGE_SIZE * (i + 1));
  });

  TEST_F(iommufd_ioas, "copy_area", (self, _v, t) => {
    const { libc, buffer, PAGE_SIZE } = t.sys;
    const copy_cmd = ustruct(iommu_ioas_copy, {
      size: iommu_ioas_copy.size,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
      dst_ioas_id: self.ioas_id,
      src_ioas_id: self.ioas_id,
      length: PAGE_SIZE,
    });
    test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE, self.base_iova);
    // Copy inside a single IOAS
    copy_cmd.src_iova = self.base_iova;
    copy_cmd.dst_iova = self.base_iova + BigInt(PAGE_SIZE);
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_COPY, copy_cmd.$), why(t));
    // Copy between IOAS's
    copy_cmd.src_iova = self.base_iova;
    copy_cmd.dst_iova = 0n;
    copy_cmd.dst_ioas_id = test_ioctl_ioas_alloc(t);
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_COPY, copy_cmd.$), why(t));
  });

  TEST_F(iommufd_ioas, "iova_ranges", (self, _v, t) => {
    const { libc, buffer, BUFFER_SIZE, PAGE_SIZE } = t.sys;
    const test_cmd = iommuTestCmd(
      iommu_test_cmd.add_reserved,
      IOMMU_TEST_OP_ADD_RESERVED,
      self.ioas_id,
      {
        start: PAGE_SIZE,
        length: PAGE_SIZE,
      },
    );
    // struct iommu_iova_range *ranges = buffer;
    const range = (i: number) =>
      iommu_iova_range.decode(
        libc.peek(buffer + BigInt(i * iommu_iova_range.size), iommu_iova_range.size),
      );
    const memsetBuffer = () => libc.poke(buffer, new Uint8Array(BUFFER_SIZE));
    const ranges_cmd = ustruct(iommu_ioas_iova_ranges, {
      size: iommu_ioas_iova_ranges.size,
      ioas_id: self.ioas_id,
      num_iovas: BUFFER_SIZE / iommu_iova_range.size,
      allowed_iovas: buffer,
    });
    // Range can be read
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_IOVA_RANGES, ranges_cmd.$), why(t));
    t.EXPECT_EQ(1, ranges_cmd.num_iovas);
    if (!self.stdev_id) {
      t.EXPECT_EQ(0, range(0).start);
      t.EXPECT_EQ(U64_MAX, range(0).last);
      t.EXPECT_EQ(1, ranges_cmd.out_iova_alignment);
    } else {
      t.EXPECT_EQ(MOCK_APERTURE_START, range(0).start);
      t.EXPECT_EQ(MOCK_APERTURE_LAST, range(0).last);
      t.EXPECT_EQ(MOCK_PAGE_SIZE, ranges_cmd.out_iova_alignment);
    }
    // Buffer too small
    memsetBuffer();
    ranges_cmd.num_iovas = 0;
    EXPECT_ERRNO(t, EMSGSIZE, libc.ioctl(self.fd, IOMMU_IOAS_IOVA_RANGES, ranges_cmd.$));
    t.EXPECT_EQ(1, ranges_cmd.num_iovas);
    t.EXPECT_EQ(0, range(0).start);
    t.EXPECT_EQ(0, range(0).last);
    // 2 ranges
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, test_cmd.$), why(t));
    ranges_cmd.num_iovas = BUFFER_SIZE / iommu_iova_range.size;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_IOVA_RANGES, ranges_cmd.$), why(t));
    if (!self.stdev_id) {
      t.EXPECT_EQ(2, ranges_cmd.num_iovas);
      t.EXPECT_EQ(0, range(0).start);
      t.EXPECT_EQ(PAGE_SIZE - 1, range(0).last);
      t.EXPECT_EQ(PAGE_SIZE * 2, range(1).start);
      t.EXPECT_EQ(U64_MAX, range(1).last);
    } else {
      t.EXPECT_EQ(1, ranges_cmd.num_iovas);
      t.EXPECT_EQ(MOCK_APERTURE_START, range(0).start);
      t.EXPECT_EQ(MOCK_APERTURE_LAST, range(0).last);
    }
    // Buffer too small
    memsetBuffer();
    ranges_cmd.num_iovas = 1;
    if (!self.stdev_id) {
      EXPECT_ERRNO(t, EMSGSIZE, libc.ioctl(self.fd, IOMMU_IOAS_IOVA_RANGES, ranges_cmd.$));
      t.EXPECT_EQ(2, ranges_cmd.num_iovas);
      t.EXPECT_EQ(0, range(0).start);
      t.EXPECT_EQ(PAGE_SIZE - 1, range(0).last);
    } else {
      t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_IOVA_RANGES, ranges_cmd.$), why(t));
      t.EXPECT_EQ(1, ranges_cmd.num_iovas);
      t.EXPECT_EQ(MOCK_APERTURE_START, range(0).start);
      t.EXPECT_EQ(MOCK_APERTURE_LAST, range(0).last);
    }
    t.EXPECT_EQ(0, range(1).start);
    t.EXPECT_EQ(0, range(1).last);
  });

  TEST_F(iommufd_ioas, "access_domain_destory", (self, _v, t) => {
    const { libc, PAGE_SIZE, HUGEPAGE_SIZE } = t.sys;
    const access_cmd = iommuTestCmd(iommu_test_cmd.access_pages, IOMMU_TEST_OP_ACCESS_PAGES, 0, {
      iova: self.base_iova + BigInt(PAGE_SIZE),
      length: PAGE_SIZE,
    });
    const buf_size = 2 * HUGEPAGE_SIZE;
    const buf = libc.mmap(
      0n,
      buf_size,
      PROT_READ | PROT_WRITE,
      MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE,
      -1,
      0,
    );
    t.ASSERT_NE(MAP_FAILED, buf);
    test_ioctl_ioas_map_fixed(t, buf, buf_size, self.base_iova);
    access_cmd.id = test_cmd_create_access(
      t,
      self.ioas_id,
      MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
    );
    access_cmd.uptr = buf + BigInt(PAGE_SIZE);
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
    // Causes a complicated unpin across a huge page boundary
    if (self.stdev_id) test_ioctl_destroy(t, self.stdev_id);
    test_cmd_destroy_access_pages(t, access_cmd.id, access_cmd.out_access_pages_id);
    test_cmd_destroy_access(t, access_cmd.id);
    t.ASSERT_EQ(0, libc.munmap(buf, buf_size), why(t));
  });

  TEST_F(iommufd_ioas, "access_pin", (self, _v, t) => {
    const { libc, buffer, BUFFER_SIZE, PAGE_SIZE } = t.sys;
    const access_cmd = iommuTestCmd(iommu_test_cmd.access_pages, IOMMU_TEST_OP_ACCESS_PAGES, 0, {
      iova: MOCK_APERTURE_START,
      length: BUFFER_SIZE,
      uptr: buffer,
    });
    const check_map_cmd = iommuTestCmd(iommu_test_cmd.check_map, IOMMU_TEST_OP_MD_CHECK_MAP, 0, {
      iova: MOCK_APERTURE_START,
      length: BUFFER_SIZE,
      uptr: buffer,
    });
    access_cmd.id = test_cmd_create_access(
      t,
      self.ioas_id,
      MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
    );
    for (let npages = 1; npages < BUFFER_SIZE / PAGE_SIZE; npages++) {
      access_cmd.length = BigInt(npages * PAGE_SIZE);
      // Single map/unmap
      test_ioctl_ioas_map_fixed(t, buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
      test_cmd_destroy_access_pages(t, access_cmd.id, access_cmd.out_access_pages_id);
      // Double user
      t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
      const access_pages_id = access_cmd.out_access_pages_id;
      t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
      test_cmd_destroy_access_pages(t, access_cmd.id, access_cmd.out_access_pages_id);
      test_cmd_destroy_access_pages(t, access_cmd.id, access_pages_id);
      // Add/remove a domain with a user
      t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
      const mock = test_cmd_mock_domain(t, self.ioas_id);
      check_map_cmd.id = mock.hwpt_id;
      t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, check_map_cmd.$), why(t));
      test_ioctl_destroy(t, mock.stdev_id);
      test_cmd_destroy_access_pages(t, access_cmd.id, access_cmd.out_access_pages_id);
      test_ioctl_ioas_unmap(t, MOCK_APERTURE_START, BUFFER_SIZE);
    }
    test_cmd_destroy_access(t, access_cmd.id);
  });

  /** check_access_rw(): byte-exact reads and writes through an access around a page boundary. */
  function check_access_rw(
    t: Ctx,
    fd: number,
    access_id: number,
    iova: bigint,
    def_flags: number,
  ): void {
    const { libc, buffer, BUFFER_SIZE, PAGE_SIZE } = t.sys;
    const rand = makeRand(iova === MOCK_APERTURE_START ? 7 : 11);
    const TMP = 64; // uint16_t tmp[32]
    const tmp = libc.malloc(TMP);
    const access_cmd = iommuTestCmd(iommu_test_cmd.access_rw, IOMMU_TEST_OP_ACCESS_RW, access_id, {
      uptr: tmp,
    });
    // buffer16[i] = rand() / tmp[i] = rand(): little-endian u16 words (the model is x86-64).
    // Written as bytes: the `.buffer` of a small Uint16Array would move its storage off the heap
    // on every call.
    const fill = (va: bigint, len: number) => {
      const bytes = new Uint8Array(len & ~1);
      for (let i = 0; i < bytes.length; i += 2) {
        const word = rand();
        bytes[i] = word;
        bytes[i + 1] = word >>> 8;
      }
      libc.poke(va, bytes);
    };
    fill(buffer, BUFFER_SIZE);
    const P = BigInt(PAGE_SIZE);
    for (access_cmd.iova = iova + P - 50n; access_cmd.iova < iova + P + 50n; access_cmd.iova++) {
      for (access_cmd.length = 1n; access_cmd.length < BigInt(TMP); access_cmd.length++) {
        const len = Number(access_cmd.length);
        const at = buffer + (access_cmd.iova - iova);
        access_cmd.flags = def_flags;
        t.ASSERT_EQ(0, libc.ioctl(fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
        t.ASSERT_TRUE(memeq(t, at, tmp, len));
        fill(tmp, TMP);
        access_cmd.flags = def_flags | MOCK_ACCESS_RW_WRITE;
        t.ASSERT_EQ(0, libc.ioctl(fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
        t.ASSERT_TRUE(memeq(t, at, tmp, len));
      }
    }
    // Multi-page test
    const tmp2 = libc.malloc(BUFFER_SIZE);
    access_cmd.iova = iova;
    access_cmd.length = BigInt(BUFFER_SIZE);
    access_cmd.flags = def_flags;
    access_cmd.uptr = tmp2;
    t.ASSERT_EQ(0, libc.ioctl(fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
    t.ASSERT_TRUE(memeq(t, buffer, tmp2, BUFFER_SIZE));
  }

  TEST_F(iommufd_ioas, "access_rw_unaligned", (self, _v, t) => {
    const access_id = test_cmd_create_access(t, self.ioas_id, 0);
    // Unaligned pages
    const iova = self.base_iova + BigInt(MOCK_PAGE_SIZE);
    test_ioctl_ioas_map_fixed(t, t.sys.buffer, t.sys.BUFFER_SIZE, iova);
    check_access_rw(t, self.fd, access_id, iova, 0);
    test_ioctl_ioas_unmap(t, iova, t.sys.BUFFER_SIZE);
    test_cmd_destroy_access(t, access_id);
  });

  TEST_F(iommufd_ioas, "fork_present", (self, _v, t) => {
    const { libc, buffer, BUFFER_SIZE } = t.sys;
    const pipefds: [number, number] = [-1, -1];
    const one = new Uint8Array(8);
    new DataView(one.buffer).setBigUint64(0, 1n, true);
    const tmp = new Uint8Array(8);
    const access_id = test_cmd_create_access(t, self.ioas_id, 0);
    t.ASSERT_EQ(0, libc.pipe2(pipefds, O_CLOEXEC));
    const efd = libc.eventfd(0, EFD_CLOEXEC);
    t.ASSERT_NE(-1, efd);

    // Create a mapping with a different mm
    const child = fork(t, function* (c) {
      const cl = c.sys.libc;
      const iova = new Uint8Array(8);
      cl.close(pipefds[1]);
      test_ioctl_ioas_map_fixed(c, buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      if (cl.write(efd, one) !== one.length) return 100;
      // Sleeps in read() until the parent closes its end of the pipe.
      yield () => cl.poll([{ fd: pipefds[0], events: POLLIN, revents: 0 }], 0) > 0;
      if (cl.read(pipefds[0], iova, 1) !== 1) return 100;
      return 0;
    });
    libc.close(pipefds[0]);
    t.ASSERT_NE(-1, child.pid);
    t.ASSERT_EQ(8, libc.read(efd, tmp));

    // Read pages from the remote process
    test_cmd_mock_domain(t, self.ioas_id);
    check_access_rw(t, self.fd, access_id, MOCK_APERTURE_START, 0);

    t.ASSERT_EQ(0, libc.close(pipefds[1]));
    t.ASSERT_EQ(child.pid, waitpid(t, child));

    test_cmd_destroy_access(t, access_id);
  });

  TEST_F(iommufd_ioas, "ioas_option_huge_pages", (self, _v, t) => {
    const { libc } = t.sys;
    const cmd = ustruct(iommu_option, {
      size: iommu_option.size,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_GET,
      val64: 3,
      object_id: self.ioas_id,
    });
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    t.ASSERT_EQ(1, cmd.val64);
    cmd.op = IOMMU_OPTION_OP_SET;
    cmd.val64 = 0n;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    cmd.op = IOMMU_OPTION_OP_GET;
    cmd.val64 = 3n;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    t.ASSERT_EQ(0, cmd.val64);
    cmd.op = IOMMU_OPTION_OP_SET;
    cmd.val64 = 2n;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$));
    cmd.op = IOMMU_OPTION_OP_SET;
    cmd.val64 = 1n;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
  });

  TEST_F(iommufd_ioas, "dmabuf_simple", (_self, _v, t) => {
    const buf_size = t.sys.PAGE_SIZE * 4;
    const dfd = test_cmd_get_dmabuf(t, buf_size);
    test_err_ioctl_ioas_map_file(t, EINVAL, dfd, 0, 0);
    test_err_ioctl_ioas_map_file(t, EINVAL, dfd, buf_size, buf_size);
    test_err_ioctl_ioas_map_file(t, EINVAL, dfd, 0, buf_size + 1);
    test_ioctl_ioas_map_file(t, dfd, 0, buf_size);
    t.sys.libc.close(dfd);
  });

  // ---- FIXTURE(iommufd_mock_domain) ------------------------------------------------------------

  interface MockDomainVariant {
    mock_domains: number;
    hugepages: boolean;
    file: boolean;
  }
  const iommufd_mock_domain = FIXTURE(
    "iommufd_mock_domain",
    () => ({
      fd: -1,
      ioas_id: 0,
      hwpt_id: 0,
      hwpt_ids: [0, 0],
      stdev_ids: [0, 0],
      idev_ids: [0, 0],
      mmap_flags: 0,
      mmap_buf_size: 0,
    }),
    FIXTURE_VARIANT<MockDomainVariant>(),
  );
  FIXTURE_SETUP(iommufd_mock_domain, (self, variant, t) => {
    self.fd = t.sys.libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
    self.ioas_id = test_ioctl_ioas_alloc(t);
    t.ASSERT_GE(self.hwpt_ids.length, variant.mock_domains);
    for (let i = 0; i !== variant.mock_domains; i++) {
      const ids = test_cmd_mock_domain(t, self.ioas_id);
      self.stdev_ids[i] = ids.stdev_id;
      self.hwpt_ids[i] = ids.hwpt_id;
      self.idev_ids[i] = ids.idev_id;
      test_cmd_dev_check_cache_all(t, self.idev_ids[0]!, IOMMU_TEST_DEV_CACHE_DEFAULT);
    }
    self.hwpt_id = self.hwpt_ids[0]!;
    self.mmap_flags = MAP_SHARED | MAP_ANONYMOUS;
    self.mmap_buf_size = t.sys.PAGE_SIZE * 8;
    if (variant.hugepages) {
      self.mmap_flags |= MAP_HUGETLB | MAP_POPULATE;
      self.mmap_buf_size = t.sys.HUGEPAGE_SIZE * 2;
    }
  });
  FIXTURE_TEARDOWN(iommufd_mock_domain, (self, _v, t) => teardown_iommufd(t, self.fd));
  FIXTURE_VARIANT_ADD(iommufd_mock_domain, "one_domain", {
    mock_domains: 1,
    hugepages: false,
    file: false,
  });
  FIXTURE_VARIANT_ADD(iommufd_mock_domain, "two_domains", {
    mock_domains: 2,
    hugepages: false,
    file: false,
  });
  FIXTURE_VARIANT_ADD(iommufd_mock_domain, "one_domain_hugepage", {
    mock_domains: 1,
    hugepages: true,
    file: false,
  });
  FIXTURE_VARIANT_ADD(iommufd_mock_domain, "two_domains_hugepage", {
    mock_domains: 2,
    hugepages: true,
    file: false,
  });
  FIXTURE_VARIANT_ADD(iommufd_mock_domain, "one_domain_file", {
    mock_domains: 1,
    hugepages: false,
    file: true,
  });
  FIXTURE_VARIANT_ADD(iommufd_mock_domain, "one_domain_file_hugepage", {
    mock_domains: 1,
    hugepages: true,
    file: true,
  });

  type MockSelf = ReturnType<typeof iommufd_mock_domain.init>;

  /** check_mock_iova(): the kernel checks the user pages made it to every mock domain. */
  function check_mock_iova(
    t: Ctx,
    self: MockSelf,
    ptr: bigint,
    iova: bigint,
    length: number | bigint,
  ): void {
    const check_map_cmd = iommuTestCmd(
      iommu_test_cmd.check_map,
      IOMMU_TEST_OP_MD_CHECK_MAP,
      self.hwpt_id,
      {
        iova,
        length,
        uptr: ptr,
      },
    );
    t.ASSERT_EQ(0, t.sys.libc.ioctl(self.fd, IOMMU_TEST_CMD, check_map_cmd.$), why(t));
    if (self.hwpt_ids[1]) {
      check_map_cmd.id = self.hwpt_ids[1];
      t.ASSERT_EQ(0, t.sys.libc.ioctl(self.fd, IOMMU_TEST_CMD, check_map_cmd.$), why(t));
    }
  }

  function test_basic_mmap(t: Ctx, self: MockSelf): void {
    const { libc, buffer, PAGE_SIZE } = t.sys;
    const buf_size = self.mmap_buf_size;
    // Simple one page map
    const iova = test_ioctl_ioas_map(t, buffer, PAGE_SIZE);
    check_mock_iova(t, self, buffer, iova, PAGE_SIZE);
    const buf = libc.mmap(0n, buf_size, PROT_READ | PROT_WRITE, self.mmap_flags, -1, 0);
    t.ASSERT_NE(MAP_FAILED, buf);
    // EFAULT half way through mapping
    t.ASSERT_EQ(0, libc.munmap(buf + BigInt(buf_size / 2), buf_size / 2), why(t));
    test_err_ioctl_ioas_map(t, EFAULT, buf, buf_size);
    // EFAULT on first page
    t.ASSERT_EQ(0, libc.munmap(buf, buf_size / 2), why(t));
    test_err_ioctl_ioas_map(t, EFAULT, buf, buf_size);
  }

  function test_basic_file(t: Ctx, self: MockSelf): void {
    const { libc, mfd, mfd_buffer, PAGE_SIZE } = t.sys;
    const buf_size = self.mmap_buf_size;
    // Simple one page map
    const iova = test_ioctl_ioas_map_file(t, mfd, 0, PAGE_SIZE);
    check_mock_iova(t, self, mfd_buffer, iova, PAGE_SIZE);
    const { buf, mfd: mfd_tmp } = memfd_mmap(libc, buf_size, PROT_READ | PROT_WRITE, MAP_SHARED);
    t.ASSERT_NE(MAP_FAILED, buf);
    test_err_ioctl_ioas_map_file(t, EINVAL, mfd_tmp, 0, buf_size + 1);
    t.ASSERT_EQ(0, libc.ftruncate(mfd_tmp, 0), why(t));
    test_err_ioctl_ioas_map_file(t, EINVAL, mfd_tmp, 0, buf_size);
    libc.close(mfd_tmp);
  }

  TEST_F(iommufd_mock_domain, "basic", (self, variant, t) => {
    if (variant.file) test_basic_file(t, self);
    else test_basic_mmap(t, self);
  });

  /**
   * A file nobody may write, in place of the C's /proc/self/exe (the model runs no executable
   * image): a sealed memfd (F_SEAL_WRITE, as ETXTBSY keeps a running binary unwritten) holding
   * one page of bytes, so that the private mapping below starts on page-cache pages just as a
   * MAP_PRIVATE mapping of the binary does.
   */
  function open_readonly_file(t: Ctx): number {
    const { libc, PAGE_SIZE } = t.sys;
    const fd = libc.memfdCreate("exe", MFD_ALLOW_SEALING);
    if (fd < 0) return -1;
    const image = new Uint8Array(PAGE_SIZE).map((_, i) => (i * 7 + 0x7f) & 0xff);
    if (libc.pwrite(fd, image, 0) !== PAGE_SIZE) return -1;
    if (libc.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)) return -1;
    return fd;
  }

  TEST_F(iommufd_mock_domain, "ro_unshare", (self, _v, t) => {
    const { libc, PAGE_SIZE } = t.sys;
    const fd = open_readonly_file(t);
    t.ASSERT_NE(-1, fd, why(t));
    const buf = libc.mmap(0n, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    t.ASSERT_NE(MAP_FAILED, buf, why(t));
    libc.close(fd);
    // A read-only long-term pin of a page-cache page in a COW mapping must unshare it first
    // (mm/gup.c gup_must_unshare): the CPU's later write then keeps the PFN the domain has.
    const iova = ref(0n);
    t.ASSERT_EQ(
      0,
      _test_ioctl_ioas_map(
        t.sys,
        self.fd,
        self.ioas_id,
        buf,
        PAGE_SIZE,
        iova,
        IOMMU_IOAS_MAP_READABLE,
      ),
      why(t),
    );
    check_mock_iova(t, self, buf, iova.v, PAGE_SIZE);
    libc.poke(buf, new Uint8Array(PAGE_SIZE).fill(1));
    check_mock_iova(t, self, buf, iova.v, PAGE_SIZE);
    t.ASSERT_EQ(0, libc.munmap(buf, PAGE_SIZE), why(t));
  });

  TEST_F(iommufd_mock_domain, "all_aligns", (self, variant, t) => {
    const { libc, PAGE_SIZE } = t.sys;
    const test_step = variant.hugepages ? self.mmap_buf_size / 16 : MOCK_PAGE_SIZE;
    const buf_size = self.mmap_buf_size;
    const prot = PROT_READ | PROT_WRITE;
    let mfd = -1;
    let buf: bigint;
    if (variant.file) ({ buf, mfd } = memfd_mmap(libc, buf_size, prot, MAP_SHARED));
    else buf = libc.mmap(0n, buf_size, prot, self.mmap_flags, -1, 0);
    t.ASSERT_NE(MAP_FAILED, buf);
    if (variant.file) t.ASSERT_GT(mfd, 0);
    check_refs(t, buf, buf_size, 0);
    // Every combination of page size and alignment within a big region (fewer for huge pages).
    for (let start = 0; start < buf_size; start += test_step) {
      let end = variant.hugepages ? buf_size : start + MOCK_PAGE_SIZE;
      for (; end < buf_size; end += MOCK_PAGE_SIZE) {
        const length = end - start;
        const iova = variant.file
          ? test_ioctl_ioas_map_file(t, mfd, start, length)
          : test_ioctl_ioas_map(t, buf + BigInt(start), length);
        check_mock_iova(t, self, buf + BigInt(start), iova, length);
        const pstart = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
        const pend = Math.floor(end / PAGE_SIZE) * PAGE_SIZE;
        check_refs(t, buf + BigInt(pstart), pend - pstart, 1);
        test_ioctl_ioas_unmap(t, iova, length);
      }
    }
    check_refs(t, buf, buf_size, 0);
    t.ASSERT_EQ(0, libc.munmap(buf, buf_size), why(t));
    if (variant.file) libc.close(mfd);
  });

  TEST_F(iommufd_mock_domain, "user_copy", (self, variant, t) => {
    const { libc, buffer, mfd, mfd_buffer, BUFFER_SIZE } = t.sys;
    const buf = variant.file ? mfd_buffer : buffer;
    const access_cmd = iommuTestCmd(iommu_test_cmd.access_pages, IOMMU_TEST_OP_ACCESS_PAGES, 0, {
      length: BUFFER_SIZE,
      uptr: buf,
    });
    const copy_cmd = ustruct(iommu_ioas_copy, {
      size: iommu_ioas_copy.size,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
      dst_ioas_id: self.ioas_id,
      dst_iova: MOCK_APERTURE_START,
      length: BUFFER_SIZE,
    });
    const unmap_cmd = ustruct(iommu_ioas_unmap, {
      size: iommu_ioas_unmap.size,
      ioas_id: self.ioas_id,
      iova: MOCK_APERTURE_START,
      length: BUFFER_SIZE,
    });
    // Pin the pages in an IOAS with no domains then copy to an IOAS with domains
    const ioas_id = test_ioctl_ioas_alloc(t);
    copy_cmd.src_iova = variant.file
      ? test_ioctl_ioas_map_id_file(t, ioas_id, mfd, 0, BUFFER_SIZE)
      : test_ioctl_ioas_map_id(t, ioas_id, buf, BUFFER_SIZE);
    access_cmd.id = test_cmd_create_access(t, ioas_id, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
    access_cmd.iova = copy_cmd.src_iova;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
    copy_cmd.src_ioas_id = ioas_id;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_COPY, copy_cmd.$), why(t));
    check_mock_iova(t, self, buf, MOCK_APERTURE_START, BUFFER_SIZE);
    // Now replace the ioas with a new one
    const new_ioas_id = test_ioctl_ioas_alloc(t);
    copy_cmd.src_iova = variant.file
      ? test_ioctl_ioas_map_id_file(t, new_ioas_id, mfd, 0, BUFFER_SIZE)
      : test_ioctl_ioas_map_id(t, new_ioas_id, buf, BUFFER_SIZE);
    test_cmd_access_replace_ioas(t, access_cmd.id, new_ioas_id);
    // Destroy the old ioas and cleanup copied mapping
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_UNMAP, unmap_cmd.$), why(t));
    test_ioctl_destroy(t, ioas_id);
    // Then run the same test again with the new ioas
    access_cmd.iova = copy_cmd.src_iova;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$), why(t));
    copy_cmd.src_ioas_id = new_ioas_id;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_COPY, copy_cmd.$), why(t));
    check_mock_iova(t, self, buf, MOCK_APERTURE_START, BUFFER_SIZE);
    test_cmd_destroy_access_pages(t, access_cmd.id, access_cmd.out_access_pages_id);
    test_cmd_destroy_access(t, access_cmd.id);
    test_ioctl_destroy(t, new_ioas_id);
  });

  TEST_F(iommufd_mock_domain, "replace", (self, variant, t) => {
    const ioas_id = test_ioctl_ioas_alloc(t);
    test_cmd_mock_domain_replace(t, self.stdev_ids[0]!, ioas_id);
    // Replacing the IOAS frees the prior HWPT, so using it again is ENOENT.
    if (variant.mock_domains === 1)
      test_err_mock_domain_replace(t, ENOENT, self.stdev_ids[0]!, self.hwpt_ids[0]!);
    test_cmd_mock_domain_replace(t, self.stdev_ids[0]!, ioas_id);
    if (variant.mock_domains >= 2) {
      test_cmd_mock_domain_replace(t, self.stdev_ids[0]!, self.hwpt_ids[1]!);
      test_cmd_mock_domain_replace(t, self.stdev_ids[0]!, self.hwpt_ids[1]!);
      test_cmd_mock_domain_replace(t, self.stdev_ids[0]!, self.hwpt_ids[0]!);
    }
    test_cmd_mock_domain_replace(t, self.stdev_ids[0]!, self.ioas_id);
    test_ioctl_destroy(t, ioas_id);
  });

  // ---- FIXTURE(vfio_compat_mock_domain) --------------------------------------------------------

  const vfio_compat_mock_domain = FIXTURE(
    "vfio_compat_mock_domain",
    () => ({ fd: -1, ioas_id: 0 }),
    FIXTURE_VARIANT<{ version: number }>(),
  );
  FIXTURE_SETUP(vfio_compat_mock_domain, (self, variant, t) => {
    const { libc } = t.sys;
    const vfio_ioas_cmd = ustruct(iommu_vfio_ioas, {
      size: iommu_vfio_ioas.size,
      op: IOMMU_VFIO_IOAS_SET,
    });
    self.fd = libc.open("/dev/iommu", O_RDWR);
    t.ASSERT_NE(-1, self.fd);
    // Create what VFIO would consider a group
    self.ioas_id = test_ioctl_ioas_alloc(t);
    test_cmd_mock_domain(t, self.ioas_id);
    // Attach it to the vfio compat
    vfio_ioas_cmd.ioas_id = self.ioas_id;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_VFIO_IOAS, vfio_ioas_cmd.$), why(t));
    t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_SET_IOMMU, variant.version), why(t));
  });
  FIXTURE_TEARDOWN(vfio_compat_mock_domain, (self, _v, t) => teardown_iommufd(t, self.fd));
  FIXTURE_VARIANT_ADD(vfio_compat_mock_domain, "Ver1v2", { version: VFIO_TYPE1v2_IOMMU });
  FIXTURE_VARIANT_ADD(vfio_compat_mock_domain, "Ver1v0", { version: VFIO_TYPE1_IOMMU });

  TEST_F(vfio_compat_mock_domain, "option_huge_pages", (self, variant, t) => {
    const cmd = ustruct(iommu_option, {
      size: iommu_option.size,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_GET,
      val64: 3,
      object_id: self.ioas_id,
    });
    t.ASSERT_EQ(0, t.sys.libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    if (variant.version === VFIO_TYPE1_IOMMU) t.ASSERT_EQ(0, cmd.val64);
    else t.ASSERT_EQ(1, cmd.val64);
  });

  TEST_F(vfio_compat_mock_domain, "get_info", (self, _v, t) => {
    const { buffer } = t.sys;
    const info = vfio_iommu_type1_info;
    const flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;
    const setInfo = (argsz: number) => t.sys.libc.poke(buffer, info.encode({ argsz }));
    const readInfo = () => info.decode(t.sys.libc.peek(buffer, info.size));
    // Pre-cap ABI
    setInfo(info.fields.cap_offset[0]);
    ioctl_check_buf(t, self.fd, VFIO_IOMMU_GET_INFO);
    t.ASSERT_NE(0, readInfo().iova_pgsizes);
    t.ASSERT_EQ(flags, readInfo().flags);
    // Read the cap chain size
    setInfo(info.size);
    ioctl_check_buf(t, self.fd, VFIO_IOMMU_GET_INFO);
    t.ASSERT_NE(0, readInfo().iova_pgsizes);
    t.ASSERT_EQ(flags, readInfo().flags);
    t.ASSERT_EQ(0, readInfo().cap_offset);
    t.ASSERT_LT(info.size, readInfo().argsz);
    // Every argsz short of the full chain: the header is complete, the chain never corrupt
    const caplen = readInfo().argsz;
    for (let i = info.size; i < caplen; i++) {
      setInfo(i);
      ioctl_check_buf(t, self.fd, VFIO_IOMMU_GET_INFO);
      const got = readInfo();
      t.ASSERT_EQ(flags, got.flags);
      if (!got.cap_offset) continue;
      check_vfio_info_cap_chain(t, got);
    }
  });

  TEST_F(vfio_compat_mock_domain, "map", (self, _v, t) => {
    const { libc, buffer, BUFFER_SIZE, PAGE_SIZE } = t.sys;
    const map_cmd = ustruct(vfio_iommu_type1_dma_map, {
      argsz: vfio_iommu_type1_dma_map.size,
      flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
      vaddr: buffer,
      size: BUFFER_SIZE,
      iova: MOCK_APERTURE_START,
    });
    const unmap_cmd = ustruct(vfio_iommu_type1_dma_unmap, {
      argsz: vfio_iommu_type1_dma_unmap.size,
      size: BUFFER_SIZE,
      iova: MOCK_APERTURE_START,
    });
    const pages_iova: bigint[] = [];
    // Simple map/unmap
    t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_MAP_DMA, map_cmd.$), why(t));
    t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$), why(t));
    t.ASSERT_EQ(BUFFER_SIZE, unmap_cmd.size);
    // Unmap of empty is success
    t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$), why(t));
    // UNMAP_FLAG_ALL requires 0 iova/size
    t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_MAP_DMA, map_cmd.$), why(t));
    unmap_cmd.flags = VFIO_DMA_UNMAP_FLAG_ALL;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$));
    unmap_cmd.iova = 0n;
    unmap_cmd.size = 0n;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$), why(t));
    t.ASSERT_EQ(BUFFER_SIZE, unmap_cmd.size);
    // Small pages
    for (let i = 0; i !== BUFFER_SIZE / PAGE_SIZE; i++) {
      pages_iova[i] = MOCK_APERTURE_START + BigInt(i * PAGE_SIZE);
      map_cmd.iova = pages_iova[i]!;
      map_cmd.vaddr = buffer + BigInt(i * PAGE_SIZE);
      map_cmd.size = BigInt(PAGE_SIZE);
      t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_MAP_DMA, map_cmd.$), why(t));
    }
    shuffle(makeRand(3), pages_iova);
    unmap_cmd.flags = 0;
    unmap_cmd.size = BigInt(PAGE_SIZE);
    for (const iova of pages_iova) {
      unmap_cmd.iova = iova;
      t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$), why(t));
    }
  });

  // ---- More tests of the same file, same names ------------------------------------------------

  TEST_F(iommufd, "cmd_ex_fail", (self, _v, t) => {
    const { libc } = t.sys;
    // struct { struct iommu_destroy cmd; __u64 future; }
    const cmd = ustruct(iommu_destroy, { size: iommu_destroy.size + 8, id: 0 }, 8);
    // object id is invalid and command is longer
    EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_DESTROY, cmd.$));
    // future area is non-zero
    cmd.$[iommu_destroy.size] = 1;
    EXPECT_ERRNO(t, E2BIG, libc.ioctl(self.fd, IOMMU_DESTROY, cmd.$));
    // Original command "works"
    cmd.size = iommu_destroy.size;
    EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_DESTROY, cmd.$));
    // Short command fails
    cmd.size = iommu_destroy.size - 1;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_DESTROY, cmd.$));
  });

  TEST_F(iommufd, "global_options", (self, _v, t) => {
    const { libc } = t.sys;
    const cmd = ustruct(iommu_option, {
      size: iommu_option.size,
      option_id: IOMMU_OPTION_RLIMIT_MODE,
      op: IOMMU_OPTION_OP_GET,
      val64: 1,
    });
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    t.ASSERT_EQ(0, cmd.val64);
    // This requires root
    cmd.op = IOMMU_OPTION_OP_SET;
    cmd.val64 = 1n;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    cmd.val64 = 2n;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$));
    cmd.op = IOMMU_OPTION_OP_GET;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    t.ASSERT_EQ(1, cmd.val64);
    cmd.op = IOMMU_OPTION_OP_SET;
    cmd.val64 = 0n;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    cmd.op = IOMMU_OPTION_OP_GET;
    cmd.option_id = IOMMU_OPTION_HUGE_PAGES;
    EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$));
    cmd.op = IOMMU_OPTION_OP_SET;
    EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$));
  });

  TEST_F(iommufd, "simple_ioctls", (self, _v, t) => {
    const { libc } = t.sys;
    t.ASSERT_EQ(VFIO_API_VERSION, libc.ioctl(self.fd, VFIO_GET_API_VERSION), why(t));
    t.ASSERT_EQ(1, libc.ioctl(self.fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), why(t));
  });

  TEST_F(iommufd, "map_cmd", (self, _v, t) => {
    const { libc, buffer, PAGE_SIZE } = t.sys;
    const map_cmd = ustruct(vfio_iommu_type1_dma_map, {
      iova: MOCK_APERTURE_START,
      size: PAGE_SIZE,
      vaddr: buffer,
    });
    map_cmd.argsz = 1;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, VFIO_IOMMU_MAP_DMA, map_cmd.$));
    map_cmd.argsz = vfio_iommu_type1_dma_map.size;
    map_cmd.flags = 1 << 31;
    EXPECT_ERRNO(t, EINVAL, libc.ioctl(self.fd, VFIO_IOMMU_MAP_DMA, map_cmd.$));
    // Requires a domain to be attached
    map_cmd.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    EXPECT_ERRNO(t, ENODEV, libc.ioctl(self.fd, VFIO_IOMMU_MAP_DMA, map_cmd.$));
  });

  TEST_F(iommufd, "set_iommu_cmd", (self, _v, t) => {
    const { libc } = t.sys;
    // Requires a domain to be attached
    EXPECT_ERRNO(t, ENODEV, libc.ioctl(self.fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
    EXPECT_ERRNO(t, ENODEV, libc.ioctl(self.fd, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU));
  });

  TEST_F(iommufd_ioas, "ioas_auto_destroy", () => {});

  TEST_F(iommufd_ioas, "ioas_area_auto_destroy", (self, _v, t) => {
    // Can allocate and automatically free an IOAS table with many areas
    for (let i = 0n; i !== 10n; i++)
      test_ioctl_ioas_map_fixed(
        t,
        t.sys.buffer,
        t.sys.PAGE_SIZE,
        self.base_iova + i * BigInt(t.sys.PAGE_SIZE),
      );
  });

  TEST_F(iommufd_ioas, "unmap_fully_contained_areas", (self, _v, t) => {
    const { buffer, PAGE_SIZE } = t.sys;
    const P = BigInt(PAGE_SIZE);
    // Give no_domain some space to rewind base_iova
    self.base_iova += 4n * P;
    for (let i = 0n; i !== 4n; i++)
      test_ioctl_ioas_map_fixed(t, buffer, 8 * PAGE_SIZE, self.base_iova + i * 16n * P);
    // Unmap not fully contained area doesn't work
    test_err_ioctl_ioas_unmap(t, ENOENT, self.base_iova - 4n * P, 8 * PAGE_SIZE);
    test_err_ioctl_ioas_unmap(
      t,
      ENOENT,
      self.base_iova + 3n * 16n * P + 8n * P - 4n * P,
      8 * PAGE_SIZE,
    );
    // Unmap fully contained areas works
    const unmap_len = ref(0n);
    t.ASSERT_EQ(
      0,
      _test_ioctl_ioas_unmap(
        t.sys,
        self.fd,
        self.ioas_id,
        self.base_iova - 4n * P,
        3n * 16n * P + 8n * P + 4n * P,
        unmap_len,
      ),
      why(t),
    );
    t.ASSERT_EQ(32n * P, unmap_len.v);
  });

  TEST_F(iommufd_ioas, "reserved_overflow", (self, _v, t) => {
    const test_cmd = iommuTestCmd(
      iommu_test_cmd.add_reserved,
      IOMMU_TEST_OP_ADD_RESERVED,
      self.ioas_id,
      {
        start: 6,
      },
    );
    // PAGE_SIZE is 4096 in the model.
    test_cmd.length = 0xffffffffffff8001n;
    const map_len = 0x5000;
    t.ASSERT_EQ(0, t.sys.libc.ioctl(self.fd, IOMMU_TEST_CMD, test_cmd.$), why(t));
    test_err_ioctl_ioas_map(t, ENOSPC, t.sys.buffer, map_len);
  });

  TEST_F(iommufd_ioas, "area_allowed", (self, _v, t) => {
    const { libc, PAGE_SIZE } = t.sys;
    const P = BigInt(PAGE_SIZE);
    const test_cmd = iommuTestCmd(
      iommu_test_cmd.add_reserved,
      IOMMU_TEST_OP_ADD_RESERVED,
      self.ioas_id,
      {
        start: PAGE_SIZE * 4,
        length: PAGE_SIZE * 100,
      },
    );
    const rangesVa = libc.malloc(iommu_iova_range.size);
    const allow_cmd = ustruct(iommu_ioas_allow_iovas, {
      size: iommu_ioas_allow_iovas.size,
      ioas_id: self.ioas_id,
      num_iovas: 1,
      allowed_iovas: rangesVa,
    });
    // Reserved intersects an allowed
    let start = self.base_iova;
    libc.poke(rangesVa, iommu_iova_range.encode({ start, last: start + P * 600n }));
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_ALLOW_IOVAS, allow_cmd.$), why(t));
    test_cmd.start = start + P;
    test_cmd.length = P;
    EXPECT_ERRNO(t, EADDRINUSE, libc.ioctl(self.fd, IOMMU_TEST_CMD, test_cmd.$));
    allow_cmd.num_iovas = 0;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_ALLOW_IOVAS, allow_cmd.$), why(t));
    // Allowed intersects a reserved
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_TEST_CMD, test_cmd.$), why(t));
    allow_cmd.num_iovas = 1;
    start = self.base_iova;
    libc.poke(rangesVa, iommu_iova_range.encode({ start, last: start + P * 600n }));
    EXPECT_ERRNO(t, EADDRINUSE, libc.ioctl(self.fd, IOMMU_IOAS_ALLOW_IOVAS, allow_cmd.$));
  });

  TEST_F(iommufd_ioas, "access_pin_unmap", (self, _v, t) => {
    const { buffer, BUFFER_SIZE } = t.sys;
    const access_pages_cmd = iommuTestCmd(
      iommu_test_cmd.access_pages,
      IOMMU_TEST_OP_ACCESS_PAGES,
      0,
      {
        iova: MOCK_APERTURE_START,
        length: BUFFER_SIZE,
        uptr: buffer,
      },
    );
    access_pages_cmd.id = test_cmd_create_access(
      t,
      self.ioas_id,
      MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
    );
    test_ioctl_ioas_map_fixed(t, buffer, BUFFER_SIZE, MOCK_APERTURE_START);
    t.ASSERT_EQ(0, t.sys.libc.ioctl(self.fd, IOMMU_TEST_CMD, access_pages_cmd.$), why(t));
    // Trigger the unmap op
    test_ioctl_ioas_unmap(t, MOCK_APERTURE_START, BUFFER_SIZE);
    // kernel removed the item for us
    test_err_destroy_access_pages(
      t,
      ENOENT,
      access_pages_cmd.id,
      access_pages_cmd.out_access_pages_id,
    );
  });

  TEST_F(iommufd_ioas, "access_rw", (self, _v, t) => {
    const access_id = test_cmd_create_access(t, self.ioas_id, 0);
    const iova = test_ioctl_ioas_map(t, t.sys.buffer, t.sys.BUFFER_SIZE);
    check_access_rw(t, self.fd, access_id, iova, 0);
    check_access_rw(t, self.fd, access_id, iova, MOCK_ACCESS_RW_SLOW_PATH);
    test_ioctl_ioas_unmap(t, iova, t.sys.BUFFER_SIZE);
    test_cmd_destroy_access(t, access_id);
  });

  TEST_F(iommufd_ioas, "fork_gone", (self, _v, t) => {
    const access_id = test_cmd_create_access(t, self.ioas_id, 0);

    // Create a mapping with a different mm
    const child = fork(t, (c) => {
      test_ioctl_ioas_map_fixed(c, c.sys.buffer, c.sys.BUFFER_SIZE, MOCK_APERTURE_START);
      return 0;
    });
    t.ASSERT_NE(-1, child.pid);
    t.ASSERT_EQ(child.pid, waitpid(t, child));

    if (self.stdev_id) {
      // The child's map pinned the pages into the existing domain; the new one is filled
      // from it.
      test_cmd_mock_domain(t, self.ioas_id);
      check_access_rw(t, self.fd, access_id, MOCK_APERTURE_START, 0);
    } else {
      // Otherwise the pages would have to be pinned now, from the exited mm: EFAULT.
      test_err_mock_domain(t, EFAULT, self.ioas_id);
    }
    test_cmd_destroy_access(t, access_id);
  });

  TEST_F(iommufd_ioas, "ioas_iova_alloc", (_self, variant, t) => {
    const { buffer, PAGE_SIZE } = t.sys;
    for (let length = 1; length !== PAGE_SIZE * 2; length++) {
      if (variant.mock_domains && length % MOCK_PAGE_SIZE) {
        test_err_ioctl_ioas_map(t, EINVAL, buffer, length);
      } else {
        const iova = test_ioctl_ioas_map(t, buffer, length);
        test_ioctl_ioas_unmap(t, iova, length);
      }
    }
  });

  TEST_F(iommufd_ioas, "ioas_align_change", (self, variant, t) => {
    const { libc, buffer, PAGE_SIZE } = t.sys;
    const P = BigInt(PAGE_SIZE);
    const cmd = ustruct(iommu_option, {
      size: iommu_option.size,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_SET,
      object_id: self.ioas_id,
      // 0 means everything must be aligned to PAGE_SIZE
      val64: 0,
    });
    // The alignment cannot be upgraded while a domain and a map are present.
    if (variant.mock_domains) return;
    // We can upgrade to PAGE_SIZE alignment when things are aligned right
    test_ioctl_ioas_map_fixed(t, buffer, PAGE_SIZE, MOCK_APERTURE_START);
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    // Misalignment is rejected at map time
    test_err_ioctl_ioas_map_fixed(
      t,
      EINVAL,
      buffer + BigInt(MOCK_PAGE_SIZE),
      PAGE_SIZE,
      MOCK_APERTURE_START + P,
    );
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    // Reduce alignment
    cmd.val64 = 1n;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$), why(t));
    // Confirm misalignment is rejected during alignment upgrade
    test_ioctl_ioas_map_fixed(
      t,
      buffer + BigInt(MOCK_PAGE_SIZE),
      PAGE_SIZE,
      MOCK_APERTURE_START + P,
    );
    cmd.val64 = 0n;
    EXPECT_ERRNO(t, EADDRINUSE, libc.ioctl(self.fd, IOMMU_OPTION, cmd.$));
    test_ioctl_ioas_unmap(t, MOCK_APERTURE_START + P, PAGE_SIZE);
    test_ioctl_ioas_unmap(t, MOCK_APERTURE_START, PAGE_SIZE);
  });

  TEST_F(iommufd_ioas, "copy_sweep", (self, variant, t) => {
    const { libc, buffer, BUFFER_SIZE, PAGE_SIZE } = t.sys;
    const copy_cmd = ustruct(iommu_ioas_copy, {
      size: iommu_ioas_copy.size,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
      src_ioas_id: self.ioas_id,
      dst_iova: MOCK_APERTURE_START,
      length: MOCK_PAGE_SIZE,
    });
    const dst_ioas_id = test_ioctl_ioas_alloc(t);
    copy_cmd.dst_ioas_id = dst_ioas_id;
    const last_iova = MOCK_APERTURE_START + BigInt(BUFFER_SIZE) - (variant.mock_domains ? 1n : 2n);
    test_ioctl_ioas_map_fixed(t, buffer, last_iova - MOCK_APERTURE_START + 1n, MOCK_APERTURE_START);
    for (let iova = MOCK_APERTURE_START - BigInt(PAGE_SIZE); iova <= last_iova; iova += 511n) {
      copy_cmd.src_iova = iova;
      if (iova < MOCK_APERTURE_START || iova + copy_cmd.length - 1n > last_iova) {
        EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, IOMMU_IOAS_COPY, copy_cmd.$));
      } else {
        t.ASSERT_EQ(0, libc.ioctl(self.fd, IOMMU_IOAS_COPY, copy_cmd.$), why(t));
        test_ioctl_ioas_unmap_id(t, dst_ioas_id, copy_cmd.dst_iova, copy_cmd.length);
      }
    }
    test_ioctl_destroy(t, dst_ioas_id);
  });

  TEST_F(iommufd_ioas, "dmabuf_revoke", (self, variant, t) => {
    const buf_size = t.sys.PAGE_SIZE * 4;
    const dfd = test_cmd_get_dmabuf(t, buf_size);
    const iova = test_ioctl_ioas_map_file(t, dfd, 0, buf_size);
    test_cmd_revoke_dmabuf(t, dfd, true);
    if (variant.mock_domains) test_cmd_hwpt_alloc(t, self.device_id, self.ioas_id, 0);
    test_err_ioctl_ioas_map_file(t, ENODEV, dfd, 0, buf_size);
    test_cmd_revoke_dmabuf(t, dfd, false);
    test_ioctl_ioas_map_file(t, dfd, 0, buf_size);
    // Restore the iova back
    test_ioctl_ioas_unmap(t, iova, buf_size);
    test_ioctl_ioas_map_fixed_file(t, dfd, 0, buf_size, iova);
    t.sys.libc.close(dfd);
  });

  TEST_F(iommufd_mock_domain, "all_aligns_copy", (self, variant, t) => {
    const { libc, PAGE_SIZE } = t.sys;
    const test_step = variant.hugepages ? self.mmap_buf_size / 16 : MOCK_PAGE_SIZE;
    const buf_size = self.mmap_buf_size;
    const prot = PROT_READ | PROT_WRITE;
    let mfd = -1;
    let buf: bigint;
    if (variant.file) ({ buf, mfd } = memfd_mmap(libc, buf_size, prot, MAP_SHARED));
    else buf = libc.mmap(0n, buf_size, prot, self.mmap_flags, -1, 0);
    t.ASSERT_NE(MAP_FAILED, buf);
    if (variant.file) t.ASSERT_GT(mfd, 0);
    check_refs(t, buf, buf_size, 0);
    for (let start = 0; start < buf_size; start += test_step) {
      let end = variant.hugepages ? buf_size : start + MOCK_PAGE_SIZE;
      for (; end < buf_size; end += MOCK_PAGE_SIZE) {
        const length = end - start;
        const iova = variant.file
          ? test_ioctl_ioas_map_file(t, mfd, start, length)
          : test_ioctl_ioas_map(t, buf + BigInt(start), length);
        // Add and destroy a domain while the area exists
        const old_id = self.hwpt_ids[1]!;
        const mock = test_cmd_mock_domain(t, self.ioas_id);
        self.hwpt_ids[1] = mock.hwpt_id;
        check_mock_iova(t, self, buf + BigInt(start), iova, length);
        const pstart = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
        const pend = Math.floor(end / PAGE_SIZE) * PAGE_SIZE;
        check_refs(t, buf + BigInt(pstart), pend - pstart, 1);
        test_ioctl_destroy(t, mock.stdev_id);
        self.hwpt_ids[1] = old_id;
        test_ioctl_ioas_unmap(t, iova, length);
      }
    }
    check_refs(t, buf, buf_size, 0);
    t.ASSERT_EQ(0, libc.munmap(buf, buf_size), why(t));
    if (variant.file) libc.close(mfd);
  });

  TEST_F(iommufd_mock_domain, "alloc_hwpt", (self, variant, t) => {
    for (let i = 0; i !== variant.mock_domains; i++) {
      const idev = self.idev_ids[i]!;
      const stdev = self.stdev_ids[i]!;
      test_err_hwpt_alloc(t, EOPNOTSUPP, idev, self.ioas_id, ~IOMMU_HWPT_ALLOC_NEST_PARENT >>> 0);
      const hwpt0 = test_cmd_hwpt_alloc(t, idev, self.ioas_id, 0);
      const hwpt1 = test_cmd_hwpt_alloc(t, idev, self.ioas_id, IOMMU_HWPT_ALLOC_NEST_PARENT);
      // Do a hw_pagetable rotation test
      test_cmd_mock_domain_replace(t, stdev, hwpt0);
      EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, hwpt0));
      test_cmd_mock_domain_replace(t, stdev, hwpt1);
      EXPECT_ERRNO(t, EBUSY, _test_ioctl_destroy(t.sys, self.fd, hwpt1));
      test_cmd_mock_domain_replace(t, stdev, self.ioas_id);
      test_ioctl_destroy(t, hwpt1);
      const stddev = test_cmd_mock_domain(t, hwpt0).stdev_id;
      test_ioctl_destroy(t, stddev);
      test_ioctl_destroy(t, hwpt0);
    }
  });

  iommufdDirtyTrackingFixture(k);

  TEST_F(vfio_compat_mock_domain, "simple_close", () => {});

  TEST_F(vfio_compat_mock_domain, "huge_map", (self, variant, t) => {
    const { libc, HUGEPAGE_SIZE } = t.sys;
    const buf_size = HUGEPAGE_SIZE * 2;
    const map_cmd = ustruct(vfio_iommu_type1_dma_map, {
      argsz: vfio_iommu_type1_dma_map.size,
      flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
      size: buf_size,
      iova: MOCK_APERTURE_START,
    });
    const unmap_cmd = ustruct(vfio_iommu_type1_dma_unmap, {
      argsz: vfio_iommu_type1_dma_unmap.size,
    });
    const NPAGES = 16;
    // Test huge pages and splitting
    const buf = libc.mmap(
      0n,
      buf_size,
      PROT_READ | PROT_WRITE,
      MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE,
      -1,
      0,
    );
    t.ASSERT_NE(MAP_FAILED, buf);
    map_cmd.vaddr = buf;
    t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_MAP_DMA, map_cmd.$), why(t));
    const piece = BigInt(buf_size / NPAGES);
    const pages_iova = Array.from(
      { length: NPAGES },
      (_, i) => MOCK_APERTURE_START + BigInt(i) * piece,
    );
    shuffle(makeRand(5), pages_iova);
    // type1 mode can cut up larger mappings, type1v2 always fails
    for (const iova of pages_iova) {
      unmap_cmd.iova = iova;
      unmap_cmd.size = piece;
      if (variant.version === VFIO_TYPE1_IOMMU)
        t.ASSERT_EQ(0, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$), why(t));
      else EXPECT_ERRNO(t, ENOENT, libc.ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, unmap_cmd.$));
    }
  });

  registerIommufdViommu(k);
  registerIommufdDevicePasid(k);

  return harness;
}
