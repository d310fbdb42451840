import { expect } from "vitest";
import {
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  isKernelError,
} from "../src/index.js";

/** What the mm tests map with. */
export const RW = PROT_READ | PROT_WRITE;
export const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
export const PAGE = 4096n;
export const MiB = 1n << 20n;

/** A machine of `ramBytes` and a process on it. */
export function machine(ramBytes = 1n << 30n): { k: Kernel; libc: Libc } {
  const k = new Kernel({ ramBytes });
  return { k, libc: new Libc(k) };
}

/** Assert `fn` throws a KernelError with `errno`. */
export function expectErrno(fn: () => unknown, errno: number): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isKernelError(caught, errno), `expected errno ${errno}, got ${String(caught)}`).toBe(true);
}

/** The machine-wide memory state a failed operation must leave unchanged. */
export function memState(k: Kernel): { allocated: number; pinned: number } {
  return { allocated: k.mem.allocatedPages(), pinned: k.mem.totalPinned() };
}
