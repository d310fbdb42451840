/**
 * PASID attachments of drivers/iommu/iommu.c: iommu_attach_device_pasid,
 * iommu_replace_device_pasid, iommu_detach_device_pasid and the pasid_array lookup. The checks
 * come in the kernel's order (no set_dev_pasid: -EOPNOTSUPP; IOMMU_NO_PASID: -EINVAL; a PASID
 * at or past dev->iommu->max_pasids of a PASID-capable device: -EINVAL; an occupied pasid_array
 * slot: -EBUSY), and a failing set_dev_pasid leaves the array as it was.
 */
import { ENOMEM, fail } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_NO_PASID,
  type IommuDomain,
  IommuDevice,
  type IommuDriver,
  MOCK_IOMMUPT_DEFAULT,
  amdIommuDriver,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuPasidDomain,
  iommuReplaceDevicePasid,
  mockIommuptDomainAlloc,
} from "../src/index.js";
import { errnoOf } from "./helpers.js";

type SetDevPasidCall = [IommuDomain | undefined, number, IommuDomain | undefined];

/** The AMD driver plus a set_dev_pasid that records its calls and fails while `failing`. */
function pasidDevice(maxPasids: number) {
  const amd = amdIommuDriver();
  const calls: SetDevPasidCall[] = [];
  const state = { failing: false };
  const driver: IommuDriver = {
    name: "pasid-capable",
    capable: (dev, cap) => amd.capable(dev, cap),
    hwInfo: (dev) => amd.hwInfo(dev),
    domainAllocPaging: (dev, flags) => amd.domainAllocPaging(dev, flags),
    setDevPasid(domain, d, pasid, old) {
      expect(d).toBe(dev);
      calls.push([domain, pasid, old]);
      if (state.failing) fail(ENOMEM, "set_dev_pasid");
    },
  };
  const dev = new IommuDevice("pasid-dev", driver);
  dev.maxPasids = maxPasids;
  return { dev, calls, state };
}

const domain = () => mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);

describe("iommu_attach_device_pasid", () => {
  it("is -EOPNOTSUPP without set_dev_pasid, before the PASID itself is looked at", () => {
    const dev = new IommuDevice("d", amdIommuDriver());
    dev.maxPasids = 16;
    const d = domain();
    expect(errnoOf(() => iommuAttachDevicePasid(d, dev, IOMMU_NO_PASID))).toBe("EOPNOTSUPP");
    expect(errnoOf(() => iommuAttachDevicePasid(d, dev, 1))).toBe("EOPNOTSUPP");
    expect(errnoOf(() => iommuReplaceDevicePasid(d, dev, 1))).toBe("EOPNOTSUPP");
    expect(dev.pasidArray.size).toBe(0);
  });

  it("refuses IOMMU_NO_PASID and PASIDs from max_pasids on with -EINVAL, calling no driver", () => {
    const { dev, calls } = pasidDevice(16);
    const d = domain();
    expect(errnoOf(() => iommuAttachDevicePasid(d, dev, IOMMU_NO_PASID))).toBe("EINVAL");
    expect(errnoOf(() => iommuAttachDevicePasid(d, dev, 16))).toBe("EINVAL");
    expect(errnoOf(() => iommuAttachDevicePasid(d, dev, 17))).toBe("EINVAL");
    expect(calls).toEqual([]);
    expect(dev.pasidArray.size).toBe(0);
    // The last PASID below max_pasids attaches.
    iommuAttachDevicePasid(d, dev, 15);
    expect(calls).toEqual([[d, 15, undefined]]);
    expect(dev.pasidArray.get(15)).toBe(d);
  });

  it("does not check the range of a device without PASID support (max_pasids 0)", () => {
    const { dev, calls } = pasidDevice(0);
    const d = domain();
    expect(errnoOf(() => iommuAttachDevicePasid(d, dev, IOMMU_NO_PASID))).toBe("EINVAL");
    iommuAttachDevicePasid(d, dev, 0xfffff);
    expect(calls).toEqual([[d, 0xfffff, undefined]]);
    expect(iommuPasidDomain(dev, 0xfffff)).toBe(d);
  });

  it("is -EBUSY on a PASID already attached, even to the same domain, and keeps that one", () => {
    const { dev, calls } = pasidDevice(16);
    const d1 = domain();
    const d2 = domain();
    iommuAttachDevicePasid(d1, dev, 3);
    expect(errnoOf(() => iommuAttachDevicePasid(d2, dev, 3))).toBe("EBUSY");
    expect(errnoOf(() => iommuAttachDevicePasid(d1, dev, 3))).toBe("EBUSY");
    expect(calls).toEqual([[d1, 3, undefined]]);
    expect(iommuPasidDomain(dev, 3)).toBe(d1);
    // Another PASID of the same device is free.
    iommuAttachDevicePasid(d2, dev, 4);
    expect([iommuPasidDomain(dev, 3), iommuPasidDomain(dev, 4)]).toEqual([d1, d2]);
  });

  it("leaves the PASID free when set_dev_pasid fails", () => {
    const { dev, calls, state } = pasidDevice(16);
    const d = domain();
    state.failing = true;
    expect(errnoOf(() => iommuAttachDevicePasid(d, dev, 5))).toBe("ENOMEM");
    expect(calls).toEqual([[d, 5, undefined]]);
    expect(dev.pasidArray.has(5)).toBe(false);
    state.failing = false;
    iommuAttachDevicePasid(d, dev, 5);
    expect(iommuPasidDomain(dev, 5)).toBe(d);
  });
});

describe("iommu_replace_device_pasid", () => {
  it("is -EINVAL for IOMMU_NO_PASID and for a PASID nothing is attached to", () => {
    const { dev, calls } = pasidDevice(16);
    const d = domain();
    iommuAttachDevice(dev, d);
    expect(errnoOf(() => iommuReplaceDevicePasid(d, dev, IOMMU_NO_PASID))).toBe("EINVAL");
    expect(errnoOf(() => iommuReplaceDevicePasid(d, dev, 2))).toBe("EINVAL");
    expect(calls).toEqual([]);
    expect(dev.pasidArray.size).toBe(0);
  });

  it("switches in one set_dev_pasid call naming the old domain; the same domain is a no-op", () => {
    const { dev, calls } = pasidDevice(16);
    const d1 = domain();
    const d2 = domain();
    iommuAttachDevicePasid(d1, dev, 7);
    iommuReplaceDevicePasid(d1, dev, 7);
    expect(calls).toEqual([[d1, 7, undefined]]);
    iommuReplaceDevicePasid(d2, dev, 7);
    expect(calls).toEqual([
      [d1, 7, undefined],
      [d2, 7, d1],
    ]);
    expect(iommuPasidDomain(dev, 7)).toBe(d2);
  });

  it("keeps the old domain when set_dev_pasid fails", () => {
    const { dev, calls, state } = pasidDevice(16);
    const d1 = domain();
    const d2 = domain();
    iommuAttachDevicePasid(d1, dev, 7);
    state.failing = true;
    expect(errnoOf(() => iommuReplaceDevicePasid(d2, dev, 7))).toBe("ENOMEM");
    expect(calls.at(-1)).toEqual([d2, 7, d1]);
    expect(iommuPasidDomain(dev, 7)).toBe(d1);
  });
});

describe("iommu_detach_device_pasid and the pasid_array lookup", () => {
  it("blocks the PASID through set_dev_pasid with the detached domain as the old one", () => {
    const { dev, calls } = pasidDevice(16);
    const d = domain();
    iommuAttachDevicePasid(d, dev, 9);
    iommuDetachDevicePasid(d, dev, 9);
    expect(calls).toEqual([
      [d, 9, undefined],
      [undefined, 9, d],
    ]);
    expect(dev.pasidArray.has(9)).toBe(false);
    expect(iommuPasidDomain(dev, 9)).toBeUndefined();
    // Free again: a new attach succeeds.
    iommuAttachDevicePasid(d, dev, 9);
    expect(iommuPasidDomain(dev, 9)).toBe(d);
  });

  it("IOMMU_NO_PASID is the device's own attachment, not a pasid_array slot", () => {
    const { dev } = pasidDevice(16);
    const rid = domain();
    const p1 = domain();
    expect(iommuPasidDomain(dev, IOMMU_NO_PASID)).toBeUndefined();
    iommuAttachDevice(dev, rid);
    iommuAttachDevicePasid(p1, dev, 1);
    expect(iommuPasidDomain(dev, IOMMU_NO_PASID)).toBe(rid);
    expect(iommuPasidDomain(dev, 1)).toBe(p1);
  });
});
