import { IOMMU_READ, IOMMU_WRITE, type IoPagetable } from "@x/iommufd";
import { describe, expect, it } from "vitest";
import { ioptRunProblem } from "../src/translations.js";

type IoptArea = ReturnType<IoPagetable["areas"]>[number];
const PAGE = 4096n;
const RW = IOMMU_READ | IOMMU_WRITE;

/** An area over pages whose page `i` is pinned at frame 5000 + i (the access xarray's record). */
function area(iova: bigint, length: bigint, pageOffset: number, index: number): IoptArea {
  const pages = {
    pinnedPfns: { load: (i: number) => 5000 + i },
    dmabuf: undefined,
    file: undefined,
  };
  return {
    iova,
    lastIova: iova + length - 1n,
    iommuProt: RW,
    pages,
    startByte: (v: bigint) => v - iova + BigInt(pageOffset) + BigInt(index) * PAGE,
  } as unknown as IoptArea;
}

describe("ioptRunProblem", () => {
  // Areas starting on or inside a frame, their first page at any offset: frame f's page index
  // is that of the byte at max(f * PAGE, iova) (iopt_area_start_byte).
  for (const [iova, pageOffset] of [
    [0x10000n, 0],
    [0x10000n, 0x800],
    [0x10800n, 0x800],
    [0x10800n, 0x100],
    [0x10800n, 0xc00],
    [0x10100n, 0],
  ] as const) {
    for (const index of [0, 5]) {
      it(`iova 0x${iova.toString(16)}, page offset 0x${pageOffset.toString(16)}, first index ${index}`, () => {
        const a = area(iova, 5n * PAGE, pageOffset, index);
        const first = Number(iova / PAGE);
        const last = Number(a.lastIova / PAGE);
        for (let f = first; f <= last; f++) {
          const at = BigInt(f) * PAGE;
          const want = 5000 + Number(a.startByte(at > iova ? at : iova) / PAGE);
          expect(ioptRunProblem([a], f, want, 1, RW)).toBeUndefined();
          expect(ioptRunProblem([a], f, want + 1, 1, RW)).toBe(
            `IOVA 0x${at.toString(16)} -> pfn ${want + 1}, its source is pfn ${want}`,
          );
        }
      });
    }
  }
});
