/**
 * IOMMU_FAULT_QUEUE_ALLOC, HWPT_ALLOC with IOMMU_HWPT_FAULT_ID_VALID and the fault fd
 * (drivers/iommu/iommufd/eventq.c, hw_pagetable.c): errnos in the kernel's order, nothing left
 * behind by a failure, and the answers given to page requests a device leaves behind.
 */
import { EBUSY, EINVAL, ENOENT, EOPNOTSUPP, ESPIPE, POLLIN } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  iommu_fault_alloc,
  iommu_hwpt_alloc,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdReportDeviceFault,
} from "../src/index.js";
import {
  type TestSystem,
  attachTestDevice,
  createSystem,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";

function faultAlloc(sys: TestSystem, flags = 0) {
  const r = rawIoctl(sys, IOMMU_FAULT_QUEUE_ALLOC, iommu_fault_alloc.encode({ size: 16, flags }));
  const out = iommu_fault_alloc.decode(r.buf);
  return { ...r, id: out.out_fault_id, fd: out.out_fault_fd };
}

function hwptAlloc(sys: TestSystem, devId: number, ptId: number, flags: number, faultId: number) {
  const r = rawIoctl(
    sys,
    IOMMU_HWPT_ALLOC,
    iommu_hwpt_alloc.encode({ size: 48, flags, dev_id: devId, pt_id: ptId, fault_id: faultId }),
  );
  return { ...r, id: iommu_hwpt_alloc.decode(r.buf).out_hwpt_id };
}

const response = (cookie: number, code: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, cookie, true);
  new DataView(b.buffer).setUint32(4, code, true);
  return b;
};

const request = {
  flags: IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  pasid: 0,
  grpid: 2,
  perm: 3,
  addr: 0xdeadbeafn,
};

/** A device attached to a HWPT that reports to a new fault queue. */
function setup() {
  const sys = createSystem();
  const ioas = sys.fd.ioasAlloc();
  const { idev } = attachTestDevice(sys, ioas);
  const fault = faultAlloc(sys);
  expect(fault.ret).toBe(0);
  const hwpt = hwptAlloc(sys, idev.id, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault.id);
  expect(hwpt.ret).toBe(0);
  return { sys, ioas, idev, fault, hwpt };
}

describe("fault queues", () => {
  it("FAULT_QUEUE_ALLOC: flags EOPNOTSUPP, nothing left; then an object and an O_CLOEXEC fd", () => {
    const sys = createSystem();
    const before = snapshot(sys);
    const nextFd = sys.libc.dup(0 + sys.fd.fd);
    sys.libc.close(nextFd);
    const bad = faultAlloc(sys, 1);
    expect([bad.ret, bad.errno]).toEqual([-1, EOPNOTSUPP]);
    expect(snapshot(sys)).toBe(before);
    const f = faultAlloc(sys);
    expect(f.ret).toBe(0);
    expect(f.fd).toBe(nextFd);
    expect(sys.libc.process.files.cloexec(f.fd)).toBe(true);
    // The file holds the object: IOMMU_DESTROY is EBUSY until it is closed.
    expect(() => sys.fd.destroy(f.id)).toThrow();
    expect(sys.libc.errno).toBe(EBUSY);
    expect(sys.libc.close(f.fd)).toBe(0);
    sys.fd.destroy(f.id);
  });

  it("HWPT_ALLOC with FAULT_ID_VALID: an unknown fault id is ENOENT and leaves no HWPT", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas);
    const before = snapshot(sys);
    const r = hwptAlloc(sys, idev.id, ioas, IOMMU_HWPT_FAULT_ID_VALID, 9999);
    expect([r.ret, r.errno]).toEqual([-1, ENOENT]);
    // An IOAS id is not a FAULT object either.
    const r2 = hwptAlloc(sys, idev.id, ioas, IOMMU_HWPT_FAULT_ID_VALID, ioas);
    expect([r2.ret, r2.errno]).toEqual([-1, ENOENT]);
    expect(snapshot(sys)).toBe(before);
  });

  it("read: ESPIPE for a size that is not whole records or an offset; groups under one cookie", () => {
    const { sys, idev, fault, hwpt } = setup();
    const { libc } = sys;
    expect(libc.read(fault.fd, new Uint8Array(47))).toBe(-1);
    expect(libc.errno).toBe(ESPIPE);
    expect(libc.pread(fault.fd, new Uint8Array(48), 48)).toBe(-1);
    expect(libc.errno).toBe(ESPIPE);
    expect(libc.read(fault.fd, new Uint8Array(48))).toBe(0);
    // The device is still on its automatic domain, which has no fault queue.
    iommufdReportDeviceFault(idev, request);
    expect(libc.read(fault.fd, new Uint8Array(48))).toBe(0);

    iommufdDeviceReplace(idev, hwpt.id);
    iommufdReportDeviceFault(idev, request);
    iommufdReportDeviceFault(idev, { ...request, grpid: 3 });
    const p = [{ fd: fault.fd, events: POLLIN, revents: 0 }];
    expect(libc.poll(p, 0)).toBe(1);
    // 95 bytes is not whole records; 96 fits both groups.
    const buf = new Uint8Array(96);
    expect(libc.read(fault.fd, buf)).toBe(96);
    const v = new DataView(buf.buffer);
    expect(v.getUint32(0, true)).toBe(IOMMU_PGFAULT_FLAGS_LAST_PAGE);
    expect(v.getUint32(4, true)).toBe(idev.id);
    expect(v.getUint32(12, true)).toBe(2);
    expect(v.getUint32(16, true)).toBe(3);
    expect(v.getBigUint64(24, true)).toBe(0xdeadbeafn);
    expect([v.getUint32(36, true), v.getUint32(48 + 36, true)]).toEqual([1, 2]);
    // The read records stay at offset 0: the file position never moves.
    expect(libc.read(fault.fd, buf)).toBe(0);

    // write: ESPIPE, then per response a bad code or an unknown cookie is EINVAL.
    expect(libc.write(fault.fd, new Uint8Array(7))).toBe(-1);
    expect(libc.errno).toBe(ESPIPE);
    expect(libc.write(fault.fd, response(1, 2))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.write(fault.fd, response(3, IOMMUFD_PAGE_RESP_SUCCESS))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    // A good response then a bad one: the bytes of the good one.
    const two = new Uint8Array(16);
    two.set(response(1, IOMMUFD_PAGE_RESP_SUCCESS));
    two.set(response(1, IOMMUFD_PAGE_RESP_SUCCESS), 8);
    expect(libc.write(fault.fd, two)).toBe(8);
    expect(libc.write(fault.fd, response(2, IOMMUFD_PAGE_RESP_INVALID))).toBe(8);
  });

  it("detach answers the device's outstanding requests: a later response is EINVAL", () => {
    const { sys, idev, fault, hwpt } = setup();
    const { libc } = sys;
    iommufdDeviceReplace(idev, hwpt.id);
    iommufdReportDeviceFault(idev, request);
    expect(libc.read(fault.fd, new Uint8Array(48))).toBe(48);
    iommufdReportDeviceFault(idev, request);
    iommufdDeviceDetach(idev);
    // Both groups, read or not, are gone.
    expect(libc.read(fault.fd, new Uint8Array(48))).toBe(0);
    expect(libc.write(fault.fd, response(1, IOMMUFD_PAGE_RESP_SUCCESS))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    // The HWPT holds the FAULT object until it is destroyed.
    expect(libc.close(fault.fd)).toBe(0);
    expect(() => sys.fd.destroy(fault.id)).toThrow();
    expect(libc.errno).toBe(EBUSY);
    sys.fd.destroy(hwpt.id);
    sys.fd.destroy(fault.id);
  });
});
