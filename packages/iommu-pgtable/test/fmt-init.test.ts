/**
 * The formats' init from the hardware widths, at every boundary: the top level a VA width
 * gives, the widths it refuses and with which errno, and the OA width clamped to the format's.
 *
 * @see drivers/iommu/generic_pt/fmt/vtdss.h vtdss_pt_iommu_fmt_init,
 *      drivers/iommu/generic_pt/fmt/x86_64.h x86_64_pt_iommu_fmt_init
 */
import { EINVAL, EOPNOTSUPP } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { vtdssFormat, x86_64Format } from "../src/index.js";

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
