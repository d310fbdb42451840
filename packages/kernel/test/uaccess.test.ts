import { describe, expect, it } from "vitest";
import {
  EFAULT,
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  copyFromUser,
  copyToUser,
} from "../src/index.js";
import { expectErrno } from "./helpers.js";

describe("uaccess", () => {
  it("copies across pages of the current task's mm", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const libc = new Libc(k);
    const va = libc.mmap(0n, 8192n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    copyToUser(
      k,
      va + 4000n,
      Uint8Array.from({ length: 200 }, (_, i) => i),
    );
    expect([...copyFromUser(k, va + 4095n, 3)]).toEqual([95, 96, 97]);
    expect(copyFromUser(k, va, 0).length).toBe(0);
  });

  it("EFAULT with nothing written when any byte is unmapped or read-only", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const libc = new Libc(k);
    const va = libc.mmap(0n, 8192n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    libc.munmap(va + 4096n, 4096n);
    expectErrno(() => copyToUser(k, va + 4090n, new Uint8Array(10).fill(7)), EFAULT);
    expect(copyFromUser(k, va + 4090n, 6).every((b) => b === 0)).toBe(true);
    expectErrno(() => copyFromUser(k, va + 4090n, 10), EFAULT);
    expectErrno(() => copyFromUser(k, -5n, 1), EFAULT);
    const ro = libc.mmap(0n, 4096n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    expectErrno(() => copyToUser(k, ro, new Uint8Array(1)), EFAULT);
  });

  it("uses the mm of whichever task is current", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const a = new Libc(k);
    const b = new Libc(k, k.newProcess(1000));
    const va = a.mmap(0n, 4096n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    a.poke(va, new Uint8Array([1]));
    expectErrno(() => b.peek(va, 1), EFAULT);
    expect(k.runAs(a.task, () => copyFromUser(k, va, 1))[0]).toBe(1);
  });
});
