/**
 * Test machine for the ioctl layer: a fresh Kernel with iommufd loaded, one user process with a
 * /dev/iommu descriptor, and a small IOMMU driver whose domains are @x/iommu-pgtable's selftest
 * mock tables (2 KiB IO pages, aperture 16 MiB .. 2 GiB - 1), like the kernel's mock bus.
 */
import {
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IommuDevice,
  type IommuDomain,
  type IommuDriver,
  type IommuHwInfo,
  MOCK_IOMMUPT_DEFAULT,
  mockIommuptDomainAlloc,
} from "@x/iommu-pgtable";
import {
  EINVAL,
  EOPNOTSUPP,
  Kernel,
  KernelError,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  fail,
} from "@x/kernel";
import type { IommuResvRegion } from "@x/iommu-pgtable";
import {
  type IommufdCtx,
  IommufdClient,
  type IommufdDevice,
  type IommufdDriverExtras,
  IommufdIoas,
  type IommufdModule,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdInit,
} from "../src/index.js";

export const PAGE = 4096n;
export const MOCK_APERTURE: readonly [bigint, bigint] = [1n << 24n, (1n << 31n) - 1n];

/** An IOMMU driver instance; domains of one instance are refused by the devices of another. */
export class TestIommu implements IommuDriver, IommufdDriverExtras {
  readonly resv = new Map<IommuDevice, IommuResvRegion[]>();
  readonly domains: IommuDomain[] = [];

  constructor(
    readonly kernel: Kernel,
    readonly name = "test-iommu",
  ) {}

  capable(_dev: IommuDevice, cap: number): boolean {
    return cap === IOMMU_CAP_CACHE_COHERENCY;
  }

  hwInfo(): IommuHwInfo {
    const data = new Uint8Array(8);
    new DataView(data.buffer).setUint32(4, 0xdeadbeef, true);
    return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data };
  }

  domainAllocPaging(_dev: IommuDevice, flags: number): IommuDomain {
    if (flags & ~IOMMU_HWPT_ALLOC_NEST_PARENT) fail(EOPNOTSUPP, "flags");
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT, { faults: this.kernel, priv: this });
    this.domains.push(d);
    return d;
  }

  attachDev(domain: IommuDomain): void {
    if (domain.priv !== this) fail(EINVAL, "domain of another IOMMU");
  }

  getResvRegions(dev: IommuDevice): readonly IommuResvRegion[] {
    return this.resv.get(dev) ?? [];
  }
}

export interface TestDeviceOptions {
  /** The driver instance (a new system-wide default one when absent). */
  iommu?: TestIommu;
  resv?: IommuResvRegion[];
}

export interface TestSystem {
  kernel: Kernel;
  iommu: TestIommu;
  module: IommufdModule;
  libc: Libc;
  fd: IommufdClient;
  ctx: IommufdCtx;
}

export function createSystem(): TestSystem {
  const kernel = new Kernel({ ramBytes: 1n << 34n });
  const module = iommufdInit(kernel, { vfioContainer: true });
  const libc = new Libc(kernel);
  const fd = IommufdClient.open(libc);
  const ctx = module.ctxFromFile(libc.process.files.lookup(fd.fd));
  return { kernel, iommu: new TestIommu(kernel), module, libc, fd, ctx };
}

/** Anonymous private read/write memory of `len` bytes in the test process. */
export function anonBuffer(libc: Libc, len: bigint): bigint {
  const va = libc.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (va < 0n) throw new KernelError(libc.errno, "mmap");
  return va;
}

/** A memfd of `len` bytes and its shared mapping. */
export function memfdBuffer(libc: Libc, len: bigint): { mfd: number; va: bigint } {
  const mfd = libc.memfdCreate("buf", 0);
  if (mfd < 0 || libc.ftruncate(mfd, len) < 0) throw new KernelError(libc.errno, "memfd");
  const va = libc.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (va < 0n) throw new KernelError(libc.errno, "mmap memfd");
  return { mfd, va };
}

/** Errno of a thrown KernelError (fails the test for anything else). */
export function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return e.errno;
    throw e;
  }
  throw new Error("expected a KernelError");
}

/** The answer of a raw ioctl: return value, errno (0 on success) and the user buffer after. */
export interface RawResult {
  ret: number;
  errno: number;
  buf: Uint8Array;
}

/**
 * Issue `cmd` on the iommufd with `bytes` placed in user memory (the caller's struct), like a
 * C program passing `&cmd`; `size` overrides the leading size word when given.
 */
export function rawIoctl(sys: TestSystem, cmd: number, bytes: Uint8Array, arg?: bigint): RawResult {
  const { libc } = sys;
  const va = arg ?? libc.malloc(Math.max(bytes.length, 8));
  if (arg === undefined) libc.poke(va, bytes);
  libc.errno = 0;
  const ret = libc.ioctl(sys.fd.fd, cmd, va);
  return { ret, errno: ret < 0 ? libc.errno : 0, buf: libc.peek(va, bytes.length) };
}

/**
 * Everything a failed ioctl must leave unchanged: objects, each IOAS's areas / allowed /
 * reserved ranges / alignment / domains, pinned pages and accounting.
 */
export function snapshot(sys: TestSystem): string {
  const out: unknown[] = [sys.ctx.objectCount, sys.ctx.vfioIoas?.id];
  for (const obj of sys.ctx.objectsInOrder()) {
    out.push([obj.id, obj.type, obj.users]);
    if (obj instanceof IommufdIoas) {
      const iopt = obj.iopt;
      out.push(
        iopt.areas().map((a) => [a.iova, a.lastIova, a.pages?.npinned]),
        iopt.allowedRanges(),
        iopt.reservedRanges().map((r) => [r.start, r.last]),
        iopt.iovaAlignment,
        iopt.largePagesDisabled,
        iopt.domainList.length,
      );
    }
  }
  out.push(sys.kernel.mem.totalPinned(), sys.libc.process.cred.user.lockedVm);
  out.push(sys.libc.process.mm.lockedVm, sys.libc.process.mm.pinnedVm);
  return JSON.stringify(out, (_k, v) => (typeof v === "bigint" ? `${v}n` : v));
}

/** Bind a test device and attach it to `ptId`; returns the device object and the HWPT id. */
export function attachTestDevice(
  sys: TestSystem,
  ptId: number,
  opts: TestDeviceOptions = {},
): { dev: IommuDevice; idev: IommufdDevice; hwptId: number } {
  const iommu = opts.iommu ?? sys.iommu;
  const dev = new IommuDevice(`dev${++devSeq}`, iommu);
  if (opts.resv) iommu.resv.set(dev, opts.resv);
  const idev = iommufdDeviceBind(sys.ctx, dev);
  const hwptId = iommufdDeviceAttach(idev, ptId);
  return { dev, idev, hwptId };
}
let devSeq = 0;
