/**
 * The formats' own ops: init from the hardware widths at every boundary (the top level a VA
 * width gives, the widths it refuses and with which errno, the OA width clamped to the
 * format's), and the prot a format accepts and encodes.
 *
 * @see drivers/iommu/generic_pt/fmt/vtdss.h vtdss_pt_iommu_fmt_init, vtdss_pt_iommu_set_prot,
 *      drivers/iommu/generic_pt/fmt/x86_64.h x86_64_pt_iommu_fmt_init
 */
import { EINVAL, EOPNOTSUPP } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { amdv1MockFormat } from "../src/fmt/amdv1.js";
import { armLpaeFormat } from "../src/fmt/arm-lpae.js";
import { PT_FEAT_DYNAMIC_TOP, type PtFormat, type PtGeometry } from "../src/pt-format.js";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  IommuDevice,
  IommuFault,
  PT_FEAT_VTDSS_FORCE_WRITEABLE,
  amdv1Format,
  armLpaeDomainAlloc,
  iommuMap,
  iommuTranslate,
  ptImage,
  vtdssFormat,
  x86FirstStageIommuDriver,
  x86_64Format,
} from "../src/index.js";
import { amdDomain, vtdDomain } from "./helpers.js";

/**
 * Both 4 KiB radix formats take 31..57 VA bits, the top level growing every 9 bits past 39;
 * a width outside that range gets the format's own errno.
 */
function expectTopLevels(init: (va: number) => unknown, refused: number): void {
  expect([30, 58].map(init)).toEqual([refused, refused]);
  for (const [va, level] of [
    [31, 2],
    [39, 2],
    [40, 3],
    [48, 3],
    [49, 4],
    [57, 4],
  ] as const) {
    expect(init(va)).toEqual({ topLevel: level, maxVaLg2: va, maxOaLg2: 52 });
  }
}

describe("vtdss_pt_iommu_fmt_init", () => {
  it("picks the top level from hw_max_vasz_lg2 and refuses widths outside 31..57", () => {
    expectTopLevels((va) => vtdssFormat.init({ features: 0, hwMaxVaLg2: va }), -EOPNOTSUPP);
    // Without a width the 48-bit table (4 levels).
    expect(vtdssFormat.init({ features: 0 })).toEqual({ topLevel: 3, maxVaLg2: 48, maxOaLg2: 52 });
  });

  it("clamps the output width to the format's 52 bits", () => {
    const oa = (hwMaxOaLg2: number) =>
      (vtdssFormat.init({ features: 0, hwMaxVaLg2: 48, hwMaxOaLg2 }) as { maxOaLg2: number })
        .maxOaLg2;
    expect([oa(39), oa(52), oa(56)]).toEqual([39, 52, 52]);
  });
});

describe("x86_64_pt_iommu_fmt_init", () => {
  it("is -EINVAL outside 31..57 bits; (va - 31) / 9 + 2 levels inside", () => {
    expectTopLevels((va) => x86_64Format.init({ features: 0, hwMaxVaLg2: va }), -EINVAL);
    expect(x86_64Format.init({ features: 0 })).toEqual({ topLevel: 3, maxVaLg2: 48, maxOaLg2: 52 });
    const oa = (hwMaxOaLg2: number) =>
      (x86_64Format.init({ features: 0, hwMaxOaLg2 }) as { maxOaLg2: number }).maxOaLg2;
    expect([oa(40), oa(52), oa(60)]).toEqual([40, 52, 52]);
  });
});

describe("vtdss_pt_iommu_set_prot and a write-only second-stage leaf", () => {
  it("refuses a prot without R or W, and a read-only one under FORCE_WRITEABLE (-EINVAL)", () => {
    expect(vtdssFormat.checkProt(0, 0)).toBe(EINVAL);
    expect(vtdssFormat.checkProt(IOMMU_CACHE, 0)).toBe(EINVAL);
    expect(vtdssFormat.checkProt(IOMMU_READ, 0)).toBe(0);
    expect(vtdssFormat.checkProt(IOMMU_WRITE, 0)).toBe(0);
    const forceWriteable = 1 << PT_FEAT_VTDSS_FORCE_WRITEABLE;
    expect(vtdssFormat.checkProt(IOMMU_READ, forceWriteable)).toBe(EINVAL);
    expect(vtdssFormat.checkProt(IOMMU_WRITE, forceWriteable)).toBe(0);
  });

  it("a W-only leaf holds W without R, and a device read through it faults", () => {
    const d = vtdDomain();
    iommuMap(d, 0x4000n, 0x9000n, 0x1000n, IOMMU_WRITE);
    const leaf = ptImage(d.pt!).find((e) => e.level === 0)!;
    // VTDSS_FMT_W (bit 1) and the OA; no VTDSS_FMT_R (bit 0).
    expect(leaf.pte).toBe(0x9000n | 0b10n);
    expect(iommuTranslate(d, 0x4008n, IOMMU_WRITE)).toBe(0x9008n);
    const read = (() => {
      try {
        iommuTranslate(d, 0x4008n, IOMMU_READ);
      } catch (e) {
        return e;
      }
    })();
    expect(read).toBeInstanceOf(IommuFault);
    expect((read as IommuFault).reason).toBe("permission");
  });
});

describe("the x86 radix leaves (x86_64_pt_can_have_leaf, vtdss_pt_can_have_leaf)", () => {
  it("4 KiB, 2 MiB and 1 GiB pages only: no leaf above level 2", () => {
    const sizes = (1n << 12n) | (1n << 21n) | (1n << 30n);
    expect(vtdDomain().pgsizeBitmap).toBe(sizes);
    expect(
      x86FirstStageIommuDriver().domainAllocPaging(
        new IommuDevice("d", x86FirstStageIommuDriver()),
        0,
      ).pgsizeBitmap,
    ).toBe(sizes);
  });

  it("an x86-64 leaf is always readable (P) and writable only with RW", () => {
    const fs = x86FirstStageIommuDriver();
    const d = fs.domainAllocPaging(new IommuDevice("d", fs), 0);
    iommuMap(d, 0x4000n, 0x9000n, 0x1000n, IOMMU_READ);
    expect(iommuTranslate(d, 0x4010n, IOMMU_READ)).toBe(0x9010n);
    expect(() => iommuTranslate(d, 0x4010n, IOMMU_WRITE)).toThrow(IommuFault);
    // X86_64_FMT_P | U | A and the OA; no RW / D.
    expect(ptImage(d.pt!).find((e) => e.level === 0)!.pte).toBe(0x9000n | 0x25n);
  });
});

describe("amdv1pt_iommu_fmt_init", () => {
  it("refuses starting level 0 and levels above the top (-EINVAL)", () => {
    expect(amdv1Format.init({ features: 0, startingLevel: 0 })).toBe(-EINVAL);
    expect(amdv1Format.init({ features: 0, startingLevel: 6 })).toBe(-EINVAL);
    expect(amdv1MockFormat.init({ features: 0, startingLevel: 5 })).toBe(-EINVAL);
    expect(amdv1Format.init({ features: 0, startingLevel: 5 })).toEqual({
      topLevel: 5,
      maxVaLg2: 64,
      maxOaLg2: 52,
    });
    expect(amdv1MockFormat.init({ features: 0, startingLevel: 4 })).toEqual({
      topLevel: 4,
      maxVaLg2: 56,
      maxOaLg2: 51,
    });
  });

  it("a fixed top below the maximum covers granule + 9 × (level + 1) bits; DYNAMIC_TOP the whole VA", () => {
    const va = (fmt: PtFormat, startingLevel: number, features = 0, hwMaxVaLg2?: number) =>
      (
        fmt.init({
          features,
          startingLevel,
          ...(hwMaxVaLg2 === undefined ? {} : { hwMaxVaLg2 }),
        }) as PtGeometry
      ).maxVaLg2;
    expect([1, 2, 3, 4].map((l) => va(amdv1Format, l))).toEqual([30, 39, 48, 57]);
    expect([1, 2, 3].map((l) => va(amdv1MockFormat, l))).toEqual([29, 38, 47]);
    const dynamic = 1 << PT_FEAT_DYNAMIC_TOP;
    expect([va(amdv1Format, 2, dynamic), va(amdv1MockFormat, 2, dynamic)]).toEqual([64, 56]);
    // The hardware's VA width clamps either.
    expect([va(amdv1Format, 2, dynamic, 48), va(amdv1Format, 2, 0, 32)]).toEqual([48, 32]);
    expect(va(amdv1Format, 2, 0, 48)).toBe(39);
  });

  it("clamps the output width to the format's", () => {
    const oa = (fmt: PtFormat, hwMaxOaLg2: number) =>
      (fmt.init({ features: 0, startingLevel: 2, hwMaxOaLg2 }) as PtGeometry).maxOaLg2;
    expect([oa(amdv1Format, 40), oa(amdv1Format, 60)]).toEqual([40, 52]);
    expect([oa(amdv1MockFormat, 40), oa(amdv1MockFormat, 60)]).toEqual([40, 51]);
  });

  it("a level-5 top table has 128 items (VA bits 63:57), every other table 512", () => {
    expect([0, 1, 2, 3, 4, 5].map((l) => amdv1Format.numItemsLg2(l))).toEqual([9, 9, 9, 9, 9, 7]);
  });

  it("a write-only leaf holds IW without IR, and a device read through it faults", () => {
    const d = amdDomain();
    iommuMap(d, 0x4000n, 0x9000n, 0x1000n, IOMMU_WRITE);
    // AMDV1PT_FMT_PR | AMDV1PT_FMT_IW and the OA.
    expect(ptImage(d.pt!).find((e) => e.level === 0)!.pte).toBe((1n << 62n) | 0x9001n);
    expect(iommuTranslate(d, 0x4008n, IOMMU_WRITE)).toBe(0x9008n);
    expect(() => iommuTranslate(d, 0x4008n, IOMMU_READ)).toThrow(IommuFault);
  });

  it("leaves of 1 to 256 items at every level below the top, none of 512 GiB, none past the OA", () => {
    // Bit k: a leaf of 2^k items. amdv1: 4K granule; level 3 items are 512 GiB.
    expect([0, 1, 2, 3, 4, 5].map((l) => amdv1Format.contigMask(l))).toEqual([
      0x1ff, 0x1ff, 0x1ff, 0x1fe, 0xf, 0,
    ]);
    // The mock's 2 KiB granule puts 512 GiB at bit 1 of level 3; level 4 is its top.
    expect([0, 1, 2, 3, 4].map((l) => amdv1MockFormat.contigMask(l))).toEqual([
      0x1ff, 0x1ff, 0x1ff, 0x1fd, 0,
    ]);
  });
});

describe("arm_lpae_alloc_pgtable's geometry", () => {
  const geo = (stage: 1 | 2, granuleLg2: 12 | 14 | 16, ias: number, oas = 48) =>
    armLpaeFormat({ stage, granuleLg2 }).init({ features: 0, hwMaxVaLg2: ias, hwMaxOaLg2: oas });

  it("levels from the input size; stage 2 concatenates up to 16 top tables instead of a level", () => {
    expect(geo(1, 12, 48)).toEqual({ topLevel: 3, maxVaLg2: 48, maxOaLg2: 48, topItemsLg2: 9 });
    expect(geo(1, 12, 40)).toEqual({ topLevel: 3, maxVaLg2: 40, maxOaLg2: 48, topItemsLg2: 1 });
    expect(geo(1, 12, 39)).toEqual({ topLevel: 2, maxVaLg2: 39, maxOaLg2: 48, topItemsLg2: 9 });
    expect(geo(1, 12, 13)).toEqual({ topLevel: 0, maxVaLg2: 13, maxOaLg2: 48, topItemsLg2: 1 });
    // Stage 2: a 4-level walk whose top has at most 16 entries becomes 3 levels.
    expect(geo(2, 12, 40)).toEqual({ topLevel: 2, maxVaLg2: 40, maxOaLg2: 48, topItemsLg2: 10 });
    expect(geo(2, 12, 43)).toEqual({ topLevel: 2, maxVaLg2: 43, maxOaLg2: 48, topItemsLg2: 13 });
    expect(geo(2, 12, 44)).toEqual({ topLevel: 3, maxVaLg2: 44, maxOaLg2: 48, topItemsLg2: 5 });
    expect(geo(2, 12, 39)).toEqual({ topLevel: 2, maxVaLg2: 39, maxOaLg2: 48, topItemsLg2: 9 });
    expect(geo(1, 16, 48, 52)).toEqual({ topLevel: 2, maxVaLg2: 48, maxOaLg2: 52, topItemsLg2: 6 });
  });

  it("stage 2 concatenates only instead of a fourth level", () => {
    // 3 levels with a 4-entry top: nothing to save, no concatenation.
    expect(geo(2, 12, 32)).toEqual({ topLevel: 2, maxVaLg2: 32, maxOaLg2: 48, topItemsLg2: 2 });
  });

  it("the output limit is 48 bits, 52 with the 64 KiB granule (ARM_LPAE_MAX_ADDR_BITS, LPA)", () => {
    const oa = (granuleLg2: 12 | 14 | 16) => armLpaeFormat({ stage: 1, granuleLg2 }).maxOaLg2;
    expect([oa(12), oa(14), oa(16)]).toEqual([48, 48, 52]);
  });

  it("blocks: 2 MiB and 1 GiB with 4K, 32 MiB with 16K, 512 MiB and 4 TiB with 64K", () => {
    const leaves = (granuleLg2: 12 | 14 | 16) =>
      [0, 1, 2, 3].map((l) => armLpaeFormat({ stage: 1, granuleLg2 }).contigMask(l));
    expect([leaves(12), leaves(14), leaves(16)]).toEqual([
      [1, 1, 1, 0],
      [1, 1, 0, 0],
      [1, 1, 1, 0],
    ]);
  });

  it("accepts any prot (0) and has no dirty tracking: the LPAE leaves carry no DBM state", () => {
    for (const stage of [1, 2] as const) {
      const fmt = armLpaeFormat({ stage, granuleLg2: 12 });
      expect([fmt.checkProt(IOMMU_READ, 0), fmt.checkProt(IOMMU_WRITE, 0)]).toEqual([0, 0]);
      expect(fmt.dirtyTracking).toBe(false);
      const d = armLpaeDomainAlloc({ stage, granuleLg2: 12 });
      iommuMap(d, 0n, 0x1000n, 0x1000n, IOMMU_READ | IOMMU_WRITE);
      expect(d.pt!.setDirty(0)).toBe(EOPNOTSUPP);
    }
  });

  it("refuses an input size past 48 bits and an output size past the granule's (-EINVAL)", () => {
    // Nor an input space of one page or less: no level would hold it (the SMMU asks for 32+).
    expect(geo(1, 12, 12)).toBe(-EINVAL);
    expect(geo(1, 12, 49)).toBe(-EINVAL);
    expect(geo(1, 12, 48, 49)).toBe(-EINVAL);
    expect(geo(1, 14, 48, 49)).toBe(-EINVAL);
    expect(geo(1, 16, 48, 53)).toBe(-EINVAL);
    expect(geo(2, 16, 48, 52)).toEqual({
      topLevel: 2,
      maxVaLg2: 48,
      maxOaLg2: 52,
      topItemsLg2: 6,
    });
  });
});

describe("arm_lpae_prot_to_pte and the LPAE output address", () => {
  const leaf = (stage: 1 | 2, granuleLg2: 12 | 14 | 16, level: number, prot: number, oa: bigint) =>
    armLpaeFormat({ stage, granuleLg2 }).encodeLeaf({
      oa,
      sizeLg2: granuleLg2 + (granuleLg2 - 3) * level,
      level,
      itemLg2: granuleLg2 + (granuleLg2 - 3) * level,
      prot,
      dirty: false,
      features: 0,
    });
  const XN = 3n << 53n;

  it("stage 1: nG, AP[2] read-only for R without W, AP[1] unless PRIV, MAIR index, SH, XN, AF", () => {
    // nG | AP_RDONLY | AP_UNPRIV | SH_OS | AF | TYPE_PAGE
    expect(leaf(1, 12, 0, IOMMU_READ, 0x1234000n)).toBe(0x1234000n | 0xec3n);
    // nG | ATTRINDX CACHE | SH_IS | AF | TYPE_BLOCK | XN (PRIV: no AP_UNPRIV)
    expect(
      leaf(1, 12, 1, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE | IOMMU_PRIV | IOMMU_NOEXEC, 0x200000n),
    ).toBe(0x200000n | 0xf05n | XN);
    // nG | AP_UNPRIV | ATTRINDX DEV | SH_OS | AF | TYPE_PAGE
    expect(leaf(1, 12, 0, IOMMU_WRITE | IOMMU_MMIO, 0x5000n)).toBe(0x5000n | 0xe4bn);
    // MMIO wins over CACHE for the attribute index; CACHE still makes it inner shareable.
    expect(leaf(1, 12, 0, IOMMU_WRITE | IOMMU_MMIO | IOMMU_CACHE, 0x5000n)).toBe(0x5000n | 0xf4bn);
  });

  it("stage 2: HAP read / write, MemAttr device / write-back / non-cacheable", () => {
    // HAP_READ | MEMATTR_NC | SH_OS | AF | TYPE_PAGE
    expect(leaf(2, 12, 0, IOMMU_READ, 0x7000n)).toBe(0x7000n | 0x657n);
    // HAP_READ | HAP_WRITE | MEMATTR_OIWB | SH_IS | AF | TYPE_PAGE
    expect(leaf(2, 12, 0, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE, 0x7000n)).toBe(0x7000n | 0x7ffn);
    // HAP_WRITE | MEMATTR_DEV | SH_OS | AF | TYPE_BLOCK, XN
    expect(leaf(2, 12, 2, IOMMU_WRITE | IOMMU_MMIO | IOMMU_NOEXEC, 0x40000000n)).toBe(
      0x40000000n | 0x685n | XN,
    );
    expect(leaf(2, 12, 0, IOMMU_READ | IOMMU_MMIO | IOMMU_CACHE, 0x7000n)).toBe(0x7000n | 0x747n);
    const s2 = armLpaeFormat({ stage: 2, granuleLg2: 12 });
    const s1 = armLpaeFormat({ stage: 1, granuleLg2: 12 });
    expect([s2.canRead(IOMMU_WRITE), s2.canRead(IOMMU_READ), s1.canRead(IOMMU_WRITE)]).toEqual([
      false,
      true,
      true,
    ]);
  });

  it("a 64 KiB granule packs PA bits 51:48 into PTE bits 15:12; smaller granules keep 47:12", () => {
    const pa = (0xfn << 48n) | 0x10000n;
    expect(leaf(1, 16, 0, IOMMU_READ | IOMMU_WRITE, pa)).toBe(0x1f000n | 0xe43n);
    expect(armLpaeFormat({ stage: 1, granuleLg2: 16 }).encodeTable(pa, 1, 0)).toBe(0x1f003n);
    expect(leaf(1, 12, 0, IOMMU_READ | IOMMU_WRITE, pa)).toBe(0x10000n | 0xe43n);
    expect(leaf(1, 14, 0, IOMMU_READ | IOMMU_WRITE, pa)).toBe(0x10000n | 0xe43n);
  });
});
