import { ENOMEM } from "./errno.js";
import { KernelWarning, fail } from "./error.js";
import type { Kernel } from "./kernel.js";
import type { MmStruct } from "./mm.js";
import { PAGE_SIZE } from "./physmem.js";
import { CAP_IPC_LOCK, type Process, RLIMIT_MEMLOCK, type UserStruct } from "./process.js";

/**
 * Pinned-memory accounting primitives, the ones iommufd and vfio build their modes from:
 *
 * - per user (`user->locked_vm`, iommufd's default USER mode): `incrUserLockedVm` charges
 *   against the RLIMIT_MEMLOCK of the process that created the pages, `decrUserLockedVm`
 *   returns the charge. No capability check here: callers choose "no accounting" up front
 *   when the creator has CAP_IPC_LOCK.
 * - per mm (`mm->locked_vm`, VFIO-compatible MM mode): `accountLockedVm` takes mmap_lock for
 *   write and charges unless the current task has CAP_IPC_LOCK; `accountLockedVmLocked`
 *   is the variant for callers already holding it with an explicit bypass.
 * - `mm->pinned_vm` (VmPin), which iommufd keeps in step in every mode: `updatePinnedVm`.
 *
 * Every charge either fits under the limit and is applied, or is ENOMEM and changes nothing.
 */

/** RLIMIT_MEMLOCK of `process` in pages. */
export function memlockLimitPages(process: Process): number {
  return Math.floor(process.rlimit(RLIMIT_MEMLOCK) / PAGE_SIZE);
}

/** Charge `npages` to `user` against `process`'s RLIMIT_MEMLOCK; ENOMEM past it. @see incr_user_locked_vm */
export function incrUserLockedVm(user: UserStruct, process: Process, npages: number): void {
  if (user.lockedVm + npages > memlockLimitPages(process))
    fail(ENOMEM, `locked_vm ${user.lockedVm} + ${npages} pages exceeds RLIMIT_MEMLOCK`);
  user.lockedVm += npages;
}

/** Return a charge taken by incrUserLockedVm; more than was charged is a WARN. @see decr_user_locked_vm */
export function decrUserLockedVm(user: UserStruct, npages: number): void {
  if (user.lockedVm < npages)
    throw new KernelWarning(`user ${user.uid} locked_vm ${user.lockedVm} < ${npages}`);
  user.lockedVm -= npages;
}

/**
 * Charge or uncharge `mm->locked_vm` with mmap_lock already held for write: ENOMEM when the
 * new total passes `process`'s RLIMIT_MEMLOCK unless `bypassRlim`. @see __account_locked_vm
 */
export function accountLockedVmLocked(
  mm: MmStruct,
  npages: number,
  inc: boolean,
  process: Process,
  bypassRlim: boolean,
): void {
  mm.mmapLock.assertHeldWrite();
  if (inc) {
    if (!bypassRlim && mm.lockedVm + npages > memlockLimitPages(process))
      fail(ENOMEM, `mm locked_vm ${mm.lockedVm} + ${npages} pages exceeds RLIMIT_MEMLOCK`);
    mm.lockedVm += npages;
    return;
  }
  if (npages > mm.lockedVm)
    throw new KernelWarning(`mm locked_vm ${mm.lockedVm} < ${npages} being uncharged`);
  mm.lockedVm -= npages;
}

/**
 * account_locked_vm: take mmap_lock for write and charge/uncharge `mm->locked_vm`, the limit
 * bypassed when `process` (default: the current task's) has CAP_IPC_LOCK.
 */
export function accountLockedVm(
  kernel: Kernel,
  mm: MmStruct,
  npages: number,
  inc: boolean,
  process: Process = kernel.current.process,
): void {
  if (npages === 0) return;
  mm.mmapLock.withWrite(() =>
    accountLockedVmLocked(mm, npages, inc, process, process.capable(CAP_IPC_LOCK)),
  );
}

/** atomic64_add/sub on `mm->pinned_vm`; going below zero is a WARN. */
export function updatePinnedVm(mm: MmStruct, npages: number, inc: boolean): void {
  if (!inc && npages > mm.pinnedVm)
    throw new KernelWarning(`mm pinned_vm ${mm.pinnedVm} < ${npages} being uncharged`);
  mm.pinnedVm += inc ? npages : -npages;
}
