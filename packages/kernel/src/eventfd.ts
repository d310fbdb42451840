/**
 * eventfd (fs/eventfd.c): a 64-bit counter behind a file. write(2) adds an 8-byte value,
 * read(2) takes the whole count (or 1 with EFD_SEMAPHORE), and drivers bump it with
 * `eventfdSignal` (eventfd_signal) after taking the context from a user's descriptor with
 * `eventfdCtxFdget` (eventfd_ctx_fdget): VFIO's interrupt triggers, KVM's irqfd and ioeventfd.
 *
 * The context (struct eventfd_ctx) has its own reference count: a driver holding it keeps it
 * usable after the user closed every descriptor.
 *
 * Decision: the model has no scheduler, so a task that the kernel would put to sleep can never
 * be woken (nothing else runs while it waits). A blocking read of a zero counter, or a blocking
 * write that would pass 0xfffffffffffffffe, throws `TaskWouldSleepForever` instead of returning
 * an errno Linux would not return; nothing changes. Callers poll first (`eventfdPoll`,
 * `Libc.poll`) or use EFD_NONBLOCK, which gives the kernel's EAGAIN.
 */
import { EAGAIN, EINVAL, ENOMEM } from "./errno.js";
import { KernelWarning, fail } from "./error.js";
import { File, type FileOperations, O_CLOEXEC, O_NONBLOCK, O_RDWR } from "./file.js";
import type { Kernel } from "./kernel.js";
import { U64_MAX } from "./limits.js";

export const EFD_SEMAPHORE = 1;
export const EFD_CLOEXEC = O_CLOEXEC;
export const EFD_NONBLOCK = O_NONBLOCK;
const EFD_SHARED_FCNTL_FLAGS = O_CLOEXEC | O_NONBLOCK;
const EFD_FLAGS_SET = EFD_SHARED_FCNTL_FLAGS | EFD_SEMAPHORE;

/** poll(2) event bits (include/uapi/asm-generic/poll.h). */
export const POLLIN = 0x1;
export const POLLPRI = 0x2;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

/** What the kernel would do here is sleep with no one left to wake it. Not an errno. */
export class TaskWouldSleepForever extends Error {
  constructor(what: string) {
    super(`task would sleep forever: ${what}`);
    this.name = "TaskWouldSleepForever";
  }
}

/**
 * A wait-queue entry on an eventfd (wait_queue_entry_t with its wake function): called with
 * the poll key, POLLIN when the count is raised and POLLHUP when the file is released.
 */
export type EventfdWaiter = (events: number) => void;

/** struct eventfd_ctx */
export class EventfdCtx {
  private refs = 1;
  /** ctx->wqh: who is woken by a write, a signal or the release. */
  readonly waiters = new Set<EventfdWaiter>();
  /** The counter, a u64. */
  count: bigint;

  constructor(
    count: number,
    /** EFD_* flags as created (only EFD_SEMAPHORE matters after creation). */
    readonly flags: number,
  ) {
    this.count = BigInt(count);
  }

  get refcount(): number {
    return this.refs;
  }

  /** kref_get */
  get(): this {
    if (this.refs === 0) throw new KernelWarning("eventfd_ctx get after release");
    this.refs++;
    return this;
  }

  /** @see eventfd_ctx_put */
  put(): void {
    if (this.refs === 0) throw new KernelWarning("eventfd_ctx put after release");
    this.refs--;
  }
}

/** wake_up_locked_poll(&ctx->wqh, events) */
function eventfdWake(ctx: EventfdCtx, events: number): void {
  for (const w of [...ctx.waiters]) w(events);
}

/** @see eventfd_ctx_do_read: take the count as a read would (a waker consuming the event). */
export function eventfdCtxDoRead(ctx: EventfdCtx): bigint {
  const n = ctx.flags & EFD_SEMAPHORE && ctx.count !== 0n ? 1n : ctx.count;
  ctx.count -= n;
  return n;
}

function ctxOf(file: File): EventfdCtx {
  return file.priv as EventfdCtx;
}

const eventfdFops: FileOperations = {
  name: "[eventfd]",
  /** @see eventfd_release: waiters see POLLHUP before the context reference goes. */
  release(file) {
    eventfdWake(ctxOf(file), POLLHUP);
    ctxOf(file).put();
  },
  /** @see eventfd_read: the count is taken before the copy out, so EFAULT loses it. */
  read(file, len) {
    if (len < 8) fail(EINVAL, "eventfd read buffer shorter than 8 bytes");
    const ctx = ctxOf(file);
    if (ctx.count === 0n) {
      if (file.fFlags & O_NONBLOCK) fail(EAGAIN, "eventfd count is 0");
      // Stryker disable next-line StringLiteral: the exception's text only
      throw new TaskWouldSleepForever("eventfd read with a zero count");
    }
    const out = new Uint8Array(8);
    new DataView(out.buffer).setBigUint64(0, eventfdCtxDoRead(ctx), true);
    return out;
  },
  /** @see eventfd_write */
  write(file, data) {
    if (data.length < 8) fail(EINVAL, "eventfd write buffer shorter than 8 bytes");
    const v = new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true);
    if (v === U64_MAX) fail(EINVAL, "eventfd write of 0xffffffffffffffff");
    const ctx = ctxOf(file);
    if (!(U64_MAX - ctx.count > v)) {
      if (file.fFlags & O_NONBLOCK) fail(EAGAIN, "eventfd count would overflow");
      // Stryker disable next-line StringLiteral: the exception's text only
      throw new TaskWouldSleepForever("eventfd write that would overflow the count");
    }
    ctx.count += v;
    eventfdWake(ctx, POLLIN);
    return 8;
  },
  poll(file) {
    return eventfdPoll(ctxOf(file));
  },
};

/** @see eventfd_poll */
function eventfdPoll(ctx: EventfdCtx): number {
  let events = 0;
  if (ctx.count > 0n) events |= POLLIN;
  if (ctx.count === U64_MAX) events |= POLLERR;
  if (U64_MAX - 1n > ctx.count) events |= POLLOUT;
  return events;
}

/** The checks of eventfd2(2) that come before a descriptor is reserved. */
export function eventfdCheckFlags(flags: number): void {
  if (!Number.isInteger(flags) || flags & ~EFD_FLAGS_SET) fail(EINVAL, "unknown eventfd flags");
}

/**
 * do_eventfd without the descriptor: the file, O_RDWR plus O_NONBLOCK from `flags` (the
 * caller installs it with O_CLOEXEC). `initval` is an unsigned int.
 */
export function eventfdFileCreate(
  kernel: Pick<Kernel, "shouldFail">,
  initval: number,
  flags: number,
): File<EventfdCtx> {
  eventfdCheckFlags(flags);
  if (kernel.shouldFail("eventfd_ctx")) fail(ENOMEM, "eventfd_ctx: injected");
  const ctx = new EventfdCtx(initval >>> 0, flags);
  // anon_inode_getfile keeps only the access mode and O_NONBLOCK in f_flags.
  return new File(eventfdFops, ctx, (flags & O_NONBLOCK) | O_RDWR);
}

/** @see eventfd_ctx_fileget: EINVAL unless `file` is an eventfd. */
function eventfdCtxFileget(file: File): EventfdCtx {
  if (file.fops !== eventfdFops) fail(EINVAL, `${file.fops.name} is not an eventfd`);
  return ctxOf(file).get();
}

/** @see eventfd_ctx_fdget: EBADF for a closed descriptor, EINVAL for another kind of file. */
export function eventfdCtxFdget(files: { lookup(fd: number): File }, fd: number): EventfdCtx {
  return eventfdCtxFileget(files.lookup(fd));
}

/** @see eventfd_signal: add one, saturating at 0xffffffffffffffff (poll then reports POLLERR). */
export function eventfdSignal(ctx: EventfdCtx): void {
  if (ctx.refcount === 0) throw new KernelWarning("eventfd_signal on a released context");
  if (ctx.count < U64_MAX) ctx.count++;
  eventfdWake(ctx, POLLIN);
}

/**
 * vfs_poll with a poll table that queues `waiter` on the context (what irqfd and VFIO's
 * virqfd do): the current events, and `waiter` is called on every later wake-up until
 * `eventfdRemoveWait`.
 */
export function eventfdPollWait(ctx: EventfdCtx, waiter: EventfdWaiter): number {
  ctx.waiters.add(waiter);
  return eventfdPoll(ctx);
}

/** remove_wait_queue */
export function eventfdRemoveWait(ctx: EventfdCtx, waiter: EventfdWaiter): void {
  ctx.waiters.delete(waiter);
}
