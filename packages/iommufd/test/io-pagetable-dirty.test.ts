/**
 * The io_pagetable side of dirty tracking called directly, with a driver that has its own
 * read_and_clear_dirty op (recording what it is asked) and with a page table format that keeps
 * no dirty bits: iommufd_check_iova_range's order, iommu_read_and_clear_dirty's window walk,
 * iopt_clear_dirty_data and iopt_set_dirty_tracking (drivers/iommu/iommufd/io_pagetable.c).
 */
import {
  IOMMU_DIRTY_NO_CLEAR,
  type IommuDomain,
  PT_FEAT_SIGN_EXTEND,
  type iommuReadAndClearDirty,
  iommuptDomainAlloc,
  x86_64Format,
} from "@x/iommu-pgtable";
import {
  EINVAL,
  EOPNOTSUPP,
  Kernel,
  KernelWarning,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import { IoPagetable } from "../src/io-pagetable.js";
import { ioptReadAndClearDirtyData, ioptSetDirtyTracking } from "../src/io-pagetable-dirty.js";
import { iommufdInit } from "../src/ioctls.js";
import { PAGE, RW, ctx, errno } from "./pages-helpers.js";

const I = 0x100000n;
/** IOVA one window of a bitmap covers with one bit per byte (512 pages of 32768 bits). */
const WINDOW = 512n * 4096n * 8n;

interface Call {
  iova: bigint;
  size: bigint;
  flags: number;
}

/**
 * An x86_64 table (no dirty bits in its format); with `driver`, a read_and_clear_dirty op that
 * records its calls, reports `dirty` IOVA inside the piece it is asked for and gathers the piece.
 */
function world(driver: boolean, dirty: Array<[bigint, bigint]> = []) {
  const kernel = new Kernel();
  iommufdInit(kernel);
  // Root with CAP_IPC_LOCK: the 16 MiB mapping is not held to RLIMIT_MEMLOCK.
  const libc = new Libc(kernel);
  const calls: Call[] = [];
  const tracking: boolean[] = [];
  const syncs = { n: 0 };
  const readAndClearDirty = (
    _d: IommuDomain,
    iova: bigint,
    size: bigint,
    flags: number,
    out: Parameters<typeof iommuReadAndClearDirty>[4],
  ) => {
    calls.push({ iova, size, flags });
    for (const [at, len] of dirty)
      if (at >= iova && at + len <= iova + size) out.bitmap?.set(at, len);
    out.gather.addRange(iova, size);
  };
  const domain = iommuptDomainAlloc(
    { format: x86_64Format, features: 1 << PT_FEAT_SIGN_EXTEND, hwMaxVaLg2: 48 },
    {
      ops: {
        iotlbSync: () => {
          syncs.n++;
        },
      },
      ...(driver
        ? {
            dirtyOps: {
              setDirtyTracking: (_d: IommuDomain, enable: boolean) => {
                tracking.push(enable);
              },
              readAndClearDirty,
            },
          }
        : {}),
    },
  );
  const iopt = new IoPagetable(kernel);
  iopt.tableAddDomain(domain);
  const bitmap = libc.mmap(
    0n,
    1n << 22n,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0,
  );
  const map = (iova: bigint, length: bigint) => {
    const va = libc.mmap(0n, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    iopt.mapUserPages(ctx, iova, va, length, RW, 0);
  };
  const harvest = (iova: bigint, length: bigint, pageSize: bigint, flags = 0) =>
    errno(() =>
      ioptReadAndClearDirtyData(iopt, domain, flags, {
        iova,
        length,
        page_size: pageSize,
        data: bitmap,
      }),
    );
  return { kernel, libc, domain, iopt, bitmap, map, harvest, calls, tracking, syncs };
}

describe("iommufd_check_iova_range", () => {
  it("iova_alignment is checked before page_size: a page size smaller than it does not help", () => {
    const w = world(true);
    w.map(I, 8n * PAGE);
    // The IOAS's iova_alignment is 4 KiB (the x86_64 table's smallest page).
    expect(w.harvest(I + 2048n, 4n * PAGE - 2048n, 512n)).toBe(EINVAL);
    expect(w.harvest(I, 4n * PAGE + 2048n, 512n)).toBe(EINVAL);
    expect(w.calls).toEqual([]);
    expect(w.harvest(I + PAGE, 4n * PAGE, 2048n)).toBe(0);
    expect(w.calls).toEqual([{ iova: I + PAGE, size: 4n * PAGE, flags: 0 }]);
  });

  it("a length of 0 at IOVA 0 is the whole space, not an overflow; page_size 0 is then EINVAL", () => {
    const w = world(true);
    expect(w.harvest(0n, 0n, 0n)).toBe(EINVAL);
    expect(w.calls).toEqual([]);
  });
});

describe("iommu_read_and_clear_dirty", () => {
  it("is EOPNOTSUPP for a domain whose format keeps no dirty bits and whose driver has no op", () => {
    const w = world(false);
    w.map(I, 4n * PAGE);
    w.libc.poke(w.bitmap, new Uint8Array([0]));
    const pinned = w.kernel.mem.totalPinned();
    expect(w.harvest(I, 4n * PAGE, PAGE)).toBe(EOPNOTSUPP);
    expect(w.kernel.mem.totalPinned()).toBe(pinned);
    expect(w.syncs.n).toBe(0);
  });

  it("hands the driver's op each area's part of the window, with the caller's flags", () => {
    const w = world(true, [[I + 5n * PAGE, PAGE]]);
    w.map(I, 4n * PAGE);
    w.map(I + 4n * PAGE, 4n * PAGE);
    expect(w.harvest(I + PAGE, 6n * PAGE, PAGE, IOMMU_DIRTY_NO_CLEAR)).toBe(0);
    expect(w.calls).toEqual([
      { iova: I + PAGE, size: 3n * PAGE, flags: IOMMU_DIRTY_NO_CLEAR },
      { iova: I + 4n * PAGE, size: 3n * PAGE, flags: IOMMU_DIRTY_NO_CLEAR },
    ]);
    // Bit 4: IOVA I + 5 pages from a range starting at I + 1 page.
    expect(Array.from(w.libc.peek(w.bitmap, 1))).toEqual([0x10]);
  });

  it("syncs the IOTLB after the walk unless NO_CLEAR", () => {
    const w = world(true);
    w.map(I, 4n * PAGE);
    const before = w.syncs.n;
    expect(w.harvest(I, 4n * PAGE, PAGE, IOMMU_DIRTY_NO_CLEAR)).toBe(0);
    expect(w.syncs.n).toBe(before);
    expect(w.harvest(I, 4n * PAGE, PAGE)).toBe(0);
    expect(w.syncs.n).toBe(before + 1);
  });

  it("walks every window of the bitmap (one bit per byte: 16 MiB of IOVA a window)", () => {
    const w = world(true, [[I + WINDOW + 100n, 1n]]);
    w.map(I, WINDOW + PAGE);
    expect(w.harvest(I, WINDOW + PAGE, 1n)).toBe(0);
    expect(w.calls).toEqual([
      { iova: I, size: WINDOW, flags: 0 },
      { iova: I + WINDOW, size: PAGE, flags: 0 },
    ]);
    expect(Array.from(w.libc.peek(w.bitmap + WINDOW / 8n + 12n, 1))).toEqual([0x10]);
  });

  it("a hole ends the walk at its window: later windows are not read, the ioctl still succeeds", () => {
    const w = world(true, [[I + WINDOW, 1n]]);
    w.map(I, PAGE);
    w.map(I + WINDOW, PAGE);
    const pinned = w.kernel.mem.totalPinned();
    expect(w.harvest(I, WINDOW + PAGE, 1n)).toBe(0);
    expect(w.calls).toEqual([{ iova: I, size: PAGE, flags: 0 }]);
    expect(Array.from(w.libc.peek(w.bitmap + WINDOW / 8n, 1))).toEqual([0]);
    // The window the walk stopped in is unpinned by iova_bitmap_free.
    expect(w.kernel.mem.totalPinned()).toBe(pinned);
  });

  it("a WARN in the driver's op is not swallowed; the bitmap is unpinned", () => {
    const w = world(true);
    w.map(I, 4n * PAGE);
    w.domain.dirtyOps!.readAndClearDirty = () => {
      throw new KernelWarning("driver");
    };
    const pinned = w.kernel.mem.totalPinned();
    expect(() => w.harvest(I, 4n * PAGE, PAGE)).toThrow(KernelWarning);
    expect(w.kernel.mem.totalPinned()).toBe(pinned);
  });
});

describe("iopt_set_dirty_tracking", () => {
  it("enable first clears every area's dirty bits (flags 0) and syncs once; disable clears nothing", () => {
    const w = world(true);
    w.map(I, 2n * PAGE);
    w.map(I + 8n * PAGE, 3n * PAGE);
    const before = w.syncs.n;
    ioptSetDirtyTracking(w.iopt, w.domain, true);
    expect(w.calls).toEqual([
      { iova: I, size: 2n * PAGE, flags: 0 },
      { iova: I + 8n * PAGE, size: 3n * PAGE, flags: 0 },
    ]);
    expect(w.syncs.n).toBe(before + 1);
    ioptSetDirtyTracking(w.iopt, w.domain, false);
    expect(w.calls.length).toBe(2);
    expect(w.tracking).toEqual([true, false]);
  });
});
