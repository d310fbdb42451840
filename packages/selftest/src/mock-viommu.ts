/**
 * The selftest mock driver's nesting: nested domains (struct mock_iommu_domain_nested) and its
 * vIOMMU (struct mock_viommu).
 *
 * A mock nested domain has no stage-1 table: its "stage 1" is four IOTLB words, set from the
 * HWPT data's `iotlb` and cleared by invalidations (MD_CHECK_IOTLB reads them). Device DMA
 * through it is the nest parent's translation. A mock vIOMMU makes the same nested domains
 * and invalidates the four cache words of the mock devices its vDEVICEs name.
 *
 * @see drivers/iommu/iommufd/selftest.c
 */
import {
  IOMMU_DOMAIN_NESTED,
  IOMMU_HWPT_ALLOC_PASID,
  IommuDomain,
  iommuIovaToPhys,
} from "@x/iommu-pgtable";
import {
  IOMMU_HWPT_DATA_SELFTEST,
  type IommuUserData,
  type IommuUserDataArray,
  type IommufdHwQueue,
  type IommufdViommu,
  type IommufdViommuOps,
  iommufdHwQueueDepend,
  iommufdHwQueueUndepend,
  iommuCopyStructFromUser,
  iommuCopyStructFromUserArray,
  iommufdViommuFindDev,
} from "@x/iommufd";
import {
  EEXIST,
  EFAULT,
  EINVAL,
  EIO,
  ENOMEM,
  EOPNOTSUPP,
  type Kernel,
  KernelWarning,
  PAGE_SHIFT,
  PAGE_SIZE,
  PMD_ORDER,
  copyToUser,
  fail,
} from "@x/kernel";
import {
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_TEST_HW_QUEUE_MAX,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_DEV_CACHE_NUM,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
} from "./iommufd-test.js";

/** struct iommu_hwpt_selftest { u32 iotlb; u32 pagetable_type }: `iotlb` ends the first version. */
const HWPT_SELFTEST_SIZE = 8;
const HWPT_SELFTEST_MIN = 4;
/** struct iommu_hwpt_invalidate_selftest { u32 flags; u32 iotlb_id }. */
const HWPT_INVALIDATE_SIZE = 8;
/** struct iommu_viommu_invalidate_selftest { u32 flags; u32 vdev_id; u32 cache_id }. */
const VIOMMU_INVALIDATE_SIZE = 12;
/** struct iommu_viommu_selftest { u32 in_data; u32 out_data; u64 out_mmap_offset, _length }. */
const VIOMMU_SELFTEST_SIZE = 24;
const VIOMMU_SELFTEST_MIN = 8;

const u32At = (b: Uint8Array, off: number) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, true);

/** What a mock device knows of the nested domain it is attached to. */
interface MockCaches {
  readonly cache: Uint32Array;
}

/** struct mock_iommu_domain_nested */
export class MockNestedDomain {
  readonly domain: IommuDomain;
  readonly iotlb = new Uint32Array(MOCK_NESTED_DOMAIN_IOTLB_NUM);

  constructor(
    parent: IommuDomain,
    iotlb: number,
    /** Set when the domain was made through a vIOMMU. */
    readonly viommu: IommufdViommu | undefined,
  ) {
    this.iotlb.fill(iotlb);
    this.domain = new IommuDomain({
      type: IOMMU_DOMAIN_NESTED,
      parent,
      geometry: { ...parent.geometry },
      pgsizeBitmap: 0n,
      ops: {},
      priv: this,
    });
  }

  static of(domain: IommuDomain): MockNestedDomain | undefined {
    return domain.priv instanceof MockNestedDomain ? domain.priv : undefined;
  }
}

/**
 * __mock_domain_alloc_nested: SELFTEST data only (EOPNOTSUPP), at least its `iotlb` (EINVAL),
 * every IOTLB word starting at that value.
 */
export function mockDomainAllocNested(
  kernel: Kernel,
  parent: IommuDomain,
  viommu: IommufdViommu | undefined,
  data: IommuUserData,
): IommuDomain {
  if (data.type !== IOMMU_HWPT_DATA_SELFTEST) fail(EOPNOTSUPP, "nested hwpt data type");
  const cfg = iommuCopyStructFromUser(
    kernel,
    data,
    IOMMU_HWPT_DATA_SELFTEST,
    HWPT_SELFTEST_SIZE,
    HWPT_SELFTEST_MIN,
  );
  if (kernel.shouldFail("mock_domain_alloc_nested")) fail(ENOMEM, "mock nested domain");
  return new MockNestedDomain(parent, u32At(cfg, 0), viommu).domain;
}

/**
 * mock_domain_cache_invalidate_user: entry by entry, stopping at the first bad one; the count
 * handled goes back in `array.entryNum` whatever happened.
 */
export function mockDomainCacheInvalidateUser(
  kernel: Kernel,
  domain: IommuDomain,
  array: IommuUserDataArray,
): void {
  const nested = MockNestedDomain.of(domain);
  if (!nested) throw new KernelWarning("cache_invalidate_user on a foreign domain");
  let processed = 0;
  try {
    if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_SELFTEST) fail(EINVAL, "invalidation type");
    for (let i = 0; i < array.entryNum; i++) {
      const inv = iommuCopyStructFromUserArray(
        kernel,
        array,
        IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
        i,
        HWPT_INVALIDATE_SIZE,
        HWPT_INVALIDATE_SIZE,
      );
      const flags = u32At(inv, 0);
      const iotlbId = u32At(inv, 4);
      if (flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) fail(EOPNOTSUPP, "invalidation flags");
      if (iotlbId > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX) fail(EINVAL, "iotlb_id");
      if (flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) nested.iotlb.fill(0);
      else nested.iotlb[iotlbId] = 0;
      processed++;
    }
  } finally {
    array.entryNum = processed;
  }
}

/**
 * iommu_copy_struct_from_full_user_array: every entry at once, with the per-entry rules
 * (type, then length; EFAULT).
 */
function copyFullUserArray(
  kernel: Kernel,
  array: IommuUserDataArray,
  type: number,
  size: number,
): Uint8Array[] {
  if (array.type !== type) fail(EINVAL, "invalidation type");
  const out: Uint8Array[] = [];
  for (let i = 0; i < array.entryNum; i++)
    out.push(iommuCopyStructFromUserArray(kernel, array, type, i, size, size));
  return out;
}

/**
 * mock_viommu_cache_invalidate: all entries are read first (a read failure handles none), then
 * each clears cache words of the mock device its vdev_id names.
 */
function mockViommuCacheInvalidate(
  kernel: Kernel,
  viommu: IommufdViommu,
  array: IommuUserDataArray,
): void {
  if (!array.entryNum && array.type === IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST) return;
  let cmds: Uint8Array[];
  try {
    cmds = copyFullUserArray(
      kernel,
      array,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      VIOMMU_INVALIDATE_SIZE,
    );
  } catch (e) {
    array.entryNum = 0;
    throw e;
  }
  let processed = 0;
  try {
    for (const cmd of cmds) {
      const flags = u32At(cmd, 0);
      const vdevId = u32At(cmd, 4);
      const cacheId = u32At(cmd, 8);
      if (flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) fail(EOPNOTSUPP, "invalidation flags");
      if (cacheId > MOCK_DEV_CACHE_ID_MAX) fail(EINVAL, "cache_id");
      const idev = iommufdViommuFindDev(viommu, BigInt(vdevId));
      if (!idev) fail(EINVAL, `no vDEVICE 0x${vdevId.toString(16)}`);
      const mdev = idev.dev as unknown as MockCaches;
      if (flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) mdev.cache.fill(0, 0, MOCK_DEV_CACHE_NUM);
      else mdev.cache[cacheId] = 0;
      processed++;
    }
  } finally {
    array.entryNum = processed;
  }
}

/**
 * mock_viommu_init: the ops; with user data, two zeroed pages offered for mmap of the iommufd
 * file holding `in_data` in their first word, and `out_data` = `in_data`, `out_mmap_offset` and
 * `out_mmap_length` written back. Decision: the machine allocates folios of order 0, 9 or 18,
 * so the mock's order-1 block is the start of an order-9 folio.
 */
export function mockViommuInit(
  kernel: Kernel,
  viommu: IommufdViommu,
  data: IommuUserData | undefined,
): void {
  let region: { pfn: number; offset: bigint } | undefined;
  if (data) {
    const cfg = iommuCopyStructFromUser(
      kernel,
      data,
      IOMMU_VIOMMU_TYPE_SELFTEST,
      VIOMMU_SELFTEST_SIZE,
      VIOMMU_SELFTEST_MIN,
    );
    const pfn = kernel.mem.allocFolio(PMD_ORDER, "mock_viommu_pages");
    const length = BigInt(2 * PAGE_SIZE);
    const offset = viommu.ctx.allocMmap(viommu, pfn, length);
    region = { pfn, offset };
    try {
      kernel.mem.writePhys(BigInt(pfn) << BigInt(PAGE_SHIFT), cfg.subarray(0, 4));
      const dv = new DataView(cfg.buffer);
      dv.setUint32(4, dv.getUint32(0, true), true);
      dv.setBigUint64(8, offset, true);
      dv.setBigUint64(16, length, true);
      copyToUser(kernel, data.uptr, cfg.subarray(0, Math.min(data.len, VIOMMU_SELFTEST_SIZE)));
    } catch (e) {
      viommu.ctx.destroyMmap(offset);
      kernel.mem.folioPut(pfn);
      throw e;
    }
  }
  const hwQueues: Array<IommufdHwQueue | undefined> = new Array(IOMMU_TEST_HW_QUEUE_MAX);
  const ops: IommufdViommuOps = {
    allocDomainNested: (flags, userData) => {
      if (flags & ~IOMMU_HWPT_ALLOC_PASID) fail(EOPNOTSUPP, "nested flags");
      return mockDomainAllocNested(kernel, viommu.hwpt.domain!, viommu, userData);
    },
    cacheInvalidate: (array) => mockViommuCacheInvalidate(kernel, viommu, array),
    getHwQueueSize: (type) => (type === IOMMU_HW_QUEUE_TYPE_SELFTEST ? 1 : 0),
    hwQueueInitPhys: (queue, index, basePa) =>
      mockHwQueueInitPhys(viommu, hwQueues, queue, index, basePa),
    destroy: () => {
      if (!region) return;
      viommu.ctx.destroyMmap(region.offset);
      kernel.mem.folioPut(region.pfn);
    },
  };
  viommu.ops = ops;
}

/**
 * mock_hw_queue_init_phys: slots fill in index order (EINVAL past the last, EEXIST for a used
 * one, EIO when the one below is empty); the base must be where the nest parent maps the queue
 * (EFAULT); a queue depends on the one below it.
 */
function mockHwQueueInitPhys(
  viommu: IommufdViommu,
  hwQueues: Array<IommufdHwQueue | undefined>,
  queue: IommufdHwQueue,
  index: number,
  basePa: bigint,
): void {
  if (index >= IOMMU_TEST_HW_QUEUE_MAX) fail(EINVAL, "hw queue index");
  if (hwQueues[index]) fail(EEXIST, "hw queue slot in use");
  const prev = index > 0 ? hwQueues[index - 1] : undefined;
  if (index > 0 && !prev) fail(EIO, "hw queue below is missing");
  if (basePa !== iommuIovaToPhys(viommu.hwpt.domain!, queue.baseAddr)) fail(EFAULT, "base_pa");
  if (prev) iommufdHwQueueDepend(queue, prev);
  hwQueues[index] = queue;
  queue.driverDestroy = () => {
    hwQueues[index] = undefined;
    if (prev) iommufdHwQueueUndepend(prev);
  };
}
