/**
 * PASID attachments of a device (drivers/iommu/iommufd/device.c): iommufd_hwpt_pasid_compat's
 * two directions, the RID's attachment left alone by PASID attach / replace / detach, and
 * reserved regions, which iommufd_hw_pagetable_attach, iommufd_hw_pagetable_detach and
 * iommufd_device_do_replace enforce and release only for IOMMU_NO_PASID (attach_resv).
 */
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_RESV_RESERVED,
  IommuDevice,
  type IommuDomain,
  MOCK_IOMMUPT_DEFAULT,
  iommuPasidDomain,
  mockIommuptDomainAlloc,
} from "@x/iommu-pgtable";
import { EINVAL, EOPNOTSUPP, fail } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_HWPT_ALLOC_PASID,
  IOMMUFD_OBJ_HWPT_PAGING,
  type IommufdHwptPaging,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
} from "../src/index.js";
import { PAGE, TestIommu, createSystem, errnoOf, snapshot } from "./ioctl-helpers.js";

const PASID = 5;
const RESV_START = 0x4000000n;
/** The hole the device's reserved region leaves in IOMMU_IOAS_IOVA_RANGES. */
const HOLE: [bigint, bigint] = [RESV_START, RESV_START + PAGE - 1n];

/** A driver that attaches PASIDs (set_dev_pasid) and makes IOMMU_HWPT_ALLOC_PASID domains. */
class PasidIommu extends TestIommu {
  override domainAllocPaging(_dev: IommuDevice, flags: number): IommuDomain {
    if (flags & ~(IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_NEST_PARENT)) fail(EOPNOTSUPP, "flags");
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT, { faults: this.kernel, priv: this });
    this.domains.push(d);
    return d;
  }

  setDevPasid(): void {}
}

/** A bound PASID-capable device with one reserved page, and three IOASes. */
function setup() {
  const sys = createSystem();
  const iommu = new PasidIommu(sys.kernel, "pasid-iommu");
  const dev = new IommuDevice("pasid-dev", iommu);
  dev.maxPasids = 1 << 20;
  iommu.resv.set(dev, [{ start: RESV_START, length: PAGE, type: IOMMU_RESV_RESERVED }]);
  const idev = iommufdDeviceBind(sys.ctx, dev);
  const [a, b, c] = [sys.fd.ioasAlloc(), sys.fd.ioasAlloc(), sys.fd.ioasAlloc()];
  /** A paging HWPT on `ioas`, with PASID support when `pasid`. */
  const hwpt = (ioas: number, pasid: boolean) =>
    sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, flags: pasid ? IOMMU_HWPT_ALLOC_PASID : 0 });
  const domainOf = (id: number) =>
    sys.ctx.withObject(id, IOMMUFD_OBJ_HWPT_PAGING, (h) => (h as IommufdHwptPaging).domain);
  /** The holes in `ioas`'s IOVA_RANGES. */
  const holes = (ioas: number) => {
    const r = sys.fd.ioasIovaRanges(ioas).ranges;
    return r.slice(1).map((x, i): [bigint, bigint] => [r[i]!.last + 1n, x.start - 1n]);
  };
  return { sys, dev, idev, a, b, c, hwpt, domainOf, holes };
}

describe("iommufd_hwpt_pasid_compat", () => {
  it("a PASID attaches only to a HWPT allocated with IOMMU_HWPT_ALLOC_PASID", () => {
    const { sys, dev, idev, a, hwpt, domainOf } = setup();
    const plain = hwpt(a, false);
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceAttach(idev, plain, PASID))).toBe(EINVAL);
    expect(snapshot(sys)).toBe(before);
    expect(dev.pasidArray.size).toBe(0);
    const pasidHwpt = hwpt(a, true);
    expect(iommufdDeviceAttach(idev, pasidHwpt, PASID)).toBe(pasidHwpt);
    expect(iommuPasidDomain(dev, PASID)).toBe(domainOf(pasidHwpt));
    iommufdDeviceDetach(idev, PASID);
  });

  it("no PASID attaches while the RID's HWPT lacks PASID support; it does once the RID's has it", () => {
    const { sys, dev, idev, a, b, hwpt, domainOf } = setup();
    const ridPlain = hwpt(a, false);
    const pasidHwpt = hwpt(b, true);
    iommufdDeviceAttach(idev, ridPlain);
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceAttach(idev, pasidHwpt, PASID))).toBe(EINVAL);
    expect(snapshot(sys)).toBe(before);
    expect(dev.pasidArray.size).toBe(0);
    iommufdDeviceReplace(idev, hwpt(a, true));
    iommufdDeviceAttach(idev, pasidHwpt, PASID);
    expect(iommuPasidDomain(dev, PASID)).toBe(domainOf(pasidHwpt));
  });

  it("while a PASID is attached the RID takes only a PASID-capable HWPT, by attach and by replace", () => {
    const { sys, dev, idev, a, b, c, hwpt, domainOf, holes } = setup();
    iommufdDeviceAttach(idev, hwpt(b, true), PASID);
    const plainA = hwpt(a, false);
    let before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceAttach(idev, plainA))).toBe(EINVAL);
    // The attach reserved the device's regions in IOAS a before the compat check refused it:
    // the failure gives them back.
    expect(holes(a)).toEqual([]);
    // Every automatic domain is made without IOMMU_HWPT_ALLOC_PASID: none is left behind.
    expect(errnoOf(() => iommufdDeviceAttach(idev, c))).toBe(EINVAL);
    expect(snapshot(sys)).toBe(before);
    expect(dev.domain).toBeUndefined();

    const ridHwpt = hwpt(a, true);
    iommufdDeviceAttach(idev, ridHwpt);
    expect(holes(a)).toEqual([HOLE]);
    const plainC = hwpt(c, false);
    before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceReplace(idev, plainC))).toBe(EINVAL);
    expect(errnoOf(() => iommufdDeviceReplace(idev, plainA))).toBe(EINVAL);
    expect(snapshot(sys)).toBe(before);
    expect([holes(a), holes(c)]).toEqual([[HOLE], []]);
    expect(dev.domain).toBe(domainOf(ridHwpt));

    // With the PASID gone the RID may move to a HWPT without PASID support.
    iommufdDeviceDetach(idev, PASID);
    expect(iommufdDeviceReplace(idev, plainC)).toBe(plainC);
    expect([holes(a), holes(c)]).toEqual([[], [HOLE]]);
  });
});

describe("PASID attachments and the RID", () => {
  it("attach, replace and detach of a PASID leave the RID's domain and reserved regions alone", () => {
    const { dev, idev, a, b, c, hwpt, domainOf, holes } = setup();
    const pasidB = hwpt(b, true);
    iommufdDeviceAttach(idev, pasidB, PASID);
    // Attaching a PASID does not attach the RID, and reserves nothing.
    expect(dev.domain).toBeUndefined();
    expect(holes(b)).toEqual([]);
    iommufdDeviceDetach(idev, PASID);

    const ridA = hwpt(a, true);
    iommufdDeviceAttach(idev, ridA);
    const rid = domainOf(ridA);
    expect(holes(a)).toEqual([HOLE]);
    iommufdDeviceAttach(idev, pasidB, PASID);
    expect(dev.domain).toBe(rid);
    expect(holes(b)).toEqual([]);

    const pasidC = hwpt(c, true);
    expect(iommufdDeviceReplace(idev, pasidC, PASID)).toBe(pasidC);
    expect(iommuPasidDomain(dev, PASID)).toBe(domainOf(pasidC));
    expect(dev.domain).toBe(rid);
    expect([holes(a), holes(b), holes(c)]).toEqual([[HOLE], [], []]);

    // Onto a second HWPT of the RID's own IOAS and off it again: a's reservation is the RID's.
    const pasidA = hwpt(a, true);
    iommufdDeviceReplace(idev, pasidA, PASID);
    expect([holes(a), holes(c)]).toEqual([[HOLE], []]);
    iommufdDeviceDetach(idev, PASID);
    expect(iommuPasidDomain(dev, PASID)).toBeUndefined();
    expect(dev.domain).toBe(rid);
    expect(holes(a)).toEqual([HOLE]);

    iommufdDeviceDetach(idev);
    expect(dev.domain).toBeUndefined();
    expect(holes(a)).toEqual([]);
  });

  it("a PASID attach refused on the RID's IOAS keeps the RID's reserved regions", () => {
    const { sys, idev, a, hwpt, holes } = setup();
    iommufdDeviceAttach(idev, hwpt(a, true));
    const plainA = hwpt(a, false);
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceAttach(idev, plainA, PASID))).toBe(EINVAL);
    expect(snapshot(sys)).toBe(before);
    expect(holes(a)).toEqual([HOLE]);
  });

  it("detach of a PASID, or of a RID, that is not attached changes nothing", () => {
    const { sys, dev, idev, a, hwpt, domainOf } = setup();
    const ridA = hwpt(a, true);
    iommufdDeviceAttach(idev, ridA);
    const before = snapshot(sys);
    iommufdDeviceDetach(idev, PASID);
    expect(snapshot(sys)).toBe(before);
    expect(dev.domain).toBe(domainOf(ridA));
    iommufdDeviceDetach(idev);
    const detached = snapshot(sys);
    iommufdDeviceDetach(idev);
    expect(snapshot(sys)).toBe(detached);
  });
});
