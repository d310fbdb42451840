/**
 * The selftest mock IOMMU: the devices of the mock bus (`mock_dev`), the driver operations
 * iommufd calls on them, and their paging domains.
 *
 * A mock domain is an iommupt domain of the mock format from @x/iommu-pgtable
 * (`mockIommuptDomainAlloc`): DEFAULT (AMDv1 layout with a 2 KiB granule, every power-of-two
 * size, aperture 16 MiB .. 2 GiB-1) unless HWPT_ALLOC passes selftest data choosing HUGE
 * (1 MiB | 4 KiB page sizes, natural aperture). Table allocations are fault-injectable.
 *
 * Each mock device is its own iommu group, is cache coherent, supports dirty tracking unless
 * created with MOCK_FLAGS_DEVICE_NO_DIRTY, and advertises 20 PASID bits with
 * MOCK_FLAGS_DEVICE_PASID (accepted as a plain device: no PASID attach is modelled). It keeps
 * the four cache slots DEV_CHECK_CACHE compares.
 *
 * Every machine has one registry (`mockIommu(kernel)`) of live devices and domains, which the
 * fail_nth invariants read: after a context is closed no mock device or domain may be left.
 *
 * @see drivers/iommu/iommufd/selftest.c
 */
import {
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  type IommuDomain,
  IommuDevice,
  type IommuDriver,
  type IommuHwInfo,
  MOCK_IOMMUPT_DEFAULT,
  iommuReadRuns,
  mockIommuptDomainAlloc,
} from "@x/iommu-pgtable";
import {
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DATA_SELFTEST,
  type IommufdDriverExtras,
  type IommufdViommu,
  type IommufdViommuDriver,
  type IommuUserData,
  type IommuUserDataArray,
  iommufdViommuGetVdevId,
} from "@x/iommufd";
import {
  E2BIG,
  EINVAL,
  ENOMEM,
  EOPNOTSUPP,
  type Kernel,
  KernelWarning,
  copyFromUser,
  fail,
  ModuleKey,
} from "@x/kernel";
import {
  IOMMU_VIOMMU_TYPE_SELFTEST,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  MOCK_DEV_CACHE_NUM,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_PASID_WIDTH,
  IOMMU_TEST_PASID_RESERVED,
  IOMMU_HW_INFO_SELFTEST_REGVAL,
} from "./iommufd-test.js";
import {
  MockNestedDomain,
  mockDomainAllocNested,
  mockDomainCacheInvalidateUser,
  mockViommuInit,
} from "./mock-viommu.js";

/** struct iommu_hwpt_selftest: { u32 iotlb; u32 pagetable_type }; iotlb is the last needed. */
const HWPT_SELFTEST_SIZE = 8;
const HWPT_SELFTEST_MIN = 4;

const PAGING_FLAGS =
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID;

/** The live mock devices and domains of one machine (the mock bus and its driver). */
export class MockIommu {
  private static readonly key = new ModuleKey<MockIommu>("iommufd_selftest");
  readonly devices = new Set<MockDev>();
  readonly domains = new Set<MockDomain>();
  /** mock_dev_ida: the lowest free device number. */
  private readonly ids = new Set<number>();

  readonly driver: MockIommuDriver;

  private constructor(readonly kernel: Kernel) {
    this.driver = new MockIommuDriver(this);
  }

  static of(kernel: Kernel): MockIommu {
    return kernel.moduleState(MockIommu.key, (k) => new MockIommu(k));
  }

  allocId(): number {
    let id = 0;
    while (this.ids.has(id)) id++;
    this.ids.add(id);
    return id;
  }

  freeId(id: number): void {
    this.ids.delete(id);
  }
}

/**
 * struct mock_iommu_domain: the driver-private part of a mock paging domain, reachable as the
 * domain's `priv` (how the driver recognises its own domains).
 */
export class MockDomain {
  readonly domain: IommuDomain;

  constructor(
    readonly registry: MockIommu,
    pagetableType: number,
    /** Allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING (has dirty ops). */
    readonly dirty: boolean,
  ) {
    this.domain = mockIommuptDomainAlloc(pagetableType, {
      faults: registry.kernel,
      priv: this,
      ops: { free: () => this.freed() },
      // mock_domain_alloc_user: dirty_ops only for IOMMU_HWPT_ALLOC_DIRTY_TRACKING; reading
      // and clearing is iommupt's own walk (IOMMU_PT_DIRTY_OPS).
      ...(dirty ? { dirtyOps: { setDirtyTracking: mockDomainSetDirtyTracking } } : {}),
    });
    registry.domains.add(this);
  }

  /** The mock domain behind an iommu_domain, if it is one of `registry`'s (or any machine's). */
  static of(domain: IommuDomain, registry?: MockIommu): MockDomain | undefined {
    const m = domain.priv;
    return m instanceof MockDomain && (!registry || m.registry === registry) ? m : undefined;
  }

  private freed(): void {
    if (!this.registry.domains.delete(this)) throw new KernelWarning("mock domain freed twice");
  }

  /** Bytes still translated anywhere in the aperture (0 for an empty domain). */
  mappedBytes(): bigint {
    const { apertureStart, apertureEnd } = this.domain.geometry;
    let n = 0n;
    for (const run of iommuReadRuns(this.domain, apertureStart, apertureEnd - apertureStart + 1n))
      n += run.length;
    return n;
  }
}

/**
 * MOCK_DIRTY_TRACK lives in the domain's `dirtyTracking`: enabling needs dirty_ops (-EINVAL).
 * @see mock_domain_set_dirty_tracking
 */
function mockDomainSetDirtyTracking(domain: IommuDomain, enable: boolean): void {
  if (enable && !domain.dirtyOps) fail(EINVAL, "no dirty ops");
  domain.dirtyTracking = enable;
}

/**
 * The mock driver's iommu_hwpt_selftest parse: type SELFTEST (or NONE) only, at least the
 * `iotlb` member, zero bytes past the struct (copy_struct_from_user).
 * @see iommu_copy_struct_from_user
 */
function readHwptSelftest(kernel: Kernel, data: IommuUserData): number {
  if (data.type !== IOMMU_HWPT_DATA_SELFTEST) fail(EINVAL, "hwpt data type");
  if (data.len < HWPT_SELFTEST_MIN) fail(EINVAL, "hwpt data too short");
  const bytes = copyFromUser(kernel, data.uptr, data.len);
  if (bytes.subarray(HWPT_SELFTEST_SIZE).some((b) => b !== 0)) fail(E2BIG, "hwpt data tail");
  const full = new Uint8Array(HWPT_SELFTEST_SIZE);
  full.set(bytes.subarray(0, HWPT_SELFTEST_SIZE));
  return new DataView(full.buffer).getUint32(4, true);
}

/** struct mock_dev: a device on the mock bus, behind the mock IOMMU. */
export class MockDev extends IommuDevice {
  /** The device cache slots DEV_CHECK_CACHE reads. */
  readonly cache = new Uint32Array(MOCK_DEV_CACHE_NUM).fill(IOMMU_TEST_DEV_CACHE_DEFAULT);
  /** Attached to a nested domain of a vIOMMU: that vIOMMU and the device's virt_id on it. */
  viommu: IommufdViommu | undefined;
  vdevId = 0n;
  /** mdev->pasid_1024_fake_error: the next set_dev_pasid of PASID 1024 fails. */
  pasid1024FakeError = false;
  private destroyed = false;

  constructor(
    readonly registry: MockIommu,
    readonly id: number,
    readonly flags: number,
  ) {
    super(`mock_dev${id}`, registry.driver);
    // "pasid-num-bits" is MOCK_PASID_WIDTH with MOCK_FLAGS_DEVICE_PASID, else 0, and
    // max_pasids = min(the mock IOMMU's 1 << MOCK_PASID_WIDTH, 1 << bits).
    // @see dev_iommu_get_max_pasids
    this.maxPasids = flags & MOCK_FLAGS_DEVICE_PASID ? 2 ** MOCK_PASID_WIDTH : 1;
  }

  /** mock_dev_destroy */
  destroy(): void {
    if (this.destroyed) throw new KernelWarning(`${this.name} destroyed twice`);
    this.destroyed = true;
    this.registry.devices.delete(this);
    this.registry.freeId(this.id);
  }
}

function mockDev(dev: IommuDevice): MockDev {
  if (!(dev instanceof MockDev)) throw new KernelWarning(`${dev.name} is not on the mock bus`);
  return dev;
}

/** The mock IOMMU's driver ops (mock_ops). */
export class MockIommuDriver implements IommuDriver, IommufdDriverExtras, IommufdViommuDriver {
  readonly name = "iommufd_mock";
  /** mock_ops.user_pasid_table: page requests of an unattached PASID go to the RID's nested HWPT. */
  readonly userPasidTable = true;

  constructor(readonly registry: MockIommu) {}

  /** @see mock_domain_capable */
  capable(dev: IommuDevice, cap: number): boolean {
    if (cap === IOMMU_CAP_CACHE_COHERENCY) return true;
    if (cap === IOMMU_CAP_DIRTY_TRACKING) return !(mockDev(dev).flags & MOCK_FLAGS_DEVICE_NO_DIRTY);
    return false;
  }

  /** struct iommu_test_hw_info { u32 flags; u32 test_reg }. @see mock_domain_hw_info */
  hwInfo(_dev: IommuDevice): IommuHwInfo {
    const data = new Uint8Array(8);
    new DataView(data.buffer).setUint32(4, IOMMU_HW_INFO_SELFTEST_REGVAL, true);
    return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data };
  }

  /** @see mock_domain_alloc_paging_flags */
  domainAllocPaging(dev: IommuDevice, flags: number, data?: IommuUserData): IommuDomain {
    const kernel = this.registry.kernel;
    const dirty = (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0;
    if (flags & ~PAGING_FLAGS || (dirty && mockDev(dev).flags & MOCK_FLAGS_DEVICE_NO_DIRTY))
      fail(EOPNOTSUPP, "mock paging flags");
    if (data && data.type !== IOMMU_HWPT_DATA_SELFTEST && data.type !== IOMMU_HWPT_DATA_NONE)
      fail(EOPNOTSUPP, "hwpt data type");
    const ptType = data ? readHwptSelftest(kernel, data) : MOCK_IOMMUPT_DEFAULT;
    if (kernel.shouldFail("mock_domain_alloc")) fail(ENOMEM, "mock domain");
    return new MockDomain(this.registry, ptType, dirty).domain;
  }

  /**
   * Every PASID attach succeeds except that of IOMMU_TEST_PASID_RESERVED, which fails (ENOMEM)
   * every second time so the core's rollback can be tested; blocking it resets the count.
   * Only the mock's own domains, paging or nested (domain_nested_ops has set_dev_pasid too),
   * are accepted (the core's domain owner check, EINVAL).
   * @see mock_domain_set_dev_pasid_nop
   */
  setDevPasid(
    domain: IommuDomain | undefined,
    dev: IommuDevice,
    pasid: number,
    _old: IommuDomain | undefined,
  ): void {
    const mdev = mockDev(dev);
    if (domain && !MockDomain.of(domain, this.registry) && !MockNestedDomain.of(domain))
      fail(EINVAL, "not a mock domain");
    if (pasid !== IOMMU_TEST_PASID_RESERVED) return;
    if (!domain) mdev.pasid1024FakeError = false;
    else if (mdev.pasid1024FakeError) {
      mdev.pasid1024FakeError = false;
      fail(ENOMEM, "pasid 1024: the faked failure");
    } else mdev.pasid1024FakeError = true;
  }

  /**
   * @see mock_domain_nop_attach: only mock domains, no dirty domain on a NO_DIRTY device; a
   * nested domain of a vIOMMU needs the device's vDEVICE there (ENOENT), whose virt_id the
   * device then reports events with.
   */
  attachDev(domain: IommuDomain, dev: IommuDevice): void {
    const nested = MockNestedDomain.of(domain);
    if (!nested && !MockDomain.of(domain, this.registry)) fail(EINVAL, "not a mock domain");
    const mdev = mockDev(dev);
    if (domain.dirtyOps && mdev.flags & MOCK_FLAGS_DEVICE_NO_DIRTY)
      fail(EINVAL, "dirty domain on a NO_DIRTY device");
    const viommu = nested?.viommu;
    const vdevId = viommu ? iommufdViommuGetVdevId(viommu, dev) : 0n;
    mdev.viommu = viommu;
    mdev.vdevId = vdevId;
  }

  /** @see mock_domain_alloc_nested */
  domainAllocNested(
    _dev: IommuDevice,
    parent: IommuDomain,
    flags: number,
    data: IommuUserData,
  ): IommuDomain {
    if (flags & ~IOMMU_HWPT_ALLOC_PASID) fail(EOPNOTSUPP, "nested flags");
    if (!MockDomain.of(parent, this.registry)) fail(EINVAL, "parent is not a mock paging domain");
    return mockDomainAllocNested(this.registry.kernel, parent, undefined, data);
  }

  /** @see mock_domain_cache_invalidate_user */
  cacheInvalidateUser(domain: IommuDomain, array: IommuUserDataArray): void {
    mockDomainCacheInvalidateUser(this.registry.kernel, domain, array);
  }

  /** Only IOMMU_VIOMMU_TYPE_SELFTEST. @see mock_get_viommu_size */
  getViommuSize(_dev: IommuDevice, type: number): number {
    return type === IOMMU_VIOMMU_TYPE_SELFTEST ? 1 : 0;
  }

  /** @see mock_viommu_init */
  viommuInit(viommu: IommufdViommu, _parent: IommuDomain, data: IommuUserData | undefined): void {
    mockViommuInit(this.registry.kernel, viommu, data);
  }
}

/** mock_dev_create: EINVAL for unknown flags, then the allocation. */
export function mockDevCreate(kernel: Kernel, devFlags: number): MockDev {
  if (devFlags & ~(MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID))
    fail(EINVAL, "mock device flags");
  if (kernel.shouldFail("mock_dev_create")) fail(ENOMEM, "mock device");
  const registry = MockIommu.of(kernel);
  const mdev = new MockDev(registry, registry.allocId(), devFlags);
  registry.devices.add(mdev);
  return mdev;
}
