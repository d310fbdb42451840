/**
 * IOMMU_HWPT_GET_DIRTY_BITMAP through libc.ioctl on a VT-d dirty-tracking HWPT (the device
 * attached, tracking on), with 1 % of the mapped pages dirty, one bit per 4 KiB as a VMM asks:
 *   1. 64 GiB of 4 KiB anonymous pages (4 KiB IOPTEs), against a sequential scan of as many
 *      leaf entries in a Float64Array testing a bit, in the same process: target ≤ 3×.
 *   2. 1 TiB of a hugetlb memfd in 1 GiB folios (1 GiB IOPTEs): target < 1 ms.
 * Each harvest clears what it reports, so the dirty bits are set again (untimed) before every
 * timed call. Process CPU time, best of ROUNDS after untimed warm-up calls and one full GC.
 */
import { SMOKE, record, report } from "@x/bench";
import { IommuDevice, type IommuDomain, intelIommuDriver } from "@x/iommu-pgtable";
import {
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MFD_HUGETLB,
  MFD_HUGE_1GB,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMUFD_OBJ_HWPT_PAGING,
  IommufdClient,
  type IommufdHwptPaging,
  iommu_hwpt_get_dirty_bitmap,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdInit,
} from "../src/index.js";

const GiB = 1n << 30n;
const PAGE = 4096n;
const IOVA = 1n << 40n;
const ROUNDS = SMOKE ? 2 : 5;

/** A process with /dev/iommu open, a VT-d device bound, and a dirty-tracking HWPT on an IOAS. */
function dirtySystem(ram: bigint) {
  const kernel = new Kernel({ ramBytes: ram + 4n * GiB });
  const module = iommufdInit(kernel);
  const libc = new Libc(kernel);
  const fd = IommufdClient.open(libc);
  const ctx = module.ctxFromFile(libc.process.files.lookup(fd.fd));
  const idev = iommufdDeviceBind(ctx, new IommuDevice("nic", intelIommuDriver()));
  const ioasId = fd.ioasAlloc();
  const hwptId = fd.hwptAlloc({
    devId: idev.id,
    ptId: ioasId,
    flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  });
  iommufdDeviceAttach(idev, hwptId);
  const domain = ctx.withObject<IommufdHwptPaging, IommuDomain>(
    hwptId,
    IOMMUFD_OBJ_HWPT_PAGING,
    (h) => h.domain!,
  );
  return { kernel, libc, fd, ioasId, hwptId, domain };
}

type DirtySystem = ReturnType<typeof dirtySystem>;

/**
 * CPU ms of the fastest GET_DIRTY_BITMAP of [IOVA, IOVA + size) at 4 KiB per bit, each after
 * `dirty()` set the bits again. Also checks the harvest reported `expected` bits.
 */
function harvestMs(
  s: DirtySystem,
  size: bigint,
  dirty: () => void,
  expected: number,
  warmup: number,
): number {
  const bytes = Number(size / PAGE / 8n);
  const bitmap = s.libc.mmap(
    0n,
    BigInt(bytes),
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0,
  );
  const cmd = iommu_hwpt_get_dirty_bitmap.encode({
    size: iommu_hwpt_get_dirty_bitmap.size,
    hwpt_id: s.hwptId,
    flags: 0,
    __reserved: 0,
    iova: IOVA,
    length: size,
    page_size: PAGE,
    data: bitmap,
  });
  const harvest = () => s.libc.ioctl(s.fd.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, cmd);
  // A VMM harvests once per migration pass, thousands of times: the figure is the steady
  // state, after the first calls have had their code compiled.
  for (let r = 0; r < warmup; r++) {
    dirty();
    harvest();
  }
  // One collection before the timed calls, not one before each: the pages a full GC gives
  // back are faulted in again by the next call's first allocations, which added 0.3-0.7 ms
  // of system time to a 0.25 ms call.
  (globalThis as { gc?: () => void }).gc?.();
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < ROUNDS; r++) {
    dirty();
    const c0 = process.cpuUsage();
    const ret = harvest();
    const c = process.cpuUsage(c0);
    if (ret !== 0) throw new Error(`GET_DIRTY_BITMAP: errno ${s.libc.errno}`);
    best = Math.min(best, (c.user + c.system) / 1000);
  }
  const set = popcount(s.libc.peek(bitmap, bytes));
  if (set !== expected) throw new Error(`harvest reported ${set} bits, expected ${expected}`);
  return best;
}

function popcount(bytes: Uint8Array): number {
  let n = 0;
  for (const b of bytes) for (let v = b; v; v &= v - 1) n++;
  return n;
}

/** CPU ms of the fastest scan of `entries` leaf words for a set dirty bit (1 % of them set). */
function scanMs(entries: number): number {
  // A VT-d leaf's D bit is bit 9; the words carry an output address above it, as IOPTEs do.
  const table = new Float64Array(entries);
  for (let i = 0; i < entries; i++) table[i] = i * 4096 + 3 + (i % 100 === 0 ? 512 : 0);
  let best = Number.POSITIVE_INFINITY;
  let found = 0;
  for (let r = 0; r <= ROUNDS; r++) {
    const c0 = process.cpuUsage();
    found = 0;
    for (let i = 0; i < entries; i++) if (table[i]! % 1024 >= 512) found++;
    const c = process.cpuUsage(c0);
    if (r > 0) best = Math.min(best, (c.user + c.system) / 1000);
  }
  if (found !== Math.ceil(entries / 100)) throw new Error("scan miscounted");
  return best;
}

// 1. 4 KiB IOPTEs: 1 % of the pages dirty, spread one in every hundred.
{
  const size = SMOKE ? 1n * GiB : 64n * GiB;
  const npages = Number(size / PAGE);
  const s = dirtySystem(size);
  const va = s.libc.mmap(0n, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  s.fd.ioasMap({ ioasId: s.ioasId, userVa: va, length: size, iova: IOVA });
  s.fd.hwptSetDirtyTracking(s.hwptId, true);
  const pt = s.domain.pt!;
  const first = Number(IOVA / PAGE);
  const dirty = () => {
    for (let i = 0; i < npages; i += 100) pt.setDirty(first + i);
  };
  // One untimed call: the leaf scan is compiled within it.
  const ms = harvestMs(s, size, dirty, Math.ceil(npages / 100), 1);
  const base = scanMs(npages);
  record({
    pkg: "iommufd",
    workload: `GET_DIRTY_BITMAP ${size / GiB} GiB, 4 KiB IOPTEs, 1 % dirty (libc.ioctl)`,
    value: ms,
    unit: "ms",
    baseline: base,
    ratio: ms / base,
    target: "<= 3x scan of as many leaf words",
    met: ms / base <= 3,
    note: "baseline: one pass over a Float64Array of the same length testing a bit",
  });
}

// 2. 1 GiB IOPTEs: 1 % of the folios dirty (at least one).
{
  const size = SMOKE ? 64n * GiB : 1024n * GiB;
  const nfolios = Number(size / GiB);
  const s = dirtySystem(size);
  const mfd = s.libc.memfdCreate("guest-ram", MFD_HUGETLB | MFD_HUGE_1GB);
  s.libc.ftruncate(mfd, size);
  s.fd.ioasMapFile({ ioasId: s.ioasId, fd: mfd, start: 0n, length: size, iova: IOVA });
  s.fd.hwptSetDirtyTracking(s.hwptId, true);
  const pt = s.domain.pt!;
  const first = Number(IOVA / PAGE);
  const per = Number(GiB / PAGE);
  const dirtyFolios = Math.max(1, Math.floor(nfolios / 100));
  const dirty = () => {
    for (let i = 0; i < dirtyFolios; i++) pt.setDirty(first + i * 100 * per);
  };
  // 0.25 ms calls: the per-window code is compiled after a few of them.
  const ms = harvestMs(s, size, dirty, dirtyFolios * per, SMOKE ? 1 : 10);
  record({
    pkg: "iommufd",
    workload: `GET_DIRTY_BITMAP ${size / GiB} GiB, 1 GiB IOPTEs, 1 % dirty (libc.ioctl)`,
    value: ms,
    unit: "ms",
    target: "< 1 ms",
    met: ms < 1,
  });
}

report();
