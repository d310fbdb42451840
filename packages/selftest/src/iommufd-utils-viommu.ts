/**
 * iommufd_utils.h, the nesting and vIOMMU helpers: nested HWPT allocation, IOTLB checks,
 * HWPT/vIOMMU invalidation, vIOMMU and vDEVICE allocation. Same names, arguments and checks as
 * the C helpers; a C pointer argument is a user address here (0n for NULL), and the `size_t
 * *nreqs` in/out argument of the invalidation helpers is a `Ref<number>`.
 */
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VIOMMU_ALLOC,
  iommu_hwpt_alloc,
  iommu_hwpt_invalidate,
  iommu_hw_queue_alloc,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_viommu_alloc,
} from "@x/iommufd";
import { EFAULT, EINVAL, EOVERFLOW, POLLIN } from "@x/kernel";
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_TEST_OP_TRIGGER_VEVENT,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  iommu_test_cmd,
  iommu_viommu_event_selftest,
  iommufd_vevent_header,
} from "./iommufd-test.js";
import {
  type Ctx,
  EXPECT_ERRNO,
  type Ref,
  type SelftestEnv,
  iommuTestCmd,
  ref,
  why,
} from "./iommufd-utils.js";
import { ustruct } from "./ustruct.js";

/** _test_cmd_hwpt_alloc with a fault id and driver data (the C helper's full form). */
export function _test_cmd_hwpt_alloc_data(
  sys: SelftestEnv,
  fd: number,
  device_id: number,
  pt_id: number,
  fault_id: number,
  flags: number,
  hwpt: Ref<number> | undefined,
  data_type: number,
  data: bigint,
  data_len: number,
): number {
  const cmd = ustruct(iommu_hwpt_alloc, {
    size: iommu_hwpt_alloc.size,
    flags,
    dev_id: device_id,
    pt_id,
    data_type,
    data_len,
    data_uptr: data,
    fault_id,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_HWPT_ALLOC, cmd.$);
  if (rc) return rc;
  if (hwpt) hwpt.v = cmd.out_hwpt_id;
  return 0;
}

export function test_cmd_hwpt_alloc_nested(
  t: Ctx,
  device_id: number,
  pt_id: number,
  flags: number,
  data_type: number,
  data: bigint,
  data_len: number,
): number {
  const hwpt = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_hwpt_alloc_data(
      t.sys,
      t.self.fd,
      device_id,
      pt_id,
      0,
      flags,
      hwpt,
      data_type,
      data,
      data_len,
    ),
    why(t),
  );
  return hwpt.v;
}

export function test_err_hwpt_alloc_nested(
  t: Ctx,
  e: number,
  device_id: number,
  pt_id: number,
  flags: number,
  data_type: number,
  data: bigint,
  data_len: number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_alloc_data(
      t.sys,
      t.self.fd,
      device_id,
      pt_id,
      0,
      flags,
      ref(0),
      data_type,
      data,
      data_len,
    ),
  );
}

export function test_cmd_hwpt_alloc_iopf(
  t: Ctx,
  device_id: number,
  pt_id: number,
  fault_id: number,
  flags: number,
  data_type: number,
  data: bigint,
  data_len: number,
): number {
  const hwpt = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_hwpt_alloc_data(
      t.sys,
      t.self.fd,
      device_id,
      pt_id,
      fault_id,
      flags,
      hwpt,
      data_type,
      data,
      data_len,
    ),
    why(t),
  );
  return hwpt.v;
}

export function test_err_hwpt_alloc_iopf(
  t: Ctx,
  e: number,
  device_id: number,
  pt_id: number,
  fault_id: number,
  flags: number,
  data_type: number,
  data: bigint,
  data_len: number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_alloc_data(
      t.sys,
      t.self.fd,
      device_id,
      pt_id,
      fault_id,
      flags,
      ref(0),
      data_type,
      data,
      data_len,
    ),
  );
}

/** test_cmd_hwpt_check_iotlb: IOTLB word `iotlb_id` of a mock nested HWPT is `expected`. */
export function test_cmd_hwpt_check_iotlb(
  t: Ctx,
  hwpt_id: number,
  iotlb_id: number,
  expected: number,
): void {
  const cmd = iommuTestCmd(iommu_test_cmd.check_iotlb, IOMMU_TEST_OP_MD_CHECK_IOTLB, hwpt_id, {
    iotlb_id,
    iotlb: expected,
  });
  t.ASSERT_EQ(0, t.sys.libc.ioctl(t.self.fd, IOMMU_TEST_CMD, cmd.$), why(t));
}

export function test_cmd_hwpt_check_iotlb_all(t: Ctx, hwpt_id: number, expected: number): void {
  for (let i = 0; i <= MOCK_NESTED_DOMAIN_IOTLB_ID_MAX; i++)
    test_cmd_hwpt_check_iotlb(t, hwpt_id, i, expected);
}

/** _test_cmd_hwpt_invalidate: `nreqs` goes in as entry_num and comes back as the handled count. */
function _test_cmd_hwpt_invalidate(
  sys: SelftestEnv,
  fd: number,
  hwpt_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): number {
  const cmd = ustruct(iommu_hwpt_invalidate, {
    size: iommu_hwpt_invalidate.size,
    hwpt_id,
    data_type,
    data_uptr: reqs,
    entry_len: lreq,
    entry_num: nreqs.v,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_HWPT_INVALIDATE, cmd.$);
  nreqs.v = cmd.entry_num;
  return rc;
}

export function test_cmd_hwpt_invalidate(
  t: Ctx,
  hwpt_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_hwpt_invalidate(t.sys, t.self.fd, hwpt_id, reqs, data_type, lreq, nreqs),
    why(t),
  );
}

export function test_err_hwpt_invalidate(
  t: Ctx,
  e: number,
  hwpt_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_invalidate(t.sys, t.self.fd, hwpt_id, reqs, data_type, lreq, nreqs),
  );
}

export function test_cmd_viommu_invalidate(
  t: Ctx,
  viommu: number,
  reqs: bigint,
  lreq: number,
  nreqs: Ref<number>,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_hwpt_invalidate(
      t.sys,
      t.self.fd,
      viommu,
      reqs,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      lreq,
      nreqs,
    ),
    why(t),
  );
}

export function test_err_viommu_invalidate(
  t: Ctx,
  e: number,
  viommu_id: number,
  reqs: bigint,
  data_type: number,
  lreq: number,
  nreqs: Ref<number>,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hwpt_invalidate(t.sys, t.self.fd, viommu_id, reqs, data_type, lreq, nreqs),
  );
}

export function _test_cmd_viommu_alloc(
  sys: SelftestEnv,
  fd: number,
  device_id: number,
  hwpt_id: number,
  type: number,
  flags: number,
  viommu_id: Ref<number> | undefined,
  data: bigint,
  data_len: number,
): number {
  const cmd = ustruct(iommu_viommu_alloc, {
    size: iommu_viommu_alloc.size,
    flags,
    type,
    dev_id: device_id,
    hwpt_id,
    data_uptr: data,
    data_len,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_VIOMMU_ALLOC, cmd.$);
  if (rc) return rc;
  if (viommu_id) viommu_id.v = cmd.out_viommu_id;
  return 0;
}

export function test_cmd_viommu_alloc(
  t: Ctx,
  device_id: number,
  hwpt_id: number,
  type: number,
  data: bigint,
  data_len: number,
): number {
  const id = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_viommu_alloc(t.sys, t.self.fd, device_id, hwpt_id, type, 0, id, data, data_len),
    why(t),
  );
  return id.v;
}

export function test_err_viommu_alloc(
  t: Ctx,
  e: number,
  device_id: number,
  hwpt_id: number,
  type: number,
  data: bigint,
  data_len: number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_viommu_alloc(t.sys, t.self.fd, device_id, hwpt_id, type, 0, ref(0), data, data_len),
  );
}

export function _test_cmd_vdevice_alloc(
  sys: SelftestEnv,
  fd: number,
  viommu_id: number,
  idev_id: number,
  virt_id: bigint | number,
  vdev_id: Ref<number> | undefined,
): number {
  const cmd = ustruct(iommu_vdevice_alloc, {
    size: iommu_vdevice_alloc.size,
    viommu_id,
    dev_id: idev_id,
    virt_id,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_VDEVICE_ALLOC, cmd.$);
  if (rc) return rc;
  if (vdev_id) vdev_id.v = cmd.out_vdevice_id;
  return 0;
}

export function test_cmd_vdevice_alloc(
  t: Ctx,
  viommu_id: number,
  idev_id: number,
  virt_id: bigint | number,
): number {
  const id = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_vdevice_alloc(t.sys, t.self.fd, viommu_id, idev_id, virt_id, id),
    why(t),
  );
  return id.v;
}

export function test_err_vdevice_alloc(
  t: Ctx,
  e: number,
  viommu_id: number,
  idev_id: number,
  virt_id: bigint | number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_vdevice_alloc(t.sys, t.self.fd, viommu_id, idev_id, virt_id, ref(0)),
  );
}

export function _test_cmd_veventq_alloc(
  sys: SelftestEnv,
  fd: number,
  viommu_id: number,
  type: number,
  depth: number,
  veventq_id: Ref<number> | undefined,
  veventq_fd: Ref<number> | undefined,
): number {
  const cmd = ustruct(iommu_veventq_alloc, {
    size: iommu_veventq_alloc.size,
    type,
    veventq_depth: depth,
    viommu_id,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_VEVENTQ_ALLOC, cmd.$);
  if (rc) return rc;
  if (veventq_id) veventq_id.v = cmd.out_veventq_id;
  if (veventq_fd) veventq_fd.v = cmd.out_veventq_fd;
  return 0;
}

export function test_cmd_veventq_alloc(
  t: Ctx,
  viommu_id: number,
  type: number,
  depth: number,
): { veventq_id: number; veventq_fd: number } {
  const id = ref(0);
  const vfd = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_veventq_alloc(t.sys, t.self.fd, viommu_id, type, depth, id, vfd),
    why(t),
  );
  return { veventq_id: id.v, veventq_fd: vfd.v };
}

export function test_err_veventq_alloc(
  t: Ctx,
  e: number,
  viommu_id: number,
  type: number,
  depth: number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_veventq_alloc(t.sys, t.self.fd, viommu_id, type, depth, undefined, undefined),
  );
}

/**
 * _test_cmd_trigger_vevents: TRIGGER_VEVENT `nvevents` times. Decision: a failing ioctl is the
 * helper's failure (the later upstream form; an older copy tested the result inverted).
 */
function _test_cmd_trigger_vevents(
  sys: SelftestEnv,
  fd: number,
  dev_id: number,
  nvevents: number,
): number {
  const cmd = iommuTestCmd(iommu_test_cmd.trigger_vevent, IOMMU_TEST_OP_TRIGGER_VEVENT, 0, {
    dev_id,
  });
  while (nvevents--) if (sys.libc.ioctl(fd, IOMMU_TEST_CMD, cmd.$)) return -1;
  return 0;
}

export function test_cmd_trigger_vevents(t: Ctx, dev_id: number, nvevents: number): void {
  t.ASSERT_EQ(0, _test_cmd_trigger_vevents(t.sys, t.self.fd, dev_id, nvevents), why(t));
}

/**
 * _test_cmd_read_vevents: poll, read `nvevents` records, and check each header: LOST_EVENTS or
 * a sequence jump is EOVERFLOW, a payload with another virt_id EINVAL (the payload looked at
 * is the first record's, as in the C helper).
 */
function _test_cmd_read_vevents(
  sys: SelftestEnv,
  _fd: number,
  event_fd: number,
  nvevents: number,
  virt_id: number,
  prev_seq: Ref<number>,
): number {
  const { libc } = sys;
  const H = iommufd_vevent_header;
  const E = iommu_viommu_event_selftest;
  if (libc.poll([{ fd: event_fd, events: POLLIN, revents: 0 }], 1000) < 0) return -1;
  const len = nvevents * (H.size + E.size);
  const data = new Uint8Array(len);
  const bytes = libc.read(event_fd, data, len);
  if (bytes <= 0) {
    libc.errno = EFAULT;
    return -1;
  }
  for (let i = 0; i < nvevents; i++) {
    const hdr = data.subarray(i * (H.size + E.size));
    const flags = H.get(hdr, "flags") as number;
    const sequence = H.get(hdr, "sequence") as number;
    // __u32 minus int: the difference is taken as an unsigned 32-bit value.
    if (flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS || (sequence - prev_seq.v) >>> 0 > 1) {
      prev_seq.v = sequence;
      libc.errno = EOVERFLOW;
      return -1;
    }
    prev_seq.v = sequence;
    if (E.get(data.subarray(H.size), "virt_id") !== virt_id) {
      libc.errno = EINVAL;
      return -1;
    }
  }
  return 0;
}

export function test_cmd_read_vevents(
  t: Ctx,
  event_fd: number,
  nvevents: number,
  virt_id: number,
  prev_seq: Ref<number>,
): void {
  t.ASSERT_EQ(
    0,
    _test_cmd_read_vevents(t.sys, t.self.fd, event_fd, nvevents, virt_id, prev_seq),
    why(t),
  );
}

export function test_err_read_vevents(
  t: Ctx,
  e: number,
  event_fd: number,
  nvevents: number,
  virt_id: number,
  prev_seq: Ref<number>,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_read_vevents(t.sys, t.self.fd, event_fd, nvevents, virt_id, prev_seq),
  );
}

export function _test_cmd_hw_queue_alloc(
  sys: SelftestEnv,
  fd: number,
  viommu_id: number,
  type: number,
  idx: number,
  base_addr: bigint,
  length: bigint | number,
  hw_queue_id: Ref<number> | undefined,
): number {
  const cmd = ustruct(iommu_hw_queue_alloc, {
    size: iommu_hw_queue_alloc.size,
    viommu_id,
    type,
    index: idx,
    nesting_parent_iova: base_addr,
    length,
  });
  const rc = sys.libc.ioctl(fd, IOMMU_HW_QUEUE_ALLOC, cmd.$);
  if (rc) return rc;
  if (hw_queue_id) hw_queue_id.v = cmd.out_hw_queue_id;
  return 0;
}

export function test_cmd_hw_queue_alloc(
  t: Ctx,
  viommu_id: number,
  type: number,
  idx: number,
  base_addr: bigint,
  len: bigint | number,
): number {
  const id = ref(0);
  t.ASSERT_EQ(
    0,
    _test_cmd_hw_queue_alloc(t.sys, t.self.fd, viommu_id, type, idx, base_addr, len, id),
    why(t),
  );
  return id.v;
}

export function test_err_hw_queue_alloc(
  t: Ctx,
  e: number,
  viommu_id: number,
  type: number,
  idx: number,
  base_addr: bigint,
  len: bigint | number,
): void {
  EXPECT_ERRNO(
    t,
    e,
    _test_cmd_hw_queue_alloc(t.sys, t.self.fd, viommu_id, type, idx, base_addr, len, ref(0)),
  );
}
