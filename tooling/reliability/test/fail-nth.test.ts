import { describe, expect, it } from "vitest";
import { VMM_CORPUS, failNthSweep, fuzzCorpus } from "../src/fail-nth.js";

describe("fail_nth", () => {
  for (const [name, ops] of Object.entries(VMM_CORPUS)) {
    it(`${name}: every injectable point failed once leaves no leak and a clean checker`, () => {
      const r = failNthSweep(name, ops);
      expect(r.failure).toBeUndefined();
      expect(r.points).toBeGreaterThan(10);
    });
  }

  it("a small corpus of fuzz programs sweeps clean", () => {
    for (const ops of fuzzCorpus(20261125, 6)) {
      const r = failNthSweep("fuzz", ops);
      expect(r.failure).toBeUndefined();
    }
  });

  it("reaches the failure sites of every layer", () => {
    const r = failNthSweep("boot", VMM_CORPUS.boot!);
    for (const site of ["iommufd_object_alloc", "iommu_alloc_pages", "iommufd:pin_pages", "dma_buf_export"]) {
      expect(r.sites[site]).toBeGreaterThan(0);
    }
  });
});
