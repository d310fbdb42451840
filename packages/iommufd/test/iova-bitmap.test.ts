import {
  EFAULT,
  EINVAL,
  Kernel,
  KernelWarning,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  fail,
  isKernelError,
} from "@x/kernel";
import { describe, expect, it, vi } from "vitest";
import { IOVA_BITMAP_MAX_PAGES, IovaBitmap } from "../src/iova-bitmap.js";

function setup(bytes: number, prot = PROT_READ | PROT_WRITE) {
  const kernel = new Kernel();
  const libc = new Libc(kernel);
  const pages = Math.ceil(bytes / PAGE_SIZE) + 2;
  const base = libc.mmap(0n, pages * PAGE_SIZE, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  expect(base).toBeGreaterThan(0n);
  return { kernel, libc, base };
}

/** Indexes of the set bits in `bytes`. */
function setBits(bytes: Uint8Array): number[] {
  const out: number[] = [];
  bytes.forEach((b, i) => {
    for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
  });
  return out;
}

function run(
  kernel: Kernel,
  iova: bigint,
  length: bigint,
  pageSize: bigint,
  data: bigint,
  fn: (b: IovaBitmap, iova: bigint, len: bigint) => void,
): Array<[bigint, bigint]> {
  const windows: Array<[bigint, bigint]> = [];
  const bitmap = IovaBitmap.alloc(kernel, iova, length, pageSize, data);
  try {
    kernel.runAs(kernel.current, () =>
      bitmap.forEach((b, wIova, wLen) => {
        windows.push([wIova, wLen]);
        fn(b, wIova, wLen);
      }),
    );
  } finally {
    bitmap.free();
  }
  expect(kernel.mem.totalPinned()).toBe(0);
  return windows;
}

/** `run` over a walk that fails part way: the windows it reached and what it threw. */
function runUntilError(kernel: Kernel, length: bigint, pageSize: bigint, data: bigint) {
  const windows: Array<[bigint, bigint]> = [];
  let err: unknown;
  try {
    run(kernel, 0n, length, pageSize, data, (_b, i, l) => {
      windows.push([i, l]);
    });
  } catch (e) {
    err = e;
  }
  return { windows, err };
}

describe("iova_bitmap", () => {
  it.each([
    [4096n, 12],
    [2048n, 11],
    [1n << 21n, 21],
    [0x3000n, 12], // page_size counts by its lowest set bit (__ffs)
  ])("page size %s: bit i is iova + i << pgshift", (pageSize, shift) => {
    const { kernel, libc, base } = setup(64);
    const iova = 1n << 32n;
    const unit = 1n << BigInt(shift);
    run(kernel, iova, 256n * unit, pageSize, base, (b) => {
      b.set(iova, 1n); // bit 0
      b.set(iova + 9n * unit + 1n, unit); // one byte into page 9, ends in page 10
      b.set(iova + 100n * unit, 3n * unit); // 100..102
    });
    expect(setBits(libc.peek(base, 32))).toEqual([0, 9, 10, 100, 101, 102]);
  });

  it("a long record: partial first and last bytes, whole bytes between, across a page", () => {
    const { kernel, libc, base } = setup(PAGE_SIZE * 2);
    const from = PAGE_SIZE * 8 - 13; // bit 3 of the first page's byte 4094
    const n = 13 + 8 * 5 + 6; // into the second page, ending at bit 5 of its byte 5
    run(kernel, 0n, BigInt(PAGE_SIZE * 16) * 4096n, 4096n, base, (b) =>
      b.set(BigInt(from) * 4096n, BigInt(n) * 4096n),
    );
    const bytes = libc.peek(base + BigInt(PAGE_SIZE) - 3n, 10);
    expect(Array.from(bytes)).toEqual([0, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0]);
  });

  it("sets bits, never clears them", () => {
    const { kernel, libc, base } = setup(16);
    libc.poke(base, new Uint8Array([0xff, 0x00, 0x81]));
    run(kernel, 0n, 64n * 4096n, 4096n, base, (b) => b.set(8n * 4096n, 4096n));
    expect(Array.from(libc.peek(base, 3))).toEqual([0xff, 0x01, 0x81]);
  });

  it("a record over several bytes keeps the bits already set in its partial first and last bytes", () => {
    const { kernel, libc, base } = setup(16);
    libc.poke(base, new Uint8Array([0x05, 0x00, 0x00, 0xa0, 0x11]));
    // bits 4..27: the upper half of byte 0, bytes 1-2 whole, the lower half of byte 3
    run(kernel, 0n, 64n * 4096n, 4096n, base, (b) => b.set(4n * 4096n, 24n * 4096n));
    expect(Array.from(libc.peek(base, 5))).toEqual([0xf5, 0xff, 0xff, 0xaf, 0x11]);
  });

  it("a window of scattered pages: bits land in the right page, set in any page order", () => {
    const { kernel, libc, base } = setup(PAGE_SIZE * 4);
    // Fault the four bitmap pages in out of order, with other memory in between, so the window
    // pins several runs of pfns.
    const other = libc.mmap(
      0n,
      4n * BigInt(PAGE_SIZE),
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS,
      -1,
      0,
    );
    for (const k of [2, 0, 3, 1]) {
      libc.poke(base + BigInt(k * PAGE_SIZE), new Uint8Array([0]));
      libc.poke(other + BigInt(k * PAGE_SIZE), new Uint8Array([0]));
    }
    const bitsPerPage = BigInt(PAGE_SIZE * 8);
    run(kernel, 0n, 4n * bitsPerPage * 4096n, 4096n, base, (b) => {
      for (const k of [3n, 1n, 0n, 2n, 3n]) b.set((k * bitsPerPage + 8n * k + 1n) * 4096n, 4096n);
    });
    for (let k = 0; k < 4; k++) {
      expect(setBits(libc.peek(base + BigInt(k * PAGE_SIZE), PAGE_SIZE))).toEqual([8 * k + 1]);
    }
    expect(Array.from(libc.peek(other, 8))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("a bitmap not at a page start: the window begins pgoff bytes into its first page", () => {
    const { kernel, libc, base } = setup(PAGE_SIZE * 2);
    const data = base + 4093n; // the bytes of bits 0..23 straddle two pages
    run(kernel, 0n, 1024n * 4096n, 4096n, data, (b) => {
      b.set(0n, 4096n);
      b.set(23n * 4096n, 4096n);
      b.set(24n * 4096n, 16n * 4096n);
    });
    const bits = setBits(libc.peek(data, 8));
    expect(bits).toEqual([0, 23, ...Array.from({ length: 16 }, (_, i) => 24 + i)]);
  });

  it("a bitmap larger than one window is walked window by window", () => {
    // 513 pages of bitmap at 4 KiB per bit: the first window is 512 pages (64 GiB of IOVA).
    const bytes = (IOVA_BITMAP_MAX_PAGES + 1) * PAGE_SIZE;
    const { kernel, libc, base } = setup(bytes);
    const pageSize = 4096n;
    const perWindow = BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE * 8) * pageSize;
    const length = BigInt(bytes * 8) * pageSize;
    const seen: bigint[] = [];
    const windows = run(kernel, 0n, length, pageSize, base, (b, wIova, wLen) => {
      seen.push(wIova);
      b.set(wIova, pageSize); // first bit of the window
      b.set(wIova + wLen - pageSize, pageSize); // last bit of the window
    });
    expect(windows).toEqual([
      [0n, perWindow],
      [perWindow, length - perWindow],
    ]);
    const firstPageBits = setBits(libc.peek(base, 1));
    expect(firstPageBits).toEqual([0]);
    const lastByte = libc.peek(base + BigInt(bytes) - 1n, 1)[0]!;
    expect(lastByte & 0x80).toBe(0x80);
    const boundary = base + BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE);
    expect(Array.from(libc.peek(boundary - 1n, 2))).toEqual([0x80, 0x01]);
  });

  it("a record past the window is carried into the next window (set ahead)", () => {
    const bytes = (IOVA_BITMAP_MAX_PAGES + 1) * PAGE_SIZE;
    const { kernel, libc, base } = setup(bytes + PAGE_SIZE);
    const data = base + 8n; // unaligned: the first window has 513 pages, 8 bytes short
    const pageSize = 4096n;
    const length = BigInt(bytes * 8) * pageSize;
    let calls = 0;
    const windows = run(kernel, 0n, length, pageSize, data, (b, wIova, wLen) => {
      calls++;
      // 24 pages from 8 pages before the end of the first window.
      if (calls === 1) b.set(wIova + wLen - 8n * pageSize, 24n * pageSize);
    });
    expect(windows.length).toBe(2);
    const firstEnd = windows[0]![1] / pageSize; // bits in the first window
    const around = libc.peek(data + firstEnd / 8n - 1n, 3);
    expect(Array.from(around)).toEqual([0xff, 0xff, 0xff]);
    expect(Array.from(libc.peek(data + firstEnd / 8n + 2n, 1))).toEqual([0]);
  });

  it("EFAULT when the bitmap cannot be pinned for write; nothing stays pinned", () => {
    const { kernel, base } = setup(64, PROT_READ);
    const bitmap = IovaBitmap.alloc(kernel, 0n, 1n << 20n, 4096n, base);
    let err: unknown;
    kernel.runAs(kernel.current, () => {
      try {
        bitmap.forEach(() => {
          throw new Error("not reached");
        });
      } catch (e) {
        err = e;
      }
    });
    expect(isKernelError(err, EFAULT)).toBe(true);
    bitmap.free();
    expect(kernel.mem.totalPinned()).toBe(0);
  });

  it("a bitmap whose later pages are unmapped: the first window covers what was pinned", () => {
    const { kernel, libc, base } = setup(PAGE_SIZE * 3);
    libc.munmap(base + BigInt(PAGE_SIZE), PAGE_SIZE);
    const length = BigInt(PAGE_SIZE * 8 * 3) * 4096n;
    const { windows, err } = runUntilError(kernel, length, 4096n, base);
    // The first window is the one page pinned; the next pin starts in the hole.
    expect(windows).toEqual([[0n, BigInt(PAGE_SIZE * 8) * 4096n]]);
    expect(isKernelError(err, EFAULT)).toBe(true);
    expect(kernel.mem.totalPinned()).toBe(0);
  });
});

describe("iova_bitmap: window lengths, pins and set-ahead (drivers/iommu/iommufd/iova_bitmap.c)", () => {
  const ps = 4096n;

  it("a page size of 0 is refused before anything is allocated", () => {
    const { kernel, base } = setup(64);
    expect(() => IovaBitmap.alloc(kernel, 0n, 1n << 20n, 0n, base)).toThrow(RangeError);
  });

  it("a range that is not a whole bitmap byte ends its last window at the range's end", () => {
    // iova_bitmap_mapped_length caps index_to_offset(remaining) at iova + length - 1.
    const { kernel, base } = setup(PAGE_SIZE * 2);
    expect(run(kernel, 0x10000n, 5n * ps, ps, base, () => {})).toEqual([[0x10000n, 5n * ps]]);
    // 513 pages of bitmap but 3 bits past the first window's 512 pages: the second window is
    // those 3 bits only.
    const perWindow = BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE * 8) * ps;
    const big = setup((IOVA_BITMAP_MAX_PAGES + 1) * PAGE_SIZE);
    expect(run(big.kernel, ps, perWindow + 3n * ps, ps, big.base, () => {})).toEqual([
      [ps, perWindow],
      [ps + perWindow, 3n * ps],
    ]);
  });

  it("a window the pin cut short ends at the pages pinned, even one byte before the range's end", () => {
    // One bit per byte of IOVA (page size 1): 4097 bitmap bytes want two pages; the second is
    // a hole, so the window is the 32768 bytes of the first page, one short of the range.
    const { kernel, libc, base } = setup(PAGE_SIZE * 3);
    libc.munmap(base + BigInt(PAGE_SIZE), PAGE_SIZE);
    const length = BigInt(PAGE_SIZE * 8 + 1);
    const { windows, err } = runUntilError(kernel, length, 1n, base);
    expect(windows).toEqual([[0n, BigInt(PAGE_SIZE * 8)]]);
    expect(isKernelError(err, EFAULT)).toBe(true);
  });

  it("pins DIV_ROUND_UP(bytes left, PAGE_SIZE) pages, one more for a bitmap not at a page start", () => {
    const length = BigInt(3 * PAGE_SIZE * 8) * ps; // exactly three pages of bitmap
    for (const [skew, pages] of [
      [0n, 3],
      [8n, 4],
    ] as const) {
      const { kernel, base } = setup(PAGE_SIZE * 3);
      const pinned: number[] = [];
      run(kernel, 0n, length, ps, base + skew, () => pinned.push(kernel.mem.totalPinned()));
      expect(pinned).toEqual([pages]);
    }
    // The second window of a 513-page bitmap pins the one page left, not the pages after it.
    const big = setup((IOVA_BITMAP_MAX_PAGES + 1) * PAGE_SIZE);
    const pinned: number[] = [];
    const total = BigInt((IOVA_BITMAP_MAX_PAGES + 1) * PAGE_SIZE * 8) * ps;
    run(big.kernel, 0n, total, ps, big.base, () => pinned.push(big.kernel.mem.totalPinned()));
    expect(pinned).toEqual([IOVA_BITMAP_MAX_PAGES, 1]);
  });

  it("a pin that fails for any reason is EFAULT; a WARN inside it is not turned into an errno", () => {
    // pin_user_pages_fast's -EOVERFLOW (a range wrapping 2^64) becomes -EFAULT (iova_bitmap_get).
    const { kernel, libc } = setup(64);
    const top = (1n << 64n) - BigInt(PAGE_SIZE);
    const wraps = IovaBitmap.alloc(kernel, 0n, BigInt(2 * PAGE_SIZE * 8) * ps, ps, top);
    let err: unknown;
    kernel.runAs(kernel.current, () => {
      try {
        wraps.forEach(() => {});
      } catch (e) {
        err = e;
      }
    });
    wraps.free();
    expect(isKernelError(err, EFAULT)).toBe(true);
    // A shared file mapping is faulted in by the pin itself.
    const fd = libc.memfdCreate("bitmap", 0);
    libc.ftruncate(fd, PAGE_SIZE);
    const shared = libc.mmap(0n, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    vi.spyOn(libc.process.mm, "faultIn").mockImplementation(() => {
      throw new KernelWarning("faultIn");
    });
    const warns = IovaBitmap.alloc(kernel, 0n, 64n * ps, ps, shared);
    expect(() => kernel.runAs(kernel.current, () => warns.forEach(() => {}))).toThrow(
      KernelWarning,
    );
    warns.free();
    vi.restoreAllMocks();
  });

  it("an errno from the window's function leaves the window pinned until free", () => {
    const { kernel, base } = setup(PAGE_SIZE * 2);
    const bitmap = IovaBitmap.alloc(kernel, 0n, BigInt(2 * PAGE_SIZE * 8) * ps, ps, base);
    let err: unknown;
    kernel.runAs(kernel.current, () => {
      try {
        bitmap.forEach(() => {
          fail(EINVAL, "test");
        });
      } catch (e) {
        err = e;
      }
    });
    expect(isKernelError(err, EINVAL)).toBe(true);
    expect(kernel.mem.totalPinned()).toBe(2);
    bitmap.free();
    expect(kernel.mem.totalPinned()).toBe(0);
    bitmap.free();
    expect(kernel.mem.totalPinned()).toBe(0);
  });

  /** A 513-page bitmap 8 bytes into its first page: the first window ends 8 bytes early. */
  function skewed(windowsOf = 1) {
    const bytes = (IOVA_BITMAP_MAX_PAGES * windowsOf + 1) * PAGE_SIZE;
    const { kernel, libc, base } = setup(bytes + PAGE_SIZE);
    const data = base + 8n;
    const length = BigInt(bytes * 8) * ps;
    const firstBits = BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE * 8 - 64);
    return { kernel, libc, data, length, firstBits };
  }

  it("set-ahead moves the next window past the bytes it set (iova_bitmap_set_ahead)", () => {
    const { kernel, libc, data, length, firstBits } = skewed();
    let calls = 0;
    const windows = run(kernel, 0n, length, ps, data, (b, wIova, wLen) => {
      if (++calls === 1) b.set(wIova + wLen - 8n * ps, 24n * ps);
    });
    // 16 bits past the window: two bitmap bytes set ahead, the next window starts after them.
    const next = (firstBits + 16n) * ps;
    expect(windows).toEqual([
      [0n, firstBits * ps],
      [next, length - next],
    ]);
    const end = data + firstBits / 8n;
    expect(Array.from(libc.peek(end - 1n, 4))).toEqual([0xff, 0xff, 0xff, 0]);
  });

  it("a record ending one bit past the pinned pages sets that bit ahead; a later record in the window keeps it", () => {
    const { kernel, libc, data, length, firstBits } = skewed();
    let calls = 0;
    const windows = run(kernel, 0n, length, ps, data, (b, wIova, wLen) => {
      if (++calls !== 1) return;
      b.set(wIova + wLen - ps, 2n * ps);
      b.set(wIova, ps);
    });
    const next = (firstBits + 8n) * ps;
    expect(windows).toEqual([
      [0n, firstBits * ps],
      [next, length - next],
    ]);
    const end = data + firstBits / 8n;
    expect(Array.from(libc.peek(end - 1n, 3))).toEqual([0x80, 0x01, 0]);
    expect(libc.peek(data, 1)[0]).toBe(0x01);
  });

  it("a record wholly past the pinned pages is carried as its length, from the next window's start", () => {
    // iova_bitmap_set: the first bit is already past the last page, so `left` is the record's
    // own bits, and iova_bitmap_set_ahead sets that many from the next window's first bit.
    const { kernel, libc, data, length, firstBits } = skewed();
    let calls = 0;
    run(kernel, 0n, length, ps, data, (b, wIova, wLen) => {
      if (++calls === 1) b.set(wIova + wLen + 4n * ps, 8n * ps);
    });
    const end = data + firstBits / 8n;
    expect(Array.from(libc.peek(end - 1n, 3))).toEqual([0, 0xff, 0]);
  });

  it("set-ahead is done once: the window after the next sets nothing of it", () => {
    const { kernel, libc, data, length, firstBits } = skewed(2);
    let calls = 0;
    const windows = run(kernel, 0n, length, ps, data, (b, wIova, wLen) => {
      if (++calls === 1) b.set(wIova + wLen - 8n * ps, 24n * ps);
    });
    const second = (firstBits + 16n) * ps;
    const third = (firstBits + BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE * 8)) * ps;
    expect(windows).toEqual([
      [0n, firstBits * ps],
      [second, third - second],
      [third, length - third],
    ]);
    const thirdByte = data + (firstBits + BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE * 8)) / 8n;
    expect(Array.from(libc.peek(thirdByte, 4))).toEqual([0, 0, 0, 0]);
  });

  it("set-ahead from a page-aligned bitmap measures 0 bytes, marks the whole next window and ends the walk", () => {
    // iova_bitmap_set_ahead measures the window with nothing pinned: with pgoff 0
    // iova_bitmap_mapped_remaining is 0, so iova_bitmap_set gets a length of 0, its last bit
    // wraps (size_t) to past every pinned page, and offset_to_index(0 - 1) + 1 moves
    // mapped_base_index past the end of the bitmap.
    const bytes = (IOVA_BITMAP_MAX_PAGES + 1) * PAGE_SIZE;
    const { kernel, libc, base } = setup(bytes);
    const length = BigInt(bytes * 8) * ps;
    const windows = run(kernel, 0n, length, ps, base, (b, wIova, wLen) => {
      b.set(wIova + wLen - 8n * ps, 24n * ps);
    });
    const perWindow = BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE * 8) * ps;
    expect(windows).toEqual([[0n, perWindow]]);
    const boundary = base + BigInt(IOVA_BITMAP_MAX_PAGES * PAGE_SIZE);
    expect(Array.from(libc.peek(boundary - 2n, 2))).toEqual([0, 0xff]);
    expect(libc.peek(boundary, PAGE_SIZE).every((x) => x === 0xff)).toBe(true);
    expect(Array.from(libc.peek(boundary + BigInt(PAGE_SIZE), 1))).toEqual([0]);
  });
});
