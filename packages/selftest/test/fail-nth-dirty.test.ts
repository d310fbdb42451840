/**
 * fail_nth over dirty tracking (model check; iommufd_fail_nth.c has no dirty case): a mock
 * device on an IOAS with the fail_nth buffer mapped, a DIRTY_TRACKING HWPT, tracking turned on
 * (which clears stale bits first), IOMMU_TEST_OP_DIRTY, then IOMMU_HWPT_GET_DIRTY_BITMAP with
 * and without NO_CLEAR over 64 GiB of IOVA at 2 KiB a bit — a 4 MiB bitmap, so two
 * iova_bitmap windows of 512 pinned pages each — and tracking off. Every injectable point on
 * the way fails once; TEST_FAIL_NTH checks the invariants after each run and that teardown
 * leaves nothing (no pin, no domain, no device).
 */
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
} from "@x/iommufd";
import { MOCK_APERTURE_START, MOCK_PAGE_SIZE } from "@x/iommu-pgtable";
import { O_RDWR } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { TEST_FAIL_NTH, fail_nth_enable } from "../src/fail-nth.js";
import { kselftest } from "../src/harness.js";
import {
  type MockDomainIds,
  _test_cmd_get_dirty_bitmap,
  _test_cmd_hwpt_alloc,
  _test_cmd_mock_domain,
  _test_cmd_mock_domain_set_dirty,
  _test_cmd_set_dirty_tracking,
  _test_ioctl_ioas_alloc,
  _test_ioctl_ioas_map,
  ref,
  teardown_iommufd,
} from "../src/iommufd-utils.js";
import { HUGEPAGE_SIZE, createSelftestEnv } from "../src/test-system.js";

/** 64 GiB of IOVA at one bit per 2 KiB: 4 MiB of bitmap, two windows of 512 pages. */
const QUERY_LENGTH = 64n << 30n;
const BITMAP_BYTES = Number(QUERY_LENGTH / BigInt(MOCK_PAGE_SIZE) / 8n);

describe("fail_nth over dirty tracking", () => {
  it("SET_DIRTY_TRACKING, TEST_OP_DIRTY and a two-window GET_DIRTY_BITMAP leave nothing behind", () => {
    const { harness, FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN } = kselftest(() =>
      createSelftestEnv({ bufferSize: HUGEPAGE_SIZE, hugeAligned: false }),
    );
    const dirty_fail_nth = FIXTURE("dirty_fail_nth", () => ({ fd: -1 }));
    FIXTURE_SETUP(dirty_fail_nth, (self) => {
      self.fd = -1;
    });
    FIXTURE_TEARDOWN(dirty_fail_nth, (self, _v, t) => teardown_iommufd(t, self.fd));
    let swept: number[] = [];
    TEST_FAIL_NTH(harness, dirty_fail_nth, "get_dirty_bitmap", (self, _v, t, nth) => {
      const { libc, buffer, BUFFER_SIZE } = t.sys;
      swept = nth.runs;
      // User memory the program owns and has touched before injection starts; the first
      // bytes select every other 2 KiB page of the buffer for IOMMU_TEST_OP_DIRTY.
      const bitmap = libc.malloc(BITMAP_BYTES);
      libc.poke(bitmap, new Uint8Array(BITMAP_BYTES));
      libc.poke(bitmap, new Uint8Array(BUFFER_SIZE / MOCK_PAGE_SIZE / 8).fill(0x55));
      const ioas_id = ref(0);
      const ids = ref<MockDomainIds>({ stdev_id: 0, hwpt_id: 0, idev_id: 0 });
      const hwpt_id = ref(0);
      const nr = ref(0n);

      fail_nth_enable(t, nth);

      self.fd = libc.open("/dev/iommu", O_RDWR);
      if (self.fd === -1) return -1;
      if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
      const iova = ref(MOCK_APERTURE_START);
      const flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
      if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, BUFFER_SIZE, iova, flags))
        return -1;
      if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;
      if (
        _test_cmd_hwpt_alloc(
          t.sys,
          self.fd,
          ids.v.idev_id,
          ioas_id.v,
          IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
          hwpt_id,
        )
      )
        return -1;
      if (_test_cmd_set_dirty_tracking(t.sys, self.fd, hwpt_id.v, true)) return -1;
      if (
        _test_cmd_mock_domain_set_dirty(
          t.sys,
          self.fd,
          hwpt_id.v,
          BUFFER_SIZE,
          MOCK_APERTURE_START,
          MOCK_PAGE_SIZE,
          bitmap,
          nr,
        )
      )
        return -1;
      for (const f of [IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR, 0]) {
        if (
          _test_cmd_get_dirty_bitmap(
            t.sys,
            self.fd,
            hwpt_id.v,
            QUERY_LENGTH,
            MOCK_APERTURE_START,
            MOCK_PAGE_SIZE,
            bitmap,
            f,
          )
        )
          return -1;
      }
      if (_test_cmd_set_dirty_tracking(t.sys, self.fd, hwpt_id.v, false)) return -1;
      return 0;
    });
    const r = harness.instances()[0]!.run();
    expect(r.log.join("\n")).not.toContain("invariants");
    expect(r.status).toBe("pass");
    // The sweep reached injectable points on every step, then one clean run.
    expect(swept.length).toBeGreaterThan(10);
    expect(swept.at(-1)).toBe(0);
    expect(r.log.join("\n")).toMatch(/\d+ injection points swept/);
  });
});
