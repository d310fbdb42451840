import { EFAULT, EINVAL, EOVERFLOW } from "./errno.js";
import { fail, isKernelError } from "./error.js";
import type { Kernel } from "./kernel.js";
import { type MmStruct, TASK_SIZE, type Vma } from "./mm.js";
import { VM_IO, VM_PFNMAP, VM_READ, VM_WRITE } from "./mm-flags.js";
import { PAGE_SHIFT } from "./physmem.js";
import type { PfnRuns } from "./pfn-runs.js";

/**
 * pin_user_pages: walk a user range VMA by VMA, faulting pages in, and take one FOLL_PIN per
 * page, collecting physically contiguous pages into runs so a huge folio costs one update.
 * Flag values are those of include/linux/mm_types.h and mm/internal.h.
 */
export const FOLL_WRITE = 1 << 0;
export const FOLL_GET = 1 << 1;
export const FOLL_LONGTERM = 1 << 8;
export const FOLL_PIN = 1 << 19;

/** check_vma_flags for a pin: EFAULT for PFNMAP/IO and for a missing permission. */
function checkVmaFlags(vma: Vma, gupFlags: number): void {
  if (vma.flags & (VM_IO | VM_PFNMAP)) fail(EFAULT, "pin of a VM_PFNMAP/VM_IO mapping");
  if (gupFlags & FOLL_WRITE) {
    if (!(vma.flags & VM_WRITE)) fail(EFAULT, "FOLL_WRITE on a read-only mapping");
  } else if (!(vma.flags & VM_READ)) fail(EFAULT, "pin of an unreadable mapping");
}

/**
 * pin_user_pages / pin_user_pages_remote on `mm`, taking its mmap_lock for read: pins up to `npages` pages from `start`
 * (rounded down to its page), appending their pfns to `out`. Returns the pages pinned: all of
 * them, or fewer when a later page cannot be pinned (like GUP). When the first page fails the
 * error is thrown — EFAULT for a hole, a PFNMAP mapping or a missing permission, ENOMEM when
 * no page could be allocated — and nothing is pinned.
 *
 * A write or long-term pin of a private mapping first makes the page exclusive (breaks COW):
 * for anonymous pages any pin of a shared page unshares it, and a long-term pin of a file
 * page in a private mapping copies it, so the pinned page stays the one the process sees.
 * @see pin_user_pages_remote
 */
export function pinUserPages(
  kernel: Kernel,
  mm: MmStruct,
  start: bigint,
  npages: number,
  gupFlags: number,
  out: PfnRuns,
): number {
  if (gupFlags & FOLL_GET) fail(EINVAL, "FOLL_GET with pin_user_pages");
  if (!Number.isInteger(npages) || npages < 0) fail(EINVAL, "bad page count");
  if (npages === 0) return 0;
  const first = start >> BigInt(PAGE_SHIFT);
  if (first < 0n) fail(EFAULT, "negative address");
  if ((first + BigInt(npages)) << BigInt(PAGE_SHIFT) > 1n << 64n) fail(EOVERFLOW, "range wraps");
  if ((first + BigInt(npages)) << BigInt(PAGE_SHIFT) > TASK_SIZE) fail(EFAULT, "beyond TASK_SIZE");
  const pinned = mm.mmapLock.withRead(() =>
    pinLocked(kernel, mm, Number(first), npages, gupFlags, out),
  );
  // Guarded: the record is built only when someone listens (this runs on every IOAS_MAP).
  if (kernel.trace.active) {
    kernel.trace.emit("gup:pin", { addr: start, npages, pinned, gupFlags, runs: out.length });
  }
  return pinned;
}

/** The walk of pinUserPages with mmap_lock held for read. @see __get_user_pages_locked */
function pinLocked(
  kernel: Kernel,
  mm: MmStruct,
  first: number,
  npages: number,
  gupFlags: number,
  out: PfnRuns,
): number {
  const mem = kernel.mem;
  const write = (gupFlags & FOLL_WRITE) !== 0;
  const longterm = (gupFlags & FOLL_LONGTERM) !== 0;
  const before = out.totalPages;
  let vpn = first;
  const end = vpn + npages;
  // The current run, pinned when it stops being contiguous.
  let runPfn = -1;
  let runLen = 0;
  const emit = (pfn: number, n: number): void => {
    if (runLen > 0 && runPfn + runLen === pfn) {
      runLen += n;
      return;
    }
    flush();
    runPfn = pfn;
    runLen = n;
  };
  const flush = (): void => {
    if (runLen === 0) return;
    mem.pinPages(runPfn, runLen);
    out.push(runPfn, runLen);
    runLen = 0;
  };
  try {
    while (vpn < end) {
      const vma = mm.findVma(vpn);
      if (!vma) fail(EFAULT, `no mapping at page ${vpn}`);
      checkVmaFlags(vma, gupFlags);
      const stop = Math.min(end, vma.end);
      if (vma.isCow && !vma.mapping && vma.order === 0) {
        vpn += mm.faultAnonRun(vpn, stop - vpn, emit);
        if (vpn >= stop) continue;
      }
      // One page or huge page per step: a shared mapping's file folio, or a private PTE. Unshare
      // for any pin of an anonymous page and for a long-term pin of a file page in a private
      // mapping.
      const unshare = vma.isCow && (longterm || !vma.mapping || mm.hasPrivatePte(vpn));
      const pfn = mm.faultIn(vma, vpn, write, unshare);
      const size = 2 ** vma.order;
      const n = Math.min(stop - vpn, size - ((vpn - vma.start) % size));
      emit(pfn, n);
      vpn += n;
    }
  } catch (e) {
    if (!isKernelError(e)) throw e;
    const pinnedNow = out.totalPages - before;
    if (pinnedNow + runLen === 0) throw e;
  }
  flush();
  return out.totalPages - before;
}

/** pin_user_pages_fast on the current task's mm. */
export function pinUserPagesFast(
  kernel: Kernel,
  start: bigint,
  npages: number,
  gupFlags: number,
  out: PfnRuns,
): number {
  return pinUserPages(kernel, kernel.current.process.mm, start, npages, gupFlags, out);
}

/**
 * unpin_user_pages_dirty_lock over runs. Decision: `dirty` is accepted and has no further
 * effect: contents live in memory, there is no writeback to schedule.
 */
export function unpinUserPageRuns(kernel: Kernel, runs: PfnRuns, _dirty: boolean): void {
  runs.forEach((pfn, n) => {
    kernel.mem.unpinPages(pfn, n);
  });
  if (kernel.trace.active) {
    kernel.trace.emit("gup:unpin", { npages: runs.totalPages, runs: runs.length });
  }
}
