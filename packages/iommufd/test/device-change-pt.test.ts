/**
 * The driver-facing device API of drivers/iommu/iommufd/device.c beyond the plain attach:
 * iommufd_ctx_from_file, iommufd_device_bind's IOMMU_CAP_CACHE_COHERENCY check, unbind of an
 * attached device, reserved regions on iommufd_device_do_replace (kept within one IOAS, moved
 * between two, given back when the driver refuses), a replace onto the attached HWPT,
 * iommufd_device_auto_get_domain's choice (automatic domains only; EINVAL tries the next,
 * another errno fails), and the coherency mode, which only iommufd_hwpt_paging_alloc sets.
 */
import {
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_RESV_RESERVED,
  IommuDevice,
  type IommuDomain,
  type IommuDriver,
  MOCK_IOMMUPT_DEFAULT,
  mockIommuptDomainAlloc,
} from "@x/iommu-pgtable";
import { EADDRINUSE, EBADFD, EINVAL, ENOSPC, Kernel, KernelWarning, fail } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_IOAS,
  type IommufdHwptPaging,
  type IommufdIoas,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_CC_IOMMU,
  iommufdCtxFromFile,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from "../src/index.js";
import { ioctlValue } from "./compat-helpers.js";
import {
  MOCK_APERTURE,
  PAGE,
  TestIommu,
  type TestSystem,
  anonBuffer,
  attachTestDevice,
  createSystem,
  errnoOf,
  snapshot,
} from "./ioctl-helpers.js";

const RESV_START = 0x4000000n;
const RESV = [{ start: RESV_START, length: PAGE, type: IOMMU_RESV_RESERVED }];
const HOLE: [bigint, bigint] = [RESV_START, RESV_START + PAGE - 1n];

/** The holes in `ioas`'s IOMMU_IOAS_IOVA_RANGES. */
function holes(sys: TestSystem, ioas: number): [bigint, bigint][] {
  const r = sys.fd.ioasIovaRanges(ioas).ranges;
  return r.slice(1).map((x, i): [bigint, bigint] => [r[i]!.last + 1n, x.start - 1n]);
}

function hwptOf(sys: TestSystem, id: number): IommufdHwptPaging {
  return sys.ctx.withObject(id, IOMMUFD_OBJ_HWPT_PAGING, (h) => h as IommufdHwptPaging);
}

let seq = 0;
function bind(sys: TestSystem, iommu: IommuDriver) {
  return iommufdDeviceBind(sys.ctx, new IommuDevice(`change-pt-${++seq}`, iommu));
}

describe("iommufd_ctx_from_file and iommufd_device_bind / unbind", () => {
  it("iommufd_ctx_from_file: the context of a /dev/iommu file, EBADFD for any other file", () => {
    const sys = createSystem();
    const file = sys.libc.process.files.lookup(sys.fd.fd);
    expect(iommufdCtxFromFile(sys.kernel, file)).toBe(sys.ctx);
    const mfd = sys.libc.memfdCreate("not-iommufd", 0);
    const other = sys.libc.process.files.lookup(mfd);
    expect(errnoOf(() => iommufdCtxFromFile(sys.kernel, other))).toBe(EBADFD);
    // A driver calling into iommufd on a machine without it is a bug of the caller.
    expect(() => iommufdCtxFromFile(new Kernel({ ramBytes: 1n << 24n }), file)).toThrow(
      KernelWarning,
    );
  });

  it("bind refuses a device whose IOMMU is not cache coherent (EINVAL), leaving nothing", () => {
    const sys = createSystem();
    class NotCoherent extends TestIommu {
      override capable(): boolean {
        return false;
      }
    }
    const before = snapshot(sys);
    const refs = sys.ctx.file.refcount;
    expect(errnoOf(() => bind(sys, new NotCoherent(sys.kernel, "not-coherent")))).toBe(EINVAL);
    expect(snapshot(sys)).toBe(before);
    expect(sys.ctx.file.refcount).toBe(refs);
    const idev = bind(sys, sys.iommu);
    expect(sys.ctx.file.refcount).toBe(refs + 1);
    iommufdDeviceUnbind(idev);
    expect(sys.ctx.file.refcount).toBe(refs);
  });

  it("unbind of a device that is still attached is a WARN (iommufd_object_destroy_user)", () => {
    const sys = createSystem();
    const { idev } = attachTestDevice(sys, sys.fd.ioasAlloc());
    expect(() => iommufdDeviceUnbind(idev)).toThrow(KernelWarning);
  });
});

describe("reserved regions on replace (iommufd_group_do_replace_reserved_iova)", () => {
  it("stay in place for a replace within one IOAS and move with a replace to another", () => {
    const sys = createSystem();
    const [a, b] = [sys.fd.ioasAlloc(), sys.fd.ioasAlloc()];
    const { idev, hwptId: auto } = attachTestDevice(sys, a, { resv: RESV });
    expect(holes(sys, a)).toEqual([HOLE]);
    const userA = sys.fd.hwptAlloc({ devId: idev.id, ptId: a });
    expect(iommufdDeviceReplace(idev, userA)).toBe(userA);
    expect(sys.ctx.hasObject(auto)).toBe(false);
    expect(holes(sys, a)).toEqual([HOLE]);

    const userB = sys.fd.hwptAlloc({ devId: idev.id, ptId: b });
    expect(iommufdDeviceReplace(idev, userB)).toBe(userB);
    expect([holes(sys, a), holes(sys, b)]).toEqual([[], [HOLE]]);
    const buf = anonBuffer(sys.libc, PAGE);
    expect(
      errnoOf(() => sys.fd.ioasMap({ ioasId: b, userVa: buf, length: PAGE, iova: RESV_START })),
    ).toBe(EINVAL);
    sys.fd.ioasMap({ ioasId: a, userVa: buf, length: PAGE, iova: RESV_START });

    // Back through the IOAS id: the mapping on a's reserved page makes the move EADDRINUSE
    // and changes nothing; without it a gets a new automatic domain and the reservation.
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceReplace(idev, a))).toBe(EADDRINUSE);
    expect(snapshot(sys)).toBe(before);
    expect(holes(sys, b)).toEqual([HOLE]);
    sys.fd.unmapAll(a);
    iommufdDeviceReplace(idev, a);
    expect([holes(sys, a), holes(sys, b)]).toEqual([[HOLE], []]);
    iommufdDeviceDetach(idev);
    expect(holes(sys, a)).toEqual([]);
  });

  it("a replace the driver refuses gives the new IOAS's reservation back and keeps the old", () => {
    const sys = createSystem();
    const [b, c] = [sys.fd.ioasAlloc(), sys.fd.ioasAlloc()];
    const { idev } = attachTestDevice(sys, b, { resv: RESV });
    // HWPTs of another IOMMU instance: the test driver's attach_dev refuses them (EINVAL).
    const other = bind(sys, new TestIommu(sys.kernel, "other"));
    const otherC = sys.fd.hwptAlloc({ devId: other.id, ptId: c });
    const otherB = sys.fd.hwptAlloc({ devId: other.id, ptId: b });
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceReplace(idev, otherC))).toBe(EINVAL);
    expect([holes(sys, b), holes(sys, c)]).toEqual([[HOLE], []]);
    expect(errnoOf(() => iommufdDeviceReplace(idev, otherB))).toBe(EINVAL);
    expect(holes(sys, b)).toEqual([HOLE]);
    expect(snapshot(sys)).toBe(before);
  });

  it("a replace onto the attached HWPT returns it and does not reach the driver", () => {
    const sys = createSystem();
    class Counting extends TestIommu {
      attaches = 0;
      override attachDev(domain: IommuDomain): void {
        super.attachDev(domain);
        this.attaches++;
      }
    }
    const iommu = new Counting(sys.kernel, "counting");
    const ioas = sys.fd.ioasAlloc();
    const { idev, hwptId } = attachTestDevice(sys, ioas, { iommu });
    expect(iommu.attaches).toBe(1);
    const before = snapshot(sys);
    expect(iommufdDeviceReplace(idev, hwptId)).toBe(hwptId);
    expect(iommufdDeviceReplace(idev, ioas)).toBe(hwptId);
    expect(iommu.attaches).toBe(1);
    expect(snapshot(sys)).toBe(before);
  });
});

describe("iommufd_device_auto_get_domain", () => {
  it("never picks a HWPT the user allocated, even a compatible one", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const x = bind(sys, sys.iommu);
    const user = sys.fd.hwptAlloc({ devId: x.id, ptId: ioas });
    const { hwptId } = attachTestDevice(sys, ioas);
    expect(hwptId).not.toBe(user);
    expect(hwptOf(sys, hwptId).autoDomain).toBe(true);
    expect(hwptOf(sys, user).users).toBe(1);
  });

  it("an errno other than EINVAL from an existing automatic domain fails the attach", () => {
    const sys = createSystem();
    /** attach_dev runs out of domain ids for some domains (VT-d's domain_attach_iommu). */
    class Full extends TestIommu {
      readonly full = new Set<IommuDomain>();
      override attachDev(domain: IommuDomain): void {
        super.attachDev(domain);
        if (this.full.has(domain)) fail(ENOSPC, "no domain id");
      }
    }
    const iommu = new Full(sys.kernel, "full");
    const ioas = sys.fd.ioasAlloc();
    const first = attachTestDevice(sys, ioas, { iommu });
    iommu.full.add(hwptOf(sys, first.hwptId).domain!);
    const idev = bind(sys, iommu);
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceAttach(idev, ioas))).toBe(ENOSPC);
    expect(snapshot(sys)).toBe(before);
    expect(idev.hwpt).toBeUndefined();
  });

  it("skips an automatic HWPT being destroyed: an attach racing the last detach gets a new one", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const first = attachTestDevice(sys, ioas);
    const dying = hwptOf(sys, first.hwptId);
    const second = bind(sys, sys.iommu);
    const other = sys.kernel.newTask(sys.kernel.current.process);
    const detacher = sys.kernel.current;
    const ioasMutex = sys.ctx.withObject(ioas, IOMMUFD_OBJ_IOAS, (o) => (o as IommufdIoas).mutex);
    let raced: number | undefined;
    // iommufd_hwpt_paging_destroy takes ioas->mutex to leave the IOAS's list after
    // iommufd_object_remove dropped the users to 0: the other thread's attach runs right there,
    // holding ioas->mutex while it walks the list (iommufd_lock_obj fails on the dying HWPT).
    sys.kernel.lockdep.onBoundary = (kind, lock, task) => {
      if (raced !== undefined || kind !== "acquire" || task.tid !== detacher.tid) return;
      if (lock !== ioasMutex || dying.users !== 0) return;
      raced = sys.kernel.runAs(other, () => iommufdDeviceAttach(second, ioas));
    };
    try {
      iommufdDeviceDetach(first.idev);
    } finally {
      sys.kernel.lockdep.onBoundary = undefined;
    }
    // The dying HWPT's id was free again by then, so the new one may reuse it: compare objects.
    const fresh = hwptOf(sys, raced!);
    expect(fresh).not.toBe(dying);
    expect(fresh.autoDomain).toBe(true);
    expect(dying.domain).toBeUndefined();
    expect(second.hwpt).toBe(fresh);
    expect(second.dev.domain).toBe(fresh.domain);
    expect(fresh.domain!.freed).toBe(false);
  });

  it("works for a driver without reserved regions (no get_resv_regions op)", () => {
    const sys = createSystem();
    const bare: IommuDriver = {
      name: "bare",
      capable: (_dev, cap) => cap === IOMMU_CAP_CACHE_COHERENCY,
      hwInfo: () => sys.iommu.hwInfo(),
      domainAllocPaging: () =>
        mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT, { faults: sys.kernel, priv: "bare" }),
    };
    const ioas = sys.fd.ioasAlloc();
    const idev = bind(sys, bare);
    iommufdDeviceAttach(idev, ioas);
    expect(holes(sys, ioas)).toEqual([]);
    const buf = anonBuffer(sys.libc, PAGE);
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: MOCK_APERTURE[0] });
    iommufdDeviceDetach(idev);
  });
});

describe("cache coherency is the allocating device's (iommufd_hwpt_paging_alloc)", () => {
  it("a coherency-enforcing device attached or replaced onto a non-enforcing HWPT leaves it so", () => {
    const sys = createSystem();
    /** IOMMU_CAP_ENFORCE_CACHE_COHERENCY for the devices in `enforcing` only. */
    class Mixed extends TestIommu {
      readonly enforcing = new Set<IommuDevice>();
      override capable(dev: IommuDevice, cap: number): boolean {
        if (cap === IOMMU_CAP_ENFORCE_CACHE_COHERENCY) return this.enforcing.has(dev);
        return super.capable(dev, cap);
      }
    }
    const iommu = new Mixed(sys.kernel, "mixed");
    const [a, b] = [sys.fd.ioasAlloc(), sys.fd.ioasAlloc()];
    const plain = attachTestDevice(sys, a, { iommu });
    const dev = new IommuDevice("enforcing", iommu);
    iommu.enforcing.add(dev);
    const cc = iommufdDeviceBind(sys.ctx, dev);
    expect(cc.enforceCacheCoherency).toBe(true);
    // The automatic domain of `a`, made for the plain device, takes the enforcing one too.
    expect(iommufdDeviceAttach(cc, a)).toBe(plain.hwptId);
    expect(hwptOf(sys, plain.hwptId).enforceCacheCoherency).toBe(false);
    sys.fd.vfioIoasSet(a);
    expect(ioctlValue(sys, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU).ret).toBe(0);

    const userB = sys.fd.hwptAlloc({ devId: plain.idev.id, ptId: b });
    expect(iommufdDeviceReplace(cc, userB)).toBe(userB);
    expect(hwptOf(sys, userB).enforceCacheCoherency).toBe(false);
    // A HWPT made for the enforcing device enforces from the start.
    expect(hwptOf(sys, sys.fd.hwptAlloc({ devId: cc.id, ptId: b })).enforceCacheCoherency).toBe(
      true,
    );
  });
});
