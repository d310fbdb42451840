/**
 * Pinned-memory accounting of iopt_pages (the iommufd RLIMIT_MEMLOCK rules).
 *
 * Modes: NONE (CAP_IPC_LOCK, and always for DMABUF), USER (charge user_struct.locked_vm of the
 * mapping user against RLIMIT_MEMLOCK, iommufd's default) and MM (charge mm.locked_vm like VFIO
 * type1, chosen by IOMMU_OPTION_RLIMIT_MODE). Every mode also keeps mm.pinned_vm. Pages charge
 * the difference `npinned - lastNpinned` at the end of each reader lifetime; a refused charge
 * is ENOMEM and the caller unwinds the pins it made.
 */
import {
  type Kernel,
  type MmStruct,
  type Process,
  type UserStruct,
  accountLockedVmLocked,
  decrUserLockedVm,
  incrUserLockedVm,
  updatePinnedVm,
} from "@x/kernel";

export const IOPT_PAGES_ACCOUNT_NONE = 0;
export const IOPT_PAGES_ACCOUNT_USER = 1;
export const IOPT_PAGES_ACCOUNT_MM = 2;
export type IoptPagesAccountMode =
  | typeof IOPT_PAGES_ACCOUNT_NONE
  | typeof IOPT_PAGES_ACCOUNT_USER
  | typeof IOPT_PAGES_ACCOUNT_MM;

/** Who pays for a pages object: captured at creation from the mapping task. */
export interface AccountingSource {
  readonly accountMode: IoptPagesAccountMode;
  readonly sourceProcess: Process;
  readonly sourceUser: UserStruct;
  readonly sourceMm: MmStruct;
}

/**
 * Charge (`inc`) or return `npages` under the source's account mode, then mm.pinned_vm.
 * Throws ENOMEM, changing nothing, when the limit refuses.
 * @see iopt_pages_update_pinned
 */
export function updatePinnedAccounting(src: AccountingSource, npages: number, inc: boolean): void {
  switch (src.accountMode) {
    case IOPT_PAGES_ACCOUNT_NONE:
      break;
    case IOPT_PAGES_ACCOUNT_USER:
      if (inc) incrUserLockedVm(src.sourceUser, src.sourceProcess, npages);
      else decrUserLockedVm(src.sourceUser, npages);
      break;
    case IOPT_PAGES_ACCOUNT_MM: {
      // No CAP_IPC_LOCK bypass here: such creators got mode NONE. @see update_mm_locked_vm
      const mm = src.sourceMm;
      mm.mmapLock.withWrite(() => accountLockedVmLocked(mm, npages, inc, src.sourceProcess, false));
      break;
    }
  }
  updatePinnedVm(src.sourceMm, npages, inc);
}

/** A charge is an injectable failure point (iommufd_should_fail in pfn_reader_update_pinned). */
export function accountingShouldFail(kernel: Kernel): boolean {
  return kernel.shouldFail("iommufd:update_pinned");
}

/** The accounting source `process` would be for pages of `accountMode` (IOAS_CHANGE_PROCESS). */
export function accountingSourceOf(
  process: Process,
  accountMode: IoptPagesAccountMode,
): AccountingSource {
  return {
    accountMode,
    sourceProcess: process,
    sourceUser: process.cred.user,
    sourceMm: process.mm,
  };
}
