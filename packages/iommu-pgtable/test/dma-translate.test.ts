/**
 * A device's DMA through its domain (iommu-driver.ts): blocked without a domain or with a
 * blocked one, not-present at the first hole, the access checked against the leaf, the dirty
 * bit set by a write only on the pages the write touches (the hardware D-bit update of AMD
 * HAD / VT-d SSADE), the DMA range refused when empty or past the u64 top, a domain without a
 * table translated through its driver's iova_to_phys, a nested domain through the driver's
 * stage 1 or else its parent, and the device's fault log (the oldest records dropped).
 *
 * @see drivers/iommu/iommu.c (iommu_iova_to_phys), include/linux/iommu.h (struct iommu_ops)
 */
import { faultOf } from "../src/testing.js";
import { describe, expect, it } from "vitest";
import {
  IOMMU_DOMAIN_NESTED,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_READ,
  IOMMU_WRITE,
  IommuDevice,
  IommuDomain,
  amdIommuDriver,
  iommuAttachDevice,
  iommuDeviceDma,
  iommuMap,
  iommuTranslate,
  ptImage,
} from "../src/index.js";
import { PtIommuDriver, iommuPagingDma, iommuptDomainAlloc } from "../src/iommu-driver.js";
import { IOMMU_DOMAIN_BLOCKED, IOMMU_DOMAIN_UNMANAGED } from "../src/iommu-types.js";
import { amdv1Format } from "../src/fmt/amdv1.js";
import { amdDomain, errnoOf } from "./helpers.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const AMDV1PT_FMT_D = 1n << 6n;

/** A domain with no page table: the driver answers iova_to_phys (one page at 0x1000). */
function tablelessDomain(type?: number) {
  return new IommuDomain({
    ...(type === undefined ? {} : { type }),
    geometry: { apertureStart: 0n, apertureEnd: (1n << 48n) - 1n, forceAperture: true },
    pgsizeBitmap: 0x1000n,
    ops: { iovaToPhys: (_d, iova) => (iova >> 12n === 1n ? 0x80000n + (iova & 0xfffn) : 0n) },
  });
}

describe("iommuTranslate / iommuPagingDma", () => {
  it("faults 'blocked' without a domain or with a blocked one, naming the device", () => {
    const dev = new IommuDevice("nic", amdIommuDriver());
    const blocked = tablelessDomain(IOMMU_DOMAIN_BLOCKED);
    expect(blocked.type).toBe(IOMMU_DOMAIN_BLOCKED);
    for (const domain of [undefined, blocked]) {
      const f = faultOf(() => iommuTranslate(domain, 0x1000n, IOMMU_READ, dev));
      expect([f.reason, f.device, f.iova]).toEqual(["blocked", "nic", 0x1000n]);
      const g = faultOf(() => iommuPagingDma(domain, dev, 0x1000n, 0x10n, IOMMU_READ));
      expect([g.reason, g.device]).toEqual(["blocked", "nic"]);
    }
    // Without a device the fault names "device" and is recorded nowhere.
    expect(faultOf(() => iommuTranslate(undefined, 0n, IOMMU_READ)).device).toBe("device");
    expect(faultOf(() => iommuPagingDma(undefined, undefined, 0n, 1n, IOMMU_READ)).device).toBe(
      "device",
    );
    expect(dev.faultCount).toBe(4);
    // A blocked domain built over a table is blocked before its (empty) table is read.
    const overTable = iommuptDomainAlloc(
      { format: amdv1Format, features: 0, startingLevel: 2 },
      { type: IOMMU_DOMAIN_BLOCKED },
    );
    expect(faultOf(() => iommuPagingDma(overTable, dev, 0x1000n, 0x10n, IOMMU_READ)).reason).toBe(
      "blocked",
    );
  });

  it("a domain without a table goes through the driver's iova_to_phys", () => {
    const d = tablelessDomain();
    expect(iommuTranslate(d, 0x1234n, IOMMU_WRITE)).toBe(0x80234n);
    expect(faultOf(() => iommuTranslate(d, 0x2000n, IOMMU_READ)).reason).toBe("not-present");
    expect(iommuPagingDma(d, undefined, 0x1010n, 0x20n, IOMMU_WRITE)).toEqual([
      { iova: 0x1010n, paddr: 0x80010n, length: 0x20n, prot: IOMMU_WRITE },
    ]);
    // Without the op nothing translates.
    const bare = new IommuDomain({
      geometry: d.geometry,
      pgsizeBitmap: 0x1000n,
      ops: {},
    });
    expect(faultOf(() => iommuTranslate(bare, 0x1000n, IOMMU_READ)).reason).toBe("not-present");
  });

  it("faults 'not-present' at the first hole of a DMA", () => {
    const d = amdDomain();
    iommuMap(d, 0x10000n, 0x50000n, 0x1000n, RW);
    iommuMap(d, 0x12000n, 0x52000n, 0x1000n, RW);
    expect(faultOf(() => iommuTranslate(d, 0x11000n, IOMMU_READ)).reason).toBe("not-present");
    const f = faultOf(() => iommuPagingDma(d, undefined, 0x10800n, 0x2000n, IOMMU_READ));
    expect([f.reason, f.iova]).toEqual(["not-present", 0x11000n]);
  });

  it("a write sets the D bit of exactly the pages it touches, once tracking is on", () => {
    const amd = amdIommuDriver();
    const dev = new IommuDevice("d", amd);
    const d = amd.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    iommuMap(d, 0x10000n, 0x50000n, 0x3000n, RW);
    const dirty = () =>
      ptImage(d.pt!)
        .filter((e) => e.level === 0 && (e.pte & AMDV1PT_FMT_D) !== 0n)
        .map((e) => e.index);
    iommuTranslate(d, 0x10000n, IOMMU_WRITE);
    expect(dirty()).toEqual([]);
    d.dirtyOps!.setDirtyTracking(d, true);
    iommuTranslate(d, 0x10008n, IOMMU_READ);
    expect(dirty()).toEqual([]);
    iommuTranslate(d, 0x10008n, IOMMU_WRITE);
    expect(dirty()).toEqual([0x10]);
    // A one-page DMA write ending at a page boundary dirties that page only.
    iommuAttachDevice(dev, d);
    iommuDeviceDma(dev, 0x11000n, 0x1000n, IOMMU_WRITE);
    expect(dirty()).toEqual([0x10, 0x11]);
  });
});

describe("iommuDeviceDma", () => {
  it("refuses an empty DMA and one past the u64 top (-EINVAL); the last byte is a DMA", () => {
    const dev = new IommuDevice("d", amdIommuDriver());
    expect(errnoOf(() => iommuDeviceDma(dev, 0x1000n, 0n, IOMMU_READ))).toBe("EINVAL");
    expect(errnoOf(() => iommuDeviceDma(dev, 0x1000n, -1n, IOMMU_READ))).toBe("EINVAL");
    const top = (1n << 64n) - 1n;
    expect(errnoOf(() => iommuDeviceDma(dev, top, 2n, IOMMU_READ))).toBe("EINVAL");
    expect(errnoOf(() => iommuDeviceDma(dev, top - 1n, 3n, IOMMU_READ))).toBe("EINVAL");
    // One byte at the top, and two bytes ending there, are DMAs (blocked: no domain).
    expect(faultOf(() => iommuDeviceDma(dev, top, 1n, IOMMU_READ)).reason).toBe("blocked");
    expect(faultOf(() => iommuDeviceDma(dev, top - 1n, 2n, IOMMU_READ)).reason).toBe("blocked");
  });

  it("a nested domain: the driver's stage 1 when it has one, else the parent's translation", () => {
    const parent = amdDomain();
    iommuMap(parent, 0x10000n, 0x50000n, 0x1000n, RW);
    const dev = new IommuDevice("d", amdIommuDriver());
    const plain = new IommuDomain({
      type: IOMMU_DOMAIN_NESTED,
      parent,
      geometry: parent.geometry,
      pgsizeBitmap: 0n,
      ops: {},
    });
    dev.domain = plain;
    expect(iommuDeviceDma(dev, 0x10010n, 0x10n, IOMMU_READ)).toEqual([
      { iova: 0x10010n, paddr: 0x50010n, length: 0x10n, prot: RW },
    ]);
    const runs = [{ iova: 1n, paddr: 2n, length: 3n, prot: IOMMU_READ }];
    dev.domain = new IommuDomain({
      type: IOMMU_DOMAIN_NESTED,
      parent,
      geometry: parent.geometry,
      pgsizeBitmap: 0n,
      ops: { nestedDma: () => runs },
    });
    expect(iommuDeviceDma(dev, 0x10010n, 0x10n, IOMMU_READ)).toBe(runs);
  });
});

describe("IommuDevice fault log", () => {
  it("keeps the last 64 faults and counts all of them", () => {
    const dev = new IommuDevice("d", amdIommuDriver());
    for (let i = 0n; i < 70n; i++)
      faultOf(() => iommuTranslate(undefined, i << 12n, IOMMU_READ, dev));
    expect(dev.faultCount).toBe(70);
    expect(dev.faults).toHaveLength(64);
    expect([dev.faults[0]!.iova, dev.faults[63]!.iova]).toEqual([6n << 12n, 69n << 12n]);
  });
});

describe("iommuptDomainAlloc", () => {
  it("an unmanaged paging domain unless the caller gives the type", () => {
    const cfg = { format: amdv1Format, features: 0, startingLevel: 2 };
    expect(iommuptDomainAlloc(cfg).type).toBe(IOMMU_DOMAIN_UNMANAGED);
    const blocked = iommuptDomainAlloc(cfg, { type: IOMMU_DOMAIN_BLOCKED });
    expect(blocked.type).toBe(IOMMU_DOMAIN_BLOCKED);
    expect(faultOf(() => iommuTranslate(blocked, 0n, IOMMU_READ)).reason).toBe("blocked");
  });
});

describe("PtIommuDriver", () => {
  const desc = {
    name: "bare",
    hwInfoType: 0,
    caps: [],
    allocFlags: 0,
    ptCfg: () => ({ format: amdv1Format, features: 0, startingLevel: 2 }),
  };

  it("without hw_info data, reserved regions or a page-size hook: empty, none, the natural sizes", () => {
    const drv = new PtIommuDriver(desc);
    const dev = new IommuDevice("d", drv);
    expect(drv.hwInfo(dev)).toEqual({ type: 0, data: new Uint8Array(0) });
    expect(drv.getResvRegions(dev)).toEqual([]);
    const d = drv.domainAllocPaging(dev, 0);
    expect(d.pgsizeBitmap).toBe(d.pt!.naturalPgsizeBitmap());
    expect(drv.stats).toEqual({ iotlbSyncs: 0, flushAll: 0, syncMaps: 0 });
    d.ops.flushIotlbAll!(d);
    expect(drv.stats.flushAll).toBe(1);
  });

  it("a page-size hook narrows the domain's pgsize_bitmap", () => {
    const drv = new PtIommuDriver({ ...desc, pgsizeBitmap: (natural) => natural & 0x1000n });
    const d = drv.domainAllocPaging(new IommuDevice("d", drv), 0);
    expect(d.pgsizeBitmap).toBe(0x1000n);
  });
});
