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
import {
  IOMMU_CACHE,
  IOMMU_READ,
  IOMMU_WRITE,
  IommuDevice,
  IommuFault,
  PT_FEAT_VTDSS_FORCE_WRITEABLE,
  iommuMap,
  iommuTranslate,
  ptImage,
  vtdssFormat,
  x86FirstStageIommuDriver,
  x86_64Format,
} from "../src/index.js";
import { vtdDomain } from "./helpers.js";

describe("vtdss_pt_iommu_fmt_init", () => {
  it("picks the top level from hw_max_vasz_lg2 and refuses widths outside 31..57", () => {
    const top = (va: number) => vtdssFormat.init({ features: 0, hwMaxVaLg2: va });
    expect([30, 58].map(top)).toEqual([-EOPNOTSUPP, -EOPNOTSUPP]);
    for (const [va, level] of [
      [31, 2],
      [39, 2],
      [40, 3],
      [48, 3],
      [49, 4],
      [57, 4],
    ] as const) {
      expect(top(va)).toEqual({ topLevel: level, maxVaLg2: va, maxOaLg2: 52 });
    }
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
    const top = (va: number) => x86_64Format.init({ features: 0, hwMaxVaLg2: va });
    expect([30, 58].map(top)).toEqual([-EINVAL, -EINVAL]);
    for (const [va, level] of [
      [31, 2],
      [39, 2],
      [40, 3],
      [48, 3],
      [49, 4],
      [57, 4],
    ] as const) {
      expect(top(va)).toEqual({ topLevel: level, maxVaLg2: va, maxOaLg2: 52 });
    }
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
