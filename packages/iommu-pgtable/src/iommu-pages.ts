/**
 * Page-table memory: a slab allocator of fixed-size tables held in large Float64Array chunks.
 *
 * A table is an id; its items live at `chunk(id)[offset(id) + index]`. No object exists per
 * table or per item, so a domain with 200k tables costs 200k × table size bytes and nothing
 * else. Freed ids go on a free list and are zeroed when released, so a reused table is empty.
 * Live tables are counted per level (the model's NR_SECONDARY_PAGETABLE).
 *
 * Item encoding (shared with iommu-pt.ts): 0 = empty; a negative value -(id + 1) = a pointer to
 * the lower table `id`; a positive value = a leaf, `pfn × ATTR_SPAN + attrs`, with `pfn` the
 * output page of this item in granule units (< 2^41, so the value stays an exact integer).
 *
 * @see iommu-pages.c
 */

/** Attribute bits below the PFN in a leaf item (12 bits; PFN × 4096 + attrs < 2^53). */
export const ATTR_SPAN = 4096;
/** The IOMMU_* prot bits (READ..PRIV) are stored as given in bits 0..5. */
export const ATTR_PROT_MASK = 0x3f;
/** The hardware dirty bit of this item. */
export const ATTR_DIRTY = 1 << 6;
/** log2 of the number of items of the contiguous entry this item belongs to (0..15). */
export const ATTR_CONTIG_SHIFT = 7;
export const ATTR_CONTIG_MASK = 0xf << ATTR_CONTIG_SHIFT;
/** Set in every leaf so that a leaf of PFN 0 is never 0 (empty). */
export const ATTR_PRESENT = 1 << 11;

/** Bytes of one chunk of the slab: big enough to amortise, small enough not to waste. */
const CHUNK_BYTES_LG2 = 18;

/**
 * Host-memory recycling, not simulated state: chunks of destroyed tables are kept (zeroed) for
 * the next table of any domain, the way the kernel's page allocator hands back pages that are
 * already backed. The first touch of fresh host memory is what a cold table costs in this model.
 */
const chunkPool = new Map<number, Float64Array[]>();
/** Keep at most this many bytes of idle chunks. */
const POOL_MAX_BYTES = 2 ** 31;
let pooledBytes = 0;

function takeChunk(length: number): Float64Array {
  const chunk = chunkPool.get(length)?.pop();
  if (!chunk) return new Float64Array(length);
  pooledBytes -= length * 8;
  return chunk;
}

function giveChunk(chunk: Float64Array): void {
  if (pooledBytes + chunk.byteLength > POOL_MAX_BYTES) return;
  let list = chunkPool.get(chunk.length);
  if (!list) chunkPool.set(chunk.length, (list = []));
  list.push(chunk);
  pooledBytes += chunk.byteLength;
}

/** levelOf of a free table, and the flag of a table an unmap walk emptied. */
const FREE = 255;
const EMPTIED = 0x80;

export class TableAllocator {
  /** Items per table (power of two). */
  readonly itemsLg2: number;
  /** Tables per chunk (power of two); hot walks inline `chunk`/`offset` with it. */
  readonly chunkLg2: number;
  readonly chunks: Float64Array[] = [];
  private freeIds: Int32Array = new Int32Array(64);
  private freeCount = 0;
  private nextId = 0;
  /**
   * The level of each live table (255 = free), for per-level accounting and dumps, with
   * EMPTIED set once an unmap walk has cleared every item of it.
   */
  private levelOf: Uint8Array = new Uint8Array(64).fill(255);
  /** Live tables per level. */
  readonly perLevel: Int32Array = new Int32Array(8);
  /** Live tables in total. */
  live = 0;
  /** Tables ever allocated / released (for benchmarks and reports). */
  allocated = 0;
  released = 0;

  constructor(itemsLg2: number) {
    this.itemsLg2 = itemsLg2;
    this.chunkLg2 = Math.max(0, CHUNK_BYTES_LG2 - 3 - itemsLg2);
  }

  /** Bytes of one table (8-byte items). */
  get tableBytes(): number {
    return 8 << this.itemsLg2;
  }

  /** The chunk holding table `id`. */
  chunk(id: number): Float64Array {
    return this.chunks[id >>> this.chunkLg2]!;
  }

  /** Index of item 0 of table `id` inside its chunk. */
  offset(id: number): number {
    return (id & ((1 << this.chunkLg2) - 1)) << this.itemsLg2;
  }

  level(id: number): number {
    const tag = this.levelOf[id]!;
    return tag === FREE ? FREE : tag & ~EMPTIED;
  }

  /**
   * Table `id`, still live, had every item cleared by an unmap walk that is about to free it:
   * `free` can skip zeroing it. A walk over a large range frees its tables after the IOTLB flush,
   * when they have left the cache, and zeroing them there again cost a fifth of a revoke.
   */
  markEmptied(id: number): void {
    this.levelOf[id]! |= EMPTIED;
  }

  /** A zeroed table for `level`. The caller checked fault injection already. */
  alloc(level: number): number {
    let id: number;
    if (this.freeCount !== 0) {
      id = this.freeIds[--this.freeCount]!;
    } else {
      id = this.nextId++;
      if (id >>> this.chunkLg2 >= this.chunks.length) {
        this.chunks.push(takeChunk(1 << (this.chunkLg2 + this.itemsLg2)));
      }
      if (id >= this.levelOf.length) {
        const grown = new Uint8Array(this.levelOf.length * 2).fill(255);
        grown.set(this.levelOf);
        this.levelOf = grown;
      }
    }
    this.levelOf[id] = level;
    this.perLevel[level]!++;
    this.live++;
    this.allocated++;
    return id;
  }

  /** Give every chunk back to the pool; every table must have been freed. */
  dispose(): void {
    if (this.live !== 0) throw new Error(`iommu-pages: ${this.live} tables still live`);
    for (const chunk of this.chunks) giveChunk(chunk);
    this.chunks.length = 0;
    this.freeCount = 0;
    this.nextId = 0;
  }

  /** Return table `id` to the slab, zeroed. */
  free(id: number): void {
    const tag = this.levelOf[id]!;
    if (tag === FREE) throw new Error(`iommu-pages: table ${id} freed twice`);
    const level = tag & ~EMPTIED;
    if (level === tag) {
      const off = this.offset(id);
      this.chunk(id).fill(0, off, off + (1 << this.itemsLg2));
    }
    this.levelOf[id] = FREE;
    this.perLevel[level]!--;
    this.live--;
    this.released++;
    if (this.freeCount === this.freeIds.length) {
      const grown = new Int32Array(this.freeIds.length * 2);
      grown.set(this.freeIds);
      this.freeIds = grown;
    }
    this.freeIds[this.freeCount++] = id;
  }
}
