/**
 * The iommu core entry points around the page table: u64 arguments, iova_to_phys of identity
 * and blocked domains, runs read back clipped to the asked range, the dirty read's argument
 * errnos, and domain free.
 *
 * @see drivers/iommu/iommu.c (iommu_map, iommu_unmap, iommu_iova_to_phys, iommu_domain_free)
 * @see drivers/iommu/generic_pt/iommu_pt.h (read_and_clear_dirty)
 */
import { describe, expect, it } from "vitest";
import {
  IommuDomain,
  iommuDomainFree,
  iommuIovaToPhys,
  iommuMap,
  iommuReadAndClearDirty,
  iommuReadRuns,
  iommuUnmap,
  IotlbGather,
} from "../src/index.js";
import { IOMMU_DOMAIN_BLOCKED, IOMMU_DOMAIN_IDENTITY } from "../src/iommu-types.js";
import { RW, errnoOf, vtdDomain } from "./helpers.js";

const U64_MAX = (1n << 64n) - 1n;
const geometry = { apertureStart: 0n, apertureEnd: (1n << 48n) - 1n, forceAperture: true };

describe("u64 arguments", () => {
  it("a negative, too large or non-bigint value is refused, naming the argument", () => {
    const d = vtdDomain();
    const bad = [-0x1000n, U64_MAX + 1n, 0x1000 as unknown as bigint];
    for (const v of bad) {
      expect(() => iommuMap(d, v, 0n, 0x1000n, RW)).toThrow(/^iova is not a u64$/);
      expect(() => iommuMap(d, 0n, v, 0x1000n, RW)).toThrow(/^paddr is not a u64$/);
      expect(() => iommuMap(d, 0n, 0n, v, RW)).toThrow(/^size is not a u64$/);
      expect(() => iommuUnmap(d, v, 0x1000n)).toThrow(/^iova is not a u64$/);
      expect(() => iommuUnmap(d, 0n, v)).toThrow(/^size is not a u64$/);
      expect(() => iommuIovaToPhys(d, v)).toThrow(/^iova is not a u64$/);
      expect(() => iommuReadRuns(d, v, 0x1000n)).toThrow(/^iova is not a u64$/);
      expect(() => iommuReadRuns(d, 0n, v)).toThrow(/^length is not a u64$/);
    }
    expect(d.mappedBytes).toBe(0n);
    // The largest u64 is one.
    expect(iommuIovaToPhys(d, U64_MAX)).toBe(0n);
  });
});

describe("iommu_iova_to_phys by domain type", () => {
  it("identity translates 1:1, blocked translates nothing, without asking the driver", () => {
    let asked = 0;
    const make = (type: number) =>
      new IommuDomain({
        type,
        geometry,
        pgsizeBitmap: 0x1000n,
        ops: {
          iovaToPhys: () => {
            asked++;
            return 0x5000n;
          },
        },
      });
    expect(iommuIovaToPhys(make(IOMMU_DOMAIN_IDENTITY), 0x1234_5678n)).toBe(0x1234_5678n);
    expect(iommuIovaToPhys(make(IOMMU_DOMAIN_BLOCKED), 0x1234_5678n)).toBe(0n);
    expect(asked).toBe(0);
  });
});

describe("iommuReadRuns", () => {
  it("clips a leaf's run to the asked range; nothing for an empty or wrapping range", () => {
    const d = vtdDomain();
    iommuMap(d, 0x200000n, 0x4000_0000n, 0x200000n, RW);
    expect(iommuReadRuns(d, 0x201800n, 0x2000n)).toEqual([
      { iova: 0x201800n, paddr: 0x4000_1800n, length: 0x2000n, prot: RW },
    ]);
    expect(iommuReadRuns(d, 0x1ff000n, 0x2000n)).toEqual([
      { iova: 0x200000n, paddr: 0x4000_0000n, length: 0x1000n, prot: RW },
    ]);
    // A range ending on a page boundary reads no run of the page after it.
    iommuMap(d, 0x400000n, 0x7000_0000n, 0x1000n, RW);
    expect(iommuReadRuns(d, 0x3ff000n, 0x1000n)).toEqual([
      { iova: 0x3ff000n, paddr: 0x401f_f000n, length: 0x1000n, prot: RW },
    ]);
    expect(iommuReadRuns(d, 0x200000n, 0n)).toEqual([]);
    expect(iommuReadRuns(d, U64_MAX, 2n)).toEqual([]);
  });
});

describe("read_and_clear_dirty argument checks", () => {
  it("an empty range is EINVAL, one past the u64 top EOVERFLOW, no table EOPNOTSUPP", () => {
    const d = vtdDomain();
    const dirty = { bitmap: { set: () => {} }, gather: new IotlbGather() };
    expect(errnoOf(() => iommuReadAndClearDirty(d, 0x1000n, 0n, 0, dirty))).toBe("EINVAL");
    expect(errnoOf(() => iommuReadAndClearDirty(d, U64_MAX, 2n, 0, dirty))).toBe("EOVERFLOW");
    // The last byte passes the overflow check and meets the walk's range check (pt_check_range).
    expect(errnoOf(() => iommuReadAndClearDirty(d, U64_MAX, 1n, 0, dirty))).toBe("ERANGE");
    const tableless = new IommuDomain({ geometry, pgsizeBitmap: 0x1000n, ops: {} });
    expect(errnoOf(() => iommuReadAndClearDirty(tableless, 0n, 0x1000n, 0, dirty))).toBe(
      "EOPNOTSUPP",
    );
  });
});

describe("iommu_domain_free", () => {
  it("frees every table of the domain; a second free WARNs", () => {
    const d = vtdDomain();
    iommuMap(d, 0x1000n, 0x1000n, 0x1000n, RW);
    const pt = d.pt!;
    expect(pt.alloc.live).toBe(4);
    iommuDomainFree(d);
    expect(pt.alloc.live).toBe(0);
    expect(() => iommuDomainFree(d)).toThrow(/twice/);
    // A domain without a table (its driver translates) frees too.
    const tableless = new IommuDomain({ geometry, pgsizeBitmap: 0x1000n, ops: {} });
    iommuDomainFree(tableless);
    expect(tableless.freed).toBe(true);
  });
});
