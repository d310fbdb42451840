import { EBADF, EINVAL, ENOTTY } from "./errno.js";
import { KernelError, fail } from "./error.js";
import { FMODE_READ, FMODE_WRITE, O_CLOEXEC, type File, withDeferredFput } from "./file.js";
import type { Kernel, Task } from "./kernel.js";
import { isMemfd, memfdCheckArgs, memfdCreate, MFD_CLOEXEC, vfsTruncate } from "./memfd.js";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "./mm.js";
import { PAGE_SIZE } from "./physmem.js";
import type { Process } from "./process.js";
import { copyFromUser, copyToUser } from "./uaccess.js";

/**
 * The user-space side of one process: system calls with libc's conventions (a result >= 0,
 * or -1 with `errno` set), run with `kernel.current` switched to the process's task. Each
 * call does the kernel's checks in the kernel's order, and a failed call changes nothing.
 * At every return no lock may be held: lockdep checks the syscall boundary. Final fputs made
 * during a call release their files when it returns (task_work).
 */
export const MAP_FAILED = -1n;

export const F_DUPFD = 0;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_DUPFD_CLOEXEC = 1030;
export const FD_CLOEXEC = 1;

const ARENA_CHUNK = 1n << 20n;

export class Libc {
  /** errno of the last failed call (left alone by successful ones, as in C). */
  errno = 0;
  readonly task: Task;
  private arenaNext = 0n;
  private arenaEnd = 0n;
  private scratch = 0n;
  private scratchSize = 0;

  /** A facade for `process` (its first task is created), or for the current task. */
  constructor(
    readonly kernel: Kernel,
    process?: Process | Task,
  ) {
    if (process === undefined) this.task = kernel.current;
    else if ("process" in process) this.task = process;
    else this.task = kernel.newTask(process);
  }

  get process(): Process {
    return this.task.process;
  }

  get pid(): number {
    return this.process.pid;
  }

  /** Run `fn` as this task; a KernelError becomes `onError` with errno set. */
  private sys<T, E>(onError: E, fn: () => T): T | E {
    try {
      return this.kernel.runAs(this.task, () => {
        const r = withDeferredFput(fn);
        this.kernel.lockdep.assertNoneHeld();
        return r;
      });
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      this.kernel.lockdep.assertNoneHeld();
      this.errno = e.errno;
      return onError;
    }
  }

  /** Like `sys`, for calls that throw instead (memory access helpers, fork). */
  private raw<T>(fn: () => T): T {
    return this.kernel.runAs(this.task, fn);
  }

  private file(fd: number): File {
    return this.process.files.lookup(fd);
  }

  /** open(2) of a registered device node. EMFILE is checked before the path, as in the kernel. */
  open(path: string, flags: number): number {
    return this.sys(-1, () => {
      const files = this.process.files;
      files.peekUnused();
      return files.install(this.kernel.openDevice(path, flags), flags & O_CLOEXEC);
    });
  }

  close(fd: number): number {
    return this.sys(-1, () => {
      this.process.files.close(fd);
      return 0;
    });
  }

  dup(fd: number): number {
    return this.sys(-1, () => this.process.files.dup(fd));
  }

  /** fcntl for descriptor flags and duplication. */
  fcntl(fd: number, cmd: number, arg = 0): number {
    return this.sys(-1, () => {
      const files = this.process.files;
      switch (cmd) {
        case F_DUPFD:
          return files.dup(fd, arg);
        case F_DUPFD_CLOEXEC:
          return files.dup(fd, arg, O_CLOEXEC);
        case F_GETFD:
          return files.cloexec(fd) ? FD_CLOEXEC : 0;
        case F_SETFD:
          files.setCloexec(fd, (arg & FD_CLOEXEC) !== 0);
          return 0;
        case F_GETFL:
          return this.file(fd).fFlags;
        default:
          this.file(fd);
          return fail(EINVAL, `fcntl cmd ${cmd}`);
      }
    });
  }

  /**
   * ioctl(2). A Uint8Array argument is copied into a user buffer whose address is passed, and
   * copied back afterwards whatever the outcome (it is the caller's struct in memory); a number
   * or bigint is passed as the raw unsigned long. ENOTTY when the file has no ioctl.
   */
  ioctl(fd: number, request: number, arg: Uint8Array | bigint | number = 0n): number {
    return this.sys(-1, () => {
      const file = this.file(fd);
      if (!file.fops.ioctl) fail(ENOTTY, `${file.fops.name} has no ioctl`);
      if (!(arg instanceof Uint8Array)) {
        const raw = BigInt.asUintN(64, BigInt(arg));
        return this.ioctlResult(file.fops.ioctl(file, request >>> 0, raw));
      }
      const uaddr = this.scratchBuffer(arg.length);
      copyToUser(this.kernel, uaddr, arg);
      try {
        return this.ioctlResult(file.fops.ioctl(file, request >>> 0, uaddr));
      } finally {
        arg.set(copyFromUser(this.kernel, uaddr, arg.length));
      }
    });
  }

  private ioctlResult(ret: number): number {
    if (ret < 0) fail(-ret, "ioctl returned an error code");
    return ret;
  }

  /** A process-private buffer for ioctl structs, grown by mmap as needed. */
  private scratchBuffer(len: number): bigint {
    if (len > this.scratchSize) {
      const size = Math.max(PAGE_SIZE, Math.ceil(len / PAGE_SIZE) * PAGE_SIZE);
      this.scratch = this.process.mm.mmap({
        addr: 0n,
        len: BigInt(size),
        prot: PROT_READ | PROT_WRITE,
        flags: MAP_PRIVATE | MAP_ANONYMOUS,
      });
      this.scratchSize = size;
    }
    return this.scratch;
  }

  /** mmap(2): the address, or MAP_FAILED (-1n) with errno. */
  mmap(
    addr: bigint,
    length: bigint | number,
    prot: number,
    flags: number,
    fd: number,
    offset: bigint | number,
  ): bigint {
    return this.sys(MAP_FAILED, () => {
      const off = BigInt(offset);
      if (off & BigInt(PAGE_SIZE - 1)) fail(EINVAL, "offset not page aligned");
      const file = flags & MAP_ANONYMOUS ? undefined : this.file(fd);
      return this.process.mm.mmap({ addr, len: BigInt(length), prot, flags, file, offset: off });
    });
  }

  munmap(addr: bigint, length: bigint | number): number {
    return this.sys(-1, () => {
      this.process.mm.munmap(addr, BigInt(length));
      return 0;
    });
  }

  /** memfd_create(2): EINVAL for flags and name first, then EMFILE, then the file. */
  memfdCreate(name: string, flags: number): number {
    return this.sys(-1, () => {
      memfdCheckArgs(name, flags);
      const files = this.process.files;
      files.peekUnused();
      const file = memfdCreate(this.kernel, name, flags);
      return files.install(file, flags & MFD_CLOEXEC ? O_CLOEXEC : 0);
    });
  }

  /** ftruncate(2): EINVAL for a negative length, EBADF, then EINVAL unless a writable memfd. */
  ftruncate(fd: number, length: bigint | number): number {
    return this.sys(-1, () => {
      const len = BigInt(length);
      if (len < 0n) fail(EINVAL, "negative length");
      const file = this.file(fd);
      if (!isMemfd(file) || !(file.fMode & FMODE_WRITE)) fail(EINVAL, "not a writable memfd");
      vfsTruncate(file, len);
      return 0;
    });
  }

  /** pread(2) into `buf`: bytes read or -1. */
  pread(fd: number, buf: Uint8Array, offset: bigint | number): number {
    return this.sys(-1, () => {
      const file = this.file(fd);
      if (!(file.fMode & FMODE_READ)) fail(EBADF, "not open for reading");
      if (!file.fops.read) fail(EINVAL, `${file.fops.name} cannot be read`);
      const pos = BigInt(offset);
      if (pos < 0n) fail(EINVAL, "negative offset");
      const data = file.fops.read(file, buf.length, pos);
      buf.set(data.subarray(0, buf.length));
      return Math.min(data.length, buf.length);
    });
  }

  /** pwrite(2) of `data`: bytes written or -1. */
  pwrite(fd: number, data: Uint8Array, offset: bigint | number): number {
    return this.sys(-1, () => {
      const file = this.file(fd);
      if (!(file.fMode & FMODE_WRITE)) fail(EBADF, "not open for writing");
      if (!file.fops.write) fail(EINVAL, `${file.fops.name} cannot be written`);
      const pos = BigInt(offset);
      if (pos < 0n) fail(EINVAL, "negative offset");
      return file.fops.write(file, data, pos);
    });
  }

  /** setrlimit(2) on this process (one value for soft and hard). */
  setrlimit(resource: number, value: number): number {
    return this.sys(-1, () => {
      if (!Number.isInteger(value) || value < 0) fail(EINVAL, "bad rlimit");
      this.process.setRlimit(resource, value);
      return 0;
    });
  }

  /** fork(2): the child's facade. Throws the KernelError (errno set here too) on failure. */
  fork(): Libc {
    try {
      return new Libc(
        this.kernel,
        this.raw(() => this.kernel.fork(this.process)),
      );
    } catch (e) {
      if (e instanceof KernelError) this.errno = e.errno;
      throw e;
    }
  }

  /** exit(2): close every descriptor and unmap everything. */
  exit(): void {
    this.raw(() => this.kernel.exit(this.process));
  }

  /**
   * Anonymous read/write memory for buffers that ioctl structs point at, carved from 1 MiB
   * private mappings, 64-byte aligned. Throws ENOMEM when no mapping can be made.
   */
  malloc(len: number): bigint {
    const size = BigInt(Math.max(1, Math.ceil(len / 64) * 64));
    if (this.arenaNext + size > this.arenaEnd) {
      const chunk = size > ARENA_CHUNK ? (size + 0xfffn) & ~0xfffn : ARENA_CHUNK;
      const base = this.raw(() =>
        this.process.mm.mmap({
          addr: 0n,
          len: chunk,
          prot: PROT_READ | PROT_WRITE,
          flags: MAP_PRIVATE | MAP_ANONYMOUS,
        }),
      );
      this.arenaNext = base;
      this.arenaEnd = base + chunk;
    }
    const va = this.arenaNext;
    this.arenaNext += size;
    return va;
  }

  /** Read user memory like a CPU load; a fault throws KernelError(EFAULT). */
  peek(va: bigint, len: number): Uint8Array {
    return this.raw(() => copyFromUser(this.kernel, va, len));
  }

  /** Write user memory like a CPU store; a fault throws KernelError(EFAULT), nothing written. */
  poke(va: bigint, bytes: Uint8Array): void {
    this.raw(() => copyToUser(this.kernel, va, bytes));
  }
}
