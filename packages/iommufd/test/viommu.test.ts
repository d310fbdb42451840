/**
 * vIOMMUs and vDEVICEs (drivers/iommu/iommufd/viommu.c: iommufd_viommu_alloc_ioctl,
 * iommufd_vdevice_alloc_ioctl and their destroy paths) on SMMUv3: the checks in the kernel's
 * order, the references each object holds, and what a failure leaves (nothing).
 */
import { EBUSY, EEXIST, EINVAL, ENOENT, EOPNOTSUPP, KernelWarning } from "@x/kernel";
import { IOMMU_HWPT_ALLOC_NEST_PARENT, IommuDevice, type IommuDomain } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3IommufdDriver,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  type IommuUserData,
  type IommufdViommu,
  iommu_viommu_alloc,
  iommufdDeviceBind,
  iommufdDeviceUnbind,
  iommufdViommuFindDev,
  iommufdViommuGetVdevId,
} from "../src/index.js";
import { IOMMUFD_OBJ_VIOMMU } from "../src/main.js";
import { attachTestDevice, createSystem, errnoOf, snapshot } from "./ioctl-helpers.js";

const VIOMMU = IOMMU_VIOMMU_TYPE_ARM_SMMUV3;

function setup(Smmu: typeof ArmSmmuV3IommufdDriver = ArmSmmuV3IommufdDriver) {
  const sys = createSystem();
  const smmu = new Smmu(sys.kernel);
  const dev = new IommuDevice("nic", smmu);
  const idev = iommufdDeviceBind(sys.ctx, dev);
  const ioas = sys.fd.ioasAlloc();
  const s2 = sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const object = (id: number) => {
    const v = sys.ctx.getObject<IommufdViommu>(id, IOMMUFD_OBJ_VIOMMU);
    sys.ctx.putObject(v);
    return v;
  };
  return { sys, smmu, dev, idev, ioas, s2, object };
}

describe("IOMMU_VIOMMU_ALLOC", () => {
  it("flags and type 0 are EOPNOTSUPP before the device lookup; then device, driver, HWPT", () => {
    const t = setup();
    const before = snapshot(t.sys);
    const none = 1 << 30;
    const alloc = (v: Partial<{ flags: number; type: number; dev_id: number; hwpt_id: number }>) =>
      errnoOf(() =>
        t.sys.fd.call(IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, {
          type: VIOMMU,
          dev_id: t.idev.id,
          hwpt_id: t.s2,
          ...v,
        }),
      );
    expect(alloc({ flags: 1, dev_id: none })).toBe(EOPNOTSUPP);
    expect(alloc({ type: 0, dev_id: none })).toBe(EOPNOTSUPP);
    expect(alloc({ dev_id: none })).toBe(ENOENT);
    expect(alloc({ dev_id: t.s2 })).toBe(ENOENT);
    // The driver's answer comes before the HWPT is looked up.
    expect(alloc({ type: VIOMMU + 1, hwpt_id: none })).toBe(EOPNOTSUPP);
    expect(alloc({ hwpt_id: none })).toBe(ENOENT);
    expect(alloc({ hwpt_id: t.ioas })).toBe(ENOENT);
    expect(snapshot(t.sys)).toBe(before);
  });

  it("a driver without get_viommu_size / viommu_init is EOPNOTSUPP", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas);
    const s2 = sys.fd.hwptAlloc({
      devId: idev.id,
      ptId: ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    expect(errnoOf(() => sys.fd.viommuAlloc({ devId: idev.id, hwptId: s2, type: VIOMMU }))).toBe(
      EOPNOTSUPP,
    );
  });

  it("a driver with get_viommu_size but no viommu_init is EOPNOTSUPP", () => {
    class SizeOnly extends ArmSmmuV3IommufdDriver {}
    (SizeOnly.prototype as { viommuInit?: unknown }).viommuInit = undefined;
    const t = setup(SizeOnly);
    const before = snapshot(t.sys);
    expect(
      errnoOf(() => t.sys.fd.viommuAlloc({ devId: t.idev.id, hwptId: t.s2, type: VIOMMU })),
    ).toBe(EOPNOTSUPP);
    expect(snapshot(t.sys)).toBe(before);
  });

  it("holds its nest parent until destroyed; viommu_init gets the parent's domain and the data", () => {
    const seen: Array<[IommuDomain, IommuUserData | undefined]> = [];
    class Recording extends ArmSmmuV3IommufdDriver {
      override viommuInit(v: IommufdViommu, parent: IommuDomain, data: IommuUserData | undefined) {
        seen.push([parent, data]);
        super.viommuInit(v, parent, data);
      }
    }
    const t = setup(Recording);
    const id = t.sys.fd.viommuAlloc({ devId: t.idev.id, hwptId: t.s2, type: VIOMMU });
    const v = t.object(id);
    expect([v.viommuType, v.hwpt.id, v.iommuDev]).toEqual([VIOMMU, t.s2, t.smmu]);
    expect(seen).toEqual([[v.hwpt.domain, undefined]]);
    const uptr = t.sys.libc.malloc(16);
    const second = t.sys.fd.call(IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, {
      type: VIOMMU,
      dev_id: t.idev.id,
      hwpt_id: t.s2,
      data_uptr: uptr,
      data_len: 16,
    }).out.out_viommu_id;
    expect(seen[1]![1]).toEqual({ type: VIOMMU, uptr, len: 16 });
    expect(errnoOf(() => t.sys.fd.destroy(t.s2))).toBe(EBUSY);
    t.sys.fd.destroy(id);
    expect(errnoOf(() => t.sys.fd.destroy(t.s2))).toBe(EBUSY);
    t.sys.fd.destroy(second);
    t.sys.fd.destroy(t.s2);
  });

  it("a failed viommu_init, or one that sets no ops, leaves no object and no reference", () => {
    class NoOps extends ArmSmmuV3IommufdDriver {
      override viommuInit(): void {}
    }
    const t = setup(NoOps);
    const before = snapshot(t.sys);
    expect(() => t.sys.fd.viommuAlloc({ devId: t.idev.id, hwptId: t.s2, type: VIOMMU })).toThrow(
      KernelWarning,
    );
    expect(snapshot(t.sys)).toBe(before);
    t.sys.fd.destroy(t.s2);
  });
});

describe("IOMMU_VDEVICE_ALLOC", () => {
  function withViommu() {
    const t = setup();
    const viommuId = t.sys.fd.viommuAlloc({ devId: t.idev.id, hwptId: t.s2, type: VIOMMU });
    return { ...t, viommuId, viommu: t.object(viommuId) };
  }

  it("binds the device under virt_id: found by id and by device; holds the vIOMMU and the device", () => {
    const t = withViommu();
    const vdev = t.sys.fd.vdeviceAlloc({ viommuId: t.viommuId, devId: t.idev.id, virtId: 0x21n });
    expect(iommufdViommuFindDev(t.viommu, 0x21n)).toBe(t.idev);
    expect(iommufdViommuFindDev(t.viommu, 0x22n)).toBeUndefined();
    expect(iommufdViommuGetVdevId(t.viommu, t.dev)).toBe(0x21n);
    expect(t.idev.vdev?.id).toBe(vdev);
    expect(errnoOf(() => t.sys.fd.destroy(t.viommuId))).toBe(EBUSY);
    expect(errnoOf(() => t.sys.fd.destroy(t.idev.id))).toBe(EBUSY);
    t.sys.fd.destroy(vdev);
    expect(t.idev.vdev).toBeUndefined();
    expect(iommufdViommuFindDev(t.viommu, 0x21n)).toBeUndefined();
    expect(errnoOf(() => iommufdViommuGetVdevId(t.viommu, t.dev))).toBe(ENOENT);
    t.sys.fd.destroy(t.viommuId);
  });

  it("EINVAL for a device of another IOMMU; EEXIST for a device with a vDEVICE or a used virt_id; nothing left", () => {
    const t = withViommu();
    const other = iommufdDeviceBind(
      t.sys.ctx,
      new IommuDevice("gpu", new ArmSmmuV3IommufdDriver(t.sys.kernel)),
    );
    const twin = iommufdDeviceBind(t.sys.ctx, new IommuDevice("twin", t.smmu));
    const alloc = (devId: number, virtId: bigint) => () =>
      t.sys.fd.vdeviceAlloc({ viommuId: t.viommuId, devId, virtId });
    const before = snapshot(t.sys);
    expect(errnoOf(alloc(other.id, 1n))).toBe(EINVAL);
    expect(
      errnoOf(() => t.sys.fd.vdeviceAlloc({ viommuId: t.s2, devId: t.idev.id, virtId: 1n })),
    ).toBe(ENOENT);
    expect(errnoOf(alloc(t.s2, 1n))).toBe(ENOENT);
    expect(snapshot(t.sys)).toBe(before);
    alloc(t.idev.id, 1n)();
    const mid = snapshot(t.sys);
    expect(errnoOf(alloc(t.idev.id, 2n))).toBe(EEXIST);
    expect(errnoOf(alloc(twin.id, 1n))).toBe(EEXIST);
    expect(snapshot(t.sys)).toBe(mid);
    // The failed one left the first vDEVICE in place and the twin free.
    expect(iommufdViommuFindDev(t.viommu, 1n)).toBe(t.idev);
    expect(twin.vdev).toBeUndefined();
    alloc(twin.id, 2n)();
    expect(iommufdViommuGetVdevId(t.viommu, twin.dev)).toBe(2n);
  });

  it("unbinding the device destroys its vDEVICE and keeps the id reserved (ENOENT, not reused)", () => {
    const t = withViommu();
    const vdev = t.sys.fd.vdeviceAlloc({ viommuId: t.viommuId, devId: t.idev.id, virtId: 5n });
    iommufdDeviceUnbind(t.idev);
    expect(iommufdViommuFindDev(t.viommu, 5n)).toBeUndefined();
    expect(errnoOf(() => t.sys.fd.destroy(vdev))).toBe(ENOENT);
    const next = t.sys.fd.ioasAlloc();
    expect(next).not.toBe(vdev);
    t.sys.fd.destroy(t.viommuId);
  });
});
