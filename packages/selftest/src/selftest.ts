/**
 * The kernel side of the iommufd selftests (drivers/iommu/iommufd/selftest.c): IOMMU_TEST_CMD.
 *
 * `iommufdTestInit(kernel)` is CONFIG_IOMMUFD_TEST: it installs the IOMMU_TEST_CMD handler in
 * the loaded iommufd (the generic size rules apply: below 68 bytes EINVAL, non-zero bytes past
 * 72 E2BIG), publishes the selftest dma-buf's interconnect hook and creates the mock bus.
 * The handler reads the op's union member from the user's struct, runs the op and copies the
 * struct back for ops with outputs. Unknown ops are EOPNOTSUPP. Decision (not checked against a running kernel):
 * `__reserved` is not checked, as no check exists in the kernel's dispatcher.
 *
 * Selftest objects (IOMMUFD_OBJ_SELFTEST, the `stdev_id` of MOCK_DOMAIN) own one mock device
 * bound and attached to the context; destroying one detaches, unbinds and deletes the device.
 * The in-kernel access ops are in access.ts, the command plumbing in test-cmd.ts.
 */
import { type IommuDomain, iommuIovaToPhys } from "@x/iommu-pgtable";
import {
  IOMMUFD_OBJ_HWPT_NESTED,
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_SELFTEST,
  type IommufdCtx,
  type IommufdDevice,
  type IommufdHwptNested,
  type IommufdHwptPaging,
  IommufdModule,
  IommufdObject,
  getIoas,
  getIommufdDevice,
  iommufdViommuReportEvent,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
  ucmdRespond,
} from "@x/iommufd";
import { setTempMemoryLimit } from "@x/iommufd/testing";
import {
  EINVAL,
  EIO,
  ENOENT,
  EOPNOTSUPP,
  type Kernel,
  KernelWarning,
  PAGE_SHIFT,
  PAGE_SIZE,
  copyFromUser,
  fail,
} from "@x/kernel";
import {
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_DEV_CHECK_CACHE,
  IOMMU_TEST_OP_DMABUF_GET,
  IOMMU_TEST_OP_DMABUF_REVOKE,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_DMABUF,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_TEST_OP_TRIGGER_VEVENT,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_MIN_MEMORY_LIMIT,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  iommu_test_cmd,
} from "./iommufd-test.js";
import {
  iommufdTestDmabufGet,
  iommufdTestDmabufRevoke,
  iommufdTestMdCheckDmabuf,
  registerMockDmabufHook,
} from "./mock-dmabuf.js";
import { MockDev, MockDomain, MockIommu, mockDevCreate } from "./mock-iommu.js";
import { MockNestedDomain } from "./mock-viommu.js";
import { accessOps } from "./access.js";
import { iopfOps } from "./selftest-iopf.js";
import { pasidOps } from "./selftest-pasid.js";
import {
  type TestOp,
  type TestUcmd,
  ucmdMember,
  userPagePfn,
  userPagePins,
  withSelftestObj,
} from "./test-cmd.js";

/** struct selftest_obj of type TYPE_IDEV: a mock device bound and attached to the context. */
export class SelftestObj extends IommufdObject {
  readonly type = IOMMUFD_OBJ_SELFTEST;
  mdev: MockDev | undefined;
  idev: IommufdDevice | undefined;

  constructor(readonly ctx: IommufdCtx) {
    super();
  }

  /** Detaches the RID only: a PASID still attached is the test's bug (a WARN on unbind). */
  destroy(): void {
    const { idev, mdev } = this;
    if (!idev || !mdev) throw new KernelWarning("selftest object destroyed half-built");
    iommufdDeviceDetach(idev);
    iommufdDeviceUnbind(idev);
    mdev.destroy();
  }
}

/** MOCK_DOMAIN / MOCK_DOMAIN_FLAGS. @see iommufd_test_mock_domain */
function mockDomain(ucmd: TestUcmd, withFlags: boolean): number {
  const ctx = ucmd.ctx;
  const u = ucmdMember(ucmd, iommu_test_cmd.mock_domain_flags);
  const sobj = ctx.objectAlloc(new SelftestObj(ctx));
  try {
    sobj.mdev = mockDevCreate(ctx.kernel, withFlags ? u.cmd.dev_flags : 0);
    const idev = iommufdDeviceBind(ctx, sobj.mdev);
    try {
      const ptId = iommufdDeviceAttach(idev, u.cmd.id);
      try {
        u.cmd.out_stdev_id = sobj.id;
        u.cmd.out_hwpt_id = ptId;
        u.cmd.out_idev_id = idev.id;
        ucmdRespond(u);
      } catch (e) {
        iommufdDeviceDetach(idev);
        throw e;
      }
    } catch (e) {
      iommufdDeviceUnbind(idev);
      throw e;
    }
    sobj.idev = idev;
  } catch (e) {
    sobj.mdev?.destroy();
    ctx.objectAbort(sobj);
    throw e;
  }
  ctx.objectFinalize(sobj);
  return 0;
}

/** MOCK_DOMAIN_REPLACE: the HWPT id now used is written back to `pt_id`. */
function mockDomainReplace(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.mock_domain_replace);
  withSelftestObj(ucmd.ctx, u.cmd.id, (sobj) => {
    u.cmd.pt_id = iommufdDeviceReplace(sobj.idev!, u.cmd.pt_id);
  });
  ucmdRespond(u);
  return 0;
}

/** ADD_RESERVED: [start, start + length - 1] becomes reserved in the IOAS. */
function addReserved(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.add_reserved);
  const ioas = getIoas(ucmd.ctx, u.cmd.id);
  try {
    ioas.iopt.reserveIova(u.cmd.start, u.cmd.start + u.cmd.length - 1n, undefined);
  } finally {
    ucmd.ctx.putObject(ioas);
  }
  return 0;
}

/** get_md_pagetable: a paging HWPT (ENOENT) whose domain is a mock domain (EINVAL). */
function withMockDomain<R>(ctx: IommufdCtx, id: number, fn: (d: IommuDomain) => R): R {
  return ctx.withObject<IommufdHwptPaging, R>(id, IOMMUFD_OBJ_HWPT_PAGING, (hwpt) => {
    const d = hwpt.domain;
    if (!d || !MockDomain.of(d)) fail(EINVAL, "not a mock domain");
    return fn(d);
  });
}

/**
 * MD_CHECK_MAP: every IO page (the domain's smallest page) of [iova, iova + length) translates
 * to the physical address behind `uptr` at the same offset; EINVAL on misalignment or mismatch.
 * @see iommufd_test_md_check_pa
 */
function mdCheckMap(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.check_map);
  const kernel = ucmd.ctx.kernel;
  withMockDomain(ucmd.ctx, u.cmd.id, (d) => {
    const bitmap = d.pgsizeBitmap;
    const pageSize = bitmap & -bitmap;
    let { iova, length, uptr } = u.cmd;
    if (iova % pageSize || length % pageSize || uptr % pageSize || uptr + length >= 1n << 64n)
      fail(EINVAL, "check_map alignment");
    for (; length; length -= pageSize, iova += pageSize, uptr += pageSize) {
      const pfn = userPagePfn(kernel, uptr);
      const expected = (BigInt(pfn) << BigInt(PAGE_SHIFT)) + (uptr % BigInt(PAGE_SIZE));
      if (iommuIovaToPhys(d, iova) !== expected)
        fail(EINVAL, `iova 0x${iova.toString(16)} mismatch`);
    }
  });
  return 0;
}

/**
 * MD_CHECK_REFS: every 4 KiB page of the range that is not part of a compound page is pinned
 * exactly `refs` times (EIO otherwise). @see iommufd_test_md_check_refs
 */
function mdCheckRefs(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.check_refs);
  const kernel = ucmd.ctx.kernel;
  let { length, uptr } = u.cmd;
  const P = BigInt(PAGE_SIZE);
  if (length % P || uptr % P) fail(EINVAL, "check_refs alignment");
  for (; length; length -= P, uptr += P) {
    const { pfn, pins } = userPagePins(kernel, uptr);
    if (kernel.mem.folioOrder(pfn) === 0 && pins !== u.cmd.refs)
      fail(EIO, `page 0x${uptr.toString(16)} has ${pins} pins, expected ${u.cmd.refs}`);
  }
  return 0;
}

/**
 * DIRTY: for each bit set in the user's bitmap over [iova, iova + length) at `page_size` per
 * bit, set the D bit of the IOPTE mapping that page (a hole is skipped by set_dirty but still
 * counted); the number of bits is returned in out_nr_dirty. EINVAL for a zero or misaligned
 * range, a null bitmap, or a domain not tracking dirty pages. @see iommufd_test_dirty
 */
function testDirty(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.dirty);
  const { iova, length, page_size: pageSize, uptr } = u.cmd;
  if (!pageSize || !length || iova % pageSize || length % pageSize || !uptr)
    fail(EINVAL, "dirty: range");
  withMockDomain(ucmd.ctx, u.cmd.id, (d) => {
    const pt = d.pt;
    if (!d.dirtyTracking || !pt?.format.dirtyTracking) fail(EINVAL, "dirty: not tracking");
    const max = length / pageSize;
    const bits = copyFromUser(ucmd.ctx.kernel, uptr, Number((max + 7n) / 8n));
    const g = BigInt(pt.granuleLg2);
    let count = 0;
    bits.forEach((byte, i) => {
      for (let k = 0; byte && k < 8; k++) {
        const bit = BigInt(i * 8 + k);
        if (!(byte & (1 << k)) || bit >= max) continue;
        pt.setDirty(Number((iova + bit * pageSize) >> g));
        count++;
      }
    });
    u.cmd.out_nr_dirty = BigInt(count);
    ucmdRespond(u);
  });
  return 0;
}

/**
 * MD_CHECK_IOTLB: IOTLB word `iotlb_id` of a mock nested HWPT holds `iotlb` (ENOENT unless a
 * nested HWPT, EINVAL for another driver's domain, a bad index or a mismatch).
 * @see iommufd_test_md_check_iotlb
 */
function mdCheckIotlb(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.check_iotlb);
  ucmd.ctx.withObject<IommufdHwptNested, void>(u.cmd.id, IOMMUFD_OBJ_HWPT_NESTED, (hwpt) => {
    const nested = MockNestedDomain.of(hwpt.domain!);
    if (!nested) fail(EINVAL, "not a mock nested domain");
    const id = u.cmd.iotlb_id;
    if (id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX || nested.iotlb[id] !== u.cmd.iotlb)
      fail(EINVAL, `iotlb ${id} mismatch`);
  });
  return 0;
}

/**
 * TRIGGER_VEVENT: the mock device reports one event with its virt_id to the vIOMMU whose nested
 * domain it is attached to (ENOENT if none, or with virt_id 0); EOPNOTSUPP without a vEVENTQ
 * of the mock type. @see iommufd_test_trigger_vevent
 */
function triggerVevent(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.trigger_vevent);
  const idev = getIommufdDevice(ucmd.ctx, u.cmd.dev_id);
  try {
    const mdev = idev.dev;
    if (!(mdev instanceof MockDev) || !mdev.viommu || !mdev.vdevId)
      fail(ENOENT, "device not behind a vIOMMU");
    const event = new Uint8Array(4);
    new DataView(event.buffer).setUint32(0, Number(mdev.vdevId & 0xffff_ffffn), true);
    iommufdViommuReportEvent(mdev.viommu, IOMMU_VEVENTQ_TYPE_SELFTEST, event);
  } finally {
    ucmd.ctx.putObject(idev);
  }
  return 0;
}

/** SET_TEMP_MEMORY_LIMIT: the global limit of iommufd's temporary batch memory. */
function setMemoryLimit(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.memory_limit);
  if (u.cmd.limit < MOCK_MIN_MEMORY_LIMIT) fail(EINVAL, "memory limit below 12");
  setTempMemoryLimit(ucmd.ctx.kernel, u.cmd.limit);
  return 0;
}

/** DEV_CHECK_CACHE: a mock device's cache slot holds `cache`. */
function devCheckCache(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.check_dev_cache);
  const idev = getIommufdDevice(ucmd.ctx, u.cmd.id);
  try {
    const mdev = idev.dev;
    // Decision: a device that is not on the mock bus cannot be inspected (EINVAL).
    if (!(mdev instanceof MockDev)) fail(EINVAL, "not a mock device");
    if (u.cmd.cache_id > MOCK_DEV_CACHE_ID_MAX) fail(EINVAL, "cache id");
    if (mdev.cache[u.cmd.cache_id] !== u.cmd.cache) fail(EINVAL, "cache mismatch");
  } finally {
    ucmd.ctx.putObject(idev);
  }
  return 0;
}

function dmabufGet(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.dmabuf_get);
  return iommufdTestDmabufGet(ucmd.ctx.kernel, u.cmd.open_flags, u.cmd.length);
}

/** MD_CHECK_DMABUF: get_md_pagetable first (ENOENT / EINVAL), then the dma-buf checks. */
function mdCheckDmabuf(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.check_dmabuf);
  withMockDomain(ucmd.ctx, u.cmd.id, (d) => iommufdTestMdCheckDmabuf(ucmd.ctx.kernel, d, u.cmd));
  return 0;
}

function dmabufRevoke(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.dmabuf_revoke);
  iommufdTestDmabufRevoke(ucmd.ctx.kernel, u.cmd.dmabuf_fd, u.cmd.revoked !== 0);
  return 0;
}

const baseOps: ReadonlyArray<readonly [number, TestOp]> = [
  [IOMMU_TEST_OP_ADD_RESERVED, addReserved],
  [IOMMU_TEST_OP_MOCK_DOMAIN, (u) => mockDomain(u, false)],
  [IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, (u) => mockDomain(u, true)],
  [IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, mockDomainReplace],
  [IOMMU_TEST_OP_MD_CHECK_MAP, mdCheckMap],
  [IOMMU_TEST_OP_MD_CHECK_REFS, mdCheckRefs],
  [IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, setMemoryLimit],
  [IOMMU_TEST_OP_DIRTY, testDirty],
  [IOMMU_TEST_OP_DEV_CHECK_CACHE, devCheckCache],
  [IOMMU_TEST_OP_MD_CHECK_IOTLB, mdCheckIotlb],
  [IOMMU_TEST_OP_TRIGGER_VEVENT, triggerVevent],
  [IOMMU_TEST_OP_DMABUF_GET, dmabufGet],
  [IOMMU_TEST_OP_DMABUF_REVOKE, dmabufRevoke],
  [IOMMU_TEST_OP_MD_CHECK_DMABUF, mdCheckDmabuf],
];

/**
 * Load the selftest into a kernel whose iommufd is loaded: IOMMU_TEST_CMD with `baseOps` plus
 * the access, PASID and IOPF ops, the dma-buf hook and the mock bus. @see iommufd_test_init
 */
export function iommufdTestInit(kernel: Kernel): void {
  const module = IommufdModule.of(kernel);
  if (!module) throw new KernelWarning("iommufd_test: iommufd is not loaded");
  module.registerTestCmd(iommufdTest, { isMockDev: isSelftestMockDev });
  registerMockDmabufHook(kernel);
  MockIommu.of(kernel);
}

const testOps = new Map<number, TestOp>([...baseOps, ...accessOps, ...pasidOps, ...iopfOps]);

/** IOMMU_TEST_CMD: the op's handler, EOPNOTSUPP for an unknown op. @see iommufd_test */
function iommufdTest(ucmd: TestUcmd): number {
  const op = testOps.get(ucmd.cmd.op);
  if (!op) fail(EOPNOTSUPP, `test op ${ucmd.cmd.op}`);
  return op(ucmd);
}

/**
 * Mock devices are bound by a selftest object the context owns, so they hold no reference on
 * the context's file. @see iommufd_selftest_is_mock_dev
 */
function isSelftestMockDev(dev: unknown): boolean {
  return dev instanceof MockDev;
}
