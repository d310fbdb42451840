import { EBADF, EMFILE, EINVAL } from "./errno.js";
import { KernelError, KernelWarning, fail } from "./error.js";
import type { Kernel } from "./kernel.js";
import type { Vma } from "./mm.js";

export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_ACCMODE = 0o3;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECT = 0o40000;
export const O_NOATIME = 0o1000000;
export const O_CLOEXEC = 0o2000000;

/** lseek whence values. */
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

/** fmode_t bits derived from the access mode at open. */
export const FMODE_READ = 0x1;
export const FMODE_WRITE = 0x2;

/**
 * What a driver gives a file (struct file_operations). `ioctl` receives the raw
 * `unsigned long` argument: a user address for pointer arguments.
 */
export interface FileOperations {
  readonly name: string;
  /** The result, or -errno (`ioctlErrno`); a KernelError thrown out of it is an errno too. */
  ioctl?(file: File, cmd: number, arg: bigint): number;
  release?(file: File): void;
  llseek?(file: File, offset: bigint, whence: number): bigint;
  /**
   * Set up a new VMA over this file (checks and `vma.remapPfnRange` / `vma.ops` for a
   * driver's VM_PFNMAP mapping); throw an errno to refuse. Without it, mmap is ENODEV.
   */
  mmap?(file: File, vma: Vma): void;
  /** pread: up to `len` bytes at `pos`. */
  read?(file: File, len: number, pos: bigint): Uint8Array;
  /** pwrite: bytes written at `pos`. */
  write?(file: File, data: Uint8Array, pos: bigint): number;
  /** The POLL* events ready now; without it a file is always readable and writable. */
  poll?(file: File): number;
  /** read/write leave the position alone (the driver never advances *ppos). */
  readonly keepsPos?: boolean;
}

/**
 * How an ioctl dispatcher ends a call whose handler threw `e`, or how a handler returns an
 * errno it does not throw (iommufd's failed object lookups): -errno, as the kernel's file
 * operations return it, with `e` kept on the calling task for `Libc.lastError`. Anything but a
 * KernelError (a WARN, a bug) is thrown on.
 *
 * Decision: the ioctl dispatchers (iommufd's, the VFIO cdev's) return their errnos instead of
 * letting them unwind. V8 charges its tier-up budget when a call returns, not when an exception
 * unwinds the frame, and iommufd's dispatcher under a fuzzer's mix of calls (three in four end
 * in an errno) was never optimized: it ran interpreted, without type feedback, for the whole
 * process (PERFORMANCE.md, "Fuzzing throughput and campaigns").
 * @see vfs_ioctl
 */
export function ioctlErrno(kernel: Kernel, e: unknown): number {
  if (!(e instanceof KernelError)) throw e;
  kernel.current.returnedError = e;
  return -e.errno;
}

/**
 * struct file. The refcount is the file's lifetime: `release` runs on the last `put`, exactly
 * once. `private` is the driver's (private_data).
 */
export class File<P = unknown> {
  private refs = 1;
  fFlags: number;
  readonly fMode: number;
  /** Position for llseek. */
  fPos = 0n;

  constructor(
    readonly fops: FileOperations,
    public priv: P,
    flags = O_RDWR,
  ) {
    this.fFlags = flags;
    const acc = flags & O_ACCMODE;
    this.fMode =
      (acc === O_RDONLY || acc === O_RDWR ? FMODE_READ : 0) |
      (acc === O_WRONLY || acc === O_RDWR ? FMODE_WRITE : 0);
  }

  get refcount(): number {
    return this.refs;
  }

  get released(): boolean {
    return this.refs === 0;
  }

  /** get_file */
  get(): this {
    if (this.refs === 0) throw new KernelWarning(`get_file on released ${this.fops.name} file`);
    this.refs++;
    return this;
  }

  /** fput: the last put releases the file, at once or at the end of the current syscall. */
  put(): void {
    if (this.refs === 0) throw new KernelWarning(`fput on released ${this.fops.name} file`);
    if (--this.refs !== 0) return;
    if (taskWork === undefined) this.fops.release?.(this);
    else (taskWork ??= []).push(this);
  }
}

/**
 * Files whose last reference went during the running syscall (task_work): undefined outside a
 * syscall, null inside one until the first final fput (most calls queue none).
 */
let taskWork: File[] | null | undefined;

/** What `taskWorkEnter` hands back for `taskWorkRun`: the enclosing call's queue. */
export type TaskWorkState = File[] | null | undefined;

/**
 * Start deferring final fputs to the end of a system call body, as the kernel queues them as
 * task_work for the return to user space: a driver's release never runs inside the locks of
 * whoever dropped the last reference. Pair with `taskWorkRun`.
 */
export function taskWorkEnter(): TaskWorkState {
  const outer = taskWork;
  taskWork = null;
  return outer;
}

/**
 * task_work_run: restore the enclosing queue, then release the files this body queued, in the
 * order their references went.
 * @see task_work_run
 */
export function taskWorkRun(outer: TaskWorkState): void {
  const work = taskWork;
  taskWork = outer;
  if (work) for (const f of work) f.fops.release?.(f);
}

/** Run a system call body with final fputs deferred to its end (`taskWorkEnter` / `taskWorkRun`). */
export function withDeferredFput<T>(fn: () => T): T {
  const outer = taskWorkEnter();
  try {
    return fn();
  } finally {
    taskWorkRun(outer);
  }
}

interface FdEntry {
  readonly file: File;
  cloexec: boolean;
}

/** files_struct: the lowest free descriptor is used, up to RLIMIT_NOFILE. */
export class FdTable {
  private readonly fds: Array<FdEntry | undefined> = [];

  constructor(public maxFds = 1024) {}

  /** get_unused_fd_flags + fd_install in one step; takes over the caller's reference. */
  install(file: File, flags = 0): number {
    let fd = this.fds.indexOf(undefined);
    if (fd < 0) fd = this.fds.length;
    if (fd >= this.maxFds) fail(EMFILE, "fd table full");
    this.fds[fd] = { file, cloexec: (flags & O_CLOEXEC) !== 0 };
    return fd;
  }

  /** The lowest descriptor install() would use, or EMFILE; reserves nothing. */
  peekUnused(): number {
    let fd = this.fds.indexOf(undefined);
    if (fd < 0) fd = this.fds.length;
    if (fd >= this.maxFds) fail(EMFILE, "fd table full");
    return fd;
  }

  /** fget: a new reference on the file behind `fd`, or EBADF. */
  fget(fd: number): File {
    return this.lookup(fd).get();
  }

  /** The file behind `fd` without taking a reference (fdget without fdput), or EBADF. */
  lookup(fd: number): File {
    const e = Number.isInteger(fd) && fd >= 0 ? this.fds[fd] : undefined;
    if (!e) fail(EBADF, `fd ${fd}`);
    return e.file;
  }

  isOpen(fd: number): boolean {
    return Number.isInteger(fd) && fd >= 0 && this.fds[fd] !== undefined;
  }

  cloexec(fd: number): boolean {
    this.lookup(fd);
    return this.fds[fd]!.cloexec;
  }

  /** fcntl(F_SETFD, FD_CLOEXEC) */
  setCloexec(fd: number, on: boolean): void {
    this.lookup(fd);
    this.fds[fd]!.cloexec = on;
  }

  close(fd: number): void {
    const file = this.lookup(fd);
    this.fds[fd] = undefined;
    file.put();
  }

  /** dup / fcntl(F_DUPFD*) with `minFd`. */
  dup(fd: number, minFd = 0, flags = 0): number {
    const file = this.lookup(fd);
    if (!Number.isInteger(minFd) || minFd < 0) fail(EINVAL);
    let n = minFd;
    while (this.fds[n] !== undefined) n++;
    if (n >= this.maxFds) fail(EMFILE);
    this.fds[n] = { file: file.get(), cloexec: (flags & O_CLOEXEC) !== 0 };
    return n;
  }

  /** A copy sharing every file (fork). */
  clone(): FdTable {
    const t = new FdTable(this.maxFds);
    this.fds.forEach((e, fd) => {
      if (e) t.fds[fd] = { file: e.file.get(), cloexec: e.cloexec };
    });
    return t;
  }

  /** Close every descriptor (exit), or only the O_CLOEXEC ones (exec). */
  closeAll(onlyCloexec = false): void {
    this.fds.forEach((e, fd) => {
      if (e && (!onlyCloexec || e.cloexec)) this.close(fd);
    });
  }

  get openCount(): number {
    return this.fds.reduce((n, e) => n + (e ? 1 : 0), 0);
  }

  *entries(): IterableIterator<[number, File]> {
    for (let fd = 0; fd < this.fds.length; fd++) {
      const e = this.fds[fd];
      if (e) yield [fd, e.file];
    }
  }
}
