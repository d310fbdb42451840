/**
 * Table-count fidelity: the tables iommupt allocates, frees on fully covering unmaps, and the
 * empty ones it leaves behind after partial unmaps (and reuses or replaces later).
 */
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  IotlbGather,
  MOCK_IOMMUPT_DEFAULT,
  PT_FEAT_FLUSH_RANGE,
  amdv1Format,
  iommuIotlbSync,
  iommuIovaToPhys,
  iommuMap,
  iommuUnmap,
  iommuUnmapFast,
  iommuptDomainAlloc,
  mockIommuptDomainAlloc,
  vtdssFormat,
} from "../src/index.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const GiB = 1n << 30n;
const vtd = () =>
  iommuptDomainAlloc({ format: vtdssFormat, features: 1 << PT_FEAT_FLUSH_RANGE, hwMaxVaLg2: 48 });

describe("table counts", () => {
  it("a 4K map needs one table per level; its unmap frees none", () => {
    const d = vtd();
    expect(d.pt!.tableCount).toBe(1);
    iommuMap(d, 0n, 0n, 0x1000n, RW);
    expect(d.pt!.tableCount).toBe(4);
    expect(d.pt!.tableBytes).toBe(4 * 4096);
    iommuUnmap(d, 0n, 0x1000n);
    expect(d.pt!.tableCount).toBe(4);
  });

  it("tables an unmap emptied and freed come back empty: a new map sees none of the old IOPTEs", () => {
    // The unmap clears each item of the tables it frees, so the allocator skips zeroing them.
    const d = vtd();
    d.pgsizeBitmap = 0x1000n;
    iommuMap(d, GiB, 0n, 2n * GiB, RW);
    iommuUnmap(d, GiB, 2n * GiB);
    expect(d.pt!.tableCount).toBe(2);
    // Sparse 4K maps reuse the freed tables at every level.
    for (let i = 0n; i < 64n; i++)
      iommuMap(d, 4n * GiB + i * 0x20_1000n, GiB + i * 0x1000n, 0x1000n, RW);
    expect(d.pt!.tableCount).toBeGreaterThan(64);
    for (let i = 0n; i < 64n; i++) {
      const iova = 4n * GiB + i * 0x20_1000n;
      expect(iommuIovaToPhys(d, iova)).toBe(GiB + i * 0x1000n);
      expect(iommuIovaToPhys(d, iova + 0x1000n)).toBe(0n);
      expect(iommuIovaToPhys(d, iova - 0x1000n)).toBe(0n);
    }
    let leaves = 0;
    for (const o of d.pt!.occupancy())
      for (const n of Object.values(o.leavesBySizeLg2)) leaves += n;
    expect(leaves).toBe(64);
  });

  it("1 GiB of 4K PTEs: 515 tables; one unmap frees 513, two halves free 512 and keep the L1", () => {
    const d = vtd();
    d.pgsizeBitmap = 0x1000n;
    iommuMap(d, GiB, 0n, GiB, RW);
    expect(d.pt!.tableCount).toBe(515);
    expect(d.pt!.occupancy().map((o) => o.tables)).toEqual([512, 1, 1, 1]);
    iommuUnmap(d, GiB, GiB);
    expect(d.pt!.tableCount).toBe(2);
    iommuMap(d, GiB, 0n, GiB, RW);
    iommuUnmap(d, GiB, GiB / 2n);
    iommuUnmap(d, GiB + GiB / 2n, GiB / 2n);
    expect(d.pt!.tableCount).toBe(3);
    // The empty L1 table left behind becomes a 1 GiB leaf once the size is allowed again.
    d.pgsizeBitmap = 0x1000n | 0x200000n | GiB;
    iommuMap(d, GiB, GiB, GiB, RW);
    expect(d.pt!.tableCount).toBe(2);
  });

  it("scattered 4K unmaps leave every table; freed tables wait for the sync", () => {
    const d = vtd();
    for (let i = 0n; i < 16n; i++) iommuMap(d, i << 30n, i << 12n, 0x1000n, RW);
    const tables = d.pt!.tableCount;
    expect(tables).toBe(1 + 1 + 16 * 2);
    for (let i = 0n; i < 16n; i++) expect(iommuUnmap(d, i << 30n, 0x1000n)).toBe(0x1000n);
    expect(d.pt!.tableCount).toBe(tables);
    // One unmap covering all 16 GiB frees the 32 lower tables, but only after the sync.
    for (let i = 0n; i < 16n; i++) iommuMap(d, i << 30n, i << 12n, 0x1000n, RW);
    const gather = new IotlbGather();
    expect(iommuUnmapFast(d, 0n, 0x1000n, gather)).toBe(0x1000n);
    expect(iommuUnmapFast(d, 1n << 30n, 15n << 30n, gather)).toBe(0x1000n);
    expect(d.pt!.tableCount).toBe(tables);
    iommuIotlbSync(d, gather);
    expect(d.pt!.tableCount).toBe(tables);
  });

  it("a hole stops the unmap before any table is freed", () => {
    const d = vtd();
    iommuMap(d, 0n, 0n, 0x200000n - 0x1000n, RW);
    expect(iommuUnmap(d, 0n, 0x200000n)).toBe(0x1ff000n);
    expect(d.pt!.tableCount).toBe(4);
  });

  it("AMDv1 contiguous sizes below an item cost the same tables as 4K pages", () => {
    const d = iommuptDomainAlloc({ format: amdv1Format, features: 0, startingLevel: 2 });
    iommuMap(d, 0x100000n, 0x100000n, 0x100000n, RW);
    expect(d.pt!.occupancy()[0]).toEqual({ level: 0, tables: 1, leavesBySizeLg2: { 20: 1 } });
    expect(d.pt!.tableCount).toBe(3);
  });

  it("mock: a level-0 table spans 1 MiB of 2 KiB pages", () => {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
    d.pgsizeBitmap = 0x800n;
    iommuMap(d, 1n << 24n, 0n, 0x200000n, RW);
    expect(d.pt!.occupancy().map((o) => o.tables)).toEqual([2, 1, 1]);
    iommuUnmap(d, 1n << 24n, 0x100000n);
    expect(d.pt!.tableCount).toBe(3);
  });
});
