import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import {
  Kernel,
  type KernelOptions,
  Libc,
  LockdepError,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  Mutex,
  PROT_READ,
  PROT_WRITE,
  copyFromUser,
  copyToUser,
} from "../src/index.js";

const RW = PROT_READ | PROT_WRITE;

function machine(opts: KernelOptions = {}) {
  const k = new Kernel({ ramBytes: 1n << 30n, ...opts });
  const libc = new Libc(k);
  const mm = libc.task.process.mm;
  return { k, libc, mm };
}

describe("user copies: present PTEs without mmap_lock, misses through the fault path", () => {
  it("takes mmap_lock only when a page is missing", () => {
    const { k, libc, mm } = machine();
    const va = libc.mmap(0n, 8192n, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    const withRead = vi.spyOn(mm.mmapLock, "withRead");
    // First touch: a miss, faulted under the lock.
    copyToUser(
      k,
      va + 4090n,
      Uint8Array.from({ length: 12 }, (_, i) => i + 1),
    );
    expect(withRead).toHaveBeenCalledTimes(1);
    expect(mm.residentPrivatePages).toBe(2);
    // Both pages present and exclusive: no lock, same bytes.
    expect([...copyFromUser(k, va + 4090n, 12)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    copyToUser(k, va + 4095n, new Uint8Array([42]));
    expect(withRead).toHaveBeenCalledTimes(1);
    expect(copyFromUser(k, va + 4095n, 1)[0]).toBe(42);
    k.lockdep.assertNoneHeld();
  });

  it("a write to a page shared with a fork child faults (COW) instead of writing through", () => {
    const { libc, mm } = machine();
    const va = libc.mmap(0n, 4096n, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    libc.poke(va, new Uint8Array([1]));
    const child = libc.fork();
    const before = mm.lookup(Number(va >> 12n));
    expect(mm.isExclusive(Number(va >> 12n))).toBe(false);
    // A read of the shared page needs no fault.
    expect(mm.presentPfn(Number(va >> 12n), false)).toBe(before);
    expect(mm.presentPfn(Number(va >> 12n), true)).toBe(-1);
    libc.poke(va, new Uint8Array([2]));
    expect(mm.lookup(Number(va >> 12n))).not.toBe(before);
    expect(child.peek(va, 1)[0]).toBe(1);
    expect(libc.peek(va, 1)[0]).toBe(2);
  });

  it("presentPfn, when it answers, is the pfn `fault` would return, with no fault work done", () => {
    // Ops over an anonymous private mapping, a shared memfd mapping and a private memfd
    // mapping (read-only and read-write), with forks: after each, every page's fast-path
    // answer is checked against the fault path on a copy of the decision.
    const op = fc.oneof(
      fc.record({ kind: fc.constant("touch" as const), page: fc.nat(11), write: fc.boolean() }),
      fc.record({ kind: fc.constant("fork" as const) }),
      fc.record({ kind: fc.constant("unmap" as const), page: fc.nat(11) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 12 }), (ops) => {
        const { k, libc, mm } = machine();
        const fd = libc.memfdCreate("f", 0);
        libc.ftruncate(fd, 3 * 4096);
        const base = libc.mmap(0n, 12n * 4096n, 0, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        libc.mmap(base, 3n * 4096n, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        libc.mmap(base + 3n * 4096n, 4n * 4096n, RW, MAP_SHARED | MAP_FIXED, fd, 0);
        libc.mmap(base + 7n * 4096n, 3n * 4096n, RW, MAP_PRIVATE | MAP_FIXED, fd, 0);
        libc.mmap(base + 10n * 4096n, 2n * 4096n, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
        const vpn0 = Number(base >> 12n);
        const children: Libc[] = [];
        for (const o of ops) {
          if (o.kind === "fork") children.push(libc.fork());
          else if (o.kind === "unmap") libc.munmap(base + BigInt(o.page) * 4096n, 4096n);
          else {
            try {
              if (o.write) libc.poke(base + BigInt(o.page) * 4096n, new Uint8Array([o.page]));
              else libc.peek(base + BigInt(o.page) * 4096n, 1);
            } catch {
              // EFAULT where the page is beyond EOF, read-only or unmapped.
            }
          }
          for (let p = 0; p < 12; p++) {
            for (const write of [false, true]) {
              const fast = mm.presentPfn(vpn0 + p, write);
              if (fast < 0) continue;
              const resident = mm.residentPrivatePages;
              const cached = k.mem.allocatedPages();
              expect(mm.mmapLock.withRead(() => mm.fault(vpn0 + p, write, false))).toBe(fast);
              // No fault work was needed: nothing allocated, no PTE added.
              expect(mm.residentPrivatePages).toBe(resident);
              expect(k.mem.allocatedPages()).toBe(cached);
            }
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it("keeps mmap_lock's lock order checked on the lock-free path (might_fault)", () => {
    // test_mutex and test_inner are not the stack's classes: the recorded graph alone.
    const { k, libc } = machine({ lockOrder: null });
    const va = libc.mmap(0n, 4096n, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    libc.poke(va, new Uint8Array([1]));
    const m = new Mutex(k.lockdep, "test_mutex");
    m.with(() => copyFromUser(k, va, 1));
    expect(k.lockdep.orderRecorded("test_mutex", "mmap_lock")).toBe(true);
    k.lockdep.assertNoneHeld();
    // The reverse order now is an inversion, even though the copy would not take the lock.
    const n = new Mutex(k.lockdep, "test_inner");
    libc.task.process.mm.mmapLock.withRead(() => n.with(() => undefined));
    expect(() => n.with(() => copyFromUser(k, va, 1))).toThrow(LockdepError);
  });
});
