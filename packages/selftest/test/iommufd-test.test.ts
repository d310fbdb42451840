import { describe, expect, it } from "vitest";
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_DMABUF_GET,
  IOMMU_TEST_OP_DMABUF_REVOKE,
  iommu_test_cmd,
} from "../src/iommufd-test.js";
import { iommuTestCmd } from "../src/iommufd-utils.js";
import { ustruct } from "../src/ustruct.js";

describe("iommu_test_cmd ABI", () => {
  it("has the kernel's ioctl number, op numbers and 72-byte layout", () => {
    expect(IOMMU_TEST_CMD).toBe(0x3ba0);
    expect(IOMMU_TEST_OP_DMABUF_GET).toBe(22);
    expect(IOMMU_TEST_OP_DMABUF_REVOKE).toBe(23);
    for (const l of Object.values(iommu_test_cmd)) {
      expect(l.size).toBe(72);
      expect(l.minSize).toBe(68);
      expect(l.offsetOf("last" as never)).toBe(64);
    }
    expect(iommu_test_cmd.access_pages.offsetOf("uptr")).toBe(40);
    expect(iommu_test_cmd.access_rw.offsetOf("flags")).toBe(40);
    expect(iommu_test_cmd.check_refs.offsetOf("refs")).toBe(32);
    expect(iommu_test_cmd.mock_domain_flags.offsetOf("dev_flags")).toBe(28);
    expect(iommu_test_cmd.dmabuf_revoke.offsetOf("dmabuf_fd")).toBe(16);
  });

  it("a command reads and writes its bytes like a C initialiser", () => {
    const cmd = iommuTestCmd(iommu_test_cmd.access_pages, IOMMU_TEST_OP_ACCESS_PAGES, 7, {
      iova: 1n << 40n,
      length: 4096,
      uptr: 0x7f00_0000_1000n,
    });
    const dv = new DataView(cmd.$.buffer);
    expect(cmd.$.length).toBe(72);
    expect(dv.getUint32(0, true)).toBe(72);
    expect(dv.getUint32(4, true)).toBe(IOMMU_TEST_OP_ACCESS_PAGES);
    expect(dv.getUint32(8, true)).toBe(7);
    expect(dv.getBigUint64(24, true)).toBe(1n << 40n);
    expect(dv.getBigUint64(32, true)).toBe(4096n);
    dv.setUint32(20, 5, true);
    expect(cmd.out_access_pages_id).toBe(5);
    const rev = ustruct(iommu_test_cmd.dmabuf_revoke, { dmabuf_fd: -1 });
    expect(rev.dmabuf_fd).toBe(-1);
    expect(ustruct(iommu_test_cmd.header, {}, 8).$.length).toBe(80);
  });
});
