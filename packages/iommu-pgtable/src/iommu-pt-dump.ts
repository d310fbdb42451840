/**
 * Bit-exact PTE images of a page table, for golden tests and the playground: every non-empty
 * item as the hardware would hold it (table pointers carry the model's table addresses,
 * TABLE_PA_BASE + id × table size), depth first from the top.
 */
import type { PtIommu } from "./iommu-pt.js";

interface PteImage {
  readonly level: number;
  /** Physical address of the table holding the item. */
  readonly tablePa: bigint;
  readonly index: number;
  readonly pte: bigint;
}

/** Every non-empty item, depth first. */
export function ptImage(pt: PtIommu): PteImage[] {
  const out: PteImage[] = [];
  pt.forEachTable((level, arr, base, nItems, tablePa) => {
    for (let i = 0; i < nItems; i++) {
      if (arr[base + i] !== 0)
        out.push({ level, tablePa, index: i, pte: pt.itemImage(level, arr, base, i) });
    }
  });
  return out;
}

const hex = (v: bigint, width: number): string => `0x${v.toString(16).padStart(width, "0")}`;

/** One line per item: `L<level> <table pa>[<index>] = <pte>`. */
export function ptDumpText(pt: PtIommu): string {
  return ptImage(pt)
    .map(
      (e) =>
        `L${e.level} ${hex(e.tablePa, 12)}[${String(e.index).padStart(4)}] = ${hex(e.pte, 16)}`,
    )
    .join("\n");
}
