import { shmemInode } from "../src/memfd.js";
import { memfdFcntl } from "../src/memfd-seals.js";
import { describe, expect, it } from "vitest";
import {
  EBADF,
  EBUSY,
  EINVAL,
  EPERM,
  F_ADD_SEALS,
  F_DUPFD,
  F_DUPFD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  F_SETFL,
  FD_CLOEXEC,
  File,
  Kernel,
  Libc,
  MAP_FAILED,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  MFD_NOEXEC_SEAL,
  O_APPEND,
  O_DIRECT,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  memfdPinFolios,
  PfnRuns,
} from "../src/index.js";
import { expectErrno } from "./helpers.js";

function setup(): { k: Kernel; libc: Libc } {
  const k = new Kernel({ ramBytes: 1n << 30n });
  return { k, libc: new Libc(k) };
}

const SZ = 4 * PAGE_SIZE;

function sealable(libc: Libc, flags = MFD_ALLOW_SEALING): number {
  const fd = libc.memfdCreate("s", flags);
  expect(libc.ftruncate(fd, SZ)).toBe(0);
  return fd;
}

function expectFail(libc: Libc, r: number | bigint, errno: number): void {
  expect(r).toBe(typeof r === "bigint" ? MAP_FAILED : -1);
  expect(libc.errno).toBe(errno);
}

describe("memfd seals", () => {
  it("uapi values", () => {
    expect([F_ADD_SEALS, F_GET_SEALS, F_SETFL]).toEqual([1033, 1034, 4]);
    expect([
      F_SEAL_SEAL,
      F_SEAL_SHRINK,
      F_SEAL_GROW,
      F_SEAL_WRITE,
      F_SEAL_FUTURE_WRITE,
      F_SEAL_EXEC,
    ]).toEqual([1, 2, 4, 8, 16, 32]);
  });

  it("without MFD_ALLOW_SEALING the memfd starts with F_SEAL_SEAL and refuses seals with EPERM", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("n", 0);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SEAL);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), EPERM);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SEAL);
    const fd2 = libc.memfdCreate("a", MFD_ALLOW_SEALING);
    expect(libc.fcntl(fd2, F_GET_SEALS)).toBe(0);
  });

  it("MFD_NOEXEC_SEAL adds F_SEAL_EXEC, keeping F_SEAL_SEAL unless sealing is allowed; hugetlb too", () => {
    const { libc } = setup();
    expect(libc.fcntl(libc.memfdCreate("x", MFD_NOEXEC_SEAL), F_GET_SEALS)).toBe(
      F_SEAL_SEAL | F_SEAL_EXEC,
    );
    const fd = libc.memfdCreate("y", MFD_NOEXEC_SEAL | MFD_ALLOW_SEALING);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_EXEC);
    expect(shmemInode(libc.process.files.lookup(fd))!.mode).toBe(0o666);
    expect(libc.fcntl(libc.memfdCreate("h", MFD_HUGETLB | MFD_ALLOW_SEALING), F_GET_SEALS)).toBe(0);
  });

  it("errno order of memfd_add_seals: EBADF, EPERM (not writable), EINVAL (bits), EINVAL (not memfd), EPERM (sealed)", () => {
    const { libc } = setup();
    expectFail(libc, libc.fcntl(9, F_ADD_SEALS, 1 << 10), EBADF);
    // A read-only non-memfd file: EPERM comes before both EINVALs.
    const ro = libc.process.files.install(new File({ name: "ro" }, undefined, O_RDONLY));
    expectFail(libc, libc.fcntl(ro, F_ADD_SEALS, 1 << 10), EPERM);
    const rw = libc.process.files.install(new File({ name: "rw" }, undefined, O_RDWR));
    expectFail(libc, libc.fcntl(rw, F_ADD_SEALS, 1 << 10), EINVAL);
    expectFail(libc, libc.fcntl(rw, F_ADD_SEALS, F_SEAL_GROW), EINVAL);
    expectFail(libc, libc.fcntl(rw, F_GET_SEALS), EINVAL);
    const fd = sealable(libc);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, 0x40), EINVAL);
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL)).toBe(0);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, 0x40), EINVAL);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), EPERM);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SEAL);
    // memfd_fcntl itself: any other command is EINVAL.
    expectErrno(() => memfdFcntl(libc.process.files.lookup(fd), F_SETFL, 0), EINVAL);
  });

  it("F_SEAL_SHRINK / F_SEAL_GROW refuse ftruncate in their direction with EPERM", () => {
    const { libc } = setup();
    const fd = sealable(libc);
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)).toBe(0);
    expectFail(libc, libc.ftruncate(fd, SZ - PAGE_SIZE), EPERM);
    expect(libc.ftruncate(fd, SZ)).toBe(0);
    expect(libc.ftruncate(fd, SZ * 2)).toBe(0);
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW)).toBe(0);
    expectFail(libc, libc.ftruncate(fd, SZ * 3), EPERM);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_GROW);
  });

  it("pwrite/pread work on a memfd; F_SEAL_GROW stops a write at EOF, returning what was written", () => {
    const { libc } = setup();
    const fd = sealable(libc);
    const data = new Uint8Array(PAGE_SIZE + 8).fill(7);
    expect(libc.pwrite(fd, data, SZ - PAGE_SIZE)).toBe(PAGE_SIZE + 8);
    expect(libc.ftruncate(fd, SZ)).toBe(0);
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW)).toBe(0);
    expect(libc.pwrite(fd, data, SZ - PAGE_SIZE)).toBe(PAGE_SIZE);
    expectFail(libc, libc.pwrite(fd, data, SZ), EPERM);
    const back = new Uint8Array(16);
    expect(libc.pread(fd, back, SZ - 8)).toBe(8);
    expect(Array.from(back.subarray(0, 8))).toEqual(Array(8).fill(7));
    expect(libc.pread(fd, back, 0)).toBe(16);
    expect(back.every((b) => b === 0)).toBe(true);
  });

  it.each([F_SEAL_WRITE, F_SEAL_FUTURE_WRITE])(
    "seal %i refuses writes and new shared writable mappings",
    (seal) => {
      const { libc } = setup();
      const fd = sealable(libc);
      expect(libc.fcntl(fd, F_ADD_SEALS, seal)).toBe(0);
      expectFail(libc, libc.pwrite(fd, new Uint8Array(4), 0), EPERM);
      expectFail(libc, libc.write(fd, new Uint8Array(4)), EPERM);
      expect(libc.pwrite(fd, new Uint8Array(0), 0)).toBe(0);
      expectFail(libc, libc.mmap(0n, SZ, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), EPERM);
      const ro = libc.mmap(0n, SZ, PROT_READ, MAP_SHARED, fd, 0);
      expect(ro).not.toBe(MAP_FAILED);
      const priv = libc.mmap(0n, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      expect(priv).not.toBe(MAP_FAILED);
      libc.poke(priv, new Uint8Array([1]));
      expect(shmemInode(libc.process.files.lookup(fd))!.mmapWritable).toBe(0);
    },
  );

  it("F_SEAL_WRITE is EBUSY while a shared mapping may write, and after the munmap succeeds", () => {
    const { libc } = setup();
    const fd = sealable(libc);
    const a = libc.mmap(0n, SZ, PROT_READ, MAP_SHARED, fd, 0);
    expect(a).not.toBe(MAP_FAILED);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW), EBUSY);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(0);
    // A split VMA keeps counting until both halves are gone.
    expect(libc.munmap(a, PAGE_SIZE)).toBe(0);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), EBUSY);
    const child = libc.fork();
    expect(libc.munmap(a + BigInt(PAGE_SIZE), SZ - PAGE_SIZE)).toBe(0);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), EBUSY);
    child.exit();
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)).toBe(0);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_WRITE);
    // F_SEAL_FUTURE_WRITE does not care about existing mappings.
    const fd2 = sealable(libc);
    const b = libc.mmap(0n, SZ, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
    expect(libc.fcntl(fd2, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)).toBe(0);
    libc.poke(b, new Uint8Array([3]));
  });

  it("F_SEAL_WRITE is EBUSY while pages are pinned", () => {
    const { k, libc } = setup();
    const fd = sealable(libc);
    const file = libc.process.files.lookup(fd);
    const runs = new PfnRuns();
    memfdPinFolios(k, file, 0n, BigInt(PAGE_SIZE - 1), runs, 1);
    expectFail(libc, libc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), EBUSY);
    runs.forEach((pfn, n) => {
      k.mem.unpinPages(pfn, n);
    });
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)).toBe(0);
  });

  it("F_SEAL_EXEC on an executable memfd also seals writes and size", () => {
    const { libc } = setup();
    const fd = sealable(libc);
    expect(libc.fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC)).toBe(0);
    expect(libc.fcntl(fd, F_GET_SEALS)).toBe(
      F_SEAL_EXEC | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE,
    );
    const nx = libc.memfdCreate("nx", MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
    expect(libc.fcntl(nx, F_ADD_SEALS, F_SEAL_EXEC)).toBe(0);
    expect(libc.fcntl(nx, F_GET_SEALS)).toBe(F_SEAL_EXEC);
  });
});

describe("fcntl descriptor and status commands", () => {
  it("F_SETFL changes only O_APPEND / O_NONBLOCK / O_NOATIME; O_DIRECT is EINVAL", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("f", 0);
    const base = libc.fcntl(fd, F_GETFL);
    expect(libc.fcntl(fd, F_SETFL, O_NONBLOCK | O_APPEND | O_RDONLY)).toBe(0);
    expect(libc.fcntl(fd, F_GETFL)).toBe(base | O_NONBLOCK | O_APPEND);
    expectFail(libc, libc.fcntl(fd, F_SETFL, O_DIRECT), EINVAL);
    expect(libc.fcntl(fd, F_GETFL)).toBe(base | O_NONBLOCK | O_APPEND);
    expect(libc.fcntl(fd, F_SETFL, 0)).toBe(0);
    expect(libc.fcntl(fd, F_GETFL)).toBe(base);
    expectFail(libc, libc.fcntl(42, F_SETFL, 0), EBADF);
  });

  it("F_DUPFD: EBADF first, then EINVAL at or past RLIMIT_NOFILE; F_DUPFD_CLOEXEC sets FD_CLOEXEC", () => {
    const { libc } = setup();
    const fd = libc.memfdCreate("d", 0);
    expectFail(libc, libc.fcntl(50, F_DUPFD, 5000), EBADF);
    expectFail(libc, libc.fcntl(fd, F_DUPFD, 1024), EINVAL);
    expectFail(libc, libc.fcntl(fd, F_DUPFD, -1), EINVAL);
    expect(libc.fcntl(fd, F_DUPFD, 10)).toBe(10);
    expect(libc.fcntl(10, F_GETFD)).toBe(0);
    expect(libc.fcntl(fd, F_DUPFD_CLOEXEC, 10)).toBe(11);
    expect(libc.fcntl(11, F_GETFD)).toBe(FD_CLOEXEC);
    expectFail(libc, libc.fcntl(fd, 9999), EINVAL);
  });
});
