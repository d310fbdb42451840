/**
 * iommufd_test.h: the IOMMU_TEST_CMD ABI shared by the kernel side (selftest.ts) and the user
 * side (iommufd-utils.ts). Op numbers, flag values and the 72-byte layout are the kernel's.
 *
 * `struct iommu_test_cmd` is a 16-byte header, a 48-byte union at offset 16 and `last` at 64
 * (sizeof 72, 8-byte aligned; the minimum accepted size is offsetofend(last) = 68). Each union
 * member gets its own layout here that includes the header, so a command reads like the C one:
 * `ustruct(iommu_test_cmd.access_pages, { size: 72, op: IOMMU_TEST_OP_ACCESS_PAGES, ... })`.
 */
import { type FieldKind, Struct, iommu_test_cmd as header } from "@x/iommufd";

/** _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32) = 0x3ba0, from the iommufd uapi tables. */
export { IOMMU_TEST_CMD } from "@x/iommufd";

export const IOMMU_TEST_OP_ADD_RESERVED = 1;
export const IOMMU_TEST_OP_MOCK_DOMAIN = 2;
export const IOMMU_TEST_OP_MD_CHECK_MAP = 3;
export const IOMMU_TEST_OP_MD_CHECK_REFS = 4;
export const IOMMU_TEST_OP_CREATE_ACCESS = 5;
export const IOMMU_TEST_OP_DESTROY_ACCESS_PAGES = 6;
export const IOMMU_TEST_OP_ACCESS_PAGES = 7;
export const IOMMU_TEST_OP_ACCESS_RW = 8;
export const IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT = 9;
export const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE = 10;
export const IOMMU_TEST_OP_ACCESS_REPLACE_IOAS = 11;
export const IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS = 12;
export const IOMMU_TEST_OP_DIRTY = 13;
export const IOMMU_TEST_OP_MD_CHECK_IOTLB = 14;
export const IOMMU_TEST_OP_TRIGGER_IOPF = 15;
export const IOMMU_TEST_OP_DEV_CHECK_CACHE = 16;
export const IOMMU_TEST_OP_TRIGGER_VEVENT = 17;
export const IOMMU_TEST_OP_PASID_ATTACH = 18;
export const IOMMU_TEST_OP_PASID_REPLACE = 19;
export const IOMMU_TEST_OP_PASID_DETACH = 20;
export const IOMMU_TEST_OP_PASID_CHECK_HWPT = 21;
export const IOMMU_TEST_OP_DMABUF_GET = 22;
export const IOMMU_TEST_OP_DMABUF_REVOKE = 23;
export const IOMMU_TEST_OP_MD_CHECK_DMABUF = 24;

/** The mock IOMMU's page sizes, aperture and page-table types live with its page tables. */
export {
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_PAGE_SIZE,
} from "@x/iommu-pgtable";

export const MOCK_FLAGS_ACCESS_WRITE = 1 << 0;
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16;
export const MOCK_ACCESS_RW_WRITE = 1 << 0;
export const MOCK_ACCESS_RW_SLOW_PATH = 1 << 2;
export const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1 << 0;
export const MOCK_FLAGS_DEVICE_NO_DIRTY = 1 << 0;
export const MOCK_FLAGS_DEVICE_PASID = 1 << 2;

export const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3;
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4;
export const IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef;
/** struct iommu_hwpt_invalidate_selftest's type, its flag, and a type no driver knows. */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
export const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1 << 0;
export const IOMMU_VIOMMU_TYPE_SELFTEST = 0xdeadbeef;
/** The mock vIOMMU's event type; its payload is struct iommu_viommu_event_selftest. */
export const IOMMU_VEVENTQ_TYPE_SELFTEST = 0xbeefbeef;
export const IOMMU_HW_QUEUE_TYPE_SELFTEST = 0xdeadbeef;
/** The mock vIOMMU's HW queue slots. */
export const IOMMU_TEST_HW_QUEUE_MAX = 2;
/** struct iommu_viommu_invalidate_selftest's type, and a type no driver knows. */
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;

export const MOCK_DEV_CACHE_ID_MAX = 3;
export const MOCK_DEV_CACHE_NUM = 4;
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad;
export const MOCK_PASID_WIDTH = 20;
/** The `test_reg` of struct iommu_test_hw_info { u32 flags; u32 test_reg } (8 bytes). */
export const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef;
/** enum iommufd_page_fault_perm */
export const IOMMU_PGFAULT_PERM_READ = 1 << 0;
export const IOMMU_PGFAULT_PERM_WRITE = 1 << 1;
export const IOMMU_TEST_HW_INFO_SIZE = 8;
/** The PASID whose every second attach the mock driver fails (ENOMEM). */
export const IOMMU_TEST_PASID_RESERVED = 1024;

/** ACCESS_PAGES / ACCESS_RW refuse lengths above this (ENOMEM). */
export const MOCK_ACCESS_MAX_LENGTH = 16 * 1024 * 1024;
/** SET_TEMP_MEMORY_LIMIT refuses values below this (EINVAL). */
export const MOCK_MIN_MEMORY_LIMIT = 12;
/** The limit `test_ioctl_set_default_memory_limit()` restores. */
export const MOCK_DEFAULT_MEMORY_LIMIT = 65536;
/** DMABUF_GET accepts 1..512 pages. */
export const MOCK_DMABUF_MAX_PAGES = 512;

export const IOMMU_TEST_CMD_SIZE = header.size;

type Fields = Record<string, readonly [number, FieldKind]>;

const u32 = (off: number) => [off, "u32"] as const;
const s32 = (off: number) => [off, "s32"] as const;
const u64 = (off: number) => [off, "u64"] as const;

function member<const F extends Fields>(name: string, fields: F) {
  return new Struct(
    `iommu_test_cmd.${name}`,
    IOMMU_TEST_CMD_SIZE,
    { ...header.fields, ...fields },
    header.minSize,
  );
}

/** One layout per union member, each carrying the header fields. */
export const iommu_test_cmd = {
  header: member("header", {}),
  add_reserved: member("add_reserved", { start: u64(16), length: u64(24) }),
  mock_domain: member("mock_domain", {
    out_stdev_id: u32(16),
    out_hwpt_id: u32(20),
    out_idev_id: u32(24),
  }),
  mock_domain_flags: member("mock_domain_flags", {
    out_stdev_id: u32(16),
    out_hwpt_id: u32(20),
    out_idev_id: u32(24),
    dev_flags: u32(28),
  }),
  mock_domain_replace: member("mock_domain_replace", { pt_id: u32(16) }),
  check_map: member("check_map", { iova: u64(16), length: u64(24), uptr: u64(32) }),
  check_refs: member("check_refs", { length: u64(16), uptr: u64(24), refs: u32(32) }),
  create_access: member("create_access", { out_access_fd: u32(16), flags: u32(20) }),
  destroy_access_pages: member("destroy_access_pages", { access_pages_id: u32(16) }),
  access_pages: member("access_pages", {
    flags: u32(16),
    out_access_pages_id: u32(20),
    iova: u64(24),
    length: u64(32),
    uptr: u64(40),
  }),
  access_rw: member("access_rw", { iova: u64(16), length: u64(24), uptr: u64(32), flags: u32(40) }),
  memory_limit: member("memory_limit", { limit: u32(16) }),
  dirty: member("dirty", {
    flags: u32(16),
    iova: u64(24),
    length: u64(32),
    page_size: u64(40),
    uptr: u64(48),
    out_nr_dirty: u64(56),
  }),
  access_replace_ioas: member("access_replace_ioas", { ioas_id: u32(16) }),
  // The C member `check_iotlb.id` is named iotlb_id here: `id` is the header field.
  check_iotlb: member("check_iotlb", { iotlb_id: u32(16), iotlb: u32(20) }),
  trigger_vevent: member("trigger_vevent", { dev_id: u32(16) }),
  trigger_iopf: member("trigger_iopf", {
    dev_id: u32(16),
    pasid: u32(20),
    grpid: u32(24),
    perm: u32(28),
    addr: u64(32),
  }),
  // The C member `check_dev_cache.id` is named cache_id here: `id` is the header field.
  check_dev_cache: member("check_dev_cache", { cache_id: u32(16), cache: u32(20) }),
  dmabuf_get: member("dmabuf_get", { length: u32(16), open_flags: u32(20) }),
  dmabuf_revoke: member("dmabuf_revoke", { dmabuf_fd: s32(16), revoked: u32(20) }),
  check_dmabuf: member("check_dmabuf", {
    dmabuf_fd: s32(16),
    iova: u64(24),
    length: u64(32),
    offset: u64(40),
  }),
  /** Also PASID_REPLACE's member. */
  pasid_attach: member("pasid_attach", { pasid: u32(16), pt_id: u32(20) }),
  pasid_detach: member("pasid_detach", { pasid: u32(16) }),
  pasid_check: member("pasid_check", { pasid: u32(16), hwpt_id: u32(20) }),
} as const;

/** struct iommu_hwpt_selftest: the mock's HWPT data (`iotlb` ends its first version). */
export const iommu_hwpt_selftest = new Struct("iommu_hwpt_selftest", 8, {
  iotlb: u32(0),
  pagetable_type: u32(4),
});

/** struct iommu_hwpt_invalidate_selftest: one entry of a nested HWPT invalidation. */
export const iommu_hwpt_invalidate_selftest = new Struct("iommu_hwpt_invalidate_selftest", 8, {
  flags: u32(0),
  iotlb_id: u32(4),
});

/** struct iommu_viommu_selftest: the mock vIOMMU's data. */
export const iommu_viommu_selftest = new Struct("iommu_viommu_selftest", 24, {
  in_data: u32(0),
  out_data: u32(4),
  out_mmap_offset: u64(8),
  out_mmap_length: u64(16),
});

/** struct iommu_viommu_invalidate_selftest: one entry of a vIOMMU invalidation. */
export const iommu_viommu_invalidate_selftest = new Struct("iommu_viommu_invalidate_selftest", 12, {
  flags: u32(0),
  vdev_id: u32(4),
  cache_id: u32(8),
});

/** struct iommufd_vevent_header, ahead of every vEVENTQ record. */
export const iommufd_vevent_header = new Struct("iommufd_vevent_header", 8, {
  flags: u32(0),
  sequence: u32(4),
});

/** struct iommu_viommu_event_selftest: the mock vIOMMU's event payload. */
export const iommu_viommu_event_selftest = new Struct("iommu_viommu_event_selftest", 4, {
  virt_id: u32(0),
});
