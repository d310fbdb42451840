/**
 * A DMA-mapped scatter-gather table as an importer sees it (struct sg_table after mapping):
 * one entry per contiguous DMA range, never one per page. dma-buf mappings of MMIO carry no
 * struct page, so only the DMA side exists. Entry lengths are `unsigned int` as in the kernel.
 */
export class SgTable {
  readonly dmaAddress: BigUint64Array;
  readonly dmaLength: Uint32Array;

  constructor(readonly nents: number) {
    this.dmaAddress = new BigUint64Array(nents);
    this.dmaLength = new Uint32Array(nents);
  }

  /** Total bytes covered by the entries. */
  get totalLength(): bigint {
    let n = 0n;
    for (const len of this.dmaLength) n += BigInt(len);
    return n;
  }
}
