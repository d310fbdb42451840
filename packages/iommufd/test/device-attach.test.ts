import { iommuIovaToPhys } from "@x/iommu-pgtable";
import {
  EADDRINUSE,
  EBUSY,
  EFAULT,
  EINVAL,
  ENOENT,
  EOPNOTSUPP,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMUFD_OBJ_HWPT_PAGING,
  type IommufdHwptPaging,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommufdDeviceAttach,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from "../src/index.js";
import {
  MOCK_APERTURE,
  PAGE,
  TestIommu,
  anonBuffer,
  attachTestDevice,
  createSystem,
  errnoOf,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";

function hwptOf(sys: ReturnType<typeof createSystem>, id: number): IommufdHwptPaging {
  return sys.ctx.withObject(id, IOMMUFD_OBJ_HWPT_PAGING, (h) => h as IommufdHwptPaging);
}

describe("device attach to an IOAS", () => {
  it("fills the new automatic domain with existing areas; detach of the last device frees it", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const buf = anonBuffer(sys.libc, 4n * PAGE);
    sys.libc.poke(buf, new Uint8Array([1, 2, 3]));
    const iova = sys.fd.ioasMap({
      ioasId: ioas,
      userVa: buf,
      length: 4n * PAGE,
      iova: MOCK_APERTURE[0],
    });
    expect(sys.kernel.mem.totalPinned()).toBe(0);
    const { idev, hwptId } = attachTestDevice(sys, ioas);
    const hwpt = hwptOf(sys, hwptId);
    expect(hwpt.autoDomain).toBe(true);
    const domain = hwpt.domain!;
    expect(iommuIovaToPhys(domain, iova)).not.toBe(0n);
    expect(sys.kernel.mem.totalPinned()).toBe(4);
    // The user cannot destroy the IOAS or the HWPT while the device uses them.
    expect(errnoOf(() => sys.fd.destroy(ioas))).toBe(EBUSY);
    expect(errnoOf(() => sys.fd.destroy(hwptId))).toBe(EBUSY);
    expect(errnoOf(() => sys.fd.destroy(idev.id))).toBe(EBUSY);
    iommufdDeviceDetach(idev);
    expect(sys.ctx.hasObject(hwptId)).toBe(false);
    expect(domain.freed).toBe(true);
    expect(sys.kernel.mem.totalPinned()).toBe(0);
    iommufdDeviceUnbind(idev);
    expect(sys.ctx.hasObject(idev.id)).toBe(false);
    sys.fd.destroy(ioas);
  });

  it("a second compatible device reuses the automatic domain; an incompatible one gets its own", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const a = attachTestDevice(sys, ioas);
    const b = attachTestDevice(sys, ioas);
    expect(b.hwptId).toBe(a.hwptId);
    const other = new TestIommu(sys.kernel, "other");
    const c = attachTestDevice(sys, ioas, { iommu: other });
    expect(c.hwptId).not.toBe(a.hwptId);
    sys.ctx.withObject(ioas, 4, (o) => {
      expect((o as unknown as { iopt: { domainList: unknown[] } }).iopt.domainList.length).toBe(2);
    });
    iommufdDeviceDetach(a.idev);
    expect(sys.ctx.hasObject(a.hwptId)).toBe(true);
    iommufdDeviceDetach(b.idev);
    expect(sys.ctx.hasObject(a.hwptId)).toBe(false);
    iommufdDeviceDetach(c.idev);
  });

  it("attach: unknown id ENOENT, a device id EINVAL, twice EBUSY; nothing changes", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas);
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceAttach(idev, 99))).toBe(ENOENT);
    expect(errnoOf(() => iommufdDeviceAttach(idev, idev.id))).toBe(EINVAL);
    // iommufd_hw_pagetable_attach inserts the device into the attach's device_array first:
    // already there is EBUSY (drivers/iommu/iommufd/device.c), for the RID as for a PASID.
    expect(errnoOf(() => iommufdDeviceAttach(idev, ioas))).toBe(EBUSY);
    expect(snapshot(sys)).toBe(before);
  });

  it("reserved regions: EADDRINUSE over a mapping, reserved while attached, released after", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const buf = anonBuffer(sys.libc, PAGE);
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0x2000000n });
    const resv = [{ start: 0x2000000n, length: PAGE, type: 2 }];
    const before = snapshot(sys);
    expect(errnoOf(() => attachTestDevice(sys, ioas, { resv }))).toBe(EADDRINUSE);
    // The bind succeeded (the device object exists) but nothing of the attach is left.
    sys.fd.unmapAll(ioas);
    const { idev } = attachTestDevice(sys, ioas, {
      resv: [{ start: 0x3000000n, length: PAGE, type: 2 }],
    });
    expect(
      errnoOf(() => sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0x3000000n })),
    ).toBe(EINVAL);
    iommufdDeviceDetach(idev);
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0x3000000n });
    expect(before).toBeDefined();
  });
});

describe("replace (kselftest iommufd_mock_domain.replace)", () => {
  it("moves between IOASes; the old automatic domain dies with its last device", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev, hwptId } = attachTestDevice(sys, ioas);
    const fresh = sys.fd.ioasAlloc();
    const newHwpt = iommufdDeviceReplace(idev, fresh);
    expect(newHwpt).not.toBe(hwptId);
    expect(sys.ctx.hasObject(hwptId)).toBe(false);
    expect(errnoOf(() => iommufdDeviceReplace(idev, hwptId))).toBe(ENOENT);
    expect(iommufdDeviceReplace(idev, fresh)).toBe(newHwpt);
    const back = iommufdDeviceReplace(idev, ioas);
    expect(sys.ctx.hasObject(newHwpt)).toBe(false);
    sys.fd.destroy(fresh);
    expect(errnoOf(() => sys.fd.destroy(ioas))).toBe(EBUSY);
    iommufdDeviceDetach(idev);
    expect(sys.ctx.hasObject(back)).toBe(false);
  });

  it("replace of a device that is not attached is EINVAL", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas);
    iommufdDeviceDetach(idev);
    expect(errnoOf(() => iommufdDeviceReplace(idev, ioas))).toBe(EINVAL);
  });
});

describe("IOMMU_HWPT_ALLOC", () => {
  function setup() {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas);
    return { sys, ioas, idev };
  }

  it.each([
    ["unknown flag", EOPNOTSUPP, { flags: 1 << 4, __reserved: 1 }],
    ["__reserved", EOPNOTSUPP, { __reserved: 1, data_type: 5 }],
    ["data type without data", EINVAL, { data_type: IOMMU_HWPT_DATA_SELFTEST, dev_id: 99 }],
    // hw_pagetable.c has no NEST_PARENT-versus-data check: the device lookup comes next.
    [
      "nest parent with a data type: the device lookup follows",
      ENOENT,
      { flags: IOMMU_HWPT_ALLOC_NEST_PARENT, data_type: 1, data_len: 8, dev_id: 99 },
    ],
    ["unknown device", ENOENT, { dev_id: 99, pt_id: 99 }],
    ["unknown pt_id is EINVAL", EINVAL, { pt_id: 99 }],
    ["pt_id of a device", EINVAL, { pt_id: -1 }],
    ["pt_id of a paging HWPT (nesting)", EOPNOTSUPP, { pt_id: -2 }],
    [
      "dirty tracking without the capability",
      EOPNOTSUPP,
      { flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING },
    ],
    [
      "fault id with nest parent",
      EOPNOTSUPP,
      { flags: IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_NEST_PARENT },
    ],
    ["fault id that names no fault", ENOENT, { flags: IOMMU_HWPT_FAULT_ID_VALID, fault_id: 5 }],
  ] as const)("%s", (_n, errno, values) => {
    const { sys, ioas, idev } = setup();
    const before = snapshot(sys);
    const v = { size: 48, dev_id: idev.id, pt_id: ioas, ...values };
    if (v.pt_id === -1) v.pt_id = idev.id;
    if (v.pt_id === -2) v.pt_id = idev.hwpt!.id;
    const r = rawIoctl(sys, IOMMU_HWPT_ALLOC, iommu_hwpt_alloc.encode(v));
    expect(r.errno).toBe(errno);
    expect(snapshot(sys)).toBe(before);
  });

  it("allocates a user HWPT filled with the IOAS; devices attach to it; DESTROY frees it", () => {
    const { sys, ioas, idev } = setup();
    const buf = anonBuffer(sys.libc, PAGE);
    const iova = sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE });
    const id = sys.fd.hwptAlloc({
      devId: idev.id,
      ptId: ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const hwpt = hwptOf(sys, id);
    expect(hwpt.autoDomain).toBe(false);
    expect(hwpt.nestParent).toBe(true);
    expect(iommuIovaToPhys(hwpt.domain!, iova)).not.toBe(0n);
    const auto = idev.hwpt!;
    iommufdDeviceReplace(idev, id);
    expect(sys.ctx.hasObject(auto.id)).toBe(false);
    expect(errnoOf(() => sys.fd.destroy(id))).toBe(EBUSY);
    iommufdDeviceDetach(idev);
    sys.fd.destroy(id);
    expect(hwpt.domain).toBeUndefined();
    expect(sys.kernel.mem.totalPinned()).toBe(0);
  });

  it("a HWPT whose id cannot be copied back is destroyed, its domain freed", () => {
    const { sys, ioas, idev } = setup();
    const { libc } = sys;
    const mfd = libc.memfdCreate("ro", 0);
    libc.ftruncate(mfd, 4096);
    const rw = libc.mmap(0n, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    const ro = libc.mmap(0n, 4096, PROT_READ, MAP_SHARED, mfd, 0);
    libc.poke(rw, iommu_hwpt_alloc.encode({ size: 48, dev_id: idev.id, pt_id: ioas }));
    const before = snapshot(sys);
    const domains = sys.iommu.domains.length;
    expect(libc.ioctl(sys.fd.fd, IOMMU_HWPT_ALLOC, ro)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(snapshot(sys)).toBe(before);
    expect(sys.iommu.domains.length).toBe(domains + 1);
    expect(sys.iommu.domains.at(-1)!.freed).toBe(true);
  });

  it("HWPT data to a driver that takes none is EOPNOTSUPP, nothing allocated", () => {
    const { sys, ioas, idev } = setup();
    const before = snapshot(sys);
    const data = new Uint8Array(8);
    expect(
      errnoOf(() =>
        sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, dataType: IOMMU_HWPT_DATA_SELFTEST, data }),
      ),
    ).toBe(EOPNOTSUPP);
    expect(snapshot(sys)).toBe(before);
  });

  it("a size of 24 (pre-data callers) works and copies back 24 bytes", () => {
    const { sys, ioas, idev } = setup();
    const bytes = new Uint8Array(32).fill(0x77);
    bytes.set(iommu_hwpt_alloc.encode({ size: 24, dev_id: idev.id, pt_id: ioas }).subarray(0, 24));
    const r = rawIoctl(sys, IOMMU_HWPT_ALLOC, bytes);
    expect(r.ret).toBe(0);
    expect(iommu_hwpt_alloc.get(r.buf, "out_hwpt_id")).toBeGreaterThan(0);
    expect([...r.buf.subarray(24)]).toEqual(new Array(8).fill(0x77));
  });
});

describe("IOMMU_GET_HW_INFO", () => {
  it("returns the driver type and data, zero-fills the rest of the buffer, reports data_len", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas);
    const { info, data } = sys.fd.getHwInfo({ devId: idev.id, dataLen: 16 });
    expect(info.data_type).toBe(IOMMU_HW_INFO_TYPE_SELFTEST);
    expect(info.data_len).toBe(8);
    expect(new DataView(data.buffer, data.byteOffset).getUint32(4, true)).toBe(0xdeadbeef);
    expect([...data.subarray(8)]).toEqual(new Array(8).fill(0));
    expect(info.out_capabilities).toBe(0n);
  });

  it.each([
    ["unknown flag", EOPNOTSUPP, { flags: 2 }],
    ["__reserved", EOPNOTSUPP, { __reserved: 0x100 }],
    ["unknown device", ENOENT, { dev_id: 99 }],
    ["another type asked", EOPNOTSUPP, { flags: 1, data_type: 1 }],
  ] as const)("%s", (_n, errno, values) => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas);
    const r = rawIoctl(
      sys,
      IOMMU_GET_HW_INFO,
      iommu_hw_info.encode({ size: 40, dev_id: idev.id, ...values }),
    );
    expect(r.errno).toBe(errno);
  });
});
