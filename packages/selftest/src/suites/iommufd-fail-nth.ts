/**
 * Port of tools/testing/selftests/iommu/iommufd_fail_nth.c, the cases that stay inside IOAS / domains / accesses: basic, map_domain, access_rw, access_pin_domain,
 * then map_file_domain, map_two_domains, access_pin and device (device.c with PASIDs, a vIOMMU,
 * a vDEVICE, a HW queue, a fault queue, a vEVENTQ).
 * BUFFER_SIZE is 2 MiB in this binary (the env factory's choice).
 */
import {
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_iova_range,
} from "@x/iommufd";
import { O_RDWR } from "@x/kernel";
import { TEST_FAIL_NTH, fail_nth_enable } from "../fail-nth.js";
import { kselftest } from "../harness.js";
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_TEST_HW_INFO_SIZE,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_PASID,
  iommu_hwpt_selftest,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_RW,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  iommu_test_cmd,
} from "../iommufd-test.js";
import {
  type MockDomainIds,
  type SelftestEnv,
  _test_cmd_create_access,
  _test_cmd_destroy_access,
  _test_cmd_destroy_access_pages,
  _test_cmd_mock_domain,
  _test_cmd_mock_domain_flags,
  _test_cmd_mock_domain_replace,
  _test_ioctl_destroy,
  _test_ioctl_ioas_alloc,
  _test_ioctl_ioas_map,
  _test_ioctl_ioas_map_file,
  _test_ioctl_ioas_unmap,
  _test_ioctl_set_temp_memory_limit,
  iommuTestCmd,
  ref,
  teardown_iommufd,
} from "../iommufd-utils.js";
import { ustruct } from "../ustruct.js";
import {
  _test_cmd_get_hw_info,
  _test_cmd_pasid_attach,
  _test_cmd_pasid_detach,
  _test_cmd_pasid_replace,
} from "../iommufd-utils-pasid.js";
import { _test_ioctl_fault_alloc } from "../iommufd-utils-fault.js";
import {
  _test_cmd_hw_queue_alloc,
  _test_cmd_hwpt_alloc_data,
  _test_cmd_vdevice_alloc,
  _test_cmd_veventq_alloc,
  _test_cmd_viommu_alloc,
} from "../iommufd-utils-viommu.js";
import { hwptSelftestData } from "./iommufd-viommu.js";

const MAP_RW = IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;

export function iommufdFailNthSuite(createEnv: () => SelftestEnv) {
  const { harness, FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN } = kselftest(createEnv);

  const basic_fail_nth = FIXTURE("basic_fail_nth", () => ({
    fd: -1,
    access_id: 0,
    stdev_id: 0,
    pasid: 0,
  }));
  FIXTURE_SETUP(basic_fail_nth, (self) => {
    self.fd = -1;
    self.access_id = 0;
    self.stdev_id = 0;
    // a test that attaches a PASID sets a non-zero one
    self.pasid = 0;
  });
  FIXTURE_TEARDOWN(basic_fail_nth, (self, _v, t) => {
    // The access FD holds the iommufd open until it closes.
    if (self.access_id) t.ASSERT_EQ(0, _test_cmd_destroy_access(t.sys, self.access_id));
    if (self.pasid && self.stdev_id)
      _test_cmd_pasid_detach(t.sys, self.fd, self.stdev_id, self.pasid);
    teardown_iommufd(t, self.fd);
  });

  const mockIds = () => ref<MockDomainIds>({ stdev_id: 0, hwpt_id: 0, idev_id: 0 });

  // Cover ioas.c
  TEST_FAIL_NTH(harness, basic_fail_nth, "basic", (self, _v, t, nth) => {
    const { libc, buffer, BUFFER_SIZE } = t.sys;
    const NRANGES = 10;
    // struct iommu_iova_range ranges[10]: stack memory, present before injection starts.
    const ranges = libc.malloc(NRANGES * iommu_iova_range.size);
    libc.poke(ranges, new Uint8Array(NRANGES * iommu_iova_range.size));
    const ioas_id = ref(0);
    const iova = ref(0n);

    fail_nth_enable(t, nth);

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    {
      const ranges_cmd = ustruct(iommu_ioas_iova_ranges, {
        size: iommu_ioas_iova_ranges.size,
        num_iovas: NRANGES,
        ioas_id: ioas_id.v,
        allowed_iovas: ranges,
      });
      if (libc.ioctl(self.fd, IOMMU_IOAS_IOVA_RANGES, ranges_cmd.$)) return -1;
    }
    {
      const allow_cmd = ustruct(iommu_ioas_allow_iovas, {
        size: iommu_ioas_allow_iovas.size,
        ioas_id: ioas_id.v,
        num_iovas: 1,
        allowed_iovas: ranges,
      });
      libc.poke(
        ranges,
        iommu_iova_range.encode({
          start: 16n * 1024n,
          last: BigInt(BUFFER_SIZE + 16 * 1024 * 600 - 1),
        }),
      );
      if (libc.ioctl(self.fd, IOMMU_IOAS_ALLOW_IOVAS, allow_cmd.$)) return -1;
    }
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, BUFFER_SIZE, iova, MAP_RW))
      return -1;
    {
      const copy_cmd = ustruct(iommu_ioas_copy, {
        size: iommu_ioas_copy.size,
        flags: MAP_RW,
        dst_ioas_id: ioas_id.v,
        src_ioas_id: ioas_id.v,
        src_iova: iova.v,
        length: NRANGES * iommu_iova_range.size,
      });
      if (libc.ioctl(self.fd, IOMMU_IOAS_COPY, copy_cmd.$)) return -1;
    }
    if (_test_ioctl_ioas_unmap(t.sys, self.fd, ioas_id.v, iova.v, BUFFER_SIZE)) return -1;
    // Failure path of no IOVA to unmap
    _test_ioctl_ioas_unmap(t.sys, self.fd, ioas_id.v, iova.v, BUFFER_SIZE);
    return 0;
  });

  // iopt_area_fill_domains() and iopt_area_fill_domain()
  TEST_FAIL_NTH(harness, basic_fail_nth, "map_domain", (self, _v, t, nth) => {
    const { libc, buffer } = t.sys;
    const ioas_id = ref(0);
    const ids = mockIds();
    const iova = ref(0n);

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    if (_test_ioctl_set_temp_memory_limit(t.sys, self.fd, 32)) return -1;

    fail_nth_enable(t, nth);

    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, 262144, iova, MAP_RW)) return -1;
    if (_test_ioctl_destroy(t.sys, self.fd, ids.v.stdev_id)) return -1;
    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;
    return 0;
  });

  TEST_FAIL_NTH(harness, basic_fail_nth, "access_rw", (self, _v, t, nth) => {
    const { libc, buffer } = t.sys;
    // uint64_t tmp_big[4096], uint16_t tmp[32]: stack memory, present before injection starts.
    const tmp_big = libc.malloc(8 * 4096);
    const tmp = libc.malloc(2 * 32);
    libc.poke(tmp_big, new Uint8Array(8 * 4096));
    libc.poke(tmp, new Uint8Array(2 * 32));
    const ioas_id = ref(0);
    const iova = ref(0n);
    const access = ref(0);

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    if (_test_ioctl_set_temp_memory_limit(t.sys, self.fd, 32)) return -1;
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, 262144, iova, MAP_RW)) return -1;

    fail_nth_enable(t, nth);

    if (_test_cmd_create_access(t.sys, self.fd, ioas_id.v, access, 0)) return -1;
    self.access_id = access.v;
    {
      const access_cmd = iommuTestCmd(
        iommu_test_cmd.access_rw,
        IOMMU_TEST_OP_ACCESS_RW,
        self.access_id,
        {
          iova: iova.v,
          length: 64,
          uptr: tmp,
        },
      );
      // READ
      if (libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$)) return -1;
      access_cmd.flags = MOCK_ACCESS_RW_WRITE;
      if (libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$)) return -1;
      access_cmd.flags = MOCK_ACCESS_RW_SLOW_PATH;
      if (libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$)) return -1;
      access_cmd.flags = MOCK_ACCESS_RW_SLOW_PATH | MOCK_ACCESS_RW_WRITE;
      if (libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$)) return -1;
    }
    {
      const access_cmd = iommuTestCmd(
        iommu_test_cmd.access_rw,
        IOMMU_TEST_OP_ACCESS_RW,
        self.access_id,
        {
          iova: iova.v,
          flags: MOCK_ACCESS_RW_SLOW_PATH,
          length: 8 * 4096,
          uptr: tmp_big,
        },
      );
      if (libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$)) return -1;
    }
    if (_test_cmd_destroy_access(t.sys, self.access_id)) return -1;
    self.access_id = 0;
    return 0;
  });

  // iopt_pages_fill_xarray()
  TEST_FAIL_NTH(harness, basic_fail_nth, "access_pin_domain", (self, _v, t, nth) => {
    const { libc, buffer, BUFFER_SIZE } = t.sys;
    const ioas_id = ref(0);
    const ids = mockIds();
    const iova = ref(0n);
    const access = ref(0);

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    if (_test_ioctl_set_temp_memory_limit(t.sys, self.fd, 32)) return -1;
    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, BUFFER_SIZE, iova, MAP_RW))
      return -1;
    if (
      _test_cmd_create_access(
        t.sys,
        self.fd,
        ioas_id.v,
        access,
        MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
      )
    )
      return -1;
    self.access_id = access.v;

    fail_nth_enable(t, nth);

    let access_pages_id: number;
    {
      const access_cmd = iommuTestCmd(
        iommu_test_cmd.access_pages,
        IOMMU_TEST_OP_ACCESS_PAGES,
        self.access_id,
        { iova: iova.v, length: BUFFER_SIZE, uptr: buffer },
      );
      if (libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$)) return -1;
      access_pages_id = access_cmd.out_access_pages_id;
    }
    if (_test_cmd_destroy_access_pages(t.sys, self.fd, self.access_id, access_pages_id)) return -1;
    if (_test_cmd_destroy_access(t.sys, self.access_id)) return -1;
    self.access_id = 0;
    if (_test_ioctl_destroy(t.sys, self.fd, ids.v.stdev_id)) return -1;
    return 0;
  });

  // ---- The other cases of the same file that stay in scope ---------------------------------------

  // iopt_area_fill_domains() and iopt_area_fill_domain() for a memfd
  TEST_FAIL_NTH(harness, basic_fail_nth, "map_file_domain", (self, _v, t, nth) => {
    const { libc, mfd } = t.sys;
    const ioas_id = ref(0);
    const ids = mockIds();
    const iova = ref(0n);

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    if (_test_ioctl_set_temp_memory_limit(t.sys, self.fd, 32)) return -1;

    fail_nth_enable(t, nth);

    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;
    if (_test_ioctl_ioas_map_file(t.sys, self.fd, ioas_id.v, mfd, 0, 262144, iova, MAP_RW))
      return -1;
    if (_test_ioctl_destroy(t.sys, self.fd, ids.v.stdev_id)) return -1;
    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;
    return 0;
  });

  TEST_FAIL_NTH(harness, basic_fail_nth, "map_two_domains", (self, _v, t, nth) => {
    const { libc, buffer } = t.sys;
    const ioas_id = ref(0);
    const ids = mockIds();
    const ids2 = mockIds();
    const iova = ref(0n);

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    if (_test_ioctl_set_temp_memory_limit(t.sys, self.fd, 32)) return -1;
    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;

    fail_nth_enable(t, nth);

    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids2)) return -1;
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, 262144, iova, MAP_RW)) return -1;
    if (_test_ioctl_destroy(t.sys, self.fd, ids.v.stdev_id)) return -1;
    if (_test_ioctl_destroy(t.sys, self.fd, ids2.v.stdev_id)) return -1;
    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids)) return -1;
    if (_test_cmd_mock_domain(t.sys, self.fd, ioas_id.v, ids2)) return -1;
    return 0;
  });

  // pages.c access functions
  TEST_FAIL_NTH(harness, basic_fail_nth, "access_pin", (self, _v, t, nth) => {
    const { libc, buffer, BUFFER_SIZE } = t.sys;
    const ioas_id = ref(0);
    const iova = ref(0n);
    const access = ref(0);

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    if (_test_ioctl_set_temp_memory_limit(t.sys, self.fd, 32)) return -1;
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, BUFFER_SIZE, iova, MAP_RW))
      return -1;
    if (
      _test_cmd_create_access(
        t.sys,
        self.fd,
        ioas_id.v,
        access,
        MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
      )
    )
      return -1;
    self.access_id = access.v;

    fail_nth_enable(t, nth);

    let access_pages_id: number;
    {
      const access_cmd = iommuTestCmd(
        iommu_test_cmd.access_pages,
        IOMMU_TEST_OP_ACCESS_PAGES,
        self.access_id,
        { iova: iova.v, length: BUFFER_SIZE, uptr: buffer },
      );
      if (libc.ioctl(self.fd, IOMMU_TEST_CMD, access_cmd.$)) return -1;
      access_pages_id = access_cmd.out_access_pages_id;
    }
    if (_test_cmd_destroy_access_pages(t.sys, self.fd, self.access_id, access_pages_id)) return -1;
    if (_test_cmd_destroy_access(t.sys, self.access_id)) return -1;
    self.access_id = 0;
    return 0;
  });

  // device.c
  TEST_FAIL_NTH(harness, basic_fail_nth, "device", (self, _v, t, nth) => {
    const { libc, buffer, PAGE_SIZE } = t.sys;
    // struct iommu_hwpt_selftest data and struct iommu_test_hw_info info: stack memory,
    // present before injection starts.
    const data = hwptSelftestData(t);
    const info = libc.malloc(IOMMU_TEST_HW_INFO_SIZE);
    const ioas_id = ref(0);
    const ioas_id2 = ref(0);
    const dev = mockIds();
    const hwpt_id = ref(0);
    const test_hwpt_id = ref(0);
    const fault_hwpt_id = ref(0);
    const viommu_id = ref(0);
    const vdev_id = ref(0);
    const hw_queue_id = ref(0);
    const fault_id = ref(0);
    const fault_fd = ref(0);
    const veventq_id = ref(0);
    const veventq_fd = ref(0);
    const iova = ref(MOCK_APERTURE_START);
    const FIXED_RW = IOMMU_IOAS_MAP_FIXED_IOVA | MAP_RW;

    self.fd = libc.open("/dev/iommu", O_RDWR);
    if (self.fd === -1) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id)) return -1;
    if (_test_ioctl_ioas_alloc(t.sys, self.fd, ioas_id2)) return -1;
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id.v, buffer, PAGE_SIZE, iova, FIXED_RW))
      return -1;
    if (_test_ioctl_ioas_map(t.sys, self.fd, ioas_id2.v, buffer, PAGE_SIZE, iova, FIXED_RW))
      return -1;

    fail_nth_enable(t, nth);

    if (_test_cmd_mock_domain_flags(t.sys, self.fd, ioas_id.v, MOCK_FLAGS_DEVICE_PASID, dev))
      return -1;
    self.stdev_id = dev.v.stdev_id;
    const idev_id = dev.v.idev_id;
    if (
      _test_cmd_get_hw_info(t, idev_id, IOMMU_HW_INFO_TYPE_DEFAULT, info, IOMMU_TEST_HW_INFO_SIZE)
    )
      return -1;
    if (
      _test_cmd_hwpt_alloc_data(
        t.sys,
        self.fd,
        idev_id,
        ioas_id.v,
        0,
        IOMMU_HWPT_ALLOC_PASID,
        hwpt_id,
        IOMMU_HWPT_DATA_NONE,
        0n,
        0,
      )
    )
      return -1;
    if (_test_cmd_mock_domain_replace(t.sys, self.fd, self.stdev_id, ioas_id2.v)) return -1;
    if (_test_cmd_mock_domain_replace(t.sys, self.fd, self.stdev_id, hwpt_id.v)) return -1;
    if (
      _test_cmd_hwpt_alloc_data(
        t.sys,
        self.fd,
        idev_id,
        ioas_id.v,
        0,
        IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID,
        hwpt_id,
        IOMMU_HWPT_DATA_NONE,
        0n,
        0,
      )
    )
      return -1;
    if (
      _test_cmd_viommu_alloc(
        t.sys,
        self.fd,
        idev_id,
        hwpt_id.v,
        IOMMU_VIOMMU_TYPE_SELFTEST,
        0,
        viommu_id,
        0n,
        0,
      )
    )
      return -1;
    if (_test_cmd_vdevice_alloc(t.sys, self.fd, viommu_id.v, idev_id, 0, vdev_id)) return -1;
    if (
      _test_cmd_hw_queue_alloc(
        t.sys,
        self.fd,
        viommu_id.v,
        IOMMU_HW_QUEUE_TYPE_SELFTEST,
        0,
        iova.v,
        PAGE_SIZE,
        hw_queue_id,
      )
    )
      return -1;
    if (_test_ioctl_fault_alloc(t.sys, self.fd, fault_id, fault_fd)) return -1;
    libc.close(fault_fd.v);
    if (
      _test_cmd_hwpt_alloc_data(
        t.sys,
        self.fd,
        idev_id,
        hwpt_id.v,
        fault_id.v,
        IOMMU_HWPT_FAULT_ID_VALID,
        fault_hwpt_id,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
        iommu_hwpt_selftest.size,
      )
    )
      return -1;
    if (
      _test_cmd_veventq_alloc(
        t.sys,
        self.fd,
        viommu_id.v,
        IOMMU_VEVENTQ_TYPE_SELFTEST,
        2,
        veventq_id,
        veventq_fd,
      )
    )
      return -1;
    libc.close(veventq_fd.v);
    if (
      _test_cmd_hwpt_alloc_data(
        t.sys,
        self.fd,
        idev_id,
        ioas_id.v,
        0,
        IOMMU_HWPT_ALLOC_PASID,
        test_hwpt_id,
        IOMMU_HWPT_DATA_NONE,
        0n,
        0,
      )
    )
      return -1;

    // PASID attach, replace, detach
    self.pasid = 200;
    if (_test_cmd_pasid_attach(t.sys, self.fd, self.stdev_id, self.pasid, hwpt_id.v)) {
      self.pasid = 0;
      return -1;
    }
    if (_test_cmd_pasid_replace(t.sys, self.fd, self.stdev_id, self.pasid, test_hwpt_id.v))
      return -1;
    if (_test_cmd_pasid_detach(t.sys, self.fd, self.stdev_id, self.pasid)) return -1;
    self.pasid = 0;
    return 0;
  });

  return harness;
}
