import { describe, expect, it } from "vitest";
import { VMM_CORPUS, failNthSweep, fuzzCorpus } from "../src/fail-nth.js";

/** Sites of each layer a full VMM boot must reach: iommufd, page tables, GUP, dma-buf, VFIO. */
const BOOT_SITES = [
  "iommufd_object_alloc",
  "iommu_alloc_pages",
  "iommufd:pin_pages",
  "dma_buf_export",
  "vfio_pci_dma_buf alloc",
];

describe("fail_nth", () => {
  for (const [name, ops] of Object.entries(VMM_CORPUS)) {
    it(`${name}: every injectable point failed once leaves no trace, no leak, a clean checker`, () => {
      const r = failNthSweep(name, ops);
      expect(r.failure).toBeUndefined();
      expect(r.points).toBeGreaterThan(10);
      if (name === "boot") for (const site of BOOT_SITES) expect(r.sites[site]).toBeGreaterThan(0);
    });
  }

  it("a small corpus of fuzz programs sweeps clean", () => {
    for (const ops of fuzzCorpus(20261125, 6)) {
      expect(failNthSweep("fuzz", ops).failure).toBeUndefined();
    }
  });
});
