import { E2BIG, EFAULT, ENOMEM } from "./errno.js";
import { fail, isKernelError } from "./error.js";
import type { Kernel } from "./kernel.js";
import type { MmStruct } from "./mm.js";
import { PAGE_SHIFT, PAGE_SIZE } from "./physmem.js";

/**
 * copy_from_user / copy_to_user against the current task's address space. As on hardware, pages
 * whose PTEs are present (and, for a write, private and writable) are reached without
 * mmap_lock; only a copy that misses takes it and faults its pages, with `might_fault`'s lockdep
 * check of mmap_lock made on every copy either way. Every page is resolved before the first
 * byte moves, so a copy that would fault part-way is EFAULT with nothing copied.
 */

const SHIFT = BigInt(PAGE_SHIFT);

/**
 * The pfns of the copy in progress, reused from copy to copy. Safe to share: between filling it
 * and the last byte moved no lock boundary passes, so no other path can run in between.
 */
let pfns = new Float64Array(8);

/** Resolve the pages of a copy into `pfns[0..n)` and return n. */
function userPages(mm: MmStruct, uaddr: bigint, len: number, write: boolean): number {
  if (uaddr < 0n) fail(EFAULT, "negative user address");
  if (len === 0) return 0;
  const first = Number(uaddr >> SHIFT);
  const n = Number((uaddr + BigInt(len) - 1n) >> SHIFT) - first + 1;
  if (pfns.length < n) pfns = new Float64Array(Math.max(n, pfns.length * 2));
  mm.mmapLock.lockdep.mightLock(mm.mmapLock);
  let i = 0;
  while (i < n && (pfns[i] = mm.presentPfn(first + i, write)) >= 0) i++;
  if (i === n) return n;
  // A miss: fault every page under mmap_lock. Other paths may run at its release, so the
  // result is kept aside until the lock is dropped.
  const faulted: number[] = [];
  try {
    mm.mmapLock.withRead(() => {
      for (let vpn = first; vpn < first + n; vpn++) faulted.push(mm.fault(vpn, write, false));
    });
  } catch (e) {
    if (isKernelError(e)) fail(EFAULT, `user access: ${e.message}`, { uaddr, len });
    throw e;
  }
  pfns.set(faulted);
  return n;
}

/** Walk the `n` resolved pages of a copy: (pfn, offset in the page, position in the buffer, length). */
function eachChunk(
  n: number,
  uaddr: bigint,
  len: number,
  fn: (pfn: number, off: number, pos: number, count: number) => void,
): void {
  let pos = 0;
  let off = Number(uaddr & BigInt(PAGE_SIZE - 1));
  for (let i = 0; i < n; i++) {
    const count = Math.min(PAGE_SIZE - off, len - pos);
    fn(pfns[i]!, off, pos, count);
    pos += count;
    off = 0;
  }
}

/** copy_from_user on `mm` (the current task's by default). EFAULT on any unmapped byte. */
export function copyFromUser(
  kernel: Kernel,
  uaddr: bigint,
  len: number,
  mm: MmStruct = kernel.current.process.mm,
): Uint8Array {
  const out = new Uint8Array(len);
  const n = userPages(mm, uaddr, len, false);
  eachChunk(n, uaddr, len, (pfn, off, pos, count) => kernel.mem.readPfn(pfn, off, out, pos, count));
  return out;
}

/**
 * copy_struct_from_user: a `ksize`-byte kernel struct from a `usize`-byte user one. A shorter
 * user struct is zero-extended; a longer one must be zero past `ksize` (E2BIG, EFAULT when
 * that tail is unreadable), checked before the copy.
 */
export function copyStructFromUser(
  kernel: Kernel,
  ksize: number,
  uaddr: bigint,
  usize: number,
): Uint8Array {
  const size = Math.min(ksize, usize);
  if (usize > ksize) {
    const tail = copyFromUser(kernel, uaddr + BigInt(ksize), usize - ksize);
    if (tail.some((b) => b !== 0)) fail(E2BIG, "non-zero bytes past the kernel struct");
  }
  const out = new Uint8Array(ksize);
  out.set(copyFromUser(kernel, uaddr, size));
  return out;
}

/** The largest kmalloc on x86-64 (order MAX_PAGE_ORDER = 10 pages of 4 KiB). */
const KMALLOC_MAX_SIZE = 4 << 20;

/**
 * memdup_array_user: one kmalloc of n × size bytes filled from user memory. An injected
 * failure or an array larger than one kmalloc is ENOMEM before any user memory is read.
 */
export function memdupArrayUser(
  kernel: Kernel,
  uaddr: bigint,
  n: number,
  size: number,
): Uint8Array {
  if (kernel.shouldFail("memdup_array_user")) fail(ENOMEM, "memdup_array_user");
  if (n * size > KMALLOC_MAX_SIZE) fail(ENOMEM, `memdup_array_user of ${n} x ${size} bytes`);
  return copyFromUser(kernel, uaddr, n * size);
}

/** copy_to_user on `mm` (the current task's by default). EFAULT with nothing written. */
export function copyToUser(
  kernel: Kernel,
  uaddr: bigint,
  data: Uint8Array,
  mm: MmStruct = kernel.current.process.mm,
): void {
  const n = userPages(mm, uaddr, data.length, true);
  eachChunk(n, uaddr, data.length, (pfn, off, pos, count) =>
    kernel.mem.writePfn(pfn, off, data, pos, count),
  );
}
