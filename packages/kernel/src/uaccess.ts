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
const PAGE_MASK = BigInt(PAGE_SIZE - 1);

/**
 * The pfns of the copy in progress and its offset into the first page, reused from copy to
 * copy. Safe to share: between filling them and the last byte moved no lock boundary passes, so
 * no other path can run in between.
 */
let pfns = new Float64Array(8);
let firstOff = 0;

/**
 * Resolve the pages of a copy of `len` bytes at `uaddr` into `pfns[0..n)` (and `firstOff`) and
 * return n.
 */
function userPages(mm: MmStruct, uaddr: bigint, len: number, write: boolean): number {
  if (uaddr < 0n) fail(EFAULT, "negative user address");
  if (len === 0) return 0;
  // In numbers where exact (every address below TASK_SIZE is): bigint arithmetic allocates.
  const a = Number(uaddr);
  let first: number;
  let off: number;
  if (a <= Number.MAX_SAFE_INTEGER) {
    first = Math.floor(a / PAGE_SIZE);
    off = a - first * PAGE_SIZE;
  } else {
    first = Number(uaddr >> SHIFT);
    off = Number(uaddr & PAGE_MASK);
  }
  const n = Math.floor((off + len - 1) / PAGE_SIZE) + 1;
  if (pfns.length < n) pfns = new Float64Array(Math.max(n, pfns.length * 2));
  mm.mmapLock.lockdep.mightLock(mm.mmapLock);
  let i = 0;
  // Set after might_lock's boundaries, where other paths (and their copies) may run.
  firstOff = off;
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
  firstOff = off;
  return n;
}

/**
 * Move `len` bytes between the `n` resolved pages of a copy (from `firstOff` in the first) and
 * `buf` (from `pos`): out of user memory into `buf` for a read, the other way for a write.
 */
function moveChunks(
  kernel: Kernel,
  n: number,
  buf: Uint8Array,
  pos: number,
  len: number,
  write: boolean,
): void {
  const end = pos + len;
  let off = firstOff;
  for (let i = 0; i < n; i++) {
    const count = Math.min(PAGE_SIZE - off, end - pos);
    if (write) kernel.mem.writePfn(pfns[i]!, off, buf, pos, count);
    else kernel.mem.readPfn(pfns[i]!, off, buf, pos, count);
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
  copyFromUserInto(kernel, out, 0, uaddr, len, mm);
  return out;
}

/**
 * copy_from_user into an existing kernel buffer: `len` bytes at `uaddr` to `to[at..)`. EFAULT
 * with nothing copied when any byte is unmapped.
 */
export function copyFromUserInto(
  kernel: Kernel,
  to: Uint8Array,
  at: number,
  uaddr: bigint,
  len: number,
  mm: MmStruct = kernel.current.process.mm,
): void {
  const n = userPages(mm, uaddr, len, false);
  moveChunks(kernel, n, to, at, len, false);
}

/**
 * copy_struct_from_user: a `ksize`-byte kernel struct from a `usize`-byte user one, in `dst`
 * (its first `ksize` bytes; a new buffer by default). A shorter user struct is zero-extended; a
 * longer one must be zero past `ksize` (E2BIG, EFAULT when that tail is unreadable), checked
 * before the copy. On failure `dst` is left as it was.
 */
export function copyStructFromUser(
  kernel: Kernel,
  ksize: number,
  uaddr: bigint,
  usize: number,
  dst?: Uint8Array,
): Uint8Array {
  const size = Math.min(ksize, usize);
  if (usize > ksize) {
    const tail = copyFromUser(kernel, uaddr + BigInt(ksize), usize - ksize);
    for (let i = 0; i < tail.length; i++)
      if (tail[i] !== 0) fail(E2BIG, "non-zero bytes past the kernel struct");
  }
  const out = dst ?? new Uint8Array(ksize);
  copyFromUserInto(kernel, out, 0, uaddr, size);
  if (dst) out.fill(0, size, ksize);
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
  moveChunks(kernel, n, data, 0, data.length, true);
}
