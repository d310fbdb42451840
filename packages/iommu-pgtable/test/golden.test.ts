/**
 * Bit-exact PTE images per format for a fixed scenario: a 4K page, a contiguous or 2M leaf and a
 * read-only page, so every table pointer, leaf type, permission and size encoding is pinned.
 */
import { describe, expect, it } from "vitest";
import {
  IOMMU_CACHE,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  MOCK_IOMMUPT_DEFAULT,
  PT_FEAT_AMDV1_FORCE_COHERENCE,
  PT_FEAT_SIGN_EXTEND,
  PT_FEAT_VTDSS_FORCE_COHERENCE,
  amdv1Format,
  armLpaeDomainAlloc,
  iommuMap,
  iommuptDomainAlloc,
  iommuptSetDirty,
  mockIommuptDomainAlloc,
  ptDumpText,
  vtdssFormat,
  x86_64Format,
} from "../src/index.js";

const RW = IOMMU_READ | IOMMU_WRITE;

function scenario(d: IommuDomain, contig: bigint): string {
  iommuMap(d, 0x1000n, 0xabc000n, 0x1000n, RW | IOMMU_CACHE);
  iommuMap(d, 0x200000n, 0x40000000n, contig, RW);
  iommuMap(d, 0x40000000n, 0x7000n, 0x1000n, IOMMU_READ);
  return ptDumpText(d.pt!);
}

describe("golden PTE images", () => {
  it("AMDv1 (FORCE_COHERENCE, a 16K contiguous entry, one dirty item)", () => {
    const d = iommuptDomainAlloc({
      format: amdv1Format,
      features: 1 << PT_FEAT_AMDV1_FORCE_COHERENCE,
      startingLevel: 2,
    });
    scenario(d, 0x4000n);
    iommuptSetDirty(d, 0x201000n);
    expect(ptDumpText(d.pt!)).toMatchInlineSnapshot(`
      "L2 0x010000000000[   0] = 0x6000010000001401
      L2 0x010000000000[   1] = 0x6000010000004401
      L1 0x010000001000[   0] = 0x6000010000002201
      L1 0x010000001000[   1] = 0x6000010000003201
      L0 0x010000002000[   1] = 0x7000000000abc001
      L0 0x010000003000[   0] = 0x7000000040001e01
      L0 0x010000003000[   1] = 0x7000000040001e41
      L0 0x010000003000[   2] = 0x7000000040001e01
      L0 0x010000003000[   3] = 0x7000000040001e01
      L1 0x010000004000[   0] = 0x6000010000005201
      L0 0x010000005000[   0] = 0x3000000000007001"
    `);
  });

  it("mock DEFAULT (2 KiB granule)", () => {
    expect(scenario(mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT), 0x4000n)).toMatchInlineSnapshot(`
      "L2 0x010000000000[   0] = 0x6000020000002401
      L2 0x010000000000[   2] = 0x6000020000008401
      L1 0x010000001000[   0] = 0x6000020000004201
      L1 0x010000001000[   2] = 0x6000020000006201
      L0 0x010000002000[   2] = 0x6000000001578e01
      L0 0x010000002000[   3] = 0x6000000001578e01
      L0 0x010000003000[   0] = 0x6000000080003e01
      L0 0x010000003000[   1] = 0x6000000080003e01
      L0 0x010000003000[   2] = 0x6000000080003e01
      L0 0x010000003000[   3] = 0x6000000080003e01
      L0 0x010000003000[   4] = 0x6000000080003e01
      L0 0x010000003000[   5] = 0x6000000080003e01
      L0 0x010000003000[   6] = 0x6000000080003e01
      L0 0x010000003000[   7] = 0x6000000080003e01
      L1 0x010000004000[   0] = 0x600002000000a201
      L0 0x010000005000[   0] = 0x200000000000ee01
      L0 0x010000005000[   1] = 0x200000000000ee01"
    `);
  });

  it("VT-d second stage (SNP, a 2M leaf)", () => {
    const d = iommuptDomainAlloc({
      format: vtdssFormat,
      features: 1 << PT_FEAT_VTDSS_FORCE_COHERENCE,
      hwMaxVaLg2: 39,
    });
    expect(scenario(d, 0x200000n)).toMatchInlineSnapshot(`
      "L2 0x010000000000[   0] = 0x0000010000001003
      L2 0x010000000000[   1] = 0x0000010000003003
      L1 0x010000001000[   0] = 0x0000010000002003
      L1 0x010000001000[   1] = 0x0000000040000883
      L0 0x010000002000[   1] = 0x0000000000abc803
      L1 0x010000003000[   0] = 0x0000010000004003
      L0 0x010000004000[   0] = 0x0000000000007801"
    `);
  });

  it("x86-64 4-level (a 2M leaf)", () => {
    const d = iommuptDomainAlloc({
      format: x86_64Format,
      features: 1 << PT_FEAT_SIGN_EXTEND,
      hwMaxVaLg2: 48,
    });
    expect(scenario(d, 0x200000n)).toMatchInlineSnapshot(`
      "L3 0x010000000000[   0] = 0x0000010000001027
      L2 0x010000001000[   0] = 0x0000010000002027
      L2 0x010000001000[   1] = 0x0000010000004027
      L1 0x010000002000[   0] = 0x0000010000003027
      L1 0x010000002000[   1] = 0x00000000400000e7
      L0 0x010000003000[   1] = 0x0000000000abc067
      L1 0x010000004000[   0] = 0x0000010000005027
      L0 0x010000005000[   0] = 0x0000000000007025"
    `);
  });

  it("ARM LPAE stage 1 4K (a 2M block)", () => {
    expect(
      scenario(armLpaeDomainAlloc({ stage: 1, granuleLg2: 12, ias: 39 }), 0x200000n),
    ).toMatchInlineSnapshot(`
      "L2 0x010000000000[   0] = 0x0000010000001003
      L2 0x010000000000[   1] = 0x0000010000003003
      L1 0x010000001000[   0] = 0x0000010000002003
      L1 0x010000001000[   1] = 0x0000000040000e41
      L0 0x010000002000[   1] = 0x0000000000abcf47
      L1 0x010000003000[   0] = 0x0000010000004003
      L0 0x010000004000[   0] = 0x0000000000007ec3"
    `);
  });

  it("ARM LPAE stage 2 4K (a 2M block)", () => {
    expect(
      scenario(armLpaeDomainAlloc({ stage: 2, granuleLg2: 12, ias: 39 }), 0x200000n),
    ).toMatchInlineSnapshot(`
      "L2 0x010000000000[   0] = 0x0000010000001003
      L2 0x010000000000[   1] = 0x0000010000003003
      L1 0x010000001000[   0] = 0x0000010000002003
      L1 0x010000001000[   1] = 0x00000000400006d5
      L0 0x010000002000[   1] = 0x0000000000abc7ff
      L1 0x010000003000[   0] = 0x0000010000004003
      L0 0x010000004000[   0] = 0x0000000000007657"
    `);
  });
});
