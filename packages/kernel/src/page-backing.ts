/**
 * The bytes behind written pages: the RAM contents and MMIO region pages of one PhysMem. In
 * the kernel a page's contents are simply RAM (page_address); here each written page is a
 * view of a slab shared with the next pages written.
 *
 * Why views of a shared buffer: V8 places every ArrayBuffer over 64 bytes outside its heap
 * at a cost of a few microseconds each, about the same for 4 KiB as for 32 KiB, and a
 * checked fuzz program writes some eight pages on a fresh machine. A view of an existing
 * buffer costs a small fraction of that.
 *
 * A page handed out is never handed out again: a freed page's view is simply dropped, so
 * every page starts zeroed with no clearing. Retention: a slab lives while any of its pages
 * is still referenced, so in the worst case one live page keeps its slab's other
 * PAGES_PER_SLAB - 1 pages alive: at most PAGES_PER_SLAB times the bytes of the pages still
 * written. Untouched RAM costs nothing, whatever the size of the guest.
 */
export const PAGES_PER_SLAB = 8;

export class PageBacking {
  private slab: ArrayBuffer | undefined;
  /** Pages of the current slab handed out so far. */
  private used = PAGES_PER_SLAB;

  constructor(readonly pageSize: number) {}

  /** A zeroed page that shares no byte with any other page handed out. */
  alloc(): Uint8Array {
    if (this.used === PAGES_PER_SLAB) {
      this.slab = new ArrayBuffer(PAGES_PER_SLAB * this.pageSize);
      this.used = 0;
    }
    return new Uint8Array(this.slab!, this.used++ * this.pageSize, this.pageSize);
  }
}
