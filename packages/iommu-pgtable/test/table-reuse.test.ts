/**
 * Tables come zeroed (iommu_alloc_pages_node_sz allocates with __GFP_ZERO). The slab clears a
 * table when it is freed, except one an unmap emptied item by item before freeing it (marked
 * so by the walk): whichever way a table was freed, the next table handed out from the slab
 * reads 0 in every item.
 */
import { describe, expect, it } from "vitest";
import {
  type IommuDomain,
  IotlbGather,
  iommuDomainFree,
  iommuIotlbSync,
  iommuMap,
  iommuUnmap,
} from "../src/index.js";
import { RW, vtdDomain as vtd, amdDomain as amd } from "./helpers.js";

const GiB = 1n << 30n;
const SZ_2M = 2n << 20n;

/**
 * Take `count` tables from the domain's slab (the free list first, last freed first), check
 * that every item of each is 0, and give them back. Returns how many were checked.
 */
function expectFreeTablesZero(d: IommuDomain, count: number): number {
  const alloc = d.pt!.alloc;
  const ids = Array.from({ length: count }, () => alloc.alloc(0));
  let nonZero = 0;
  for (const id of ids) {
    const arr = alloc.chunk(id);
    const base = alloc.offset(id);
    for (let i = 0; i < 1 << alloc.itemsLg2; i++) if (arr[base + i] !== 0) nonZero++;
  }
  for (const id of ids) alloc.free(id);
  expect(nonZero).toBe(0);
  return ids.length;
}

/** Unmap through a gather and sync it; returns the number of tables the unmap freed. */
function unmapFreeing(d: IommuDomain, iovaPfn: number, pages: number): number {
  const g = new IotlbGather();
  expect(d.unmapPfns(iovaPfn, pages, g)).toBe(pages);
  const freed = g.freelist.length;
  iommuIotlbSync(d, g);
  return freed;
}

describe("tables reused from the slab read 0 in every item", () => {
  it("after an unmap that covered them: 4K leaves, 2M leaves and tables of both", () => {
    const d = vtd();
    // 1 GiB of 4K leaves (PA 4 KiB off 2 MiB): 512 level-0 tables and their level-1 table.
    d.mapPfns(1 << 18, (1 << 20) + 1, 1 << 18, RW);
    expect(unmapFreeing(d, 1 << 18, 1 << 18)).toBe(513);
    expect(expectFreeTablesZero(d, 513)).toBe(513);
    // A level-1 table holding 2M leaves and a table of 4K leaves, both freed by one unmap.
    d.mapPfns(2 << 18, 3 << 18, 511 * 512, RW);
    d.mapPfns((2 << 18) + 511 * 512, (1 << 20) + 1, 512, RW);
    expect(unmapFreeing(d, 2 << 18, 1 << 18)).toBe(2);
    expect(expectFreeTablesZero(d, 2)).toBe(2);
    iommuDomainFree(d);
  });

  it("after an unmap of contiguous entries (AMDv1 16K leaves)", () => {
    const d = amd();
    // PA 16 KiB-aligned and no more: 2 MiB as 128 contiguous entries of 4 items each.
    iommuMap(d, 0n, 0x104000n, SZ_2M, RW);
    const tables = d.pt!.tableCount;
    expect(iommuUnmap(d, 0n, SZ_2M)).toBe(SZ_2M);
    expect(d.pt!.tableCount).toBe(tables - 1);
    expectFreeTablesZero(d, 1);
    iommuDomainFree(d);
  });

  it("after a table holding only pointers to empty tables is replaced by a leaf", () => {
    const d = vtd();
    d.mapPfns(1 << 18, (1 << 20) + 1, 1024, RW);
    // Page by page: no table is covered, both level-0 tables stay, empty.
    for (let i = 0; i < 1024; i++) d.unmapPfns((1 << 18) + i, 1);
    const tables = d.pt!.tableCount;
    // A 1 GiB leaf over the level-1 table: it (two pointers in it) and both level-0 tables go.
    iommuMap(d, GiB, 8n * GiB, GiB, RW);
    expect(d.pt!.tableCount).toBe(tables - 3);
    expectFreeTablesZero(d, 3);
    iommuDomainFree(d);
  });

  it("a table emptied by an unmap, reused and filled again, is cleared when freed full", () => {
    const d = vtd();
    d.mapPfns(1 << 18, (1 << 20) + 1, 1024, RW);
    expect(unmapFreeing(d, 1 << 18, 1024)).toBe(2);
    // The same two level-0 tables come back for this map and are filled again; the domain is
    // then destroyed with them full.
    d.mapPfns(1 << 18, (1 << 20) + 1, 1024, RW);
    expect([d.pt!.alloc.released, d.pt!.tableCount]).toEqual([2, 5]);
    iommuDomainFree(d);
    // The next domain takes the recycled chunk: every table of it reads 0.
    const b = vtd();
    const perChunk = 1 << b.pt!.alloc.chunkLg2;
    expectFreeTablesZero(b, perChunk - 1);
    iommuDomainFree(b);
  });

  it("after a domain with tables full of items was destroyed", () => {
    const a = vtd();
    a.mapPfns(1 << 18, (1 << 20) + 1, 4096, RW);
    iommuMap(a, 64n * GiB, 0n, GiB, RW);
    const tables = a.pt!.tableCount;
    iommuDomainFree(a);
    // The next domain takes the recycled chunks.
    const b = vtd();
    expectFreeTablesZero(b, tables + 8);
    iommuDomainFree(b);
  });
});
