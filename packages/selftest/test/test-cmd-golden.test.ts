/**
 * Golden layout of `struct iommu_test_cmd` (drivers/iommu/iommufd/iommufd_test.h): the header,
 * `last`, and every union member's fields at the offsets the C compiler gives them (the union
 * starts at 16 and is 8-aligned because members hold `__aligned_u64`). The numbers are written
 * out from the header, not read from the layout tables in src/iommufd-test.ts.
 */
import { describe, expect, it } from "vitest";
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_DMABUF_GET,
  IOMMU_TEST_OP_DMABUF_REVOKE,
  IOMMU_TEST_OP_MD_CHECK_DMABUF,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_PASID_ATTACH,
  IOMMU_TEST_OP_PASID_CHECK_HWPT,
  IOMMU_TEST_OP_PASID_DETACH,
  IOMMU_TEST_OP_PASID_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  IOMMU_TEST_OP_TRIGGER_VEVENT,
  iommu_test_cmd,
} from "../src/iommufd-test.js";

const HEADER = { size: 0, op: 4, id: 8, __reserved: 12, last: 64 };

/** Every member of the C union with its fields' offsets in the whole command. */
const UNION: Record<string, Record<string, number>> = {
  add_reserved: { start: 16, length: 24 },
  mock_domain: { out_stdev_id: 16, out_hwpt_id: 20, out_idev_id: 24 },
  mock_domain_flags: { out_stdev_id: 16, out_hwpt_id: 20, out_idev_id: 24, dev_flags: 28 },
  mock_domain_replace: { pt_id: 16 },
  check_map: { iova: 16, length: 24, uptr: 32 },
  check_refs: { length: 16, uptr: 24, refs: 32 },
  create_access: { out_access_fd: 16, flags: 20 },
  destroy_access_pages: { access_pages_id: 16 },
  access_pages: { flags: 16, out_access_pages_id: 20, iova: 24, length: 32, uptr: 40 },
  access_rw: { iova: 16, length: 24, uptr: 32, flags: 40 },
  memory_limit: { limit: 16 },
  access_replace_ioas: { ioas_id: 16 },
  // __u32 flags, then five __aligned_u64 from 24: out_nr_dirty is a u64 at 56.
  dirty: { flags: 16, iova: 24, length: 32, page_size: 40, uptr: 48, out_nr_dirty: 56 },
  // The C member `check_iotlb.id` is iotlb_id in the model: `id` is the header field.
  check_iotlb: { iotlb_id: 16, iotlb: 20 },
  trigger_iopf: { dev_id: 16, pasid: 20, grpid: 24, perm: 28, addr: 32 },
  // The C member's `id` is `cache_id` in the table: `id` is the header's.
  check_dev_cache: { cache_id: 16, cache: 20 },
  trigger_vevent: { dev_id: 16 },
  pasid_attach: { pasid: 16, pt_id: 20 },
  pasid_replace: { pasid: 16, pt_id: 20 },
  pasid_detach: { pasid: 16 },
  pasid_check: { pasid: 16, hwpt_id: 20 },
  dmabuf_get: { length: 16, open_flags: 20 },
  dmabuf_revoke: { dmabuf_fd: 16, revoked: 20 },
  check_dmabuf: { dmabuf_fd: 16, iova: 24, length: 32, offset: 40 },
};

/**
 * Union members without a layout of their own in the model: PASID_REPLACE reads pasid_attach's
 * member (the same two fields at the same offsets, checked above).
 */
const NOT_MODELLED = ["pasid_replace"];

const layouts = iommu_test_cmd as unknown as Record<
  string,
  { size: number; minSize: number; fieldNames: readonly string[]; offsetOf(f: string): number }
>;

describe("struct iommu_test_cmd", () => {
  it("sizeof 72, accepted from offsetofend(last) = 68, IOMMU_TEST_CMD = 0x3ba0", () => {
    expect(layouts.header!.size).toBe(72);
    expect(layouts.header!.minSize).toBe(68);
    expect(IOMMU_TEST_CMD).toBe(0x3ba0);
    for (const [f, off] of Object.entries(HEADER)) expect(layouts.header!.offsetOf(f)).toBe(off);
  });

  it("the layouts are exactly the header plus the union members not listed as unmodelled", () => {
    expect(Object.keys(layouts).sort()).toEqual(
      ["header", ...Object.keys(UNION).filter((m) => !NOT_MODELLED.includes(m))].sort(),
    );
  });

  it.each(Object.entries(UNION).filter(([m]) => !NOT_MODELLED.includes(m)))(
    "%s",
    (member, fields) => {
      const s = layouts[member]!;
      expect(s.size).toBe(72);
      expect(s.fieldNames).toEqual([...Object.keys(HEADER), ...Object.keys(fields)]);
      for (const [f, off] of Object.entries({ ...HEADER, ...fields }))
        expect({ f, off: s.offsetOf(f) }).toEqual({ f, off });
    },
  );
});

describe("IOMMU_TEST_OP_* numbers", () => {
  it.each([
    ["ADD_RESERVED", IOMMU_TEST_OP_ADD_RESERVED, 1],
    ["MOCK_DOMAIN", IOMMU_TEST_OP_MOCK_DOMAIN, 2],
    ["MD_CHECK_MAP", IOMMU_TEST_OP_MD_CHECK_MAP, 3],
    ["MD_CHECK_REFS", IOMMU_TEST_OP_MD_CHECK_REFS, 4],
    ["CREATE_ACCESS", IOMMU_TEST_OP_CREATE_ACCESS, 5],
    ["DESTROY_ACCESS_PAGES", IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, 6],
    ["ACCESS_PAGES", IOMMU_TEST_OP_ACCESS_PAGES, 7],
    ["ACCESS_RW", IOMMU_TEST_OP_ACCESS_RW, 8],
    ["SET_TEMP_MEMORY_LIMIT", IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, 9],
    ["MOCK_DOMAIN_REPLACE", IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, 10],
    ["ACCESS_REPLACE_IOAS", IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, 11],
    ["MOCK_DOMAIN_FLAGS", IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, 12],
    ["DIRTY", IOMMU_TEST_OP_DIRTY, 13],
    ["MD_CHECK_IOTLB", IOMMU_TEST_OP_MD_CHECK_IOTLB, 14],
    ["TRIGGER_IOPF", IOMMU_TEST_OP_TRIGGER_IOPF, 15],
    ["DEV_CHECK_CACHE", IOMMU_TEST_OP_DEV_CHECK_CACHE, 16],
    ["TRIGGER_VEVENT", IOMMU_TEST_OP_TRIGGER_VEVENT, 17],
    ["PASID_ATTACH", IOMMU_TEST_OP_PASID_ATTACH, 18],
    ["PASID_REPLACE", IOMMU_TEST_OP_PASID_REPLACE, 19],
    ["PASID_DETACH", IOMMU_TEST_OP_PASID_DETACH, 20],
    ["PASID_CHECK_HWPT", IOMMU_TEST_OP_PASID_CHECK_HWPT, 21],
    ["DMABUF_GET", IOMMU_TEST_OP_DMABUF_GET, 22],
    ["DMABUF_REVOKE", IOMMU_TEST_OP_DMABUF_REVOKE, 23],
    ["MD_CHECK_DMABUF", IOMMU_TEST_OP_MD_CHECK_DMABUF, 24],
  ])("IOMMU_TEST_OP_%s = %s", (_n, op, want) => expect(op).toBe(want));
});
