/**
 * The iommufd selftest's mock paging domains (drivers/iommu/iommufd/selftest.c
 * mock_domain_alloc_pgtable): what the caller hands over (the domain ops, the driver's private
 * struct, the dirty ops) is the domain's, and the table allocations go through the caller's
 * fault source, as the kernel's iommu_alloc_pages_node_sz goes through fail_nth.
 */
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  MOCK_APERTURE_START,
  MOCK_IOMMUPT_AMDV1,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  iommuMap,
  iommuReadRuns,
  mockIommuptDomainAlloc,
} from "../src/index.js";
import type { IommuDirtyOps, IommuDomainOps } from "../src/iommu.js";
import { PT_ALLOC_SITE } from "../src/iommu-pt.js";
import { errnoOf } from "./helpers.js";

const TYPES = [MOCK_IOMMUPT_DEFAULT, MOCK_IOMMUPT_HUGE, MOCK_IOMMUPT_AMDV1];

describe("mockIommuptDomainAlloc", () => {
  it("keeps the caller's domain ops, private struct and dirty ops", () => {
    const ops: IommuDomainOps = { iotlbSync: () => {} };
    const dirtyOps: IommuDirtyOps = { setDirtyTracking: () => {} };
    const priv = { mock: true };
    for (const type of TYPES) {
      const d = mockIommuptDomainAlloc(type, { ops, priv, dirtyOps });
      expect(d.ops).toBe(ops);
      expect(d.priv).toBe(priv);
      expect(d.dirtyOps).toBe(dirtyOps);
      const bare = mockIommuptDomainAlloc(type);
      expect(bare.ops).toEqual({});
      expect(bare.priv).toBeUndefined();
      expect(bare.dirtyOps).toBeUndefined();
    }
  });

  it("allocates its tables through the fault source: -ENOMEM for the top and for a map", () => {
    for (const type of TYPES) {
      const sites: string[] = [];
      let failing = true;
      const faults = {
        shouldFail: (site: string) => {
          sites.push(site);
          return failing;
        },
      };
      expect(errnoOf(() => mockIommuptDomainAlloc(type, { faults }))).toBe("ENOMEM");
      expect(sites).toEqual([PT_ALLOC_SITE]);
      failing = false;
      const d = mockIommuptDomainAlloc(type, { faults });
      failing = true;
      const iova = type === MOCK_IOMMUPT_DEFAULT ? MOCK_APERTURE_START : 0n;
      expect(errnoOf(() => iommuMap(d, iova, 0x10_0000n, 0x1000n, IOMMU_READ))).toBe("ENOMEM");
      expect(iommuReadRuns(d, iova, 0x1000n)).toEqual([]);
      expect(sites.every((s) => s === PT_ALLOC_SITE)).toBe(true);
      failing = false;
      iommuMap(d, iova, 0x10_0000n, 0x1000n, IOMMU_READ);
      expect(iommuReadRuns(d, iova, 0x1000n)).toHaveLength(1);
    }
  });
});
