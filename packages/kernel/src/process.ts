import { EPERM } from "./errno.js";
import { fail } from "./error.js";
import { FdTable } from "./file.js";
import type { MmStruct } from "./mm.js";

/** RLIMIT_* values used by the model (resource numbers as in asm-generic/resource.h). */
export const RLIMIT_NOFILE = 7;
export const RLIMIT_MEMLOCK = 8;
const RLIM_INFINITY = Number.MAX_SAFE_INTEGER;

/** The capabilities the DMA stack checks. */
export const CAP_SYS_ADMIN = 21;
export const CAP_IPC_LOCK = 14;
export const CAP_SYS_RAWIO = 17;
export const CAP_SYS_RESOURCE = 24;

/** struct user_struct: per-uid accounting shared by every process of the user. */
export class UserStruct {
  /** Pages charged against RLIMIT_MEMLOCK by pinning users (iommufd USER mode, vfio type1). */
  lockedVm = 0;
  constructor(readonly uid: number) {}
}

interface Cred {
  readonly uid: number;
  readonly user: UserStruct;
  /** The effective set: what `capable()` checks. */
  caps: Set<number>;
  /** The permitted set: the most `capset` may raise the effective set to. */
  permitted: Set<number>;
}
export { FdTable };

/** A process: its address space, descriptors, credentials and limits. */
export class Process {
  readonly files: FdTable;
  readonly rlimits = new Map<number, number>([
    [RLIMIT_NOFILE, 1024],
    [RLIMIT_MEMLOCK, 8 << 20],
  ]);
  exited = false;
  /** The wait status once exited (exit code << 8, as WEXITSTATUS reads it), until reaped. */
  exitStatus = 0;
  /** Children not yet reaped by waitpid. */
  readonly children = new Set<Process>();

  constructor(
    readonly pid: number,
    readonly cred: Cred,
    readonly mm: MmStruct,
    files?: FdTable,
  ) {
    this.files = files ?? new FdTable(this.rlimits.get(RLIMIT_NOFILE));
  }

  capable(cap: number): boolean {
    return this.cred.caps.has(cap);
  }

  /**
   * capset(2) on this process: EPERM when the new permitted set is not within the old one, or
   * the new effective set not within the new permitted one.
   * @see cap_capset
   */
  capset(effective: Iterable<number>, permitted: Iterable<number>): void {
    const eff = new Set(effective);
    const perm = new Set(permitted);
    for (const c of perm) if (!this.cred.permitted.has(c)) fail(EPERM, `cap ${c} not permitted`);
    for (const c of eff) if (!perm.has(c)) fail(EPERM, `effective cap ${c} not in permitted`);
    this.cred.caps = eff;
    this.cred.permitted = perm;
  }

  rlimit(resource: number): number {
    return this.rlimits.get(resource) ?? RLIM_INFINITY;
  }

  setRlimit(resource: number, value: number): void {
    this.rlimits.set(resource, value);
    if (resource === RLIMIT_NOFILE) this.files.maxFds = value;
  }
}
