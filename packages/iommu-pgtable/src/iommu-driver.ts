/**
 * How an IOMMU driver offers domains for a device, and how a device's DMA goes through the
 * domain attached to it.
 *
 * A driver (`IommuDriver`, the model of struct iommu_ops) reports capabilities and hw_info and
 * allocates paging domains. `PtIommuDriver` is a hardware-like driver over one iommupt format
 * (configured by a `PtDriverDesc`); `iommuptDomainAlloc` is the building block the selftest mock
 * driver and others use. A device (`IommuDevice`) belongs to one driver and has at most one
 * attached domain; without one its DMA is blocked.
 *
 * DMA translation (`iommuTranslate`, `iommuDeviceDma`) checks presence and the leaf's
 * permission for the access, sets the dirty bit on a write when the domain tracks dirty pages,
 * and otherwise records an `IommuFault` on the device and throws it.
 *
 * @see include/linux/iommu.h (struct iommu_ops), drivers/iommu/iommu.c
 */
import { EINVAL, ENOMEM, EOPNOTSUPP, fail } from "@x/kernel";
import {
  type IommuDirtyOps,
  type IommuDomainGeometry,
  type IommuDomainOps,
  IommuDomain,
  type IommuPhysRun,
  iommuReadRuns,
} from "./iommu.js";
import { PT_ALLOC_SITE, PtIommu, type PtIommuCfg } from "./iommu-pt.js";
import {
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_NESTED,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_WRITE,
  type DmaAccess,
  U64_MAX,
} from "./iommu-types.js";
import type { IommuResvRegion } from "./iommu-resv.js";
import { PT_FEAT_DYNAMIC_TOP, PT_FEAT_SIGN_EXTEND, hasFeature } from "./pt-format.js";

/** Something that can fail an allocation on purpose: a `Kernel` fits. */
export interface FaultSource {
  shouldFail(site: string): boolean;
}

/** hw_info as IOMMU_GET_HW_INFO returns it. */
export interface IommuHwInfo {
  readonly type: number;
  readonly data: Uint8Array;
}

/** @see struct iommu_ops */
export interface IommuDriver {
  readonly name: string;
  capable(dev: IommuDevice, cap: number): boolean;
  hwInfo(dev: IommuDevice): IommuHwInfo;
  /** A new paging domain for `dev` (flags = IOMMU_HWPT_ALLOC_*); throws an errno. */
  domainAllocPaging(dev: IommuDevice, flags: number): IommuDomain;
  /** Refuse (throw -EINVAL) a domain this device cannot use. */
  attachDev?(domain: IommuDomain, dev: IommuDevice): void;
  /** The device's reserved regions; none without it. @see iommu_get_resv_regions */
  getResvRegions?(dev: IommuDevice): readonly IommuResvRegion[];
  /**
   * Point `pasid` of `dev` at `domain` (undefined: the blocked domain) in place of `old`; a
   * throw leaves `old` in place. Without it PASID attach is EOPNOTSUPP.
   * @see struct iommu_domain_ops set_dev_pasid
   */
  setDevPasid?(
    domain: IommuDomain | undefined,
    dev: IommuDevice,
    pasid: number,
    old: IommuDomain | undefined,
  ): void;
}

/** Why a DMA did not translate ("config": the IOMMU's configuration for the device is bad). */
type IommuFaultReason = "blocked" | "not-present" | "permission" | "config";

/** An IOMMU translation fault as the hardware would report it. */
export class IommuFault extends Error {
  constructor(
    readonly device: string,
    readonly iova: bigint,
    readonly access: DmaAccess,
    readonly reason: IommuFaultReason,
    /** Through a nested domain: the stage that faulted (1: the user's table, 2: the parent). */
    readonly stage?: 1 | 2,
  ) {
    super(
      // Stryker disable next-line ConditionalExpression,EqualityOperator,StringLiteral: message text only
      `IOMMU fault: ${device} ${access === IOMMU_WRITE ? "write" : "read"} at 0x${iova.toString(16)}: ${reason}`,
    );
    // Stryker disable next-line StringLiteral: the error's name is text only
    this.name = "IommuFault";
  }
}

/** Faults kept per device (the oldest are dropped, like a hardware fault log). */
const FAULT_LOG_MAX = 64;

/** A device behind an IOMMU. */
export class IommuDevice {
  /** The attached domain; undefined = blocked. */
  domain: IommuDomain | undefined;
  /** dev->iommu->max_pasids: PASIDs below it can be attached; 0 = no PASID support. */
  maxPasids = 0;
  /** group->pasid_array for PASIDs other than IOMMU_NO_PASID (see iommu-pasid.ts). */
  readonly pasidArray = new Map<number, IommuDomain>();
  readonly faults: IommuFault[] = [];
  faultCount = 0;

  constructor(
    readonly name: string,
    readonly iommu: IommuDriver,
    /** PCI class code (pdev->class: base, sub-class, prog-if), 0 when not a PCI device. */
    readonly pciClass = 0,
  ) {}

  recordFault(fault: IommuFault): void {
    this.faultCount++;
    if (this.faults.length === FAULT_LOG_MAX) this.faults.shift();
    this.faults.push(fault);
  }
}

/** Attach (or replace with) `domain`; the driver may refuse with -EINVAL. */
export function iommuAttachDevice(dev: IommuDevice, domain: IommuDomain): void {
  dev.iommu.attachDev?.(domain, dev);
  dev.domain = domain;
}

/** Back to blocking DMA. */
export function iommuDetachDevice(dev: IommuDevice): void {
  dev.domain = undefined;
}

function fault(
  dev: string,
  iova: bigint,
  access: DmaAccess,
  reason: IommuFaultReason,
  rec?: IommuDevice,
): never {
  const f = new IommuFault(dev, iova, access, reason);
  rec?.recordFault(f);
  throw f;
}

/**
 * Translate one device access at `iova` through `domain`: the physical address, or an
 * IommuFault thrown (recorded on `dev` when given). A write sets the leaf's dirty bit when the
 * domain tracks dirty pages.
 */
export function iommuTranslate(
  domain: IommuDomain | undefined,
  iova: bigint,
  access: DmaAccess,
  dev?: IommuDevice,
): bigint {
  const name = dev?.name ?? "device";
  if (!domain || domain.type === IOMMU_DOMAIN_BLOCKED)
    return fault(name, iova, access, "blocked", dev);
  const pt = domain.pt;
  if (!pt) {
    const pa = domain.ops.iovaToPhys?.(domain, iova) ?? 0n;
    if (pa === 0n) return fault(name, iova, access, "not-present", dev);
    return pa;
  }
  const g = BigInt(pt.granuleLg2);
  const va = Number(iova >> g);
  const prot = pt.protAt(va);
  if (prot < 0) return fault(name, iova, access, "not-present", dev);
  const fmt = pt.format;
  if (access === IOMMU_WRITE ? !fmt.canWrite(prot) : !fmt.canRead(prot)) {
    return fault(name, iova, access, "permission", dev);
  }
  if (access === IOMMU_WRITE && domain.dirtyTracking && fmt.dirtyTracking) pt.setDirty(va);
  return (BigInt(pt.iovaToPhys(va)) << g) | (iova & ((1n << g) - 1n));
}

/**
 * A DMA of `length` bytes at `iova` by `dev` through its attached domain: the physical runs it
 * touches, or an IommuFault at the first byte that does not translate.
 */
export function iommuDeviceDma(
  dev: IommuDevice,
  iova: bigint,
  length: bigint,
  access: DmaAccess,
): IommuPhysRun[] {
  if (length <= 0n || iova + length - 1n > U64_MAX) fail(EINVAL, "bad DMA range");
  let domain = dev.domain;
  // Decision: a nested domain's stage 1 lives in the driver (ops.nestedDma); one without a
  // stage-1 table of its own (the selftest mock's, whose "stage 1" is only its IOTLB words)
  // passes input addresses unchanged to the nest-parent stage 2, which translates and faults.
  if (domain?.type === IOMMU_DOMAIN_NESTED) {
    if (domain.ops.nestedDma) return domain.ops.nestedDma(domain, dev, iova, length, access);
    domain = domain.parent;
  }
  return iommuPagingDma(domain, dev, iova, length, access);
}

/**
 * The paging-domain half of `iommuDeviceDma`: the runs of [iova, iova + length) through
 * `domain` (blocked when undefined), or an IommuFault (recorded on `dev` when given).
 */
export function iommuPagingDma(
  domain: IommuDomain | undefined,
  dev: IommuDevice | undefined,
  iova: bigint,
  length: bigint,
  access: DmaAccess,
): IommuPhysRun[] {
  const name = dev?.name ?? "device";
  if (!domain || domain.type === IOMMU_DOMAIN_BLOCKED)
    return fault(name, iova, access, "blocked", dev);
  const pt = domain.pt;
  if (!pt)
    return [{ iova, paddr: iommuTranslate(domain, iova, access, dev), length, prot: access }];
  const runs = iommuReadRuns(domain, iova, length);
  const fmt = pt.format;
  let at = iova;
  for (const run of runs) {
    if (run.iova !== at) return fault(name, at, access, "not-present", dev);
    if (access === IOMMU_WRITE ? !fmt.canWrite(run.prot) : !fmt.canRead(run.prot)) {
      return fault(name, at, access, "permission", dev);
    }
    at = run.iova + run.length;
  }
  if (at !== iova + length) return fault(name, at, access, "not-present", dev);
  if (access === IOMMU_WRITE && domain.dirtyTracking && fmt.dirtyTracking) {
    const g = BigInt(pt.granuleLg2);
    const first = iova >> g;
    pt.setDirtyRange(Number(first), Number(((iova + length - 1n) >> g) - first) + 1);
  }
  return runs;
}

/** Build a paging domain over a new iommupt table. */
export function iommuptDomainAlloc(
  cfg: PtIommuCfg,
  opts: {
    ops?: IommuDomainOps;
    geometry?: Partial<IommuDomainGeometry>;
    pgsizeBitmap?: bigint;
    type?: number;
    priv?: unknown;
    /** Drive the table through ops.mapPages / unmapPages (io-pgtable style). */
    classic?: boolean;
    dirtyOps?: IommuDirtyOps;
  } = {},
): IommuDomain {
  if (cfg.shouldFail?.(PT_ALLOC_SITE)) fail(ENOMEM, "page table top");
  const pt = new PtIommu(cfg);
  const signExtend = hasFeature(cfg.features, PT_FEAT_SIGN_EXTEND);
  const vaLg2 = hasFeature(cfg.features, PT_FEAT_DYNAMIC_TOP) ? pt.maxVaLg2 : pt.currentVaLg2;
  // Decision: a sign-extended table advertises its lower half as the aperture; the upper half
  // stays reachable through the API (iommufd never allocates there).
  const end = signExtend
    ? (1n << BigInt(vaLg2 - 1)) - 1n
    : vaLg2 >= 64
      ? U64_MAX
      : (1n << BigInt(vaLg2)) - 1n;
  const geometry: IommuDomainGeometry = {
    apertureStart: opts.geometry?.apertureStart ?? 0n,
    apertureEnd: opts.geometry?.apertureEnd ?? end,
    forceAperture: opts.geometry?.forceAperture ?? true,
  };
  return new IommuDomain({
    ...(opts.type === undefined ? {} : { type: opts.type }),
    geometry,
    pgsizeBitmap: opts.pgsizeBitmap ?? pt.naturalPgsizeBitmap(),
    ops: opts.ops ?? {},
    pt,
    priv: opts.priv,
    classic: opts.classic ?? false,
    ...(opts.dirtyOps ? { dirtyOps: opts.dirtyOps } : {}),
  });
}

/** What makes a hardware-like driver over one format. */
export interface PtDriverDesc {
  readonly name: string;
  readonly hwInfoType: number;
  /** The hw_info payload (driver specific bytes). */
  hwInfoData?(dev: IommuDevice): Uint8Array;
  /** Capabilities (IOMMU_CAP_*) the hardware has. */
  readonly caps: readonly number[];
  /** Flags domainAllocPaging accepts. */
  readonly allocFlags: number;
  /** The table configuration for a domain allocated with `flags`. */
  ptCfg(flags: number): Omit<PtIommuCfg, "shouldFail">;
  /** Reduce the format's natural page sizes (e.g. to what the hardware advertises). */
  pgsizeBitmap?(natural: bigint): bigint;
  /** The driver's get_resv_regions. */
  resvRegions?(dev: IommuDevice): IommuResvRegion[];
}

/** Counters a hardware-like driver keeps (what a TLB model would observe). */
interface PtDriverStats {
  iotlbSyncs: number;
  flushAll: number;
  syncMaps: number;
}

/** The IOTLB flush hooks of a hardware-like driver: they only count, into `stats`. */
export function countingFlushOps(
  stats: Pick<PtDriverStats, "iotlbSyncs" | "flushAll">,
): Pick<IommuDomainOps, "iotlbSync" | "flushIotlbAll"> {
  return {
    iotlbSync() {
      stats.iotlbSyncs++;
    },
    flushIotlbAll() {
      stats.flushAll++;
    },
  };
}

/** The hardware's dirty-tracking ops: the iommupt walk plus turning the D-bit updates on. */
const ptDirtyOps: IommuDirtyOps = {
  setDirtyTracking(domain, enable) {
    domain.dirtyTracking = enable;
  },
};

/** A hardware-like IOMMU driver over one iommupt format. */
export class PtIommuDriver implements IommuDriver {
  readonly name: string;
  readonly stats: PtDriverStats = { iotlbSyncs: 0, flushAll: 0, syncMaps: 0 };
  private readonly ops: IommuDomainOps;

  constructor(
    readonly desc: PtDriverDesc,
    private readonly faults?: FaultSource,
  ) {
    this.name = desc.name;
    this.ops = countingFlushOps(this.stats);
  }

  capable(_dev: IommuDevice, cap: number): boolean {
    return this.desc.caps.includes(cap);
  }

  hwInfo(dev: IommuDevice): IommuHwInfo {
    return { type: this.desc.hwInfoType, data: this.desc.hwInfoData?.(dev) ?? new Uint8Array(0) };
  }

  getResvRegions(dev: IommuDevice): readonly IommuResvRegion[] {
    return this.desc.resvRegions?.(dev) ?? [];
  }

  domainAllocPaging(_dev: IommuDevice, flags: number): IommuDomain {
    if (flags & ~this.desc.allocFlags)
      fail(EOPNOTSUPP, `${this.name}: unsupported alloc flags 0x${flags.toString(16)}`);
    if (
      flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING &&
      !this.desc.caps.includes(IOMMU_CAP_DIRTY_TRACKING)
    ) {
      fail(EOPNOTSUPP, `${this.name}: no dirty tracking`);
    }
    const faults = this.faults;
    const cfg: PtIommuCfg = {
      ...this.desc.ptCfg(flags),
      ...(faults ? { shouldFail: (site: string) => faults.shouldFail(site) } : {}),
    };
    const dirty = (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0;
    const domain = iommuptDomainAlloc(cfg, {
      ops: this.ops,
      priv: this,
      ...(dirty ? { dirtyOps: ptDirtyOps } : {}),
    });
    if (this.desc.pgsizeBitmap) domain.pgsizeBitmap = this.desc.pgsizeBitmap(domain.pgsizeBitmap);
    return domain;
  }

  /**
   * A dirty-tracking domain needs the unit's dirty support (VT-d SSADS, AMD HDSup): -EINVAL,
   * as paging_domain_compatible / amd_iommu_attach_device refuse it.
   */
  attachDev(domain: IommuDomain, _dev: IommuDevice): void {
    if (domain.priv !== this) fail(EINVAL, `${this.name}: domain of another IOMMU`);
    if (domain.dirtyOps && !this.desc.caps.includes(IOMMU_CAP_DIRTY_TRACKING))
      fail(EINVAL, `${this.name}: no dirty tracking on this unit`);
  }
}

/** Flags every hardware-like driver accepts. */
export const PT_DRIVER_ALLOC_FLAGS =
  IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID;
