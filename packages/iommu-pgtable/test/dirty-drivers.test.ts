/** Dirty tracking per driver: capability, allocation, attach, dirty_ops, and device writes. */
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3Driver,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  IommuDevice,
  IotlbGather,
  type PtIommuDriver,
  amdIommuDriver,
  intelIommuDriver,
  iommuAttachDevice,
  iommuDeviceDma,
  iommuIotlbSync,
  iommuMap,
  iommuReadAndClearDirty,
  iommuTranslate,
  ptImage,
  x86FirstStageIommuDriver,
} from "../src/index.js";
import { errnoOf } from "./helpers.js";

const RW = IOMMU_READ | IOMMU_WRITE;

function dirtyRanges(d: IommuDomain, iova: bigint, size: bigint, flags = 0): string[] {
  const out: string[] = [];
  const gather = new IotlbGather();
  iommuReadAndClearDirty(d, iova, size, flags, {
    bitmap: { set: (a, l) => out.push(`${a.toString(16)}+${l.toString(16)}`) },
    gather,
  });
  iommuIotlbSync(d, gather);
  return out;
}

describe.each([
  // AMDv1 maps 0x400000..0x402fff as one 8 KiB contiguous entry (two items) and a 4 KiB one;
  // a dirty item makes the contiguous entry dirty, which record_dirty reports up to its last
  // item (drivers/iommu/generic_pt/iommu_pt.h), so one 4 KiB item.
  ["amd", amdIommuDriver, 6n, ["200000+200000", "400000+1000"]],
  ["intel", intelIommuDriver, 9n, ["200000+200000", "400000+1000", "401000+1000"]],
] as const)("%s dirty tracking", (_name, make, dBit, expected) => {
  it("capable and allocatable on hardware with dirty bits; dirty_ops only when asked", () => {
    const drv = make();
    const dev = new IommuDevice("d", drv);
    expect(drv.capable(dev, IOMMU_CAP_DIRTY_TRACKING)).toBe(true);
    expect(drv.domainAllocPaging(dev, 0).dirtyOps).toBeUndefined();
    const d = drv.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    expect(d.dirtyOps?.setDirtyTracking).toBeTypeOf("function");
  });

  it("without hardware dirty bits: no capability, EOPNOTSUPP to allocate, EINVAL to attach", () => {
    const drv = make(undefined, { dirtyTracking: false });
    const dev = new IommuDevice("d", drv);
    expect(drv.capable(dev, IOMMU_CAP_DIRTY_TRACKING)).toBe(false);
    expect(errnoOf(() => drv.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING))).toBe(
      "EOPNOTSUPP",
    );
    // A dirty-tracking domain built for this unit anyway is refused on attach.
    const withDirty = make();
    const d = withDirty.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    d.priv = drv;
    expect(errnoOf(() => iommuAttachDevice(dev, d))).toBe("EINVAL");
    expect(dev.domain).toBeUndefined();
  });

  it("device writes set the leaf's D bit only while tracking is on; reads never", () => {
    const drv: PtIommuDriver = make();
    const dev = new IommuDevice("d", drv);
    const d = drv.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    iommuAttachDevice(dev, d);
    iommuMap(d, 0x200000n, 0x400000n, 0x200000n, RW); // one 2 MiB leaf
    iommuMap(d, 0x400000n, 0x800000n, 0x3000n, RW); // three 4 KiB leaves
    const dbits = () => ptImage(d.pt!).filter((e) => e.pte & (1n << dBit)).length;

    iommuDeviceDma(dev, 0x200000n, 0x1000n, IOMMU_WRITE);
    iommuTranslate(d, 0x401000n, IOMMU_WRITE, dev);
    expect(dbits()).toBe(0);

    d.dirtyOps!.setDirtyTracking(d, true);
    iommuDeviceDma(dev, 0x400000n, 0x3000n, IOMMU_READ);
    iommuTranslate(d, 0x300000n, IOMMU_READ, dev);
    expect(dbits()).toBe(0);

    // A write inside the 2 MiB leaf reports the whole leaf; a write spanning two 4 KiB
    // leaves dirties both.
    iommuDeviceDma(dev, 0x3ff000n, 0x1000n, IOMMU_WRITE);
    iommuDeviceDma(dev, 0x400800n, 0x1000n, IOMMU_WRITE);
    expect(dbits()).toBe(3);
    expect(dirtyRanges(d, 0x200000n, 0x203000n, IOMMU_DIRTY_NO_CLEAR)).toEqual(expected);
    expect(dbits()).toBe(3);
    const syncs = drv.stats.iotlbSyncs;
    expect(dirtyRanges(d, 0x200000n, 0x203000n)).toEqual(expected);
    expect(drv.stats.iotlbSyncs).toBe(syncs + 1);
    expect(dbits()).toBe(0);

    d.dirtyOps!.setDirtyTracking(d, false);
    iommuDeviceDma(dev, 0x200000n, 0x203000n, IOMMU_WRITE);
    expect(dbits()).toBe(0);
  });
});

describe("drivers without dirty tracking", () => {
  it("x86 first stage: no capability, EOPNOTSUPP for a dirty-tracking domain", () => {
    const drv = x86FirstStageIommuDriver();
    const dev = new IommuDevice("d", drv);
    expect(drv.capable(dev, IOMMU_CAP_DIRTY_TRACKING)).toBe(false);
    expect(errnoOf(() => drv.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING))).toBe(
      "EOPNOTSUPP",
    );
    expect(drv.domainAllocPaging(dev, 0).dirtyOps).toBeUndefined();
  });

  it("ARM SMMUv3 (no HTTU dirty state modelled): no capability, EOPNOTSUPP", () => {
    const drv = new ArmSmmuV3Driver();
    const dev = new IommuDevice("d", drv);
    expect(drv.capable(dev, IOMMU_CAP_DIRTY_TRACKING)).toBe(false);
    expect(errnoOf(() => drv.domainAllocPaging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING))).toBe(
      "EOPNOTSUPP",
    );
    expect(drv.domainAllocPaging(dev, 0).dirtyOps).toBeUndefined();
  });
});
