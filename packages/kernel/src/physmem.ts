import { EFAULT, EINVAL, ENOMEM } from "./errno.js";
import { KernelWarning, fail } from "./error.js";
import { KmemCache } from "./kmem-cache.js";

/**
 * Physical memory: RAM from pfn 0 to `ramPages`, then a window of MMIO regions (PCI BARs)
 * that have no struct page.
 *
 * Frames exist at three orders only — 0 (4 KiB), 9 (2 MiB) and 18 (1 GiB) — each naturally
 * aligned, like the buddy allocator restricted to the sizes hugetlb and THP use. Each order is
 * a "level" of frames with per-frame metadata (state, refcount, pincount, children in use) in
 * typed arrays indexed by frame number, cut into sections of 2^12 frames created on first use
 * (SPARSEMEM; smaller than x86's 128 MiB sections so that a machine whose allocations stay in
 * its first megabytes, as a test's or a fuzz program's do, zero-fills 36 KiB of metadata rather
 * than 288 KiB). A folio's metadata lives at its head frame in the level of its order; a tail
 * page finds its head by alignment, walking from the 1 GiB level down through split frames.
 * So a 1 GiB folio costs one slot, and untouched RAM costs nothing.
 *
 * Allocation pops a free frame of the wanted level, splitting a frame of the level above when
 * none is free. A split frame none of whose 512 children is in use is merged back when a
 * larger allocation needs the room. Free stacks may hold stale entries (a child whose parent
 * merged back); a pop checks the entry is still a free child of a split parent and drops it
 * otherwise.
 *
 * Contents are sparse: 4 KiB of bytes per written page, dropped when its folio is freed, so
 * every newly allocated folio reads as zeroes.
 */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
export const PMD_ORDER = 9;
export const PUD_ORDER = 18;

const ORDERS = [0, PMD_ORDER, PUD_ORDER] as const;
const FANOUT = 512;
const SECTION_SHIFT = 12;
const SECTION = 1 << SECTION_SHIFT;

const FREE = 0;
const HEAD = 1;
const SPLIT = 2;
/** An order-0 frame kept back at boot: never allocated, never freed. */
const RESERVED = 3;

/**
 * Decision: the first 1 MiB of RAM is reserved at boot, as on x86, so pfn 0 is never handed
 * out (iommu_iova_to_phys uses 0 for "no translation"). It has struct pages (pfnValid) but
 * is in no folio, and it is not counted in allocatedPages().
 */
export const RESERVED_LOW_PAGES = 256;

/**
 * Copies up to this many bytes go byte by byte: an ioctl struct or a short user access costs
 * less that way than the view `subarray` makes for `set`.
 */
const SMALL_COPY = 64;

/** The WARN of an unpin below zero. */
function unpinWarning(what: string, n: number, pins: number): KernelWarning {
  return new KernelWarning(`${what}: unpinning ${n} pages of a folio with ${pins} pins`);
}

/**
 * A frame's reference count is at `counts[2 * slot]` and its pin count at `counts[2 * slot + 1]`:
 * a pin changes both, so they share a cache line.
 */
const REF = 0;
const PIN = 1;

interface Section {
  readonly state: Uint8Array;
  readonly counts: Int32Array;
  /** Children in use, for SPLIT frames (levels above 0). */
  readonly used: Uint16Array | undefined;
}

class FrameLevel {
  /**
   * Sections by number, grown one slot at a time up to the highest written: a machine is
   * built for every test, and an array sized for all of RAM up front (16 K slots for 2 TiB)
   * cost more than the test. Grown densely, never by a far write, so it stays a fast array.
   */
  private readonly sections: Array<Section | undefined> = [];
  /** Starts at 8 entries (64 bytes, allocated on the JS heap; larger typed arrays are not). */
  private stack = new Float64Array(8);
  /** SPLIT frames with no child in use, waiting to be merged. */
  readonly empty = new Set<number>();
  private top = 0;
  sectionsAllocated = 0;

  constructor(
    readonly order: number,
    /** Frames of this order fully inside RAM. */
    readonly count: number,
  ) {}

  section(idx: number): Section | undefined {
    const i = idx >>> SECTION_SHIFT;
    return i < this.sections.length ? this.sections[i] : undefined;
  }

  state(idx: number): number {
    const s = this.section(idx);
    return s ? s.state[idx & (SECTION - 1)]! : FREE;
  }

  /** The section holding `idx`, created on first write; the last one only as long as RAM. */
  writable(idx: number): Section {
    const i = idx >>> SECTION_SHIFT;
    let s = this.section(idx);
    if (!s) {
      const slots = Math.max(1, Math.min(SECTION, this.count - i * SECTION));
      // One buffer for the section's three arrays: counts first (4-byte aligned), then used
      // (2-byte aligned), then state. A buffer costs far more to create than its bytes.
      const usedBytes = this.order === 0 ? 0 : 2 * slots;
      const buf = new ArrayBuffer(8 * slots + usedBytes + slots);
      s = {
        counts: new Int32Array(buf, 0, 2 * slots),
        used: usedBytes ? new Uint16Array(buf, 8 * slots, slots) : undefined,
        state: new Uint8Array(buf, 8 * slots + usedBytes, slots),
      };
      while (this.sections.length <= i) this.sections.push(undefined);
      this.sections[i] = s;
      this.sectionsAllocated++;
    }
    return s;
  }

  push(idx: number): void {
    this.reserve(1);
    this.stack[this.top++] = idx;
  }

  /**
   * Push frames lo + count - 1 down to lo, lo ending on top, as one entry: the frame number
   * `lo` under the negated count. A split pushes 511 children and a machine's seeding every
   * frame of a level; one entry each keeps building a machine cheap.
   */
  pushRange(lo: number, count: number): void {
    if (count <= 1) {
      if (count === 1) this.push(lo);
      return;
    }
    this.reserve(2);
    this.stack[this.top++] = lo;
    this.stack[this.top++] = -count;
  }

  pop(): number {
    if (this.top === 0) return -1;
    const t = this.stack[this.top - 1]!;
    if (t >= 0) {
      this.top--;
      return t;
    }
    const lo = this.stack[this.top - 2]!;
    this.stack[this.top - 2] = lo + 1;
    // Two frames left become a single entry for the second one.
    if (t === -2) this.top--;
    else this.stack[this.top - 1] = t + 1;
    return lo;
  }

  private reserve(slots: number): void {
    if (this.top + slots <= this.stack.length) return;
    const s = new Float64Array(this.stack.length * 2);
    s.set(this.stack);
    this.stack = s;
  }
}

/**
 * One pin and one reference more on each order-0 frame of slots [lo, hi) of `s`, stopping at
 * the first slot that is not a folio head (left unchanged, as every slot after it). Returns
 * the slot it stopped at: `hi` when every frame was pinned.
 */
function pinStretch(s: Section, lo: number, hi: number): number {
  const { state, counts } = s;
  let slot = lo;
  for (; slot < hi && state[slot] === HEAD; slot++) {
    counts[2 * slot + REF]!++;
    counts[2 * slot + PIN]!++;
  }
  return slot;
}

/**
 * unpinStretch undoes pinStretch: one pin and one reference less on each order-0 frame of
 * slots [lo, hi), stopping at the first that is not a folio head or holds no pin. Frames left
 * with no reference go to `freed` as (level 0, pfn) pairs, pfn = `base` + slot.
 */
function unpinStretch(
  s: Section,
  lo: number,
  hi: number,
  base: number,
  freed: number[] | undefined,
): number {
  const { state, counts } = s;
  let slot = lo;
  for (; slot < hi && state[slot] === HEAD && counts[2 * slot + PIN]! > 0; slot++) {
    counts[2 * slot + PIN]!--;
    if (--counts[2 * slot + REF]! === 0) freed?.push(0, base + slot);
  }
  return slot;
}

/** A PCI BAR's backing store in the MMIO window: reachable by physical address, no struct page. */
export class MmioRegion {
  private readonly pages = new Map<number, Uint8Array>();
  removed = false;

  constructor(
    readonly name: string,
    readonly base: bigint,
    readonly size: bigint,
    /** Where its written pages' bytes come from: its PhysMem's. */
    private readonly pageCache: KmemCache<Uint8Array>,
  ) {}

  get basePfn(): number {
    return Number(this.base >> BigInt(PAGE_SHIFT));
  }

  get npages(): number {
    return Number((this.size + BigInt(PAGE_SIZE - 1)) >> BigInt(PAGE_SHIFT));
  }

  /** @internal the backing page for offset `page`, created on write. */
  page(page: number, create: boolean): Uint8Array | undefined {
    let p = this.pages.get(page);
    if (!p && create) this.pages.set(page, (p = this.pageCache.zalloc()));
    return p;
  }
}

export interface PhysMemOptions {
  /** Bytes of RAM (rounded down to pages). */
  readonly ramBytes?: bigint | number;
  /** The fault-injection hook (kernel.shouldFail). */
  readonly shouldFail?: (site: string) => boolean;
}

const GiB = 1n << 30n;
const MAX_RAM = 8n << 40n;

export class PhysMem {
  readonly ramPages: number;
  readonly ramBytes: bigint;
  /** First byte of the MMIO window (RAM end rounded up to 1 GiB). */
  readonly mmioBase: bigint;
  private readonly levels: FrameLevel[];
  private readonly contents = new Map<number, Uint8Array>();
  /**
   * The bytes of written pages, RAM and MMIO, twelve pages (48 KiB) to a slab: a fresh fuzz
   * machine writes some eight or nine (the MSI-X tables and PBAs at power-on, then RAM).
   */
  private readonly pageCache = new KmemCache(Uint8Array, PAGE_SIZE, 12);
  /** Written pages of each large folio, so freeing it drops exactly those. */
  private readonly writtenLarge = new Map<number, number[]>();
  private readonly regions: MmioRegion[] = [];
  private mmioNext: bigint;
  private readonly shouldFail: (site: string) => boolean;
  private pinned = 0;
  private allocated = 0;

  constructor(opts: PhysMemOptions = {}) {
    const bytes = BigInt(opts.ramBytes ?? 2n << 40n);
    // Frame numbers stay below 2^31 so section slots can be taken with a mask.
    if (bytes < 0n || bytes > MAX_RAM) fail(EINVAL, `RAM size ${bytes} outside 0..8 TiB`);
    this.ramPages = Number(bytes >> BigInt(PAGE_SHIFT));
    this.ramBytes = BigInt(this.ramPages) << BigInt(PAGE_SHIFT);
    this.mmioBase = ((this.ramBytes + GiB - 1n) / GiB) * GiB;
    this.mmioNext = this.mmioBase;
    this.shouldFail = opts.shouldFail ?? (() => false);
    this.levels = ORDERS.map((o) => new FrameLevel(o, Math.floor(this.ramPages / 2 ** o)));
    // Seed the free stacks, lowest address on top: every 1 GiB frame, then the 2 MiB and
    // 4 KiB frames of a RAM tail too short for a whole frame of the level above. The level
    // whose frames start at pfn 0 is seeded first, then the first 1 MiB is taken from it
    // (its lowest frames come first), and only then the tails.
    for (let l = this.levels.length - 1; l >= 0; l--) {
      const level = this.levels[l]!;
      const first = l === this.levels.length - 1 ? 0 : this.levels[l + 1]!.count * FANOUT;
      level.pushRange(first, level.count - first);
      if (first === 0 && level.count > 0) this.reserveLow(l);
    }
  }

  /**
   * Take the first 1 MiB right after level `root`, the one whose frames start at pfn 0, was
   * seeded: the outcome of RESERVED_LOW_PAGES order-0 takes, written at once. Frame 0 of each
   * level above 0 is split, its other 511 children go free in address order, and its count of
   * children in use is 1, or the reserved pages at level 1.
   */
  private reserveLow(root: number): void {
    const n = Math.min(RESERVED_LOW_PAGES, this.ramPages);
    // Frame 0 of the root level is on top of its stack; a lower level's is never pushed.
    this.levels[root]!.pop();
    for (let l = root; l > 0; l--) {
      const s = this.levels[l]!.writable(0);
      s.state[0] = SPLIT;
      s.used![0] = l === 1 ? n : 1;
      this.levels[l - 1]!.pushRange(l === 1 ? n : 1, FANOUT - (l === 1 ? n : 1));
    }
    const low = this.levels[0]!;
    if (root === 0) for (let i = 1; i < n; i++) low.pop();
    low.writable(0).state.fill(RESERVED, 0, n);
  }

  /** Pages in allocated folios. */
  allocatedPages(): number {
    return this.allocated;
  }

  /** Sections of per-frame metadata created so far, over all levels (the sparse cost). */
  metadataSections(): number {
    return this.levels.reduce((n, l) => n + l.sectionsAllocated, 0);
  }

  /**
   * alloc_pages / folio_alloc: a zeroed folio of 2^order pages with refcount 1; returns its
   * head pfn. ENOMEM when RAM is exhausted or the fault-injection point `site` fires.
   */
  allocFolio(order: number, site = "alloc_pages"): number {
    const l = order === 0 ? 0 : order === PMD_ORDER ? 1 : order === PUD_ORDER ? 2 : -1;
    if (l < 0) fail(EINVAL, `folio order ${order} is not 0, 9 or 18`);
    if (this.shouldFail(site)) fail(ENOMEM, `${site}: injected`);
    const idx = this.take(l);
    if (idx < 0) fail(ENOMEM, `out of memory for an order-${order} folio`);
    const level = this.levels[l]!;
    const s = level.writable(idx);
    const slot = idx & (SECTION - 1);
    s.state[slot] = HEAD;
    s.counts[2 * slot + REF] = 1;
    s.counts[2 * slot + PIN] = 0;
    this.allocated += 2 ** order;
    return idx * 2 ** order;
  }

  private isRoot(l: number, idx: number): boolean {
    return l === this.levels.length - 1 || Math.floor(idx / FANOUT) >= this.levels[l + 1]!.count;
  }

  /**
   * Pop a free frame of level `l`. When none is left, first merge the split frames of levels
   * 1..l whose children are all free, then split a frame of the level above; -1 when none.
   */
  private take(l: number): number {
    const level = this.levels[l]!;
    for (let reclaimed = l === 0; ; reclaimed = true) {
      for (;;) {
        const idx = level.pop();
        if (idx < 0) break;
        if (level.state(idx) !== FREE) continue;
        if (this.isRoot(l, idx)) return idx;
        const parent = Math.floor(idx / FANOUT);
        const up = this.levels[l + 1]!;
        if (up.state(parent) !== SPLIT) continue;
        if (up.writable(parent).used![parent & (SECTION - 1)]!++ === 0) up.empty.delete(parent);
        return idx;
      }
      if (reclaimed) break;
      for (let m = 1; m <= l; m++) this.mergeEmpty(m);
    }
    if (l === this.levels.length - 1) return -1;
    const parent = this.take(l + 1);
    if (parent < 0) return -1;
    const ps = this.levels[l + 1]!.writable(parent);
    ps.state[parent & (SECTION - 1)] = SPLIT;
    ps.used![parent & (SECTION - 1)] = 1;
    const first = parent * FANOUT;
    level.pushRange(first + 1, FANOUT - 1);
    return first;
  }

  /** Merge every split frame of level `m` none of whose children is in use back into one. */
  private mergeEmpty(m: number): void {
    const level = this.levels[m]!;
    for (const idx of level.empty) this.release(m, idx);
    level.empty.clear();
  }

  /**
   * Give frame `idx` of level `l` back. Decision: a split frame that empties is not merged at
   * once but remembered, and merged only when a larger allocation needs it, so alternating
   * alloc/free of small folios does not split and merge a 1 GiB frame every time.
   */
  private release(l: number, idx: number): void {
    const level = this.levels[l]!;
    const s = level.writable(idx);
    s.state[idx & (SECTION - 1)] = FREE;
    level.push(idx);
    if (this.isRoot(l, idx)) return;
    const parent = Math.floor(idx / FANOUT);
    const up = this.levels[l + 1]!;
    if (--up.writable(parent).used![parent & (SECTION - 1)]! === 0) up.empty.add(parent);
  }

  /** The level of the allocated folio holding `pfn`, or -1 when it is in none. */
  private levelOfPfn(pfn: number): number {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.ramPages) return -1;
    // A 4 KiB folio first, the common case: an order-0 head only exists under split parents
    // (a frame is merged back only once all its children are free), so no walk is needed.
    if (this.levels[0]!.state(pfn) === HEAD) return 0;
    for (let l = this.levels.length - 1; l >= 0; l--) {
      const level = this.levels[l]!;
      const idx = Math.floor(pfn / 2 ** level.order);
      if (idx >= level.count) continue;
      const st = level.state(idx);
      if (st === HEAD) return l;
      if (st === FREE) return -1;
    }
    return -1;
  }

  private folioOf(pfn: number, what: string): { l: number; idx: number } {
    const l = this.checkAllocated(pfn, what);
    return { l, idx: Math.floor(pfn / 2 ** this.levels[l]!.order) };
  }

  /** folioOf's check alone: the folio's level, and no object made (per byte-copy hot path). */
  private checkAllocated(pfn: number, what: string): number {
    const l = this.levelOfPfn(pfn);
    if (l < 0) throw new KernelWarning(`${what}: pfn ${pfn} is not in an allocated folio`);
    return l;
  }

  /** RAM has struct pages; MMIO and holes do not (pfn_valid). */
  pfnValid(pfn: number): boolean {
    return Number.isInteger(pfn) && pfn >= 0 && pfn < this.ramPages;
  }

  /** Whether `pfn` lies in an allocated folio. */
  isAllocated(pfn: number): boolean {
    return this.levelOfPfn(pfn) >= 0;
  }

  /** page_folio: the head pfn of the folio holding `pfn` (WARN on a free page). */
  folioHead(pfn: number): number {
    const f = this.folioOf(pfn, "folioHead");
    return f.idx * 2 ** ORDERS[f.l]!;
  }

  folioOrder(pfn: number): number {
    return ORDERS[this.folioOf(pfn, "folioOrder").l]!;
  }

  folioNrPages(pfn: number): number {
    return 2 ** this.folioOrder(pfn);
  }

  refCount(pfn: number): number {
    const f = this.folioOf(pfn, "refCount");
    return this.levels[f.l]!.section(f.idx)!.counts[2 * (f.idx & (SECTION - 1)) + REF]!;
  }

  /** The folio's pin count (folio_maybe_dma_pinned when > 0). */
  pinCount(pfn: number): number {
    const f = this.folioOf(pfn, "pinCount");
    return this.levels[f.l]!.section(f.idx)!.counts[2 * (f.idx & (SECTION - 1)) + PIN]!;
  }

  /** Pins over every folio (for leak checks). */
  totalPinned(): number {
    return this.pinned;
  }

  /** folio_get / folio_ref_add */
  folioGet(pfn: number, n = 1): void {
    const f = this.folioOf(pfn, "folioGet");
    this.levels[f.l]!.section(f.idx)!.counts[2 * (f.idx & (SECTION - 1)) + REF]! += n;
  }

  /** folio_put / folio_put_refs: the folio is freed when its refcount reaches zero. */
  folioPut(pfn: number, n = 1): void {
    const f = this.folioOf(pfn, "folioPut");
    const { counts } = this.levels[f.l]!.section(f.idx)!;
    const at = 2 * (f.idx & (SECTION - 1));
    if (counts[at + REF]! < n)
      throw new KernelWarning(`folioPut: refcount underflow at pfn ${pfn}`);
    counts[at + REF]! -= n;
    if (counts[at + REF] === 0) this.freeFolio(f.l, f.idx, counts[at + PIN]!);
  }

  private freeFolio(l: number, idx: number, pins: number): void {
    if (pins !== 0) throw new KernelWarning(`freeing a folio with ${pins} pins`);
    const order = ORDERS[l]!;
    const head = idx * 2 ** order;
    if (order === 0) this.contents.delete(head);
    else {
      for (const p of this.writtenLarge.get(head) ?? []) this.contents.delete(p);
      this.writtenLarge.delete(head);
    }
    this.allocated -= 2 ** order;
    this.release(l, idx);
  }

  /**
   * FOLL_PIN on a run of pages that may cross folios: each folio's pincount and refcount rise
   * by the number of the run's pages inside it.
   *
   * Decision: every folio keeps an exact pincount (what the kernel does for large folios with
   * _pincount); small folios do not use GUP_PIN_COUNTING_BIAS, so refcount rises by one per
   * pinned page at every order and pinCount() is exact rather than "maybe pinned".
   */
  pinPages(pfn: number, npages: number): void {
    this.adjustPins(pfn, npages, 1, "pinPages");
  }

  /** unpin_user_pages over a run; unpinning below zero is a WARN. Frees folios reaching 0 refs. */
  unpinPages(pfn: number, npages: number): void {
    this.adjustPins(pfn, npages, -1, "unpinPages");
  }

  private adjustPins(pfn: number, npages: number, sign: 1 | -1, what: string): void {
    if (!Number.isInteger(npages) || npages < 0)
      throw new KernelWarning(`${what}: bad count ${npages}`);
    const freed: number[] = [];
    this.adjusted = 0;
    try {
      this.adjustRun(pfn, npages, sign, what, freed);
    } catch (e) {
      // A WARN part-way: put back what was changed, so every count is as it was.
      this.adjustRun(pfn, this.adjusted, -sign as 1 | -1, what, undefined);
      throw e;
    }
    this.pinned += sign * npages;
    for (let i = 0; i < freed.length; i += 2) this.freeFolio(freed[i]!, freed[i + 1]!, 0);
  }

  /** Pages adjustRun has counted so far (what to put back after a WARN). */
  private adjusted = 0;

  /**
   * Add `sign` per page to the pin and reference counts of each folio a run of pages touches;
   * WARN on a page outside any allocated folio. Order-0 stretches are walked straight through
   * the section arrays, one 2 MiB frame per lookup. Folios reaching no reference are listed in
   * `freed` as (level, index) pairs.
   */
  private adjustRun(
    pfn: number,
    npages: number,
    sign: 1 | -1,
    what: string,
    freed: number[] | undefined,
  ): void {
    const end = pfn + npages;
    let p = pfn;
    while (p < end) {
      const f = this.folioOf(p, what);
      if (f.l !== 0) {
        const size = 2 ** ORDERS[f.l]!;
        const n = Math.min(end, (f.idx + 1) * size) - p;
        const s = this.levels[f.l]!.section(f.idx)!;
        this.adjustFolio(s, f.idx & (SECTION - 1), n, sign, what, freed, f.l, f.idx);
        p += n;
        continue;
      }
      // Every frame of this 2 MiB stretch is an order-0 frame in the same section.
      const stop = Math.min(end, (Math.floor(p / FANOUT) + 1) * FANOUT);
      const s = this.levels[0]!.section(p)!;
      const lo = p & (SECTION - 1);
      const hi = lo + (stop - p);
      const done = sign > 0 ? pinStretch(s, lo, hi) : unpinStretch(s, lo, hi, p - lo, freed);
      this.adjusted += done - lo;
      if (done < hi) {
        const q = p + (done - lo);
        if (s.state[done] !== HEAD)
          throw new KernelWarning(`${what}: pfn ${q} is not in an allocated folio`);
        throw unpinWarning(what, 1, s.counts[2 * done + PIN]!);
      }
      p = stop;
    }
  }

  /** `n` pages of one (large) folio gain (sign 1) or lose (sign -1) a pin and a reference each. */
  private adjustFolio(
    s: Section,
    slot: number,
    n: number,
    sign: 1 | -1,
    what: string,
    freed: number[] | undefined,
    l: number,
    idx: number,
  ): void {
    const { counts } = s;
    const at = 2 * slot;
    if (sign < 0 && counts[at + PIN]! < n) throw unpinWarning(what, n, counts[at + PIN]!);
    counts[at + PIN]! += sign * n;
    counts[at + REF]! += sign * n;
    if (counts[at + REF] === 0) freed?.push(l, idx);
    this.adjusted += n;
  }

  /**
   * copy_user_large_folio / copy_highpage: give folio `dst` the contents of folio `src`, both
   * heads of the same order. Only written pages are copied; the rest stay zero, so `dst`
   * must be freshly allocated.
   */
  copyFolio(dst: number, src: number): void {
    const order = this.folioOrder(src);
    if (
      this.folioOrder(dst) !== order ||
      this.folioHead(src) !== src ||
      this.folioHead(dst) !== dst
    )
      throw new KernelWarning(`copyFolio: ${dst} and ${src} are not heads of one order`);
    const pages = order === 0 ? [src] : (this.writtenLarge.get(src) ?? []);
    for (const p of pages) {
      const data = this.contents.get(p);
      if (data) this.pageForWrite(dst + (p - src)).set(data);
    }
  }

  private pageForWrite(pfn: number): Uint8Array {
    let page = this.contents.get(pfn);
    if (page) return page;
    const f = this.folioOf(pfn, "write to RAM");
    page = this.pageCache.zalloc();
    this.contents.set(pfn, page);
    if (ORDERS[f.l] !== 0) {
      const head = f.idx * 2 ** ORDERS[f.l]!;
      let list = this.writtenLarge.get(head);
      if (!list) this.writtenLarge.set(head, (list = []));
      list.push(pfn);
    }
    return page;
  }

  /**
   * The backing of physical page `pfn` for an access: RAM inside an allocated folio, or an
   * MMIO region page. Decision: RAM outside any allocated folio is a use-after-free in the
   * model (nothing may reach a freed page), so it WARNs; unbacked addresses are EFAULT.
   */
  private pageAt(pfn: number, write: boolean): Uint8Array | undefined {
    if (pfn < this.ramPages) {
      if (write) return this.pageForWrite(pfn);
      this.checkAllocated(pfn, "read of RAM");
      return this.contents.get(pfn);
    }
    const r = this.mmioRegionAt(BigInt(pfn) << BigInt(PAGE_SHIFT));
    if (!r) fail(EFAULT, `no RAM or MMIO at pfn ${pfn}`);
    return r.page(pfn - r.basePfn, write);
  }

  private checkRange(paddr: bigint, len: number): void {
    if (paddr < 0n) fail(EFAULT, "negative physical address", { paddr });
    const end = paddr + BigInt(len);
    if (paddr < this.ramBytes) {
      if (end > this.ramBytes) fail(EFAULT, "access runs past the end of RAM");
      return;
    }
    const r = this.mmioRegionAt(paddr);
    if (!r || end > r.base + r.size)
      fail(EFAULT, "no MMIO region covers the range", { paddr, len });
  }

  /** Read physical memory (DMA or CPU); zeroes where nothing was written. */
  readPhys(paddr: bigint, out: Uint8Array): void {
    this.checkRange(paddr, out.length);
    this.eachPage(paddr, out.length, (pfn, off, pos, n) => this.readPfn(pfn, off, out, pos, n));
  }

  writePhys(paddr: bigint, data: Uint8Array): void {
    this.checkRange(paddr, data.length);
    // Validate every page before the first byte lands.
    this.eachPage(paddr, data.length, (pfn) => {
      if (pfn < this.ramPages) this.checkAllocated(pfn, "write to RAM");
    });
    this.eachPage(paddr, data.length, (pfn, off, pos, n) => this.writePfn(pfn, off, data, pos, n));
  }

  /**
   * Copy `n` bytes at offset `off` of physical page `pfn` into `out` at `pos`. The page must
   * be backed (the caller checked the range, or resolved `pfn` through a mapping).
   */
  readPfn(pfn: number, off: number, out: Uint8Array, pos: number, n: number): void {
    const page = this.pageAt(pfn, false);
    if (!page) out.fill(0, pos, pos + n);
    else if (n <= SMALL_COPY) for (let i = 0; i < n; i++) out[pos + i] = page[off + i]!;
    else out.set(page.subarray(off, off + n), pos);
  }

  /** Copy `n` bytes of `data` from `pos` to offset `off` of physical page `pfn`. */
  writePfn(pfn: number, off: number, data: Uint8Array, pos: number, n: number): void {
    const page = this.pageAt(pfn, true)!;
    if (n <= SMALL_COPY) for (let i = 0; i < n; i++) page[off + i] = data[pos + i]!;
    else page.set(data.subarray(pos, pos + n), off);
  }

  private eachPage(
    paddr: bigint,
    len: number,
    fn: (pfn: number, off: number, pos: number, n: number) => void,
  ): void {
    let pos = 0;
    let pfn = Number(paddr >> BigInt(PAGE_SHIFT));
    let off = Number(paddr & BigInt(PAGE_SIZE - 1));
    while (pos < len) {
      const n = Math.min(PAGE_SIZE - off, len - pos);
      fn(pfn, off, pos, n);
      pos += n;
      pfn++;
      off = 0;
    }
  }

  /**
   * Place a region of `size` bytes in the MMIO window, aligned to its size rounded up to a
   * power of two (as BARs are), at least a page and at most 1 GiB. Decision: addresses are
   * never reused after removal, so a stale mapping of a removed BAR can never alias a new one.
   */
  addMmioRegion(name: string, size: bigint): MmioRegion {
    if (size <= 0n) fail(EINVAL, `MMIO region ${name} of size ${size}`);
    let align = BigInt(PAGE_SIZE);
    while (align < size && align < GiB) align <<= 1n;
    const base = ((this.mmioNext + align - 1n) / align) * align;
    const r = new MmioRegion(name, base, size, this.pageCache);
    const pageEnd = base + ((size + BigInt(PAGE_SIZE - 1)) & ~BigInt(PAGE_SIZE - 1));
    this.mmioNext = pageEnd;
    this.regions.push(r);
    return r;
  }

  removeMmioRegion(r: MmioRegion): void {
    const i = this.regions.indexOf(r);
    if (i < 0) throw new KernelWarning(`MMIO region ${r.name} is not registered`);
    this.regions.splice(i, 1);
    r.removed = true;
  }

  mmioRegionAt(paddr: bigint): MmioRegion | undefined {
    for (const r of this.regions) if (paddr >= r.base && paddr < r.base + r.size) return r;
    return undefined;
  }
}
