/**
 * Test fixtures for the io_pagetable / pages tests: real paging domains of @x/iommu-pgtable
 * (an unmap cutting a huge IOPTE or hitting a hole is a WARN in iommu_unmap_nofail), a
 * minimal revocable dma-buf exporter, and the protection, context and errno helper they share.
 */
import {
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufOps,
  IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
  type PhysVec,
  dmaBufExport,
  dmaBufFd,
  dmaBufMoveNotify,
  getDmaBuf,
} from "@x/dmabuf";
import {
  type IommuDomain,
  type IommuPhysRun,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  PT_FEAT_DYNAMIC_TOP,
  amdv1Format,
  iommuReadRuns,
  iommuptDomainAlloc,
  mockIommuptDomainAlloc,
} from "@x/iommu-pgtable";
import {
  ENODEV,
  EOPNOTSUPP,
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  type MmioRegion,
  O_CLOEXEC,
  PROT_READ,
  PROT_WRITE,
  fail,
  isKernelError,
} from "@x/kernel";
import { expect } from "vitest";
import { IOPT_PAGES_ACCOUNT_USER } from "../src/accounting.js";
import { IoPagetable } from "../src/io-pagetable.js";
import { iommufdInit } from "../src/ioctls.js";
import { checkInvariants, totalNpinned } from "../src/testing.js";
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from "../src/iommu-domain.js";

/** The protection of an ordinary read-write, cache-coherent mapping. */
export const RW = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE;
export const PAGE = 4096n;
/** A mapping context whose pins are charged to the calling user (RLIMIT_MEMLOCK). */
export const ctx = { accountMode: IOPT_PAGES_ACCOUNT_USER } as const;

/** The errno of the KernelError `fn` throws, 0 when it returns. */
export function errno(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e)) return e.errno;
    throw e;
  }
  return 0;
}

/**
 * `npages` of anonymous memory faulted last page first, so each page is a PFN run of its own
 * (the allocator hands out frames in ascending order).
 */
export function scatteredBuffer(libc: Libc, npages: number): bigint {
  const va = libc.mmap(
    0n,
    npages * 4096,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0,
  );
  for (let i = npages - 1; i >= 0; i--)
    libc.poke(va + BigInt(i) * PAGE, new Uint8Array([i & 0xff]));
  return va;
}

/**
 * A machine with iommufd loaded, an unprivileged process (uid 1000 by default: RLIMIT_MEMLOCK
 * accounting applies) and an empty io_pagetable; `check` runs the invariant checker over it
 * (and `more`) and compares the machine's pins with the pages objects' counts.
 */
export function ioptMachine(uid = 1000) {
  const kernel = new Kernel();
  iommufdInit(kernel);
  const libc = new Libc(kernel, kernel.newProcess(uid));
  const iopt = new IoPagetable(kernel);
  const run = <T>(fn: () => T): T => kernel.runAs(libc.task, fn);
  const scattered = (npages: number): bigint => scatteredBuffer(libc, npages);
  const check = (...more: IoPagetable[]) => {
    const pages = checkInvariants([iopt, ...more]);
    expect(kernel.mem.totalPinned()).toBe(totalNpinned(pages));
  };
  return { kernel, libc, iopt, run, scattered, check };
}

const unmapCounts = new WeakMap<IommuDomain, { syncs: number }>();

/**
 * A paging domain for tests: AMDv1 (4 KiB / 2 MiB / 1 GiB ... IOPTEs, 4 KiB minimum) or one of
 * the selftest mock layouts. Page-table allocations are fault-injection points of `kernel`.
 */
export function testDomain(
  kernel: Kernel,
  kind: "amd" | "mock" | "mock-huge" = "amd",
): IommuDomain {
  const counter = { syncs: 0 };
  const ops = {
    iotlbSync: () => {
      counter.syncs++;
    },
  };
  const faults = { shouldFail: (site: string) => kernel.shouldFail(site) };
  const d =
    kind === "amd"
      ? iommuptDomainAlloc(
          { format: amdv1Format, features: 1 << PT_FEAT_DYNAMIC_TOP, startingLevel: 2, ...faults },
          { ops },
        )
      : mockIommuptDomainAlloc(kind === "mock" ? MOCK_IOMMUPT_DEFAULT : MOCK_IOMMUPT_HUGE, {
          faults,
          ops,
        });
  unmapCounts.set(d, counter);
  return d;
}

/** IOTLB syncs the domain saw (every unmap ends with one). */
export function syncCount(d: IommuDomain): number {
  return unmapCounts.get(d)?.syncs ?? 0;
}

/** Every mapping of the domain as runs. */
export function domainRuns(d: IommuDomain): IommuPhysRun[] {
  return iommuReadRuns(d, 0n, 1n << 39n);
}

export function mappedBytes(d: IommuDomain): bigint {
  let n = 0n;
  for (const r of domainRuns(d)) n += r.length;
  return n;
}

/**
 * A minimal revocable exporter for the DMABUF tests: one MMIO region, the private
 * interconnect published under the selftest hook's symbol name.
 */
export class TestExporter {
  revoked = false;
  nrRanges = 1;
  readonly region: MmioRegion;
  readonly dmabuf: DmaBuf;
  pins = 0;

  constructor(
    readonly kernel: Kernel,
    readonly size: bigint,
    withPin = false,
  ) {
    if (!kernel.symbols.has(IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP)) {
      kernel.symbols.exportSymbol(IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP, testMap, "iommufd_test");
    }
    this.region = kernel.mem.addMmioRegion("test-bar", size);
    const ops: DmaBufOps = {
      mapDmaBuf: () => fail(EOPNOTSUPP, "no sg path"),
      unmapDmaBuf: () => {},
      release: () => {},
      ...(withPin
        ? {
            pin: () => {
              this.pins++;
            },
            unpin: () => {
              this.pins--;
            },
          }
        : {}),
    };
    this.dmabuf = dmaBufExport(kernel, { expName: "iommufd-test", ops, size, priv: this });
    exporters.add(ops);
  }

  /** A new fd for the buffer (takes its own reference). */
  fd(): number {
    getDmaBuf(this.dmabuf);
    return dmaBufFd(this.kernel, this.dmabuf, O_CLOEXEC);
  }

  setRevoked(revoked: boolean): void {
    this.dmabuf.resv.with(() => {
      this.revoked = revoked;
      dmaBufMoveNotify(this.dmabuf);
    });
  }

  get base(): bigint {
    return this.region.base;
  }
}

const exporters = new WeakSet<DmaBufOps>();

function testMap(attach: DmaBufAttachment): PhysVec {
  attach.dmabuf.resv.assertHeld();
  if (!exporters.has(attach.dmabuf.ops)) fail(EOPNOTSUPP, "not a test buffer");
  const exp = attach.dmabuf.priv as TestExporter;
  if (exp.revoked) fail(ENODEV, "revoked");
  if (exp.nrRanges !== 1) fail(EOPNOTSUPP, "not one range");
  return { paddr: exp.base, len: exp.size };
}
