import { describe, expect, it } from "vitest";
import { IoptArea } from "../src/io-pagetable-area.js";

/**
 * An area over bytes [5 * 4096 + 0x800, 8 * 4096 + 0x800) of its pages, at IOVA 0x100800:
 * page indexes 5..8, starting 0x800 into page 5.
 */
function area(): IoptArea {
  const a = new IoptArea();
  a.node.start = 0x100800n;
  a.node.last = 0x1037ffn;
  a.pagesNode.start = 5n;
  a.pagesNode.last = 8n;
  a.pageOffset = 0x800;
  return a;
}

describe("iopt_area index / IOVA arithmetic (drivers/iommu/iommufd/io_pagetable.h)", () => {
  it("iopt_area_index_to_iova: the first index is the area's iova, later ones page starts", () => {
    const a = area();
    expect([5, 6, 7, 8].map((i) => a.indexToIova(i))).toEqual([
      0x100800n,
      0x101000n,
      0x102000n,
      0x103000n,
    ]);
  });

  it("iopt_area_index_to_iova_last: the last index is the area's last iova, earlier ones page ends", () => {
    const a = area();
    expect([5, 6, 7, 8].map((i) => a.indexToIovaLast(i))).toEqual([
      0x100fffn,
      0x101fffn,
      0x102fffn,
      0x1037ffn,
    ]);
  });

  it("iopt_area_start_byte and iopt_area_length", () => {
    const a = area();
    expect(a.startByte(0x100800n)).toBe(5n * 4096n + 0x800n);
    expect(a.startByte(0x101000n)).toBe(6n * 4096n);
    expect(a.length).toBe(3n * 4096n);
    expect([a.index, a.lastIndex]).toEqual([5, 8]);
  });
});
