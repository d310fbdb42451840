/**
 * Paging HWPTs (drivers/iommu/iommufd/hw_pagetable.c: iommufd_hwpt_paging_alloc,
 * iommufd_hwpt_alloc, iommufd_hwpt_paging_destroy) and IOMMU_GET_HW_INFO
 * (drivers/iommu/iommufd/device.c: iommufd_get_hw_info): what the driver is handed, what the
 * HWPT holds, what a failure leaves behind, and the bytes GET_HW_INFO writes.
 */
import {
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IommuDevice,
  type IommuDomain,
  type IommuDriver,
  type IommuHwInfo,
} from "@x/iommu-pgtable";
import { EADDRINUSE, EBUSY, EINVAL, EOPNOTSUPP, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3IommufdDriver,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_NONE,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  IOMMUFD_OBJ_HWPT_PAGING,
  type IommuUserData,
  type IommufdHwptPaging,
  iommu_fault_alloc,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommufdDeviceBind,
} from "../src/index.js";
import {
  PAGE,
  TestIommu,
  type TestSystem,
  anonBuffer,
  createSystem,
  errnoOf,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";

/**
 * A driver with domain_alloc_paging_flags that takes HWPT data, PASID and DIRTY_TRACKING (its
 * domains track nothing: no test here reads dirty bits); it records each call.
 */
class DataIommu extends TestIommu {
  readonly calls: { flags: number; data: IommuUserData | undefined }[] = [];

  override domainAllocPaging(dev: IommuDevice, flags: number, data?: IommuUserData): IommuDomain {
    this.calls.push({ flags, data });
    return super.domainAllocPaging(
      dev,
      flags & ~(IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_DIRTY_TRACKING),
    );
  }
}

/** A driver whose devices enforce cache coherency (IOMMU_CAP_ENFORCE_CACHE_COHERENCY). */
class CcIommu extends TestIommu {
  override capable(dev: IommuDevice, cap: number): boolean {
    return cap === IOMMU_CAP_ENFORCE_CACHE_COHERENCY || super.capable(dev, cap);
  }
}

function bind(sys: TestSystem, iommu: IommuDriver) {
  return iommufdDeviceBind(sys.ctx, new IommuDevice(`hwpt-dev-${++seq}`, iommu));
}
let seq = 0;

function hwptOf(sys: TestSystem, id: number): IommufdHwptPaging {
  return sys.ctx.withObject(id, IOMMUFD_OBJ_HWPT_PAGING, (h) => h as IommufdHwptPaging);
}

function faultAlloc(sys: TestSystem): { id: number; fd: number } {
  const r = rawIoctl(sys, IOMMU_FAULT_QUEUE_ALLOC, iommu_fault_alloc.encode({ size: 16 }));
  expect(r.ret).toBe(0);
  const out = iommu_fault_alloc.decode(r.buf);
  return { id: out.out_fault_id, fd: out.out_fault_fd };
}

describe("iommufd_hwpt_paging_alloc", () => {
  it("the driver gets the user data only with data_len, and the flags without FAULT_ID_VALID", () => {
    const sys = createSystem();
    const iommu = new DataIommu(sys.kernel);
    const idev = bind(sys, iommu);
    const ioas = sys.fd.ioasAlloc();
    const data = new Uint8Array(8).fill(0x5a);
    const a = sys.fd.hwptAlloc({
      devId: idev.id,
      ptId: ioas,
      dataType: IOMMU_HWPT_DATA_SELFTEST,
      data,
    });
    expect(iommu.calls).toHaveLength(1);
    const got = iommu.calls[0]!;
    expect(got.flags).toBe(0);
    expect(got.data).toMatchObject({ type: IOMMU_HWPT_DATA_SELFTEST, len: 8 });
    expect(sys.libc.peek(got.data!.uptr, 8)).toEqual(data);
    expect(hwptOf(sys, a).domain!.owner).toBe(iommu);

    sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas });
    expect(iommu.calls[1]).toEqual({ flags: 0, data: undefined });

    const fault = faultAlloc(sys);
    const r = rawIoctl(
      sys,
      IOMMU_HWPT_ALLOC,
      iommu_hwpt_alloc.encode({
        size: 48,
        flags: IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
        dev_id: idev.id,
        pt_id: ioas,
        fault_id: fault.id,
      }),
    );
    expect(r.ret).toBe(0);
    expect(iommu.calls[2]).toEqual({ flags: IOMMU_HWPT_ALLOC_PASID, data: undefined });
  });

  it("the flag checks come before the object and the driver: EOPNOTSUPP, the driver not called", () => {
    const sys = createSystem();
    const iommu = new DataIommu(sys.kernel);
    const idev = bind(sys, iommu);
    const ioas = sys.fd.ioasAlloc();
    const fault = faultAlloc(sys);
    const before = snapshot(sys);
    for (const flags of [
      1 << 4,
      // The driver would take it: the missing IOMMU_CAP_DIRTY_TRACKING refuses it first.
      IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      // A valid FAULT object does not help a nest parent.
      IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_NEST_PARENT,
    ]) {
      const r = rawIoctl(
        sys,
        IOMMU_HWPT_ALLOC,
        iommu_hwpt_alloc.encode({
          size: 48,
          flags,
          dev_id: idev.id,
          pt_id: ioas,
          fault_id: fault.id,
        }),
      );
      expect(r.errno).toBe(EOPNOTSUPP);
    }
    expect(iommu.calls).toEqual([]);
    expect(snapshot(sys)).toBe(before);
  });

  it("nest_parent and pasid_compat come from their flags", () => {
    const sys = createSystem();
    const iommu = new DataIommu(sys.kernel);
    const idev = bind(sys, iommu);
    const ioas = sys.fd.ioasAlloc();
    const plain = hwptOf(sys, sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas }));
    expect([plain.nestParent, plain.pasidCompat, plain.autoDomain]).toEqual([false, false, false]);
    const parent = hwptOf(
      sys,
      sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT }),
    );
    expect([parent.nestParent, parent.pasidCompat]).toEqual([true, false]);
    const pasid = hwptOf(
      sys,
      sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, flags: IOMMU_HWPT_ALLOC_PASID }),
    );
    expect([pasid.nestParent, pasid.pasidCompat]).toEqual([false, true]);
  });

  it("a device that enforces cache coherency makes a coherent HWPT; another device does not", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const cc = bind(sys, new CcIommu(sys.kernel));
    const plain = bind(sys, new TestIommu(sys.kernel));
    expect(cc.enforceCacheCoherency).toBe(true);
    expect(hwptOf(sys, sys.fd.hwptAlloc({ devId: cc.id, ptId: ioas })).enforceCacheCoherency).toBe(
      true,
    );
    expect(
      hwptOf(sys, sys.fd.hwptAlloc({ devId: plain.id, ptId: ioas })).enforceCacheCoherency,
    ).toBe(false);
  });

  it("a domain the IOAS cannot take (a mapping outside its aperture) is freed, nothing left", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const buf = anonBuffer(sys.libc, PAGE);
    // No device yet: any IOVA is allowed, 64 KiB lies below the test domain's aperture.
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0x10000n });
    const idev = bind(sys, sys.iommu);
    const before = snapshot(sys);
    expect(errnoOf(() => sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas }))).toBe(EADDRINUSE);
    expect(snapshot(sys)).toBe(before);
    expect(sys.iommu.domains.at(-1)!.freed).toBe(true);
    // The IOAS holds no reference: it can be destroyed.
    sys.fd.ioasUnmap({ ioasId: ioas, iova: 0x10000n, length: PAGE });
    sys.fd.destroy(ioas);
  });

  it("the HWPT holds its IOAS and its FAULT object until IOMMU_DESTROY", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const idev = bind(sys, sys.iommu);
    const fault = faultAlloc(sys);
    expect(sys.libc.close(fault.fd)).toBe(0);
    const r = rawIoctl(
      sys,
      IOMMU_HWPT_ALLOC,
      iommu_hwpt_alloc.encode({
        size: 48,
        flags: IOMMU_HWPT_FAULT_ID_VALID,
        dev_id: idev.id,
        pt_id: ioas,
        fault_id: fault.id,
      }),
    );
    expect(r.ret).toBe(0);
    const id = iommu_hwpt_alloc.decode(r.buf).out_hwpt_id;
    expect(errnoOf(() => sys.fd.destroy(ioas))).toBe(EBUSY);
    expect(errnoOf(() => sys.fd.destroy(fault.id))).toBe(EBUSY);
    sys.fd.destroy(id);
    sys.fd.destroy(fault.id);
    sys.fd.destroy(ioas);
  });
});

describe("iommufd_hwpt_alloc", () => {
  it("a vIOMMU of another IOMMU instance is EINVAL before the vIOMMU path's own checks", () => {
    const sys = createSystem();
    const smmu = new ArmSmmuV3IommufdDriver(sys.kernel);
    const idev = bind(sys, smmu);
    const other = bind(sys, new ArmSmmuV3IommufdDriver(sys.kernel));
    const ioas = sys.fd.ioasAlloc();
    const s2 = sys.fd.hwptAlloc({
      devId: idev.id,
      ptId: ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const viommu = sys.fd.viommuAlloc({
      devId: idev.id,
      hwptId: s2,
      type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
    });
    const before = snapshot(sys);
    // Without data the vIOMMU path would say EOPNOTSUPP: the instance check comes first.
    expect(errnoOf(() => sys.fd.hwptAlloc({ devId: other.id, ptId: viommu }))).toBe(EINVAL);
    expect(errnoOf(() => sys.fd.hwptAlloc({ devId: idev.id, ptId: viommu }))).toBe(EOPNOTSUPP);
    expect(snapshot(sys)).toBe(before);
  });
});

describe("IOMMU_GET_HW_INFO", () => {
  function withInfo(info: () => IommuHwInfo, maxPasids = 0) {
    class InfoIommu extends TestIommu {
      override hwInfo(): IommuHwInfo {
        return info();
      }
    }
    const sys = createSystem();
    const dev = new IommuDevice(`info-${++seq}`, new InfoIommu(sys.kernel));
    dev.maxPasids = maxPasids;
    const idev = iommufdDeviceBind(sys.ctx, dev);
    return { sys, idev };
  }

  const selftestInfo = (): IommuHwInfo => ({
    type: IOMMU_HW_INFO_TYPE_SELFTEST,
    data: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]),
  });

  function call(sys: TestSystem, values: Parameters<typeof iommu_hw_info.encode>[0], len = 16) {
    const uptr = sys.libc.malloc(len);
    sys.libc.poke(uptr, new Uint8Array(len).fill(0xee));
    const r = rawIoctl(
      sys,
      IOMMU_GET_HW_INFO,
      iommu_hw_info.encode({ size: 40, data_uptr: uptr, ...values }),
    );
    return { ...r, out: iommu_hw_info.decode(r.buf), user: sys.libc.peek(uptr, len) };
  }

  it("a buffer shorter than the data gets its first data_len bytes; data_len reports the whole", () => {
    const { sys, idev } = withInfo(selftestInfo);
    const r = call(sys, { dev_id: idev.id, data_len: 5 });
    expect(r.ret).toBe(0);
    expect([...r.user]).toEqual([1, 2, 3, 4, 5, ...new Array(11).fill(0xee)]);
    expect(r.out.data_len).toBe(8);
    expect(r.out.data_type).toBe(IOMMU_HW_INFO_TYPE_SELFTEST);
  });

  it("data_len 0 writes nothing and reports the length", () => {
    const { sys, idev } = withInfo(selftestInfo);
    const r = call(sys, { dev_id: idev.id, data_len: 0 });
    expect(r.ret).toBe(0);
    expect([...r.user]).toEqual(new Array(16).fill(0xee));
    expect(r.out.data_len).toBe(8);
  });

  it("INPUT_TYPE with DEFAULT or the driver's own type is answered; without the flag the input type is ignored", () => {
    const { sys, idev } = withInfo(selftestInfo);
    for (const [flags, type] of [
      [IOMMU_HW_INFO_FLAG_INPUT_TYPE, IOMMU_HW_INFO_TYPE_DEFAULT],
      [IOMMU_HW_INFO_FLAG_INPUT_TYPE, IOMMU_HW_INFO_TYPE_SELFTEST],
      [0, 7],
    ] as const) {
      const r = call(sys, { dev_id: idev.id, flags, data_type: type, data_len: 8 });
      expect(r.errno).toBe(0);
      expect(r.out.data_type).toBe(IOMMU_HW_INFO_TYPE_SELFTEST);
      expect([...r.user.subarray(0, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    }
  });

  it.each([
    [0, 0],
    [1, 0],
    [1 << 20, 20],
    [0x30000, 17],
  ])("max_pasids %i gives out_max_pasid_log2 %i (ilog2)", (maxPasids, log2) => {
    const { sys, idev } = withInfo(selftestInfo, maxPasids);
    const r = call(sys, { dev_id: idev.id });
    expect(r.ret).toBe(0);
    expect(r.out.out_max_pasid_log2).toBe(log2);
  });

  it("a driver that reports type NONE from hw_info is a WARN", () => {
    const { sys, idev } = withInfo(() => ({
      type: IOMMU_HW_INFO_TYPE_NONE,
      data: new Uint8Array(4),
    }));
    expect(() => sys.fd.getHwInfo({ devId: idev.id, dataLen: 4 })).toThrow(KernelWarning);
  });
});
