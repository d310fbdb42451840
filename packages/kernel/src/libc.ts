import { EBADF, ECHILD, EFAULT, EINVAL, ENOTTY } from "./errno.js";
import { KernelError, fail } from "./error.js";
import {
  EFD_CLOEXEC,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  TaskWouldSleepForever,
  eventfdCheckFlags,
  eventfdFileCreate,
} from "./eventfd.js";
import { F_ADD_SEALS, F_GET_SEALS, F_SETFL } from "./fcntl.js";
import {
  FMODE_READ,
  FMODE_WRITE,
  O_APPEND,
  O_CLOEXEC,
  O_DIRECT,
  O_NOATIME,
  O_NONBLOCK,
  type File,
  taskWorkEnter,
  taskWorkRun,
} from "./file.js";
import type { Kernel, Task } from "./kernel.js";
import { isMemfd, memfdCheckArgs, memfdCreate, MFD_CLOEXEC, vfsTruncate } from "./memfd.js";
import { memfdFcntl } from "./memfd-seals.js";
import { createPipeFiles, pipe2CheckFlags } from "./pipe.js";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, TASK_SIZE } from "./mm.js";
import { PAGE_SIZE } from "./physmem.js";
import type { Process } from "./process.js";
import { copyFromUser, copyFromUserInto, copyToUser } from "./uaccess.js";

/** access_ok: the range lies below TASK_SIZE, else EFAULT. */
function accessOk(addr: bigint, len: number): void {
  if (addr < 0n || addr > TASK_SIZE || BigInt(len) > TASK_SIZE - addr) fail(EFAULT, "access_ok");
}

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

/** Signal numbers (include/uapi/asm-generic/signal.h). */
export const SIGABRT = 6;

const ARENA_CHUNK = 1n << 20n;

/** The f_flags F_SETFL may change (fs/fcntl.c SETFL_MASK). */
const SETFL_MASK = O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME;
/** What poll reports for a file without a poll method (DEFAULT_POLLMASK). */
const DEFAULT_POLLMASK = POLLIN | POLLOUT | 0x40 | 0x100;

/** struct pollfd; `revents` is written by `Libc.poll`. */
export interface PollFd {
  fd: number;
  events: number;
  revents: number;
}

export class Libc {
  /** errno of the last failed call (left alone by successful ones, as in C). */
  errno = 0;
  /**
   * The KernelError that set `errno`: the kernel's reason and the values behind it, which C
   * does not have. Typed clients rethrow it rather than build a second error per failing call.
   */
  lastError: KernelError | undefined;
  readonly task: Task;
  private arenaNext = 0n;
  private arenaEnd = 0n;
  /** Size of each block `malloc` handed out and `free` has not taken back. */
  private readonly mallocLive = new Map<bigint, bigint>();
  /** Freed blocks by size, reused first-fit by size before the arena grows. */
  private readonly mallocFree = new Map<bigint, bigint[]>();
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

  /**
   * Run `fn` as this task with final fputs deferred to its end (task_work), then check that no
   * lock is held; a KernelError becomes `onError` with errno set. `after`, when given, runs
   * once `fn` has returned or thrown, like a `finally` of its body: an error it throws replaces
   * `fn`'s. The steps are those of `runAs` around `withDeferredFput`, written out in one frame
   * with the errors held as values: a failing call (common under fuzzing and fault injection)
   * would otherwise pay one rethrow per layer.
   */
  private sys<T, E>(onError: E, fn: () => T, after?: () => void): T | E {
    const kernel = this.kernel;
    const prev = kernel.current;
    kernel.current = this.task;
    const outer = taskWorkEnter();
    let ok = true;
    let ret: T | undefined;
    let error: unknown;
    try {
      ret = fn();
    } catch (e) {
      ok = false;
      error = e;
    }
    try {
      after?.();
    } catch (e) {
      ok = false;
      error = e;
    }
    try {
      taskWorkRun(outer);
      // lockdep_sys_exit: a failed call returns to user space too, so it is checked as well,
      // as this task; a WARN or a lockdep report already on its way out goes first.
      if (ok || error instanceof KernelError) kernel.lockdep.assertNoneHeld();
    } catch (e) {
      ok = false;
      error = e;
    }
    kernel.current = prev;
    if (ok) return ret as T;
    if (!(error instanceof KernelError)) throw error;
    this.failed(error);
    return onError;
  }

  /** A call ended in `error`: its errno is `errno`, and it is `lastError`. */
  private failed(error: KernelError): void {
    this.errno = error.errno;
    this.lastError = error;
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

  /**
   * fcntl(2): descriptor flags, duplication, file status flags and memfd seals. EBADF first,
   * then the command's own checks; an unknown command is EINVAL.
   * Decision: no file of the model supports O_DIRECT, so F_SETFL with it is EINVAL.
   */
  fcntl(fd: number, cmd: number, arg = 0): number {
    return this.sys(-1, () => {
      const files = this.process.files;
      switch (cmd) {
        case F_DUPFD:
        case F_DUPFD_CLOEXEC:
          this.file(fd);
          // f_dupfd: the unsigned long argument against RLIMIT_NOFILE.
          if (arg < 0 || arg >= files.maxFds) fail(EINVAL, "F_DUPFD beyond RLIMIT_NOFILE");
          return files.dup(fd, arg, cmd === F_DUPFD_CLOEXEC ? O_CLOEXEC : 0);
        case F_GETFD:
          return files.cloexec(fd) ? FD_CLOEXEC : 0;
        case F_SETFD:
          files.setCloexec(fd, (arg & FD_CLOEXEC) !== 0);
          return 0;
        case F_GETFL:
          return this.file(fd).fFlags;
        case F_SETFL: {
          const file = this.file(fd);
          if (arg & O_DIRECT) fail(EINVAL, `${file.fops.name} cannot do O_DIRECT`);
          file.fFlags = (arg & SETFL_MASK) | (file.fFlags & ~SETFL_MASK);
          return 0;
        }
        case F_ADD_SEALS:
        case F_GET_SEALS:
          return memfdFcntl(this.file(fd), cmd, arg);
        default:
          this.file(fd);
          return fail(EINVAL, `fcntl cmd ${cmd}`);
      }
    });
  }

  /**
   * ioctl(2). A Uint8Array argument is copied into a user buffer whose address is passed, and
   * copied back afterwards whatever the outcome (it is the caller's struct in memory); a number
   * or bigint is passed as the raw unsigned long. ENOTTY when the file has no ioctl. A driver's
   * -errno return is an errno like a thrown KernelError; `lastError` is the error `ioctlErrno`
   * kept for it, or else one made here.
   */
  ioctl(fd: number, request: number, arg: Uint8Array | bigint | number = 0n): number {
    // Set once the struct is in user memory: from then on it is copied back whatever happens.
    let uaddr = -1n;
    // Only an error kept during this call explains its -errno: drop one left from before.
    takeReturnedError(this.task);
    const ret = this.sys(
      null,
      () => {
        const file = this.file(fd);
        if (!file.fops.ioctl) fail(ENOTTY, `${file.fops.name} has no ioctl`);
        if (!(arg instanceof Uint8Array)) {
          const raw = BigInt.asUintN(64, BigInt(arg));
          return file.fops.ioctl(file, request >>> 0, raw);
        }
        const buf = this.scratchBuffer(arg.length);
        copyToUser(this.kernel, buf, arg);
        uaddr = buf;
        return file.fops.ioctl(file, request >>> 0, uaddr);
      },
      () => {
        if (uaddr < 0n) return;
        const buf = arg as Uint8Array;
        copyFromUserInto(this.kernel, buf, 0, uaddr, buf.length);
      },
    );
    const returned = takeReturnedError(this.task);
    if (ret === null) return -1;
    if (ret >= 0) return ret;
    // The driver's -errno, explained by the error it kept, if any.
    this.failed(
      returned?.errno === -ret ? returned : new KernelError(-ret, "ioctl returned an error code"),
    );
    return -1;
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

  /** eventfd2(2): EINVAL for unknown flags, then EMFILE, then the file. */
  eventfd(initval: number, flags: number): number {
    return this.sys(-1, () => {
      eventfdCheckFlags(flags);
      const files = this.process.files;
      files.peekUnused();
      const file = eventfdFileCreate(this.kernel, initval, flags);
      return files.install(file, flags & EFD_CLOEXEC);
    });
  }

  /**
   * read(2) at the file position, into `buf`: a Uint8Array, or a user address with `count`
   * (EFAULT past TASK_SIZE before the file is asked; a fault copying out comes after the
   * file gave its data, as in the kernel). Bytes read or -1.
   */
  read(
    fd: number,
    buf: Uint8Array | bigint,
    count = buf instanceof Uint8Array ? buf.length : 0,
  ): number {
    return this.sys(-1, () => {
      const file = this.file(fd);
      if (!(file.fMode & FMODE_READ)) fail(EBADF, "not open for reading");
      if (!file.fops.read) fail(EINVAL, `${file.fops.name} cannot be read`);
      if (typeof buf === "bigint") accessOk(buf, count);
      const data = file.fops.read(file, count, file.fPos).subarray(0, count);
      if (typeof buf === "bigint") copyToUser(this.kernel, buf, data);
      else buf.set(data);
      if (!file.fops.keepsPos) file.fPos += BigInt(data.length);
      return data.length;
    });
  }

  /**
   * write(2) at the file position, of `data`: a Uint8Array, or a user address with `count`
   * whose bytes are copied in first (EFAULT). Bytes written or -1.
   * Decision: the whole user buffer is copied before the file sees it, so a fault inside the
   * buffer is EFAULT even where a file would have used fewer bytes.
   */
  write(
    fd: number,
    data: Uint8Array | bigint,
    count = data instanceof Uint8Array ? data.length : 0,
  ): number {
    return this.sys(-1, () => {
      const file = this.file(fd);
      if (!(file.fMode & FMODE_WRITE)) fail(EBADF, "not open for writing");
      if (!file.fops.write) fail(EINVAL, `${file.fops.name} cannot be written`);
      let bytes: Uint8Array;
      if (typeof data === "bigint") {
        accessOk(data, count);
        bytes = copyFromUser(this.kernel, data, count);
      } else bytes = data.subarray(0, count);
      const n = file.fops.write(file, bytes, file.fPos);
      if (!file.fops.keepsPos) file.fPos += BigInt(n);
      return n;
    });
  }

  /**
   * poll(2) over `fds`, setting each `revents`: POLLNVAL for a closed descriptor, nothing for
   * a negative one, else the file's ready events within `events` | POLLERR | POLLHUP. Returns
   * how many have events. With none ready a positive timeout expires (nothing can change
   * while this task waits, the model having no other runnable work) and returns 0; a negative
   * one throws TaskWouldSleepForever. EINVAL for more entries than RLIMIT_NOFILE.
   */
  poll(fds: PollFd[], timeoutMs: number): number {
    return this.sys(-1, () => {
      if (fds.length > this.process.files.maxFds) fail(EINVAL, "nfds beyond RLIMIT_NOFILE");
      let ready = 0;
      for (const p of fds) {
        p.revents = 0;
        if (p.fd < 0) continue;
        if (!this.process.files.isOpen(p.fd)) p.revents = POLLNVAL;
        else {
          const file = this.file(p.fd);
          const mask = file.fops.poll ? file.fops.poll(file) : DEFAULT_POLLMASK;
          p.revents = mask & ((p.events & 0xffff) | POLLERR | POLLHUP);
        }
        if (p.revents) ready++;
      }
      if (ready === 0 && timeoutMs < 0) throw new TaskWouldSleepForever("poll with no timeout");
      return ready;
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

  /** getpid(2). */
  getpid(): number {
    return this.process.pid;
  }

  /** capget(2) of this process: its effective and permitted capability numbers. */
  capget(): { effective: number[]; permitted: number[] } {
    const { caps, permitted } = this.process.cred;
    return { effective: [...caps], permitted: [...permitted] };
  }

  /** capset(2) on this process: 0, or -1 with EPERM when a set would grow. @see cap_capset */
  capset(effective: Iterable<number>, permitted: Iterable<number>): number {
    return this.sys(-1, () => {
      this.process.capset(effective, permitted);
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
      if (e instanceof KernelError) this.failed(e);
      throw e;
    }
  }

  /** exit(2): close every descriptor and unmap everything; `code` is the wait status's exit code. */
  exit(code = 0): void {
    this.raw(() => this.kernel.exit(this.process, code));
  }

  /** abort(3): the process dies of SIGABRT (no handler is modelled). */
  abort(): void {
    this.raw(() => this.kernel.exit(this.process, 0, SIGABRT));
  }

  /**
   * waitpid(2) for one child, no options: reaps it and returns its pid, storing the wait
   * status in `wstatus.value`. ECHILD when `pid` is not an unreaped child of this process. A
   * child still running would make the caller sleep until it exits; with no scheduler to run
   * it, that throws TaskWouldSleepForever (see eventfd.ts), and callers run the child first.
   * @see kernel_wait4
   */
  waitpid(pid: number, wstatus?: { value: number }): number {
    return this.sys(-1, () => {
      const child = [...this.process.children].find((c) => c.pid === pid);
      if (!child) return fail(ECHILD, `no child ${pid}`);
      if (!child.exited) throw new TaskWouldSleepForever(`waitpid for running child ${pid}`);
      this.process.children.delete(child);
      this.kernel.releasePid(child);
      if (wstatus) wstatus.value = child.exitStatus;
      return pid;
    });
  }

  /** pipe2(2): EINVAL for unknown flags, then two descriptors (EMFILE), read end first. */
  pipe2(pipefd: [number, number], flags: number): number {
    return this.sys(-1, () => {
      pipe2CheckFlags(flags);
      const files = this.process.files;
      const [r, w] = createPipeFiles(flags);
      let rfd: number;
      try {
        rfd = files.install(r, flags & O_CLOEXEC);
      } catch (e) {
        r.put();
        w.put();
        throw e;
      }
      try {
        pipefd[1] = files.install(w, flags & O_CLOEXEC);
      } catch (e) {
        files.close(rfd);
        w.put();
        throw e;
      }
      pipefd[0] = rfd;
      return 0;
    });
  }

  /**
   * Anonymous read/write memory for buffers that ioctl structs point at, carved from 1 MiB
   * private mappings, 64-byte aligned. A block `free` took back of the same size is handed out
   * again first, as a C allocator would, so a long-running process does not fault in new pages
   * for every temporary buffer. Throws ENOMEM when no mapping can be made.
   */
  malloc(len: number): bigint {
    const size = BigInt(Math.max(1, Math.ceil(len / 64) * 64));
    const reused = this.mallocFree.get(size)?.pop();
    if (reused !== undefined) {
      this.mallocLive.set(reused, size);
      return reused;
    }
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
    this.mallocLive.set(va, size);
    return va;
  }

  /**
   * free(3): give a `malloc` block back (its contents stay until it is handed out again);
   * 0 is ignored. A pointer `malloc` did not return, or one freed already, is the caller's bug,
   * and throws, where glibc would abort.
   */
  free(va: bigint): void {
    if (va === 0n) return;
    const size = this.mallocLive.get(va);
    if (size === undefined)
      throw new Error(`free(): 0x${va.toString(16)} is not a live malloc block`);
    this.mallocLive.delete(va);
    let list = this.mallocFree.get(size);
    if (!list) this.mallocFree.set(size, (list = []));
    list.push(va);
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

/** The error an ioctl kept on `task` with `ioctlErrno`, taken off it. */
function takeReturnedError(task: Task): KernelError | undefined {
  const e = task.returnedError;
  task.returnedError = undefined;
  return e;
}
