import { describe, expect, it, vi } from "vitest";
import {
  E2BIG,
  EFAULT,
  ENOMEM,
  Kernel,
  KernelWarning,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  copyFromUser,
  copyStructFromUser,
  copyToUser,
  memdupArrayUser,
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

describe("uaccess: lengths, sizes and faults (include/linux/uaccess.h)", () => {
  function machine() {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const libc = new Libc(k);
    return { k, libc, mm: libc.process.mm };
  }
  const RW = PROT_READ | PROT_WRITE;
  const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
  const pattern = (n: number, seed = 0) =>
    Uint8Array.from({ length: n }, (_, i) => (i + seed) & 0xff);

  it("a copy of 0 bytes touches no memory, even at an unmapped address", () => {
    const { k } = machine();
    expect(copyFromUser(k, 0x7000_0123n, 0).length).toBe(0);
    copyToUser(k, 0x7000_0123n, new Uint8Array(0));
  });

  it("copies many pages from an unaligned start, the last page partly", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 40n * 4096n, RW, ANON, -1, 0);
    const data = pattern(37 * 4096 + 500, 7);
    copyToUser(k, va + 4000n, data);
    expect(copyFromUser(k, va + 4000n, data.length)).toEqual(data);
    expect(copyFromUser(k, va + 4000n, 596)).toEqual(data.subarray(0, 596));
  });

  it("a page that cannot be allocated in the fault is EFAULT, as any failed copy is", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    k.current.fault.arm(1);
    expectErrno(() => copyToUser(k, va, new Uint8Array([1])), EFAULT);
    k.current.fault.disarm();
  });

  it("a WARN in the fault path is not turned into EFAULT: it propagates", () => {
    const { k, libc, mm } = machine();
    const va = libc.mmap(0n, 4096n, RW, ANON, -1, 0);
    vi.spyOn(mm, "fault").mockImplementation(() => {
      throw new KernelWarning("fault");
    });
    expect(() => copyFromUser(k, va, 1)).toThrow(KernelWarning);
  });

  it("a read that faults leaves a page shared with a fork child shared (no unshare on read)", () => {
    const { k, libc, mm } = machine();
    const va = libc.mmap(0n, 8192n, RW, ANON, -1, 0);
    libc.poke(va, new Uint8Array([5]));
    libc.fork();
    const shared = mm.lookup(Number(va >> 12n));
    // Page 1 is missing, so the copy faults both pages, for read.
    expect(copyFromUser(k, va, 8192)[0]).toBe(5);
    expect([mm.lookup(Number(va >> 12n)), mm.isExclusive(Number(va >> 12n))]).toEqual([
      shared,
      false,
    ]);
  });

  it("copy_struct_from_user zero-extends a shorter struct and accepts a longer one only with a zero tail", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 8192n, RW, ANON, -1, 0);
    copyToUser(k, va, pattern(16, 1));
    expect([...copyStructFromUser(k, 8, va, 4)]).toEqual([1, 2, 3, 4, 0, 0, 0, 0]);
    expect([...copyStructFromUser(k, 4, va, 4)]).toEqual([1, 2, 3, 4]);
    expectErrno(() => copyStructFromUser(k, 4, va, 8), E2BIG);
    copyToUser(k, va + 4n, new Uint8Array(12));
    // A byte just past the user struct is not part of it.
    copyToUser(k, va + 16n, new Uint8Array([9]));
    expect([...copyStructFromUser(k, 4, va, 16)]).toEqual([1, 2, 3, 4]);
    // One non-zero byte anywhere in the tail is enough for E2BIG.
    copyToUser(k, va + 10n, new Uint8Array([1]));
    expectErrno(() => copyStructFromUser(k, 4, va, 16), E2BIG);
    // The tail is read before the struct: an unreadable tail is EFAULT.
    expectErrno(() => copyStructFromUser(k, 4, va + 8188n, 8), EFAULT);
  });

  it("copy_struct_from_user into a reused buffer: zero-extended past the user struct, untouched on failure", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 8192n, RW, ANON, -1, 0);
    copyToUser(k, va, pattern(16, 1));
    const dst = new Uint8Array(12).fill(0xee);
    expect(copyStructFromUser(k, 8, va, 4, dst)).toBe(dst);
    // ksize bytes are the struct; the buffer's bytes past ksize are not the call's.
    expect([...dst]).toEqual([1, 2, 3, 4, 0, 0, 0, 0, 0xee, 0xee, 0xee, 0xee]);
    dst.fill(0xee);
    expectErrno(() => copyStructFromUser(k, 4, va, 8, dst), E2BIG);
    expectErrno(() => copyStructFromUser(k, 8, va + 8188n, 8, dst), EFAULT);
    expect([...dst]).toEqual(new Array(12).fill(0xee));
  });

  it("memdup_array_user: ENOMEM when injected or larger than KMALLOC_MAX_SIZE, before reading", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 8192n, RW, ANON, -1, 0);
    copyToUser(k, va, pattern(12, 3));
    expect([...memdupArrayUser(k, va, 3, 4)]).toEqual([...pattern(12, 3)]);
    // 4 MiB + 8 bytes from an address with nothing mapped behind it: ENOMEM, not EFAULT.
    expectErrno(() => memdupArrayUser(k, va, (4 << 20) / 8 + 1, 8), ENOMEM);
    k.current.fault.arm(1);
    expectErrno(() => memdupArrayUser(k, 0x10n, 1, 8), ENOMEM);
    expect(k.current.fault.failedSite).toBe("memdup_array_user");
    k.current.fault.disarm();
  });

  it("memdup_array_user copies exactly KMALLOC_MAX_SIZE bytes", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 4n << 20n, RW, ANON, -1, 0);
    expect(memdupArrayUser(k, va, 1024, 4096).length).toBe(4 << 20);
  });
});
