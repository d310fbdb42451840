import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  EBADF,
  EBUSY,
  EFAULT,
  EINVAL,
  EMFILE,
  ENODEV,
  ENOENT,
  ENOMEM,
  ENOTTY,
  F_DUPFD,
  F_DUPFD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  F_SETFD,
  FD_CLOEXEC,
  File,
  type FileOperations,
  Kernel,
  KernelError,
  KernelWarning,
  Libc,
  MAP_SHARED,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  Mutex,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  ECHILD,
  POLLIN,
  type PollFd,
  PROT_READ,
  PROT_WRITE,
  RLIMIT_NOFILE,
  copyFromUser,
  copyToUser,
  fail,
  ioctlErrno,
} from "../src/index.js";
import { expectErrno, memState } from "./helpers.js";

/** A device whose ioctl 1 adds one to the first byte of the struct, 2 fails after writing. */
function echoDevice(k: Kernel): { releases: number } {
  const state = { releases: 0 };
  const fops: FileOperations = {
    name: "echo",
    ioctl(_file, cmd, arg) {
      if (cmd === 1) {
        const b = copyFromUser(k, arg, 4);
        b[0]! += 1;
        copyToUser(k, arg, b);
        return 7;
      }
      if (cmd === 2) {
        copyToUser(k, arg, new Uint8Array([0xee]));
        return fail(EINVAL, "after writing");
      }
      if (cmd === 3) return Number(arg & 0xffn);
      if (cmd === 4) return -ENODEV;
      if (cmd === 5) {
        copyToUser(k, arg, new Uint8Array([0xbb]));
        return ioctlErrno(k, new KernelError(EBUSY, "held by another user"));
      }
      if (cmd === 6) return ioctlErrno(k, new KernelWarning("a broken invariant"));
      if (cmd === 7) {
        copyToUser(k, arg, new Uint8Array([0xcc]));
        return ioctlErrno(k, new KernelError(ENOENT, "object 9", { id: 9 }));
      }
      return fail(ENOTTY);
    },
    release: () => {
      state.releases++;
    },
    read: (_f, len, pos) => Uint8Array.from({ length: len }, (_, i) => Number(pos) + i),
    write: (_f, data) => data.length,
  };
  k.registerDevice("/dev/echo", (_k, flags) => new File(fops, null, flags));
  return state;
}

function setup(): { k: Kernel; libc: Libc } {
  const k = new Kernel({ ramBytes: 1n << 30n });
  return { k, libc: new Libc(k) };
}

describe("Libc descriptors", () => {
  it("open/close with the lowest free descriptor; ENOENT and EBADF change nothing", () => {
    const { k, libc } = setup();
    const dev = echoDevice(k);
    expect(libc.open("/dev/echo", O_RDWR)).toBe(0);
    expect(libc.open("/dev/echo", O_RDWR)).toBe(1);
    expect(libc.open("/dev/nope", O_RDWR)).toBe(-1);
    expect(libc.errno).toBe(ENOENT);
    expect(libc.close(0)).toBe(0);
    expect(dev.releases).toBe(1);
    expect(libc.close(0)).toBe(-1);
    expect(libc.errno).toBe(EBADF);
    expect(libc.close(-1)).toBe(-1);
    expect(libc.open("/dev/echo", O_RDWR)).toBe(0);
    expect(libc.process.files.openCount).toBe(2);
  });

  it("EMFILE is reported before the path is looked up, and nothing is opened", () => {
    const { k, libc } = setup();
    const dev = echoDevice(k);
    libc.setrlimit(RLIMIT_NOFILE, 1);
    expect(libc.open("/dev/echo", O_RDWR)).toBe(0);
    expect(libc.open("/dev/nope", O_RDWR)).toBe(-1);
    expect(libc.errno).toBe(EMFILE);
    expect(libc.memfdCreate("x", 0)).toBe(-1);
    expect(libc.errno).toBe(EMFILE);
    expect(libc.dup(0)).toBe(-1);
    expect(libc.errno).toBe(EMFILE);
    expect(libc.process.files.openCount).toBe(1);
    expect(dev.releases).toBe(0);
    expect(k.mem.allocatedPages()).toBe(0);
  });

  it("dup and fcntl share the file and manage FD_CLOEXEC", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR | O_CLOEXEC);
    expect(libc.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
    const d = libc.dup(fd);
    expect(libc.fcntl(d, F_GETFD)).toBe(0);
    expect(libc.fcntl(fd, F_DUPFD, 10)).toBe(10);
    expect(libc.fcntl(fd, F_DUPFD_CLOEXEC, 10)).toBe(11);
    expect(libc.fcntl(11, F_GETFD)).toBe(FD_CLOEXEC);
    expect(libc.fcntl(d, F_SETFD, FD_CLOEXEC)).toBe(0);
    expect(libc.fcntl(d, F_GETFD)).toBe(FD_CLOEXEC);
    expect(libc.fcntl(d, F_GETFL) & O_RDWR).toBe(O_RDWR);
    expect(libc.process.files.lookup(fd).refcount).toBe(4);
    expect(libc.fcntl(99, F_GETFD)).toBe(-1);
    expect(libc.errno).toBe(EBADF);
    expect(libc.fcntl(fd, 12345)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.dup(42)).toBe(-1);
    expect(libc.errno).toBe(EBADF);
  });

  it("the fd table matches a model under random open/dup/close (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom("open", "dup", "close"), fc.nat(12)), { maxLength: 50 }),
        (ops) => {
          const { k, libc } = setup();
          const dev = echoDevice(k);
          libc.setrlimit(RLIMIT_NOFILE, 8);
          const model = new Map<number, number>(); // fd -> file id
          let files = 0;
          const lowest = () => {
            let n = 0;
            while (model.has(n)) n++;
            return n;
          };
          for (const [op, n] of ops) {
            if (op === "open") {
              const fd = libc.open("/dev/echo", O_RDWR);
              if (lowest() >= 8) expect([fd, libc.errno]).toEqual([-1, EMFILE]);
              else {
                expect(fd).toBe(lowest());
                model.set(fd, files++);
              }
            } else if (op === "dup") {
              const fd = libc.dup(n);
              if (!model.has(n)) expect([fd, libc.errno]).toEqual([-1, EBADF]);
              else if (lowest() >= 8) expect([fd, libc.errno]).toEqual([-1, EMFILE]);
              else {
                expect(fd).toBe(lowest());
                model.set(fd, model.get(n)!);
              }
            } else {
              const r = libc.close(n);
              if (!model.has(n)) expect([r, libc.errno]).toEqual([-1, EBADF]);
              else {
                expect(r).toBe(0);
                model.delete(n);
              }
            }
          }
          const live = new Set(model.values());
          expect(libc.process.files.openCount).toBe(model.size);
          expect(dev.releases).toBe(files - live.size);
          libc.exit();
          expect(dev.releases).toBe(files);
        },
      ),
      { numRuns: 50 },
    );
  });
});

describe("Libc ioctl", () => {
  it("copies a struct in and back out around the call, and returns the driver's value", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR);
    const buf = new Uint8Array([41, 0, 0, 0]);
    expect(libc.ioctl(fd, 1, buf)).toBe(7);
    expect(buf[0]).toBe(42);
    expect(libc.ioctl(fd, 3, 0x1234n)).toBe(0x34);
    expect(libc.ioctl(fd, 3, 0x12)).toBe(0x12);
  });

  it("a failing ioctl is -1 with errno, and what it wrote is still in the struct", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR);
    const buf = new Uint8Array(4);
    expect(libc.ioctl(fd, 2, buf)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(buf[0]).toBe(0xee);
    expect(libc.ioctl(fd, 4, 0)).toBe(-1);
    expect(libc.errno).toBe(ENODEV);
    expect(libc.ioctl(fd, 99)).toBe(-1);
    expect(libc.errno).toBe(ENOTTY);
    expect(libc.ioctl(77, 1, buf)).toBe(-1);
    expect(libc.errno).toBe(EBADF);
  });

  it("lastError is the KernelError behind errno, kept like errno across calls that succeed", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR);
    expect(libc.lastError).toBeUndefined();
    expect(libc.ioctl(fd, 4, 0)).toBe(-1);
    const first = libc.lastError;
    expect(first).toBeInstanceOf(KernelError);
    expect(first?.errno).toBe(ENODEV);
    expect(libc.ioctl(fd, 3, 0x12)).toBe(0x12);
    expect([libc.lastError, libc.errno]).toEqual([first, ENODEV]);
    expect(libc.ioctl(fd, 99)).toBe(-1);
    expect(libc.lastError).not.toBe(first);
    expect(libc.lastError?.errno).toBe(ENOTTY);
  });

  it("a driver's -errno from ioctlErrno carries its KernelError to lastError; a WARN is thrown on", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR);
    const buf = new Uint8Array(4);
    expect(libc.ioctl(fd, 5, buf)).toBe(-1);
    expect(libc.errno).toBe(EBUSY);
    expect(libc.lastError?.message).toBe("EBUSY (16): held by another user");
    expect(buf[0]).toBe(0xbb);
    // Taken by that call: a later bare -errno gets an error of its own.
    expect(libc.task.returnedError).toBeUndefined();
    expect(libc.ioctl(fd, 4, 0)).toBe(-1);
    expect(libc.lastError?.errno).toBe(ENODEV);
    expect(libc.lastError?.message).toBe("ENODEV (19): ioctl returned an error code");
    expect(() => libc.ioctl(fd, 6, 0)).toThrow(KernelWarning);
    expect(libc.errno).toBe(ENODEV);
    // Called outside a system call, it still returns the errno and keeps the error.
    const busy = new KernelError(EBUSY, "again");
    expect(ioctlErrno(k, busy)).toBe(-EBUSY);
    expect(k.current.returnedError).toBe(busy);
    // A handler that returns its errno with the error kept (not thrown): the same answer.
    expect(libc.ioctl(fd, 7, buf)).toBe(-1);
    expect([libc.errno, libc.lastError?.message]).toEqual([ENOENT, "ENOENT (2): object 9: id=9"]);
    expect(buf[0]).toBe(0xcc);
    expect(libc.task.returnedError).toBeUndefined();
    // An error kept before a call does not explain that call's bare -errno.
    k.runAs(libc.task, () => ioctlErrno(k, new KernelError(ENODEV, "from before")));
    expect(libc.ioctl(fd, 4, 0)).toBe(-1);
    expect(libc.lastError?.message).toBe("ENODEV (19): ioctl returned an error code");
  });

  it("ENOTTY for a file without ioctl; EFAULT from a bad user pointer", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const m = libc.memfdCreate("m", 0);
    expect(libc.ioctl(m, 1, new Uint8Array(4))).toBe(-1);
    expect(libc.errno).toBe(ENOTTY);
    const fd = libc.open("/dev/echo", O_RDWR);
    expect(libc.ioctl(fd, 1, 0x1000n)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
  });

  it("a final fput inside a syscall releases the file when the call returns (task_work)", () => {
    const { k, libc } = setup();
    const lock = new Mutex(k.lockdep, "exporter.lock");
    const order: string[] = [];
    const victim = new File(
      { name: "victim", release: () => lock.with(() => order.push("release")) },
      null,
    );
    k.registerDevice(
      "/dev/dropper",
      (_k, flags) =>
        new File(
          {
            name: "dropper",
            ioctl: () =>
              lock.with(() => {
                victim.put(); // the last reference, dropped under the lock its release takes
                order.push("ioctl done");
                return 0;
              }),
          },
          null,
          flags,
        ),
    );
    const fd = libc.open("/dev/dropper", O_RDWR);
    expect(libc.ioctl(fd, 0)).toBe(0);
    expect(order).toEqual(["ioctl done", "release"]);
    // outside a syscall the last put releases at once
    let now = false;
    new File({ name: "x", release: () => void (now = true) }, null).put();
    expect(now).toBe(true);
  });

  /** A device whose ioctl takes a mutex of class `name` and then does `after` (no unlock). */
  function lockingDevice(k: Kernel, name: string, after: () => number): string {
    const m = new Mutex(k.lockdep, name);
    const ioctl = () => {
      m.lock();
      return after();
    };
    k.registerDevice(`/dev/${name}`, (_k, flags) => new File({ name, ioctl }, null, flags));
    return `/dev/${name}`;
  }

  it("a lock left held across a syscall is caught at the boundary", () => {
    const { k, libc } = setup();
    const fd = libc.open(
      lockingDevice(k, "leaky", () => 0),
      O_RDWR,
    );
    expect(() => libc.ioctl(fd, 0)).toThrow(/locks still held/);
  });

  it("a failing syscall that leaves its lock held is caught too, as the calling task", () => {
    const { k } = setup();
    // A process of its own: the kernel's current task is another one between calls.
    const libc = new Libc(k, k.newProcess(1000, []));
    const path = lockingDevice(k, "leaky-error-path", () => fail(EINVAL, "no unlock"));
    const fd = libc.open(path, O_RDWR);
    expect(() => libc.ioctl(fd, 0)).toThrow(/locks still held: leaky-error-path/);
  });

  it("a WARN that leaves a lock held reaches the caller as the WARN, not as a lockdep report", () => {
    const { k } = setup();
    const libc = new Libc(k, k.newProcess(1000, []));
    const path = lockingDevice(k, "held-at-warn", () => {
      throw new KernelWarning("broken invariant");
    });
    const fd = libc.open(path, O_RDWR);
    expect(() => libc.ioctl(fd, 0)).toThrow(/broken invariant/);
  });
});

describe("Libc memory and files", () => {
  it("memfd_create: flags, name and hugetlb size errors come back as errno with no fd used", () => {
    const { libc } = setup();
    expect(libc.memfdCreate("x", 0x1000)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.memfdCreate("x".repeat(300), 0)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.memfdCreate("x", MFD_HUGETLB | (12 << 26))).toBe(-1);
    expect(libc.errno).toBe(ENODEV);
    expect(libc.process.files.openCount).toBe(0);
    const fd = libc.memfdCreate("x", MFD_CLOEXEC);
    expect(fd).toBe(0);
    expect(libc.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
  });

  it("ftruncate: EINVAL for a negative length before EBADF; EINVAL for a non-memfd", () => {
    const { k, libc } = setup();
    echoDevice(k);
    expect(libc.ftruncate(99, -1)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.ftruncate(99, 1)).toBe(-1);
    expect(libc.errno).toBe(EBADF);
    const dev = libc.open("/dev/echo", O_RDWR);
    expect(libc.ftruncate(dev, 1)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    const m = libc.memfdCreate("m", MFD_HUGETLB);
    expect(libc.ftruncate(m, 4096)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.ftruncate(m, 2 << 20)).toBe(0);
  });

  it("pread/pwrite go to the driver's read/write with the Linux checks", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR);
    const buf = new Uint8Array(3);
    expect(libc.pread(fd, buf, 10n)).toBe(3);
    expect([...buf]).toEqual([10, 11, 12]);
    expect(libc.pwrite(fd, new Uint8Array(5), 0)).toBe(5);
    expect(libc.pread(fd, buf, -1)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    const ro = libc.open("/dev/echo", O_RDONLY);
    expect(libc.pwrite(ro, buf, 0)).toBe(-1);
    expect(libc.errno).toBe(EBADF);
    // A file without a read method (FMODE_CAN_READ unset); memfds can be read, as in Linux.
    const m = libc.process.files.install(new File({ name: "noread" }, undefined, O_RDWR));
    expect(libc.pread(m, buf, 0)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.pread(libc.memfdCreate("m", 0), buf, 0)).toBe(0);
  });

  it("malloc hands out user memory that peek/poke and ioctls can use", () => {
    const { libc } = setup();
    const a = libc.malloc(10);
    const b = libc.malloc(3 << 20);
    expect(b).not.toBe(a);
    libc.poke(a, new Uint8Array([1, 2, 3]));
    libc.poke(b + (3n << 20n) - 1n, new Uint8Array([9]));
    expect([...libc.peek(a, 3)]).toEqual([1, 2, 3]);
    expect(libc.peek(b + (3n << 20n) - 1n, 1)[0]).toBe(9);
  });

  it("free gives a block back to the next malloc of its size; a bad free throws", () => {
    const { libc } = setup();
    const a = libc.malloc(100);
    const b = libc.malloc(128);
    const c = libc.malloc(64);
    libc.free(a);
    // Rounded to 64 bytes, 100 and 128 are one size: the freed block comes back, not new memory.
    expect(libc.malloc(120)).toBe(a);
    expect(libc.malloc(100)).toBe(c + 64n);
    libc.free(c);
    libc.free(b);
    // Last freed, first reused, and only for its own size.
    expect(libc.malloc(128)).toBe(b);
    expect(libc.malloc(64)).toBe(c);
    // Two blocks of one size freed: both come back.
    const d = libc.malloc(64);
    libc.free(c);
    libc.free(d);
    expect([libc.malloc(64), libc.malloc(64)]).toEqual([d, c]);
    libc.free(0n);
    expect(() => libc.free(c + 1n)).toThrow(/not a live malloc block/);
    libc.free(c);
    expect(() => libc.free(c)).toThrow(/not a live malloc block/);
  });

  it("poke is all-or-nothing across a mapping's end", () => {
    const { libc } = setup();
    const va = libc.mmap(0n, 4096n, PROT_READ | PROT_WRITE, 0x22, -1, 0);
    expectErrno(() => libc.poke(va + 4090n, new Uint8Array(10).fill(1)), EFAULT);
    expect(libc.peek(va + 4090n, 6).every((x) => x === 0)).toBe(true);
  });

  it("fork copies descriptors; the child's close does not affect the parent", () => {
    const { k, libc } = setup();
    const dev = echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR);
    const child = libc.fork();
    expect(child.pid).not.toBe(libc.pid);
    expect(child.close(fd)).toBe(0);
    expect(dev.releases).toBe(0);
    expect(libc.ioctl(fd, 3, 5)).toBe(5);
    child.exit();
    libc.exit();
    expect(dev.releases).toBe(1);
    expect(memState(k)).toEqual({ allocated: 0, pinned: 0 });
  });

  it("mmap through the facade of a memfd opened by another path is shared", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 4096);
    const a = libc.mmap(0n, 4096n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const d = libc.dup(fd);
    const b = libc.mmap(0n, 4096n, PROT_READ, MAP_SHARED, d, 0);
    libc.poke(a, new Uint8Array([3]));
    expect(libc.peek(b, 1)[0]).toBe(3);
    expect(libc.mmap(0n, 1n << 50n, PROT_READ, MAP_SHARED, d, 0)).toBe(-1n);
    expect(libc.errno).toBe(ENOMEM);
  });
});

/** TASK_SIZE_MAX of x86-64 with 4-level paging (arch/x86/include/asm/page_64_types.h). */
const TASK_SIZE = (1n << 47n) - 4096n;

/** A device recording every read and write with the position it was given. */
function posDevice(k: Kernel, keepsPos = false): { calls: string[] } {
  const state = { calls: [] as string[] };
  const fops: FileOperations = {
    name: keepsPos ? "stream" : "pos",
    keepsPos,
    read(_f, len, pos) {
      state.calls.push(`read ${len}@${pos}`);
      return new Uint8Array(len).fill(Number(pos & 0xffn));
    },
    write(_f, data, pos) {
      state.calls.push(`write ${data.length}@${pos}`);
      return data.length;
    },
  };
  k.registerDevice(`/dev/${fops.name}`, (_k, flags) => new File(fops, null, flags));
  return state;
}

describe("Libc system-call edges", () => {
  it("read(2) checks access_ok before asking the file; a fault copying out comes after", () => {
    const { k, libc } = setup();
    const dev = posDevice(k);
    const fd = libc.open("/dev/pos", O_RDWR);
    for (const [addr, count] of [
      [-4096n, 1],
      [TASK_SIZE + 1n, 0],
      [TASK_SIZE - 10n, 11],
    ] as const) {
      expect(libc.read(fd, addr, count)).toBe(-1);
      expect(libc.errno).toBe(EFAULT);
    }
    expect(dev.calls).toEqual([]);
    // Inside TASK_SIZE but unmapped: the file is read, then copy_to_user faults.
    expect(libc.read(fd, TASK_SIZE - 10n, 10)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(dev.calls).toEqual(["read 10@0"]);
    // Empty reads at the ends of the range pass access_ok.
    expect(libc.read(fd, 0n, 0)).toBe(0);
    expect(libc.read(fd, TASK_SIZE, 0)).toBe(0);
    expect(libc.write(fd, TASK_SIZE + 1n, 1)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(dev.calls).toEqual(["read 10@0", "read 0@0", "read 0@0"]);
  });

  it("read/write advance f_pos, except for a stream file; pread/pwrite never do", () => {
    const { k, libc } = setup();
    const dev = posDevice(k);
    const fd = libc.open("/dev/pos", O_RDWR);
    const buf = new Uint8Array(3);
    expect(libc.read(fd, buf)).toBe(3);
    expect(libc.write(fd, new Uint8Array(4))).toBe(4);
    expect(libc.read(fd, buf)).toBe(3);
    expect([...buf]).toEqual([7, 7, 7]);
    expect(libc.pread(fd, buf, 100)).toBe(3);
    expect(libc.pwrite(fd, buf, 200)).toBe(3);
    expect(libc.write(fd, buf)).toBe(3);
    expect(dev.calls).toEqual([
      "read 3@0",
      "write 4@3",
      "read 3@7",
      "read 3@100",
      "write 3@200",
      "write 3@10",
    ]);
    const stream = posDevice(k, true);
    const s = libc.open("/dev/stream", O_RDWR);
    libc.read(s, buf);
    libc.write(s, buf);
    libc.read(s, buf);
    expect(stream.calls).toEqual(["read 3@0", "write 3@0", "read 3@0"]);
  });

  it("EBADF for the wrong access mode, EINVAL for a file without the method or a negative offset", () => {
    const { k, libc } = setup();
    const dev = posDevice(k);
    const wo = libc.open("/dev/pos", O_WRONLY);
    const buf = new Uint8Array(2);
    expect(libc.pread(wo, buf, 0)).toBe(-1);
    expect(libc.errno).toBe(EBADF);
    const rw = libc.open("/dev/pos", O_RDWR);
    expect(libc.pwrite(rw, buf, -1)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(dev.calls).toEqual([]);
    const none = libc.process.files.install(new File({ name: "none" }, undefined, O_RDWR));
    expect(libc.read(none, buf)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.write(none, buf)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
  });

  it("ftruncate: a zero length is fine; a memfd opened read-only is EINVAL", () => {
    const { libc } = setup();
    const m = libc.memfdCreate("m", 0);
    expect(libc.ftruncate(m, 4096)).toBe(0);
    expect(libc.ftruncate(m, 0)).toBe(0);
    // The same inode opened O_RDONLY, as a reopen through /proc/self/fd would give.
    const f = libc.process.files.lookup(m);
    const ro = libc.process.files.install(new File(f.fops, f.priv, O_RDONLY));
    expect(libc.ftruncate(ro, 4096)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
  });

  it("fcntl: F_DUPFD from 0 up to RLIMIT_NOFILE - 1, EINVAL outside; F_SETFD clears FD_CLOEXEC", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR | O_CLOEXEC);
    expect(libc.fcntl(fd, F_DUPFD, 0)).toBe(1);
    libc.setrlimit(RLIMIT_NOFILE, 8);
    expect(libc.fcntl(fd, F_DUPFD, 7)).toBe(7);
    for (const arg of [-1, 8]) {
      expect(libc.fcntl(fd, F_DUPFD, arg)).toBe(-1);
      expect(libc.errno).toBe(EINVAL);
    }
    expect(libc.process.files.openCount).toBe(3);
    expect(libc.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
    expect(libc.fcntl(fd, F_SETFD, 2)).toBe(0);
    expect(libc.fcntl(fd, F_GETFD)).toBe(0);
  });

  it("setrlimit: 0 is a limit, a negative or fractional value is EINVAL", () => {
    const { k, libc } = setup();
    echoDevice(k);
    expect(libc.setrlimit(RLIMIT_NOFILE, -1)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.setrlimit(RLIMIT_NOFILE, 1.5)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.setrlimit(RLIMIT_NOFILE, 0)).toBe(0);
    expect(libc.open("/dev/echo", O_RDWR)).toBe(-1);
    expect(libc.errno).toBe(EMFILE);
    const fds: [number, number] = [-1, -1];
    expect(libc.pipe2(fds, 0)).toBe(-1);
    expect(libc.errno).toBe(EMFILE);
    expect(fds).toEqual([-1, -1]);
  });

  it("poll: nfds up to RLIMIT_NOFILE; a ready descriptor returns even with no timeout", () => {
    const { libc } = setup();
    const efd = libc.eventfd(1, 0);
    libc.setrlimit(RLIMIT_NOFILE, 2);
    const entry = (): PollFd => ({ fd: efd, events: POLLIN, revents: 0 });
    expect(libc.poll([entry(), entry(), entry()], 0)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    const two = [entry(), entry()];
    expect(libc.poll(two, -1)).toBe(2);
    expect(two.map((p) => p.revents)).toEqual([POLLIN, POLLIN]);
    expect(() => libc.poll([{ fd: -1, events: POLLIN, revents: 0 }], -1)).toThrow(
      /poll with no timeout/,
    );
  });

  it("waitpid reaps the child asked for, and only an exited one", () => {
    const { libc } = setup();
    const a = libc.fork();
    const b = libc.fork();
    b.exit(3);
    expect(() => libc.waitpid(a.pid)).toThrow(/waitpid for running child/);
    const status = { value: -1 };
    expect(libc.waitpid(b.pid, status)).toBe(b.pid);
    expect(status.value >> 8).toBe(3);
    expect(libc.waitpid(b.pid)).toBe(-1);
    expect(libc.errno).toBe(ECHILD);
    a.exit();
    expect(libc.waitpid(a.pid)).toBe(a.pid);
  });

  it("ioctl structs live in one scratch mapping, grown to whole pages only when too small", () => {
    const { k, libc } = setup();
    echoDevice(k);
    const fd = libc.open("/dev/echo", O_RDWR);
    const mapped = (): bigint =>
      libc.process.mm.vmaList().reduce((s, v) => s + v.endAddr - v.startAddr, 0n);
    expect(libc.ioctl(fd, 1, new Uint8Array(0))).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(mapped()).toBe(0n);
    expect(libc.ioctl(fd, 1, new Uint8Array(4096))).toBe(7);
    expect(libc.ioctl(fd, 1, new Uint8Array(8))).toBe(7);
    expect(mapped()).toBe(4096n);
    const big = new Uint8Array(5000);
    expect(libc.ioctl(fd, 1, big)).toBe(7);
    expect(big[0]).toBe(1);
    expect(mapped()).toBe(4096n + 8192n);
  });

  it("malloc packs 64-byte slots into 1 MiB chunks and maps a larger request whole", () => {
    const { libc } = setup();
    const a = libc.malloc(10);
    expect(libc.malloc(64)).toBe(a + 64n);
    expect(libc.malloc(65)).toBe(a + 128n);
    const c = libc.malloc(8192);
    expect(c).toBe(a + 256n);
    // Exactly to the chunk's end: still this chunk.
    expect(libc.malloc((1 << 20) - 256 - 8192)).toBe(c + 8192n);
    const big = libc.malloc((3 << 20) + 1);
    const vma = libc.process.mm.vmaAt(big);
    expect(vma?.startAddr).toBe(big);
    expect(vma?.endAddr).toBe(big + (3n << 20n) + 4096n);
  });
});
