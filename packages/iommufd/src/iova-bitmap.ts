/**
 * The IOVA bitmap: a user-space bitmap in which bit i stands for the page_size bytes at
 * `iova + i * page_size`, filled by dirty-tracking walks through a pinned window.
 *
 * The user buffer is addressed as bytes (bit i lives in byte i / 8, bit i % 8, so a
 * little-endian u64 array reads the same). It is never written through uaccess: a window of
 * its pages is pinned with pin_user_pages_fast(FOLL_WRITE) and bits are ORed straight into
 * those physical pages. One window holds at most PAGE_SIZE / sizeof(struct page *) = 512
 * pages (2 MiB of bitmap, 64 GiB of IOVA at 4 KiB per bit); `forEach` calls its function
 * once per window and moves on. A window starts at a byte of the bitmap: a buffer that is not
 * page aligned gets one extra page and its first bit sits `pgoff` bytes into the first page.
 *
 * A range given to `set` that reaches past the pinned pages is remembered (set-ahead) and
 * recorded when the walk advances, before the next window's function runs. Bits are only
 * ever set, never cleared: the caller zeroes the buffer.
 *
 * Decision (as iova_bitmap_get): a pin that pins nothing — a hole, a read-only or PFNMAP
 * mapping, no memory — is -EFAULT whatever GUP's reason; a pin that stops early is accepted
 * and the window simply covers the pages it got.
 *
 * Decision (as iova_bitmap_set_ahead): the set-ahead is measured with nothing pinned. After a
 * window that began at a page boundary the measure is 0 bytes; the kernel's size_t arithmetic
 * then sets every bit of the next window's pinned pages and moves past the end of the bitmap,
 * so the walk ends there. The model keeps that outcome rather than a corrected one.
 *
 * @see drivers/iommu/iommufd/iova_bitmap.c, include/linux/iova_bitmap.h
 */
import {
  EFAULT,
  ENOMEM,
  FOLL_WRITE,
  type Kernel,
  PAGE_SIZE,
  PfnRuns,
  U64_MAX,
  fail,
  isKernelError,
  pinUserPagesFast,
  unpinUserPageRuns,
} from "@x/kernel";

/** Bits in one bitmap index (the bitmap is a u8 array). */
const BITS_PER_INDEX = 8n;
const BITS_PER_PAGE = PAGE_SIZE * 8;
/** Pages one window may pin: a page of struct page pointers. */
export const IOVA_BITMAP_MAX_PAGES = PAGE_SIZE / 8;

/** A window's function: (bitmap, iova, length) of the window; may throw an errno. */
export type IovaBitmapFn = (bitmap: IovaBitmap, iova: bigint, length: bigint) => void;

/** @see struct iova_bitmap (with its struct iova_bitmap_map `mapped`) */
export class IovaBitmap {
  /** First IOVA of the pinned window (bit 0 of the byte at `pgoff` of the first page). */
  private mappedIova: bigint;
  /** __ffs(page_size): log2 bytes per bit. */
  private readonly pgshift: bigint;
  /** Byte offset of the window's first byte in its first page. */
  private pgoff = 0;
  /** Pages pinned for the window, and their pfns as runs (looked up only where bits are set). */
  private npages = 0;
  private readonly pinned = new PfnRuns();
  /** The run `pfnOfPage` found last and its first page: a walk sets bits in page order. */
  private run = 0;
  private runFirst = 0;
  /** Bitmap byte the window starts at, and the bytes of the whole bitmap. */
  private mappedBaseIndex = 0n;
  private readonly mappedTotalIndex: bigint;
  /** Bytes of IOVA recorded past the window, to set when the walk advances. */
  private setAheadLength = 0n;

  private constructor(
    private readonly kernel: Kernel,
    /** Start and length of the IOVA range the whole bitmap describes. */
    readonly iova: bigint,
    readonly length: bigint,
    pageSize: bigint,
    /** User address of the bitmap. */
    readonly data: bigint,
  ) {
    this.pgshift = BigInt((pageSize & -pageSize).toString(2).length - 1);
    // size_t arithmetic: a length of 0 wraps to a range reaching the end of the IOVA space.
    this.mappedTotalIndex = this.offsetToIndex((length - 1n) & U64_MAX) + 1n;
    this.mappedIova = iova;
  }

  /**
   * iova_bitmap_alloc: a bitmap over [iova, iova + length) with one bit per `pageSize` (the
   * lowest set bit of it counts) at user address `data`. Nothing is pinned until `forEach`.
   */
  static alloc(
    kernel: Kernel,
    iova: bigint,
    length: bigint,
    pageSize: bigint,
    data: bigint,
  ): IovaBitmap {
    // Stryker disable next-line StringLiteral: the RangeError's text only
    if (pageSize <= 0n) throw new RangeError("iova_bitmap: page size 0");
    if (kernel.shouldFail("iommufd:iova_bitmap_alloc")) fail(ENOMEM, "iova_bitmap");
    return new IovaBitmap(kernel, iova, length, pageSize, data);
  }

  /** @see iova_bitmap_offset_to_index */
  private offsetToIndex(offset: bigint): bigint {
    return offset / (BITS_PER_INDEX << this.pgshift);
  }

  /** @see iova_bitmap_index_to_offset */
  private indexToOffset(index: bigint): bigint {
    return (index * BITS_PER_INDEX) << this.pgshift;
  }

  /** @see iova_bitmap_mapped_iova */
  private windowIova(): bigint {
    return this.iova + this.indexToOffset(this.mappedBaseIndex);
  }

  /** @see iova_bitmap_mapped_remaining: bitmap bytes the pinned pages still cover. */
  private mappedRemaining(): bigint {
    // With nothing pinned and pgoff > 0 the kernel's unsigned byte count wraps to "all".
    const bytes = BigInt(this.npages * PAGE_SIZE - this.pgoff);
    const remaining = this.mappedTotalIndex - this.mappedBaseIndex;
    return bytes < 0n || remaining < bytes ? remaining : bytes;
  }

  /** @see iova_bitmap_mapped_length: IOVA bytes of the window, capped at the range's end. */
  private mappedLength(): bigint {
    const maxIova = (this.iova + this.length - 1n) & U64_MAX;
    const start = this.windowIova();
    let remaining = this.indexToOffset(this.mappedRemaining());
    if (start + remaining - 1n > maxIova) remaining -= start + remaining - 1n - maxIova;
    return remaining;
  }

  private done(): boolean {
    return this.mappedBaseIndex >= this.mappedTotalIndex;
  }

  /** @see iova_bitmap_get: pin the window that starts at mappedBaseIndex. */
  private get(): void {
    const bytes = this.mappedTotalIndex - this.mappedBaseIndex;
    const addr = this.data + this.mappedBaseIndex;
    const pgoff = Number(addr & BigInt(PAGE_SIZE - 1));
    const want = (bytes + BigInt(PAGE_SIZE - 1)) / BigInt(PAGE_SIZE) + (pgoff ? 1n : 0n);
    const npages = want < IOVA_BITMAP_MAX_PAGES ? Number(want) : IOVA_BITMAP_MAX_PAGES;
    this.pinned.clear();
    let got: number;
    try {
      got = pinUserPagesFast(this.kernel, addr, npages, FOLL_WRITE, this.pinned);
    } catch (e) {
      if (!isKernelError(e)) throw e;
      got = 0;
    }
    if (got <= 0) fail(EFAULT, "iova_bitmap: user bitmap cannot be pinned");
    this.npages = got;
    this.run = 0;
    this.runFirst = 0;
    this.mappedIova = this.windowIova();
    this.pgoff = pgoff;
  }

  /** The pfn of the window's `page`-th pinned page (page < npages). */
  private pfnOfPage(page: number): number {
    const runs = this.pinned;
    if (page < this.runFirst) {
      this.run = 0;
      this.runFirst = 0;
    }
    while (page >= this.runFirst + runs.npages(this.run)) this.runFirst += runs.npages(this.run++);
    return runs.pfn(this.run) + (page - this.runFirst);
  }

  /** @see iova_bitmap_put */
  private put(): void {
    if (this.npages === 0) return;
    unpinUserPageRuns(this.kernel, this.pinned, false);
    this.pinned.clear();
    this.npages = 0;
  }

  /** @see iova_bitmap_set_ahead */
  private setAhead(length: bigint): void {
    try {
      while (length > 0n && !this.done()) {
        // Measured before the pin, with nothing pinned, as the kernel does: from a window that
        // started at a page boundary (pgoff 0) that is 0 bytes, and the size_t arithmetic below
        // and in `set` then covers every pinned page and moves past the end of the bitmap.
        let len = this.mappedLength();
        const at = this.windowIova();
        this.get();
        if (length < len) len = length;
        this.set(at, len);
        length -= len;
        this.mappedBaseIndex += this.offsetToIndex((len - 1n) & U64_MAX) + 1n;
        this.put();
      }
    } finally {
      this.setAheadLength = 0n;
    }
  }

  /** @see iova_bitmap_advance */
  private advance(): void {
    this.mappedBaseIndex += this.offsetToIndex(this.mappedLength() - 1n) + 1n;
    this.put();
    if (this.setAheadLength) this.setAhead(this.setAheadLength);
    if (this.done()) return;
    this.get();
  }

  /**
   * iova_bitmap_for_each: pin each window in turn and call `fn(bitmap, iova, length)` for it.
   * An errno from pinning or from `fn` ends the walk and is thrown; the pages of the window
   * stay pinned until `free`, as in the kernel.
   */
  forEach(fn: IovaBitmapFn): void {
    this.get();
    while (!this.done()) {
      fn(this, this.windowIova(), this.mappedLength());
      this.advance();
    }
  }

  /**
   * iova_bitmap_set: set the bits of [iova, iova + length) (absolute IOVAs inside the current
   * window); what lies past the pinned pages is set when the walk advances.
   */
  set(iova: bigint, length: bigint): void {
    const base = BigInt(this.pgoff) * 8n;
    const first = ((iova - this.mappedIova) >> this.pgshift) + base;
    const last = (((iova + length - 1n - this.mappedIova) & U64_MAX) >> this.pgshift) + base;
    // Bits inside the pinned pages are set now; the rest waits for the walk to advance.
    const windowBits = BigInt(this.npages * BITS_PER_PAGE);
    if (last >= windowBits)
      this.setAheadLength = (last - (first > windowBits ? first : windowBits) + 1n) << this.pgshift;
    if (first >= windowBits) return;
    const end = Number(last < windowBits ? last : windowBits - 1n) + 1;
    const mem = this.kernel.mem;
    for (let cur = Number(first); cur < end; ) {
      const pageIdx = Math.floor(cur / BITS_PER_PAGE);
      const offset = cur - pageIdx * BITS_PER_PAGE;
      const nbits = Math.min(end - cur, BITS_PER_PAGE - offset);
      setBits(mem, this.pfnOfPage(pageIdx), offset, nbits);
      cur += nbits;
    }
  }

  /** @see iova_bitmap_free: unpin the window (a second free finds nothing pinned). */
  free(): void {
    this.put();
  }
}

/**
 * The bytes `setBits` writes: every bitmap shares it (bits are set in one call at a time, with
 * no other work in between), so a harvest allocates no page of its own.
 */
const scratch = new Uint8Array(PAGE_SIZE);

/**
 * bitmap_set on one physical page: OR `nbits` ones from bit `offset`. Whole bytes become 0xff
 * whatever they held, so only a partial first and last byte are read back.
 */
function setBits(mem: Kernel["mem"], pfn: number, offset: number, nbits: number): void {
  const first = offset >>> 3;
  const end = offset + nbits;
  const lastByte = (end - 1) >>> 3;
  const n = lastByte - first + 1;
  const headBits = offset & 7;
  const tailBits = end & 7;
  if (n === 1) {
    mem.readPfn(pfn, first, scratch, 0, 1);
    scratch[0]! |= ((1 << nbits) - 1) << headBits;
  } else {
    scratch.fill(0xff, 0, n);
    if (headBits) {
      mem.readPfn(pfn, first, scratch, 0, 1);
      scratch[0]! |= (0xff << headBits) & 0xff;
    }
    if (tailBits) {
      mem.readPfn(pfn, lastByte, scratch, n - 1, 1);
      scratch[n - 1]! |= (1 << tailBits) - 1;
    }
  }
  mem.writePfn(pfn, first, scratch, 0, n);
}
