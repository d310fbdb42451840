import { expect } from "vitest";
import { type Kernel, isKernelError } from "../src/index.js";

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
