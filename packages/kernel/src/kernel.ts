import { ENOENT, ENOMEM } from "./errno.js";
import { type KernelError, KernelWarning, fail } from "./error.js";
import { FaultInjector } from "./fault.js";
import { File, type FileOperations, withDeferredFput } from "./file.js";
import { Lockdep } from "./lockdep.js";
import type { LockOrder } from "./lockdep-order.js";
import { MmStruct } from "./mm.js";
import { PhysMem } from "./physmem.js";
import { isProcPidStatus, openProcPidStatus } from "./proc-status.js";
import {
  CAP_IPC_LOCK,
  CAP_SYS_ADMIN,
  CAP_SYS_RAWIO,
  CAP_SYS_RESOURCE,
  Process,
  UserStruct,
} from "./process.js";
import { SymbolTable } from "./symbols.js";
import { TraceBus } from "./trace.js";

/** What a device node does when opened: build the driver's File (misc/cdev open). */
type DeviceOpen = (kernel: Kernel, flags: number) => File;

/** A task: the unit lockdep and fail-nth are per; it runs in a process. */
export class Task {
  readonly fault = new FaultInjector();
  /** The KernelError behind the -errno an ioctl returned (`ioctlErrno`), until Libc takes it. */
  returnedError: KernelError | undefined;
  constructor(
    readonly tid: number,
    public process: Process,
  ) {}
}

export interface KernelOptions {
  /** Bytes of RAM (sparse: only touched memory costs). Default 2 TiB. */
  readonly ramBytes?: bigint | number;
  /** The lock order lockdep enforces; default the stack's, null for the recorded graph alone. */
  readonly lockOrder?: LockOrder | null;
}

/**
 * Names the state a module keeps per machine: what are globals in its C source (iommufd's
 * ioctl table, the dma-buf list, the PCI root). `Kernel.moduleState` looks it up.
 *
 * Decision: the state hangs off its Kernel, not off a WeakMap keyed by the Kernel. Each such
 * state points back at its Kernel, and V8's young-generation GC keeps a WeakMap entry alive
 * when its value reaches its key: every machine built and dropped then survived minor GCs
 * whole and was promoted, to be freed only by a full GC (PERFORMANCE.md, "Seventh round:
 * machines that outlived themselves").
 */
export class ModuleKey<T> {
  /** Ties the key to its state's type; never set. */
  declare readonly state: T;

  constructor(readonly name: string) {}
}

/**
 * One simulated machine. Everything global in a real kernel (lockdep's graph, the symbol
 * table, device nodes, physical memory, the modules' own globals) lives here, so every test
 * can have a fresh machine.
 */
export class Kernel {
  readonly lockdep: Lockdep;
  readonly symbols = new SymbolTable();
  readonly trace = new TraceBus();
  readonly mem: PhysMem;
  private readonly devices = new Map<string, DeviceOpen>();
  private readonly users = new Map<number, UserStruct>();
  /** Processes by pid, from creation until their parent reaps them (release_task). */
  private readonly pids = new Map<number, Process>();
  private nextTid = 1;
  private readonly moduleStates = new Map<ModuleKey<unknown>, unknown>();
  current: Task;

  constructor(opts: KernelOptions = {}) {
    const kernel = this;
    this.mem = new PhysMem({
      ramBytes: opts.ramBytes ?? 2n << 40n,
      shouldFail(site) {
        return kernel.shouldFail(site);
      },
    });
    this.lockdep = new Lockdep(() => this.current, opts.lockOrder);
    this.current = this.newTask(this.newProcess(0));
  }

  /**
   * The state `key`'s module keeps on this machine: undefined until it sets one, or, given
   * `create`, made by it on first use.
   */
  moduleState<T>(key: ModuleKey<T>): T | undefined;
  moduleState<T>(key: ModuleKey<T>, create: (kernel: Kernel) => T): T;
  moduleState<T>(key: ModuleKey<T>, create?: (kernel: Kernel) => T): T | undefined {
    const state = this.moduleStates.get(key) as T | undefined;
    if (state !== undefined || !create) return state;
    return this.setModuleState(key, create(this));
  }

  /** Give `key`'s module its state on this machine, once (a second time is a bug). */
  setModuleState<T>(key: ModuleKey<T>, state: T): T {
    if (this.moduleStates.has(key)) throw new KernelWarning(`${key.name}: module state set twice`);
    this.moduleStates.set(key, state);
    return state;
  }

  /** The per-uid accounting object, shared by all processes of that user. */
  user(uid: number): UserStruct {
    let u = this.users.get(uid);
    if (!u) this.users.set(uid, (u = new UserStruct(uid)));
    return u;
  }

  /** A new process (its first task is made by `newTask`); uid 0 gets the admin capabilities. */
  newProcess(uid: number, caps?: Iterable<number>): Process {
    const defaultCaps =
      uid === 0 ? [CAP_SYS_ADMIN, CAP_IPC_LOCK, CAP_SYS_RAWIO, CAP_SYS_RESOURCE] : [];
    const process = new Process(
      this.nextTid,
      {
        uid,
        user: this.user(uid),
        caps: new Set(caps ?? defaultCaps),
        permitted: new Set(caps ?? defaultCaps),
      },
      new MmStruct(this),
    );
    this.pids.set(process.pid, process);
    return process;
  }

  /**
   * fork (copy_process): a child with the parent's credentials, limits, descriptors and a
   * copy-on-write copy of its address space, plus its first task. ENOMEM leaves no child.
   * @see copy_process
   */
  fork(parent: Process): Task {
    if (this.shouldFail("copy_process")) fail(ENOMEM, "copy_process: injected");
    const mm = parent.mm.fork();
    const cred = {
      ...parent.cred,
      caps: new Set(parent.cred.caps),
      permitted: new Set(parent.cred.permitted),
    };
    const child = new Process(this.nextTid, cred, mm, parent.files.clone());
    for (const [r, v] of parent.rlimits) child.setRlimit(r, v);
    parent.children.add(child);
    this.pids.set(child.pid, child);
    return this.newTask(child);
  }

  /**
   * do_exit for a whole process: exit_mm tears the address space down, then exit_files closes
   * the descriptors. A file whose last reference goes in either step (a VMA's vm_file, a
   * descriptor) is released only after both, as the final fput runs ____fput from task_work
   * (exit_task_work): a driver's release never runs under mmap_lock. The process stays a zombie
   * until its parent reaps it, with a wait status made of the exit `code`, or of `signal` when a
   * signal killed it.
   * @see do_exit
   */
  exit(process: Process, code = 0, signal = 0): void {
    if (process.exited) throw new KernelWarning(`process ${process.pid} exited twice`);
    process.exited = true;
    process.exitStatus = signal ? signal & 0x7f : (code & 0xff) << 8;
    withDeferredFput(() => {
      process.mm.exit();
      process.files.closeAll();
    });
  }

  newTask(process: Process): Task {
    return new Task(this.nextTid++, process);
  }

  /** Run `fn` as `task` (a kthread or another user thread), restoring `current` after. */
  runAs<T>(task: Task, fn: () => T): T {
    const prev = this.current;
    this.current = task;
    try {
      return fn();
    } finally {
      this.current = prev;
    }
  }

  /** should_fail(): the injectable point `site`, counted against the current task's fail-nth. */
  shouldFail(site: string): boolean {
    return this.current.fault.shouldFail(site);
  }

  registerDevice(path: string, open: DeviceOpen): void {
    if (this.devices.has(path)) throw new KernelWarning(`device node ${path} registered twice`);
    this.devices.set(path, open);
  }

  unregisterDevice(path: string): void {
    this.devices.delete(path);
  }

  hasDevice(path: string): boolean {
    return this.devices.has(path);
  }

  /** Open a device node or a /proc/<pid>/status file: a new File with one reference, or ENOENT. */
  openDevice(path: string, flags: number): File {
    if (isProcPidStatus(path))
      return openProcPidStatus(path, flags, this.current.process, (pid) => this.pids.get(pid));
    const open = this.devices.get(path);
    if (!open) fail(ENOENT, path);
    return open(this, flags);
  }

  /** release_task: a reaped process's pid no longer resolves. */
  releasePid(process: Process): void {
    this.pids.delete(process.pid);
  }

  /** An anonymous-inode file (anon_inode_getfile). */
  anonFile<P>(fops: FileOperations, priv: P, flags: number): File<P> {
    return new File(fops, priv, flags);
  }
}
