import { describe, expect, it } from "vitest";
import {
  IOMMU_DIRTY_NO_CLEAR,
  type IommuDomain,
  IotlbGather,
  MOCK_APERTURE_START,
  MOCK_IOMMUPT_DEFAULT,
  PT_FEAT_FLUSH_RANGE,
  amdv1Format,
  iommuMap,
  iommuReadAndClearDirty,
  iommuptDomainAlloc,
  iommuptSetDirty,
  mockIommuptDomainAlloc,
  ptImage,
  vtdssFormat,
  x86_64Format,
} from "../src/index.js";
import { errnoOf, RW } from "./helpers.js";

function read(
  d: IommuDomain,
  iova: bigint,
  size: bigint,
  flags = 0,
  gather = new IotlbGather(),
): string[] {
  const out: string[] = [];
  iommuReadAndClearDirty(d, iova, size, flags, {
    bitmap: { set: (a, l) => out.push(`${a.toString(16)}+${l.toString(16)}`) },
    gather,
  });
  return out;
}

describe("dirty tracking", () => {
  it("AMDv1: one dirty item dirties the contiguous entry, reported up to its last item; NO_CLEAR keeps it", () => {
    const d = iommuptDomainAlloc({
      format: amdv1Format,
      features: 1 << PT_FEAT_FLUSH_RANGE,
      startingLevel: 2,
    });
    iommuMap(d, 0x100000n, 0x200000n, 0x10000n, RW); // one 64 KiB entry = 16 items
    iommuMap(d, 0x200000n, 0x300000n, 0x1000n, RW);
    iommuptSetDirty(d, 0x103456n);
    const dirtyItems = ptImage(d.pt!).filter((e) => e.level === 0 && e.pte & (1n << 6n));
    expect(dirtyItems.map((e) => e.index)).toEqual([259]);
    // record_dirty stops at log2_set_mod_max(index) = item 15, so 15 of the 16 items.
    expect(read(d, 0n, 0x400000n, IOMMU_DIRTY_NO_CLEAR)).toEqual(["100000+f000"]);
    const gather = new IotlbGather();
    expect(read(d, 0n, 0x400000n, 0, gather)).toEqual(["100000+f000"]);
    expect(gather.start).toBe(0x100000n);
    expect(gather.end).toBe(0x10efffn);
    expect(read(d, 0n, 0x400000n)).toEqual([]);
  });

  it("a query starting inside a contiguous entry reports from its start", () => {
    const d = iommuptDomainAlloc({ format: amdv1Format, features: 0, startingLevel: 2 });
    iommuMap(d, 0x100000n, 0x200000n, 0x10000n, RW);
    iommuptSetDirty(d, 0x100000n);
    expect(read(d, 0x108000n, 0x2000n, IOMMU_DIRTY_NO_CLEAR)).toEqual(["108000+2000"]);
    // Clearing from inside still cleans the whole entry.
    read(d, 0x108000n, 0x1000n);
    expect(read(d, 0n, 0x400000n)).toEqual([]);
  });

  it("mock DEFAULT: a 4 KiB map is a 2-item leaf whose dirtiness reads back as its first 2 KiB", () => {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    const at = MOCK_APERTURE_START;
    // What iommufd's batch_iommu_map_small feeds with HUGE_PAGES = 0: PAGE_SIZE at a time.
    for (let i = 0n; i < 4n; i++)
      iommuMap(d, at + i * 0x1000n, 0x400000n + i * 0x1000n, 0x1000n, RW);
    const leaves = ptImage(d.pt!).filter((e) => e.level === 0);
    expect(leaves.length).toBe(8);
    iommuptSetDirty(d, at);
    iommuptSetDirty(d, at + 0x1800n); // the second item of the second page
    expect(read(d, at, 0x4000n, IOMMU_DIRTY_NO_CLEAR)).toEqual([
      `${at.toString(16)}+800`,
      `${(at + 0x1000n).toString(16)}+800`,
    ]);
    // A walk entering at an entry's last item reports nothing, yet still cleans the entry.
    expect(read(d, at + 0x800n, 0x800n)).toEqual([]);
    expect(read(d, at, 0x4000n)).toEqual([`${(at + 0x1000n).toString(16)}+800`]);
    expect(read(d, at, 0x4000n)).toEqual([]);
  });

  it("VT-d: D bit 9 per leaf; set_dirty on a hole is ENOENT", () => {
    const d = iommuptDomainAlloc({ format: vtdssFormat, features: 0, hwMaxVaLg2: 48 });
    iommuMap(d, 0x200000n, 0x400000n, 0x201000n, RW);
    iommuptSetDirty(d, 0x3fffffn);
    iommuptSetDirty(d, 0x400000n);
    expect(ptImage(d.pt!).filter((e) => e.pte & (1n << 9n)).length).toBe(2);
    expect(read(d, 0x200000n, 0x201000n)).toEqual(["200000+200000", "400000+1000"]);
    expect(errnoOf(() => iommuptSetDirty(d, 0x800000n))).toBe("ENOENT");
    expect(errnoOf(() => read(d, 0n, 0n))).toBe("EINVAL");
  });

  it("x86-64 has no dirty ops: EOPNOTSUPP", () => {
    const d = iommuptDomainAlloc({ format: x86_64Format, features: 0, hwMaxVaLg2: 48 });
    iommuMap(d, 0n, 0n, 0x1000n, RW);
    expect(errnoOf(() => iommuptSetDirty(d, 0n))).toBe("EOPNOTSUPP");
    expect(errnoOf(() => read(d, 0n, 0x1000n))).toBe("EOPNOTSUPP");
  });
});
