/**
 * A one-page map into a part of the table that has no tables yet adds one table per missing
 * level and the leaf, without the general walk: it must leave exactly what the general walk
 * (map_range's descent) leaves — the same tables, in the same order, and on an allocation
 * failure the tables allocated before it linked and nothing mapped.
 */
import { describe, expect, it } from "vitest";
import {
  type IommuDomain,
  PT_FEAT_FLUSH_RANGE,
  iommuDomainFree,
  iommuptDomainAlloc,
  ptDumpText,
  vtdssFormat,
} from "../src/index.js";
import { RW, errnoOf } from "./helpers.js";

function vtd(shouldFail?: (site: string) => boolean): IommuDomain {
  return iommuptDomainAlloc({
    format: vtdssFormat,
    features: 1 << PT_FEAT_FLUSH_RANGE,
    hwMaxVaLg2: 48,
    ...(shouldFail ? { shouldFail } : {}),
  });
}

/** Pages below 2^31 (the walk cache's range) and far above it, near the top of 48 bits. */
const PAGES = [0x12345, 2 ** 31 + 0x777, 2 ** 36 - 1];

describe("one-page map into missing tables", () => {
  it("builds the tables the general walk builds, with the same ids", () => {
    for (const page of PAGES) {
      const one = vtd();
      one.mapPfns(page, 0xabcde, 1, RW);
      // Two pages (the general walk), then the second removed: same tables, same leaf.
      const two = vtd();
      const first = page % 2 === 0 ? page : page - 1;
      two.mapPfns(first, 0xabcde - (page - first), 2, RW);
      two.unmapPfns(first === page ? page + 1 : first, 1);
      expect(ptDumpText(one.pt!)).toBe(ptDumpText(two.pt!));
      expect(one.iovaToPfn(page)).toBe(0xabcde);
      expect(one.pt!.tableCount).toBe(4);
      expect(Array.from(one.pt!.alloc.perLevel.subarray(0, 4))).toEqual([1, 1, 1, 1]);
      iommuDomainFree(one);
      iommuDomainFree(two);
    }
  });

  it("a failed table allocation leaves the tables before it linked and nothing mapped", () => {
    for (const page of PAGES) {
      for (let nth = 1; nth <= 3; nth++) {
        let armed = false;
        let calls = 0;
        const d = vtd(() => armed && ++calls === nth);
        armed = true;
        expect(errnoOf(() => d.mapPfns(page, 0x4242, 1, RW))).toBe("ENOMEM");
        expect(calls).toBe(nth);
        expect(d.iovaToPfn(page)).toBe(-1);
        // The top, and one table per allocation that succeeded.
        expect(d.pt!.tableCount).toBe(nth);
        // The same map succeeds afterwards, through the tables already there.
        d.mapPfns(page, 0x4242, 1, RW);
        expect(d.iovaToPfn(page)).toBe(0x4242);
        expect(d.pt!.tableCount).toBe(4);
        expect(d.unmapPfns(page, 1)).toBe(1);
        iommuDomainFree(d);
      }
    }
  });

  it("a leaf in the way is found by the general walk: EADDRINUSE, nothing changed", () => {
    const d = vtd();
    // A 2 MiB leaf at level 1: a one-page map inside it stops the walk at a leaf.
    d.mapPfns(512 * 9, 512 * 40, 512, RW);
    const before = ptDumpText(d.pt!);
    expect(errnoOf(() => d.mapPfns(512 * 9 + 3, 7, 1, RW))).toBe("EADDRINUSE");
    expect(ptDumpText(d.pt!)).toBe(before);
    iommuDomainFree(d);
  });
});
