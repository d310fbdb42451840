/**
 * The classic io-pgtable-arm operations over the generic table storage: map_pages /
 * unmap_pages with ARM's rules, for domains that go through the core's iommu_pgsize() path.
 *
 * Differences from iommupt that a model must keep: map writes exactly `pgcount` leaves of
 * `pgsize` (at most one table's worth per call); an existing leaf is -EEXIST (with a WARN unless
 * IO_PGTABLE_QUIRK_NO_WARN); an existing table where a block goes is torn down with whatever it
 * maps. Unmap of part of a block WARNs and returns 0 (no split since v6.13); an empty slot WARNs
 * (unless NO_WARN) and ends the unmap; removed tables are freed at once (after a walk flush),
 * not through the gather.
 *
 * @see drivers/iommu/io-pgtable-arm.c
 */
import { EEXIST, EINVAL, ENOMEM, WARN_ON } from "@x/kernel";
import { armLpaeFormat, armLpaePgsizeBitmap } from "./fmt/arm-lpae.js";
import { type IommuDomain, type IommuDomainOps, iommuIotlbSync } from "./iommu.js";
import { iommuptDomainAlloc } from "./iommu-driver.js";
import { ATTR_PRESENT, ATTR_PROT_MASK, ATTR_SPAN } from "./iommu-pages.js";
import type { PtIommu } from "./iommu-pt.js";
import { IOMMU_READ, IOMMU_WRITE } from "./iommu-types.js";
import type { IotlbGather } from "./iotlb-gather.js";

/** IO_PGTABLE_QUIRK_NO_WARN: report EEXIST / holes without a WARN. */
export const IO_PGTABLE_QUIRK_NO_WARN = 1 << 9;

interface ArmLpaeCfg {
  readonly stage: 1 | 2;
  readonly granuleLg2: 12 | 14 | 16;
  /** Input (IOVA) and output address sizes. */
  readonly ias?: number;
  readonly oas?: number;
  readonly quirks?: number;
  readonly shouldFail?: (site: string) => boolean;
}

function levelOfSize(pt: PtIommu, pgsize: bigint): number {
  const lg2 = pgsize.toString(2).length - 1;
  for (let level = 0; level <= pt.topLevel; level++) {
    if (pt.granuleLg2 + Math.log2(pt.itemPages(level)) === lg2) return level;
  }
  return -1;
}

/** ARM map_pages: `pgcount` leaves of `pgsize` at most up to the end of one table. */
function armMapPages(
  domain: IommuDomain,
  iova: bigint,
  paddr: bigint,
  pgsize: bigint,
  pgcount: bigint,
  prot: number,
  quirks: number,
): { mapped: bigint; errno: number } {
  const pt = domain.pt!;
  const noWarn = (quirks & IO_PGTABLE_QUIRK_NO_WARN) !== 0;
  const level = levelOfSize(pt, pgsize);
  WARN_ON(
    pgsize === 0n || (pgsize & domain.pgsizeBitmap) !== pgsize || level < 0,
    "arm_lpae_map: bad pgsize",
  );
  const g = BigInt(pt.granuleLg2);
  const va = pt.checkRange(Number(iova >> g), 1, pt.maxVaLg2);
  WARN_ON(va < 0 || paddr >> BigInt(pt.maxOaLg2) !== 0n, "arm_lpae_map: address out of range");
  if (!(prot & (IOMMU_READ | IOMMU_WRITE))) return { mapped: 0n, errno: EINVAL };
  let arr = pt.topArr;
  let base = pt.topBase;
  for (let l = pt.topLevel; l > level; l--) {
    const p = base + pt.index(l, va);
    let e = arr[p]!;
    if (e === 0) {
      const id = pt.newTable(l - 1);
      if (id < 0) return { mapped: 0n, errno: ENOMEM };
      e = -(id + 1);
      arr[p] = e;
    } else if (e > 0) {
      WARN_ON(!noWarn, "arm_lpae_map: an existing leaf is in the way");
      return { mapped: 0n, errno: EEXIST };
    }
    arr = pt.alloc.chunk(-e - 1);
    base = pt.alloc.offset(-e - 1);
  }
  const idx = pt.index(level, va);
  const n = Math.min(Number(pgcount), pt.tableItems(level) - idx);
  for (let i = 0; i < n; i++) {
    const e = arr[base + idx + i]!;
    if (e > 0) {
      WARN_ON(!noWarn, "arm_lpae_map: remap of a mapped IOVA");
      return { mapped: 0n, errno: EEXIST };
    }
    if (e < 0) {
      const ids = pt.detachTable(arr, base + idx + i, level);
      domain.ops.flushIotlbAll?.(domain);
      pt.releaseTables(ids);
    }
  }
  const itemPages = pt.itemPages(level);
  let v = Number(paddr >> g) * ATTR_SPAN + ((prot & ATTR_PROT_MASK) | ATTR_PRESENT);
  for (let i = 0; i < n; i++) {
    arr[base + idx + i] = v;
    v += itemPages * ATTR_SPAN;
  }
  return { mapped: BigInt(n) * pgsize, errno: 0 };
}

/** The gather step of io_pgtable_tlb_add_page for a run of same-size pages. */
function gatherAddPages(
  domain: IommuDomain,
  gather: IotlbGather,
  iova: bigint,
  size: bigint,
  pgsize: bigint,
): void {
  if (gather.queued) return;
  if ((gather.pgsize !== 0n && gather.pgsize !== pgsize) || gather.isDisjoint(iova, size)) {
    iommuIotlbSync(domain, gather);
  }
  gather.addRange(iova, size);
  gather.pgsize = pgsize;
}

/** ARM unmap_pages: bytes removed, 0 at a hole or a partial block. */
function armUnmapPages(
  domain: IommuDomain,
  iova: bigint,
  pgsize: bigint,
  pgcount: bigint,
  gather: IotlbGather,
  quirks: number,
): bigint {
  const pt = domain.pt!;
  const noWarn = (quirks & IO_PGTABLE_QUIRK_NO_WARN) !== 0;
  const level = levelOfSize(pt, pgsize);
  WARN_ON(
    pgsize === 0n || (pgsize & domain.pgsizeBitmap) !== pgsize || level < 0 || pgcount === 0n,
    "arm_lpae_unmap: bad pgsize",
  );
  const g = BigInt(pt.granuleLg2);
  const va = pt.checkRange(Number(iova >> g), 1, pt.maxVaLg2);
  WARN_ON(va < 0, "arm_lpae_unmap: iova out of range");
  let arr = pt.topArr;
  let base = pt.topBase;
  for (let l = pt.topLevel; ; l--) {
    const idx = pt.index(l, va);
    const e = arr[base + idx]!;
    if (e === 0) {
      WARN_ON(!noWarn, "arm_lpae_unmap: unmap of an unmapped IOVA");
      return 0n;
    }
    if (l === level) {
      const n = Math.min(Number(pgcount), pt.tableItems(l) - idx);
      let i = 0;
      for (; i < n; i++) {
        const x = arr[base + idx + i]!;
        if (x === 0) {
          WARN_ON(!noWarn, "arm_lpae_unmap: hole inside the range");
          break;
        }
        if (x < 0) {
          const ids = pt.detachTable(arr, base + idx + i, l);
          domain.ops.flushIotlbAll?.(domain);
          pt.releaseTables(ids);
        }
      }
      arr.fill(0, base + idx, base + idx + i);
      const bytes = BigInt(i) * pgsize;
      if (i !== 0) gatherAddPages(domain, gather, iova, bytes, pgsize);
      return bytes;
    }
    if (e > 0) {
      WARN_ON(true, "Unmap of a partial large IOPTE is not allowed");
      return 0n;
    }
    arr = pt.alloc.chunk(-e - 1);
    base = pt.alloc.offset(-e - 1);
  }
}

/**
 * A classic (io-pgtable) paging domain with an ARM LPAE table: the core splits with
 * iommu_pgsize() and calls these map_pages / unmap_pages. `extra` adds the driver's hooks.
 */
export function armLpaeDomainAlloc(
  cfg: ArmLpaeCfg,
  extra: IommuDomainOps = {},
  priv?: unknown,
): IommuDomain {
  const quirks = cfg.quirks ?? 0;
  const oas = cfg.oas ?? 48;
  const ops: IommuDomainOps = {
    ...extra,
    mapPages: (d, iova, paddr, pgsize, pgcount, prot) =>
      armMapPages(d, iova, paddr, pgsize, pgcount, prot, quirks),
    unmapPages: (d, iova, pgsize, pgcount, gather) =>
      armUnmapPages(d, iova, pgsize, pgcount, gather, quirks),
  };
  const format = armLpaeFormat({ stage: cfg.stage, granuleLg2: cfg.granuleLg2 });
  const domain = iommuptDomainAlloc(
    {
      format,
      features: 0,
      hwMaxVaLg2: cfg.ias ?? 48,
      hwMaxOaLg2: oas,
      ...(cfg.shouldFail ? { shouldFail: cfg.shouldFail } : {}),
    },
    { ops, pgsizeBitmap: armLpaePgsizeBitmap(cfg.granuleLg2, oas), priv, classic: true },
  );
  return domain;
}
