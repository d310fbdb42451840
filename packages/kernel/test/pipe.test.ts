import { describe, expect, it, vi } from "vitest";
import {
  EAGAIN,
  EBADF,
  ECHILD,
  EINVAL,
  EMFILE,
  EPIPE,
  F_GETFD,
  FD_CLOEXEC,
  Kernel,
  Libc,
  O_CLOEXEC,
  O_NONBLOCK,
  POLLHUP,
  POLLIN,
  POLLOUT,
  RLIMIT_NOFILE,
  SIGABRT,
  TaskWouldSleepForever,
} from "../src/index.js";

function setup(): { k: Kernel; libc: Libc } {
  const k = new Kernel({ ramBytes: 1n << 28n });
  return { k, libc: new Libc(k) };
}

function pipe(libc: Libc, flags = 0): [number, number] {
  const fds: [number, number] = [-1, -1];
  expect(libc.pipe2(fds, flags)).toBe(0);
  return fds;
}

describe("pipe2 (fs/pipe.c)", () => {
  it("unknown flags are EINVAL and leave no descriptor", () => {
    const { libc } = setup();
    const fds: [number, number] = [-1, -1];
    expect(libc.pipe2(fds, 1)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(fds).toEqual([-1, -1]);
    expect(libc.eventfd(0, 0)).toBe(0);
  });

  it("EMFILE when only one descriptor is free, and that one stays free", () => {
    const { libc } = setup();
    expect(libc.setrlimit(RLIMIT_NOFILE, 1)).toBe(0);
    const fds: [number, number] = [-1, -1];
    expect(libc.pipe2(fds, 0)).toBe(-1);
    expect(libc.errno).toBe(EMFILE);
    expect(libc.eventfd(0, 0)).toBe(0);
  });

  it("O_CLOEXEC marks both ends; the ends are read-only and write-only", () => {
    const { libc } = setup();
    const [r, w] = pipe(libc, O_CLOEXEC);
    expect(libc.fcntl(r, F_GETFD)).toBe(FD_CLOEXEC);
    expect(libc.fcntl(w, F_GETFD)).toBe(FD_CLOEXEC);
    expect(libc.write(r, new Uint8Array(1))).toBe(-1);
    expect(libc.errno).toBe(EBADF);
    expect(libc.read(w, new Uint8Array(1))).toBe(-1);
    expect(libc.errno).toBe(EBADF);
  });

  it("bytes come out in order; an empty pipe with a writer sleeps, without one reads EOF", () => {
    const { libc } = setup();
    const [r, w] = pipe(libc);
    expect(libc.write(w, Uint8Array.of(1, 2, 3))).toBe(3);
    expect(libc.write(w, Uint8Array.of(4))).toBe(1);
    const buf = new Uint8Array(3);
    expect(libc.read(r, buf)).toBe(3);
    expect([...buf]).toEqual([1, 2, 3]);
    expect(libc.read(r, buf)).toBe(1);
    expect(buf[0]).toBe(4);
    expect(() => libc.read(r, buf)).toThrow(TaskWouldSleepForever);
    expect(libc.close(w)).toBe(0);
    const p = [{ fd: r, events: POLLIN, revents: 0 }];
    expect(libc.poll(p, 0)).toBe(1);
    expect(p[0]!.revents).toBe(POLLHUP);
    expect(libc.read(r, buf)).toBe(0);
  });

  it("O_NONBLOCK gives EAGAIN; a write with no reader is EPIPE", () => {
    const { libc } = setup();
    const [r, w] = pipe(libc, O_NONBLOCK);
    expect(libc.read(r, new Uint8Array(1))).toBe(-1);
    expect(libc.errno).toBe(EAGAIN);
    expect(libc.close(r)).toBe(0);
    expect(libc.write(w, new Uint8Array(1))).toBe(-1);
    expect(libc.errno).toBe(EPIPE);
  });

  it("a forked child holds its own references: EOF only after every writer closed", () => {
    const { libc } = setup();
    const [r, w] = pipe(libc);
    const child = libc.fork();
    expect(child.close(w)).toBe(0);
    expect(() => child.read(r, new Uint8Array(1))).toThrow(TaskWouldSleepForever);
    expect(libc.close(w)).toBe(0);
    expect(child.read(r, new Uint8Array(1))).toBe(0);
    child.exit(100);
  });
});

describe("pipe_read / pipe_write (fs/pipe.c)", () => {
  it("reads take partial chunks in order; a write copies the caller's buffer", () => {
    const { libc } = setup();
    const [r, w] = pipe(libc);
    const src = Uint8Array.of(1, 2, 3);
    expect(libc.write(w, src)).toBe(3);
    src.fill(9);
    expect(libc.write(w, Uint8Array.of(4, 5, 6))).toBe(3);
    const two = new Uint8Array(2);
    expect(libc.read(r, two)).toBe(2);
    const four = new Uint8Array(4);
    expect(libc.read(r, four)).toBe(4);
    expect([...two, ...four]).toEqual([1, 2, 3, 4, 5, 6]);
    // A read that ends inside a later chunk takes only what fits.
    expect(libc.write(w, Uint8Array.of(7))).toBe(1);
    expect(libc.write(w, Uint8Array.of(8, 9, 10, 11, 12))).toBe(5);
    expect(libc.read(r, four)).toBe(4);
    expect([...four]).toEqual([7, 8, 9, 10]);
  });

  it("a read of 0 bytes returns 0 before looking at the pipe; a write of 0 before looking for readers", () => {
    const { libc } = setup();
    const [r, w] = pipe(libc);
    expect(libc.read(r, new Uint8Array(0))).toBe(0);
    libc.write(w, Uint8Array.of(1));
    expect(libc.read(r, new Uint8Array(0))).toBe(0);
    expect(libc.close(r)).toBe(0);
    expect(libc.write(w, new Uint8Array(0))).toBe(0);
  });

  it("holds PIPE_DEF_BUFFERS pages: a non-blocking write stores what fits, then EAGAIN; a blocking one sleeps", async () => {
    // Evaluated here: the buffer size is a constant of the module.
    vi.resetModules();
    const kernel = await import("../src/index.js");
    const libc = new kernel.Libc(new kernel.Kernel({ ramBytes: 1n << 28n }));
    const fds: [number, number] = [-1, -1];
    expect(libc.pipe2(fds, kernel.O_NONBLOCK)).toBe(0);
    const [r, w] = fds;
    const names = [r, w].map((fd) => libc.process.files.lookup(fd).fops.name);
    expect(names).toEqual(["pipe:[read]", "pipe:[write]"]);
    expect(libc.write(w, new Uint8Array(70_000).fill(7))).toBe(65_536);
    const poll = [{ fd: w, events: kernel.POLLOUT, revents: 0 }];
    expect(libc.poll(poll, 0)).toBe(0);
    expect(libc.write(w, new Uint8Array(1))).toBe(-1);
    expect(libc.errno).toBe(EAGAIN);
    expect(libc.read(r, new Uint8Array(100))).toBe(100);
    expect(libc.poll(poll, 0)).toBe(1);
    expect(poll[0]!.revents).toBe(POLLOUT);
    const blocking: [number, number] = [-1, -1];
    expect(libc.pipe2(blocking, 0)).toBe(0);
    expect(() => libc.write(blocking[1], new Uint8Array(65_537))).toThrow(
      kernel.TaskWouldSleepForever,
    );
  });
});

describe("waitpid (kernel/exit.c)", () => {
  it("reaps an exited child once, with its exit code; ECHILD otherwise", () => {
    const { libc } = setup();
    const child = libc.fork();
    expect(() => libc.waitpid(child.pid)).toThrow(TaskWouldSleepForever);
    child.exit(100);
    const status = { value: -1 };
    expect(libc.waitpid(child.pid, status)).toBe(child.pid);
    expect(status.value >> 8).toBe(100);
    expect(libc.waitpid(child.pid)).toBe(-1);
    expect(libc.errno).toBe(ECHILD);
    expect(libc.waitpid(libc.pid)).toBe(-1);
    expect(libc.errno).toBe(ECHILD);
  });
});

describe("abort", () => {
  it("a child killed by SIGABRT has the signal as its wait status", () => {
    const { libc } = setup();
    const child = libc.fork();
    child.abort();
    const status = { value: -1 };
    expect(libc.waitpid(child.pid, status)).toBe(child.pid);
    expect(status.value).toBe(SIGABRT);
  });
});
