/**
 * A growable list of physically contiguous (pfn, npages) runs in two typed arrays. Pinning
 * and batching hand these around instead of page arrays, so a 1 GiB folio is one entry.
 * Pfns are plain numbers (< 2^53); Float64Array keeps them exact above 2^32.
 */
export class PfnRuns {
  private pfns: Float64Array;
  private counts: Float64Array;
  private n = 0;
  private total = 0;

  // 8 runs: 64 bytes an array, small enough for V8 to keep on its heap (no backing store to
  // allocate and track per list); a longer list grows.
  constructor(capacity = 8) {
    this.pfns = new Float64Array(capacity);
    this.counts = new Float64Array(capacity);
  }

  get length(): number {
    return this.n;
  }

  get totalPages(): number {
    return this.total;
  }

  pfn(i: number): number {
    this.check(i);
    return this.pfns[i]!;
  }

  npages(i: number): number {
    this.check(i);
    return this.counts[i]!;
  }

  /** Append a run; merges with the last run when it continues it physically. */
  push(pfn: number, npages: number): void {
    if (npages <= 0) return;
    this.total += npages;
    const last = this.n - 1;
    if (last >= 0 && this.pfns[last]! + this.counts[last]! === pfn) {
      this.counts[last]! += npages;
      return;
    }
    if (this.n === this.pfns.length) this.grow();
    this.pfns[this.n] = pfn;
    this.counts[this.n] = npages;
    this.n++;
  }

  clear(): void {
    this.n = 0;
    this.total = 0;
  }

  forEach(fn: (pfn: number, npages: number) => void): void {
    for (let i = 0; i < this.n; i++) fn(this.pfns[i]!, this.counts[i]!);
  }

  /** The pfn backing the `page`-th page of the list (0-based), by walking the runs. */
  pfnAtPage(page: number): number {
    let left = page;
    for (let i = 0; i < this.n; i++) {
      const c = this.counts[i]!;
      if (left < c) return this.pfns[i]! + left;
      left -= c;
    }
    // Stryker disable next-line StringLiteral: the RangeError's text only
    throw new RangeError(`page ${page} beyond ${this.total} pages`);
  }

  /** Drop runs so that only the first `pages` pages remain (undoing a partial append). */
  truncatePages(pages: number): void {
    if (pages >= this.total) return;
    let left = pages;
    let i = 0;
    while (i < this.n && left >= this.counts[i]!) left -= this.counts[i++]!;
    if (left > 0) this.counts[i++] = left;
    this.n = i;
    this.total = pages;
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.n)
      // Stryker disable next-line StringLiteral: the RangeError's text only
      throw new RangeError(`run ${i} out of ${this.n}`);
  }

  private grow(): void {
    const cap = Math.max(16, this.pfns.length * 2);
    const p = new Float64Array(cap);
    const c = new Float64Array(cap);
    p.set(this.pfns);
    c.set(this.counts);
    this.pfns = p;
    this.counts = c;
  }
}
