/**
 * Test machines. `createTestSystem()` is a fresh Kernel with iommufd and the selftest module
 * loaded (IOMMU_TEST_CMD, the mock bus and IOMMU, the selftest dma-buf exporter) plus a `Libc`
 * for one root process: what booting a CONFIG_IOMMUFD_TEST kernel and starting a test gives.
 *
 * `createSelftestEnv(opts)` adds what a selftest binary's constructors set up before main():
 * the global `buffer` (shared anonymous, BUFFER_SIZE bytes, huge-page aligned), the memfd `mfd`
 * and its shared mapping `mfd_buffer`, the task's fail-nth file and the post-run leak checks.
 */
import { dmaBufList } from "@x/dmabuf";
import { IOMMU_DESTROY, IommufdIoas, IommufdModule, iommu_destroy, iommufdInit } from "@x/iommufd";
import { checkInvariants } from "@x/iommufd/testing";
import {
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_FAILED,
  MAP_FIXED,
  MAP_SHARED,
  O_RDWR,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import { IOMMU_TEST_CMD_SIZE } from "./iommufd-test.js";
import { type SelftestEnv, memfd_mmap } from "./iommufd-utils.js";
import { MockIommu } from "./mock-iommu.js";
import { iommufdTestInit } from "./selftest.js";
import { ustruct } from "./ustruct.js";

export interface TestSystem {
  readonly kernel: Kernel;
  /** User space of a root process (uid 0, CAP_IPC_LOCK, CAP_SYS_ADMIN). */
  readonly libc: Libc;
}

/** A fresh machine with iommufd and the selftest module loaded. */
export function createTestSystem(): TestSystem {
  const kernel = new Kernel();
  iommufdInit(kernel);
  iommufdTestInit(kernel);
  return { kernel, libc: new Libc(kernel) };
}

/** THP PMD size the tests assume (hpage_pmd_size). */
export const HUGEPAGE_SIZE = 2 * 1024 * 1024;

export interface SelftestEnvOptions {
  /** BUFFER_SIZE: 16 pages in iommufd.c, 2 MiB in iommufd_fail_nth.c. */
  readonly bufferSize: number;
  /** Place `buffer` at a HUGEPAGE_SIZE-aligned address (iommufd.c does, fail_nth does not). */
  readonly hugeAligned: boolean;
}

/**
 * What the fail_nth sweep checks after every run, one message per violation. While contexts
 * are open: iommufd's io_pagetable invariants (I1..I11) over every IOAS. Once all descriptors
 * of the test are closed: no pinned page, no mock device or domain, no dma-buf attachment, no
 * lock held.
 */
export function selftestInvariants(kernel: Kernel): string[] {
  const out: string[] = [];
  const contexts = [...(IommufdModule.of(kernel)?.contexts() ?? [])];
  if (contexts.length) {
    const iopts = contexts.flatMap((ctx) =>
      [...ctx.objectsInOrder()].flatMap((o) => (o instanceof IommufdIoas ? [o.iopt] : [])),
    );
    try {
      checkInvariants(iopts);
    } catch (e) {
      out.push(e instanceof Error ? e.message : String(e));
    }
    return out;
  }
  const pinned = kernel.mem.totalPinned();
  if (pinned) out.push(`${pinned} page pins left`);
  const mock = MockIommu.of(kernel);
  if (mock.devices.size) out.push(`${mock.devices.size} mock devices left`);
  for (const d of mock.domains) out.push(`mock domain left with ${d.mappedBytes()} bytes mapped`);
  for (const b of dmaBufList(kernel)) {
    const n = b.resv.with(() => b.attachments.length);
    if (n) out.push(`dma-buf with ${n} attachments left`);
  }
  const held = kernel.lockdep.heldBy(kernel.current).length;
  if (held) out.push(`${held} locks held`);
  return out;
}

/** The binary's globals on a fresh test system. */
export function createSelftestEnv(opts: SelftestEnvOptions): SelftestEnv {
  const { kernel, libc } = createTestSystem();
  const size = opts.bufferSize;
  let buffer: bigint;
  if (opts.hugeAligned) {
    // posix_memalign(HUGEPAGE_SIZE) then a MAP_FIXED shared mapping over it.
    const area = libc.mmap(
      0n,
      size + HUGEPAGE_SIZE,
      PROT_READ | PROT_WRITE,
      MAP_SHARED | MAP_ANONYMOUS,
      -1,
      0,
    );
    const aligned = (area + BigInt(HUGEPAGE_SIZE - 1)) & ~BigInt(HUGEPAGE_SIZE - 1);
    libc.munmap(area, size + HUGEPAGE_SIZE);
    buffer = libc.mmap(
      aligned,
      size,
      PROT_READ | PROT_WRITE,
      MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED,
      -1,
      0,
    );
  } else {
    buffer = libc.mmap(0n, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  }
  const { buf: mfd_buffer, mfd } = memfd_mmap(libc, size, PROT_READ | PROT_WRITE, MAP_SHARED);
  if (buffer === MAP_FAILED || mfd_buffer === MAP_FAILED)
    throw new Error("selftest env: mmap failed");
  warmUpIoctlBuffer(libc);
  const task = libc.task;
  return {
    libc,
    PAGE_SIZE,
    HUGEPAGE_SIZE,
    BUFFER_SIZE: size,
    buffer,
    mfd,
    mfd_buffer,
    failNth: {
      write: (n) => (n ? task.fault.arm(n) : task.fault.disarm()),
      read: () => task.fault.read(),
    },
    checkInvariants: () => selftestInvariants(kernel),
  };
}

/**
 * A C test passes structs on its stack, whose page is present; the libc facade copies them to
 * a scratch page it maps on first use. Fault that page in now, so that a fail_nth sweep never
 * counts (or fails) the test program's own page fault.
 */
function warmUpIoctlBuffer(libc: Libc): void {
  const fd = libc.open("/dev/iommu", O_RDWR);
  const cmd = ustruct(iommu_destroy, { size: iommu_destroy.size, id: 0 }, IOMMU_TEST_CMD_SIZE);
  libc.ioctl(fd, IOMMU_DESTROY, cmd.$);
  libc.close(fd);
}
