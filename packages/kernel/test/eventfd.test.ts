import { describe, expect, it, vi } from "vitest";
import {
  EAGAIN,
  EBADF,
  EFAULT,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  EINVAL,
  EMFILE,
  ENOMEM,
  EventfdCtx,
  KernelWarning,
  POLLHUP,
  F_GETFD,
  F_GETFL,
  FD_CLOEXEC,
  Kernel,
  Libc,
  MFD_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  POLLERR,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  RLIMIT_NOFILE,
  TaskWouldSleepForever,
  U64_MAX,
  eventfdCtxDoRead,
  eventfdCtxFdget,
  eventfdPollWait,
  eventfdRemoveWait,
  eventfdSignal,
} from "../src/index.js";
import { expectErrno } from "./helpers.js";

function setup(): { k: Kernel; libc: Libc } {
  const k = new Kernel({ ramBytes: 1n << 28n });
  return { k, libc: new Libc(k) };
}

function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

function readU64(libc: Libc, fd: number): bigint | number {
  const b = new Uint8Array(8);
  const r = libc.read(fd, b);
  return r < 0 ? r : new DataView(b.buffer).getBigUint64(0, true);
}

describe("eventfd2", () => {
  it("flags: EFD_CLOEXEC / EFD_NONBLOCK / EFD_SEMAPHORE values, unknown bits EINVAL", () => {
    const { libc } = setup();
    expect([EFD_SEMAPHORE, EFD_CLOEXEC, EFD_NONBLOCK]).toEqual([1, 0o2000000, 0o4000]);
    for (const bad of [2, 0x8, O_RDWR | 0x40, 1 << 30]) {
      expect(libc.eventfd(0, bad)).toBe(-1);
      expect(libc.errno).toBe(EINVAL);
    }
    expect(libc.process.files.openCount).toBe(0);
    const fd = libc.eventfd(3, EFD_CLOEXEC | EFD_NONBLOCK);
    expect(libc.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
    expect(libc.fcntl(fd, F_GETFL)).toBe(O_RDWR | O_NONBLOCK);
    expect(readU64(libc, fd)).toBe(3n);
  });

  it("EMFILE after the flag check, nothing installed", () => {
    const { libc } = setup();
    libc.setrlimit(RLIMIT_NOFILE, 1);
    expect(libc.eventfd(0, 0)).toBe(0);
    expect(libc.eventfd(0, 0xff)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.eventfd(0, 0)).toBe(-1);
    expect(libc.errno).toBe(EMFILE);
    expect(libc.process.files.openCount).toBe(1);
  });

  it("initval is an unsigned int", () => {
    const { libc } = setup();
    const fd = libc.eventfd(-1, 0);
    expect(readU64(libc, fd)).toBe(0xffffffffn);
  });

  it("write adds, read returns the count and zeroes it", () => {
    const { libc } = setup();
    const fd = libc.eventfd(0, EFD_NONBLOCK);
    expect(libc.write(fd, u64(5n))).toBe(8);
    expect(libc.write(fd, u64(7n))).toBe(8);
    expect(readU64(libc, fd)).toBe(12n);
    expect(readU64(libc, fd)).toBe(-1);
    expect(libc.errno).toBe(EAGAIN);
  });

  it("EFD_SEMAPHORE reads 1 and decrements", () => {
    const { libc } = setup();
    const fd = libc.eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    expect(readU64(libc, fd)).toBe(1n);
    expect(readU64(libc, fd)).toBe(1n);
    expect(readU64(libc, fd)).toBe(-1);
    expect(libc.errno).toBe(EAGAIN);
  });

  it("buffers shorter than 8 bytes are EINVAL, count unchanged; longer ones use 8", () => {
    const { libc } = setup();
    const fd = libc.eventfd(4, EFD_NONBLOCK);
    expect(libc.read(fd, new Uint8Array(7))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.write(fd, new Uint8Array(7))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    const big = new Uint8Array(16).fill(0xaa);
    expect(libc.read(fd, big)).toBe(8);
    expect(Array.from(big.subarray(0, 9))).toEqual([4, 0, 0, 0, 0, 0, 0, 0, 0xaa]);
    const w = new Uint8Array(16);
    w[0] = 9;
    w[8] = 1;
    expect(libc.write(fd, w)).toBe(8);
    expect(readU64(libc, fd)).toBe(9n);
  });

  it("writing 0xffffffffffffffff is EINVAL; passing 0xfffffffffffffffe is EAGAIN when non-blocking", () => {
    const { libc } = setup();
    const fd = libc.eventfd(0, EFD_NONBLOCK);
    expect(libc.write(fd, u64(U64_MAX))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.write(fd, u64(U64_MAX - 1n))).toBe(8);
    expect(libc.write(fd, u64(1n))).toBe(-1);
    expect(libc.errno).toBe(EAGAIN);
    expect(libc.write(fd, u64(0n))).toBe(8);
    expect(readU64(libc, fd)).toBe(U64_MAX - 1n);
  });

  it("blocking on a zero count or an overflowing write cannot be woken: it throws, nothing changes", () => {
    const { libc } = setup();
    const fd = libc.eventfd(0, 0);
    expect(() => readU64(libc, fd)).toThrow(TaskWouldSleepForever);
    expect(libc.write(fd, u64(U64_MAX - 1n))).toBe(8);
    expect(() => libc.write(fd, u64(1n))).toThrow(TaskWouldSleepForever);
    expect(readU64(libc, fd)).toBe(U64_MAX - 1n);
  });

  it("user buffers: EFAULT before a write changes the count; a read fault after the count is taken", () => {
    const { libc } = setup();
    const fd = libc.eventfd(0, EFD_NONBLOCK);
    const buf = libc.malloc(8);
    libc.poke(buf, u64(6n));
    expect(libc.write(fd, buf, 8)).toBe(8);
    expect(libc.write(fd, 0x1000n, 8)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(libc.write(fd, 1n << 62n, 8)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(libc.read(fd, buf, 8)).toBe(8);
    expect(new DataView(libc.peek(buf, 8).buffer).getBigUint64(0, true)).toBe(6n);
    libc.write(fd, u64(2n));
    // eventfd_read consumes the count before copy_to_iter fails.
    expect(libc.read(fd, 0x1000n, 8)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(readU64(libc, fd)).toBe(-1);
    expect(libc.errno).toBe(EAGAIN);
  });

  it("poll: POLLIN with a count, POLLOUT below the limit, POLLERR at U64_MAX, POLLNVAL for a closed fd", () => {
    const { k, libc } = setup();
    const fd = libc.eventfd(0, EFD_NONBLOCK);
    const pfd = [
      { fd, events: POLLIN | POLLOUT, revents: -1 },
      { fd: 77, events: POLLIN, revents: -1 },
      { fd: -1, events: POLLIN, revents: -1 },
    ];
    expect(libc.poll(pfd, 0)).toBe(2);
    expect(pfd.map((p) => p.revents)).toEqual([POLLOUT, POLLNVAL, 0]);
    libc.write(fd, u64(1n));
    expect(libc.poll(pfd.slice(0, 1), 0)).toBe(1);
    expect(pfd[0]!.revents).toBe(POLLIN | POLLOUT);
    libc.write(fd, u64(U64_MAX - 2n));
    expect(libc.poll(pfd.slice(0, 1), 0)).toBe(1);
    expect(pfd[0]!.revents).toBe(POLLIN);
    const ctx = k.runAs(libc.task, () => eventfdCtxFdget(libc.process.files, fd));
    eventfdSignal(ctx);
    expect(libc.poll(pfd.slice(0, 1), 0)).toBe(1);
    expect(pfd[0]!.revents).toBe(POLLIN | POLLERR);
    ctx.put();
  });

  it("poll with nothing ready: a timeout expires with 0, an infinite wait throws", () => {
    const { libc } = setup();
    const fd = libc.eventfd(0, 0);
    const pfd = [{ fd, events: POLLIN, revents: 0 }];
    expect(libc.poll(pfd, 10)).toBe(0);
    expect(() => libc.poll(pfd, -1)).toThrow(TaskWouldSleepForever);
  });

  it("eventfd_ctx_fdget: EBADF for a closed fd, EINVAL for another file; the context outlives the fd", () => {
    const { k, libc } = setup();
    const files = libc.process.files;
    expectErrno(() => eventfdCtxFdget(files, 5), EBADF);
    const mfd = libc.memfdCreate("m", MFD_CLOEXEC);
    expectErrno(() => eventfdCtxFdget(files, mfd), EINVAL);
    const fd = libc.eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
    const ctx = k.runAs(libc.task, () => eventfdCtxFdget(files, fd));
    expect(ctx.refcount).toBe(2);
    eventfdSignal(ctx);
    eventfdSignal(ctx);
    expect(readU64(libc, fd)).toBe(1n);
    libc.close(fd);
    expect(ctx.refcount).toBe(1);
    eventfdSignal(ctx);
    expect(ctx.count).toBe(2n);
    ctx.put();
    expect(() => eventfdSignal(ctx)).toThrow(/released/);
  });
});

describe("eventfd_ctx (fs/eventfd.c)", () => {
  it("a waiter queued by poll is woken with POLLIN by a write or a signal and POLLHUP at release, until removed", () => {
    const { k, libc } = setup();
    const fd = libc.eventfd(0, 0);
    const ctx = k.runAs(libc.task, () => eventfdCtxFdget(libc.process.files, fd));
    const woken: number[] = [];
    const waiter = (events: number) => woken.push(events);
    expect(eventfdPollWait(ctx, waiter)).toBe(POLLOUT);
    expect(libc.write(fd, u64(2n))).toBe(8);
    eventfdSignal(ctx);
    libc.close(fd);
    expect(woken).toEqual([POLLIN, POLLIN, POLLHUP]);
    eventfdRemoveWait(ctx, waiter);
    eventfdSignal(ctx);
    expect(woken.length).toBe(3);
    ctx.put();
  });

  it("eventfd_signal saturates at 0xffffffffffffffff", () => {
    const ctx = new EventfdCtx(0, 0);
    ctx.count = U64_MAX - 1n;
    eventfdSignal(ctx);
    eventfdSignal(ctx);
    expect(ctx.count).toBe(U64_MAX);
  });

  it("eventfd_ctx_do_read of a zero semaphore count takes 0", () => {
    const ctx = new EventfdCtx(0, EFD_SEMAPHORE);
    expect([eventfdCtxDoRead(ctx), ctx.count]).toEqual([0n, 0n]);
  });

  it("a reference taken or dropped after the last put is a WARN (kref on a released context)", () => {
    const ctx = new EventfdCtx(0, 0);
    ctx.put();
    expect(() => ctx.get()).toThrow(KernelWarning);
    expect(() => ctx.put()).toThrow(KernelWarning);
    expect(ctx.refcount).toBe(0);
  });

  it("an injected eventfd_ctx allocation failure is ENOMEM with nothing installed", () => {
    const { k, libc } = setup();
    k.current.fault.arm(1);
    expect(libc.eventfd(0, 0)).toBe(-1);
    expect(libc.errno).toBe(ENOMEM);
    expect(k.current.fault.failedSite).toBe("eventfd_ctx");
    k.current.fault.disarm();
    expect(libc.eventfd(0, 0)).toBe(0);
  });

  it("is an anon inode named [eventfd], and a sleep that cannot end says so", async () => {
    // Evaluated here: the file operations are a constant of the module.
    vi.resetModules();
    const kernel = await import("../src/index.js");
    const fresh = new kernel.Libc(new kernel.Kernel({ ramBytes: 1n << 28n }));
    const fd = fresh.eventfd(3, 0);
    const file = fresh.process.files.lookup(fd);
    expect(file.fops.name).toBe("[eventfd]");
    expect(readU64(fresh, fd)).toBe(3n);
    const e = new kernel.TaskWouldSleepForever("x");
    expect([e.name, e.message]).toEqual(["TaskWouldSleepForever", "task would sleep forever: x"]);
  });
});
