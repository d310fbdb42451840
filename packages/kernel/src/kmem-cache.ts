/**
 * A cache of fixed-size zeroed objects carved from shared slabs: the bytes behind written
 * pages of a PhysMem (RAM contents and MMIO region pages), the leaves of every XArray, the
 * config spaces of PCI functions.
 *
 * Why views of a shared buffer: V8 places every ArrayBuffer over 64 bytes outside its heap at
 * a cost of a few microseconds each, about the same for 2 KiB as for 32 KiB (and ten times
 * that from 64 KiB), while a view of an existing buffer costs a small fraction of it. A
 * checked fuzz program on a fresh machine writes some eight pages and fills a few leaves.
 *
 * Decision: unlike the kernel's caches (kmem_cache_free makes an object the next one
 * allocated), an object is never handed out again: a freed one is simply dropped, so every
 * object starts zeroed with no clearing and no free call is needed.
 *
 * Retention: a slab lives while any of its objects is still referenced, and a cache keeps its
 * current slab, so in the worst case one live object keeps its slab's other objects' bytes
 * alive: at most `perSlab` times the bytes still in use, plus one slab per cache. Nothing is
 * allocated for untouched RAM or an empty XArray, whatever the size of the guest.
 *
 * @see kmem_cache_zalloc
 */
export class KmemCache<T extends ArrayBufferView> {
  private slab: ArrayBuffer | undefined;
  /** Objects of the current slab handed out so far. */
  private used: number;
  /** Elements of `view` in one object. */
  private readonly length: number;

  constructor(
    /** The typed array each object is handed out as (one view of the slab, not two). */
    private readonly view: SlabView<T>,
    /** Bytes of one object, a multiple of the view's element size. */
    readonly objectSize: number,
    /** Objects per slab; slabs stay under 64 KiB. */
    readonly perSlab: number,
  ) {
    this.used = perSlab;
    this.length = objectSize / view.BYTES_PER_ELEMENT;
  }

  /** A zeroed object that shares no byte with any other handed out. */
  zalloc(): T {
    if (this.used === this.perSlab) {
      this.slab = new ArrayBuffer(this.perSlab * this.objectSize);
      this.used = 0;
    }
    return new this.view(this.slab!, this.used++ * this.objectSize, this.length);
  }
}

/** A typed-array constructor, over part of a slab. */
interface SlabView<T> {
  new (buffer: ArrayBuffer, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}
