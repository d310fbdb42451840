/**
 * IOMMU_HWPT_SET_DIRTY_TRACKING and IOMMU_HWPT_GET_DIRTY_BITMAP through the ioctl: one row per
 * check in the order of drivers/iommu/iommufd/hw_pagetable.c and io_pagetable.c
 * (iommufd_check_iova_range, iopt_set_dirty_tracking, iommu_read_and_clear_dirty), rows with two
 * bad conditions (the first check wins), and what a harvest reports and clears.
 */
import {
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  type IommuDevice,
  type IommuDomain,
  MOCK_IOMMUPT_DEFAULT,
  iommuptSetDirty,
  mockIommuptDomainAlloc,
} from "@x/iommu-pgtable";
import { EINVAL, ENOENT, ENOMEM, EOPNOTSUPP, EOVERFLOW, fail } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMUFD_OBJ_HWPT_PAGING,
  type IommufdHwptPaging,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
} from "../src/index.js";
import {
  MOCK_APERTURE,
  TestIommu,
  anonBuffer,
  attachTestDevice,
  createSystem,
  errnoOf,
  snapshot,
} from "./ioctl-helpers.js";

/** The test IOMMU with dirty tracking: DIRTY_TRACKING domains get dirty ops. */
class DirtyIommu extends TestIommu {
  override capable(dev: IommuDevice, cap: number): boolean {
    return cap === IOMMU_CAP_DIRTY_TRACKING || super.capable(dev, cap);
  }

  override domainAllocPaging(_dev: IommuDevice, flags: number): IommuDomain {
    if (flags & ~(IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING))
      fail(EOPNOTSUPP, "flags");
    const dirty = (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0;
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT, {
      faults: this.kernel,
      priv: this,
      ...(dirty
        ? {
            dirtyOps: {
              setDirtyTracking: (domain: IommuDomain, enable: boolean) => {
                domain.dirtyTracking = enable;
              },
            },
          }
        : {}),
    });
    this.domains.push(d);
    return d;
  }
}

const BASE = MOCK_APERTURE[0];
const LEN = 1n << 20n;
const PG = 4096n;

function setup() {
  const sys = createSystem();
  const iommu = new DirtyIommu(sys.kernel);
  const ioas = sys.fd.ioasAlloc();
  const { idev } = attachTestDevice(sys, ioas, { iommu });
  const buf = anonBuffer(sys.libc, LEN);
  sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: LEN, iova: BASE });
  const hwpt = sys.fd.hwptAlloc({
    devId: idev.id,
    ptId: ioas,
    flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  });
  const plain = sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas });
  const domain = sys.ctx.withObject<IommufdHwptPaging, IommuDomain>(
    hwpt,
    IOMMUFD_OBJ_HWPT_PAGING,
    (h) => h.domain!,
  );
  const bitmap = anonBuffer(sys.libc, PG);
  return { sys, ioas, idev, hwpt, plain, domain, bitmap };
}

type Env = ReturnType<typeof setup>;

function getBitmap(
  env: Env,
  over: Record<string, bigint | number> = {},
  beforeCall?: () => void,
): number {
  const { sys } = env;
  const values = {
    size: 48,
    hwpt_id: env.hwpt,
    flags: 0,
    __reserved: 0,
    iova: BASE,
    length: LEN,
    page_size: PG,
    data: env.bitmap,
    ...over,
  };
  const va = sys.libc.malloc(48);
  sys.libc.poke(va, iommu_hwpt_get_dirty_bitmap.encode(values as never));
  beforeCall?.();
  return sys.libc.ioctl(sys.fd.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, va) < 0 ? sys.libc.errno : 0;
}

function setTracking(env: Env, over: Record<string, number> = {}): number {
  const { sys } = env;
  const values = { size: 16, flags: 1, hwpt_id: env.hwpt, __reserved: 0, ...over };
  const va = sys.libc.malloc(16);
  sys.libc.poke(va, iommu_hwpt_set_dirty_tracking.encode(values as never));
  return sys.libc.ioctl(sys.fd.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, va) < 0 ? sys.libc.errno : 0;
}

/** Bits set in the first `n` bits of the bitmap. */
function bitsSet(env: Env, n: number): number[] {
  const bytes = env.sys.libc.peek(env.bitmap, Math.ceil(n / 8));
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (bytes[i >> 3]! & (1 << (i & 7))) out.push(i);
  return out;
}

function clearBitmap(env: Env): void {
  env.sys.libc.poke(env.bitmap, new Uint8Array(Number(PG)));
}

describe("IOMMU_HWPT_SET_DIRTY_TRACKING", () => {
  it.each<[string, (e: Env) => Record<string, number>, number]>([
    ["unknown flag", () => ({ flags: 2 }), EOPNOTSUPP],
    ["id of an IOAS", (e) => ({ hwpt_id: e.ioas }), ENOENT],
    ["id of a device", (e) => ({ hwpt_id: e.idev.id }), ENOENT],
    ["no such id", () => ({ hwpt_id: 9999 }), ENOENT],
    ["HWPT without dirty ops", (e) => ({ hwpt_id: e.plain }), EOPNOTSUPP],
    ["unknown flag and no such id", () => ({ flags: 2, hwpt_id: 9999 }), EOPNOTSUPP],
    ["no such id, disable", () => ({ flags: 0, hwpt_id: 9999 }), ENOENT],
    [
      "unknown flag on a HWPT without dirty ops",
      (e) => ({ flags: 3, hwpt_id: e.plain }),
      EOPNOTSUPP,
    ],
  ])("%s", (_name, over, errno) => {
    const env = setup();
    const before = snapshot(env.sys);
    expect(setTracking(env, over(env))).toBe(errno);
    expect(snapshot(env.sys)).toBe(before);
    expect(env.domain.dirtyTracking).toBe(false);
  });

  it("__reserved is not checked; enable and disable reach the driver", () => {
    const env = setup();
    expect(setTracking(env, { __reserved: 7 })).toBe(0);
    expect(env.domain.dirtyTracking).toBe(true);
    expect(setTracking(env, { flags: 0 })).toBe(0);
    expect(env.domain.dirtyTracking).toBe(false);
  });

  it("enable clears dirty bits left from before", () => {
    const env = setup();
    iommuptSetDirty(env.domain, BASE);
    iommuptSetDirty(env.domain, BASE + 5n * PG);
    env.sys.fd.hwptSetDirtyTracking(env.hwpt, true);
    clearBitmap(env);
    env.sys.fd.hwptGetDirtyBitmap({
      hwptId: env.hwpt,
      iova: BASE,
      length: LEN,
      pageSize: PG,
      data: env.bitmap,
    });
    expect(bitsSet(env, Number(LEN / PG))).toEqual([]);
  });
});

describe("IOMMU_HWPT_GET_DIRTY_BITMAP", () => {
  it.each<[string, (e: Env) => Record<string, bigint | number>, number]>([
    ["unknown flag", () => ({ flags: 2 }), EOPNOTSUPP],
    ["__reserved", () => ({ __reserved: 1 }), EOPNOTSUPP],
    ["id of an IOAS", (e) => ({ hwpt_id: e.ioas }), ENOENT],
    ["no such id", () => ({ hwpt_id: 9999 }), ENOENT],
    [
      "iova + length - 1 overflows",
      () => ({ iova: -PG & ((1n << 64n) - 1n), length: 2n * PG }),
      EOVERFLOW,
    ],
    ["iova below iova_alignment (2 KiB)", () => ({ iova: BASE + 1024n }), EINVAL],
    ["end below iova_alignment", () => ({ length: LEN - 1024n }), EINVAL],
    ["page_size 0", () => ({ page_size: 0n }), EINVAL],
    ["iova not page_size aligned", () => ({ iova: BASE + 2048n, length: LEN - 2048n }), EINVAL],
    ["end not page_size aligned", () => ({ length: LEN - 2048n }), EINVAL],
    [
      "flags and __reserved and no such id",
      () => ({ flags: 2, __reserved: 1, hwpt_id: 9999 }),
      EOPNOTSUPP,
    ],
    [
      "__reserved and overflow",
      () => ({ __reserved: 1, iova: -PG & ((1n << 64n) - 1n), length: 2n * PG }),
      EOPNOTSUPP,
    ],
    ["no such id and page_size 0", () => ({ hwpt_id: 9999, page_size: 0n }), ENOENT],
    [
      "overflow and page_size 0",
      () => ({ iova: -PG & ((1n << 64n) - 1n), length: 2n * PG, page_size: 0n }),
      EOVERFLOW,
    ],
  ])("%s", (_name, over, errno) => {
    const env = setup();
    env.sys.fd.hwptSetDirtyTracking(env.hwpt, true);
    iommuptSetDirty(env.domain, BASE);
    const before = snapshot(env.sys);
    clearBitmap(env);
    expect(getBitmap(env, over(env))).toBe(errno);
    expect(snapshot(env.sys)).toBe(before);
    expect(bitsSet(env, Number(LEN / PG))).toEqual([]);
    // The dirty bit is still there: nothing was cleared.
    expect(getBitmap(env)).toBe(0);
    expect(bitsSet(env, Number(LEN / PG))).toEqual([0]);
  });

  it("an injected iova_bitmap_alloc failure is ENOMEM and clears nothing", () => {
    const env = setup();
    iommuptSetDirty(env.domain, BASE + PG);
    const before = snapshot(env.sys);
    const fault = env.sys.kernel.current.fault;
    try {
      expect(getBitmap(env, {}, () => fault.arm(1))).toBe(ENOMEM);
    } finally {
      fault.disarm();
    }
    expect(fault.failedSite).toBe("iommufd:iova_bitmap_alloc");
    expect(snapshot(env.sys)).toBe(before);
    expect(getBitmap(env)).toBe(0);
    expect(bitsSet(env, Number(LEN / PG))).toEqual([1]);
  });

  it("reports, then clears; NO_CLEAR keeps the bits", () => {
    const env = setup();
    env.sys.fd.hwptSetDirtyTracking(env.hwpt, true);
    for (const i of [0n, 3n, 255n]) iommuptSetDirty(env.domain, BASE + i * PG);
    const read = (flags: number) => {
      clearBitmap(env);
      env.sys.fd.hwptGetDirtyBitmap({
        hwptId: env.hwpt,
        iova: BASE,
        length: LEN,
        pageSize: PG,
        data: env.bitmap,
        flags,
      });
      return bitsSet(env, Number(LEN / PG));
    };
    expect(read(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)).toEqual([0, 3, 255]);
    expect(read(0)).toEqual([0, 3, 255]);
    expect(read(0)).toEqual([]);
  });

  it("a hole or an unpinnable bitmap ends the walk quietly, as the kernel ignores it", () => {
    const env = setup();
    env.sys.fd.hwptSetDirtyTracking(env.hwpt, true);
    iommuptSetDirty(env.domain, BASE + PG);
    clearBitmap(env);
    // The range runs past the area into unmapped IOVA: success, the mapped part is reported.
    expect(getBitmap(env, { length: 2n * LEN, flags: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR })).toBe(
      0,
    );
    expect(bitsSet(env, Number((2n * LEN) / PG))).toEqual([1]);
    // A bitmap pointer into nothing: success, nothing reported or cleared.
    expect(getBitmap(env, { data: 0n })).toBe(0);
    clearBitmap(env);
    expect(getBitmap(env, { flags: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR })).toBe(0);
    expect(bitsSet(env, Number(LEN / PG))).toEqual([1]);
  });

  it("the plain HWPT of an iommupt format with dirty bits can be read", () => {
    const env = setup();
    expect(getBitmap(env, { hwpt_id: env.plain })).toBe(0);
  });
});

describe("IOMMU_GET_HW_INFO capabilities", () => {
  it("report IOMMU_HW_CAP_DIRTY_TRACKING only where the driver is capable", () => {
    const env = setup();
    const yes = env.sys.fd.getHwInfo({ devId: env.idev.id }).info.out_capabilities;
    expect(yes & IOMMU_HW_CAP_DIRTY_TRACKING).toBe(IOMMU_HW_CAP_DIRTY_TRACKING);
    const { idev } = attachTestDevice(env.sys, env.sys.fd.ioasAlloc());
    const no = env.sys.fd.getHwInfo({ devId: idev.id }).info.out_capabilities;
    expect(no & IOMMU_HW_CAP_DIRTY_TRACKING).toBe(0n);
    expect(errnoOf(() => env.sys.fd.hwptSetDirtyTracking(env.plain, true))).toBe(EOPNOTSUPP);
  });
});
