import { errnoName } from "./errno.js";

/**
 * An errno crossing a function boundary. Kernel functions that return -errno in C throw this;
 * the user-space facade turns it into `-1` with `errno` set.
 */
export class KernelError extends Error {
  /**
   * Decision: an errno is ordinary control flow here (fail-nth sweeps raise thousands), and
   * capturing a stack costs several microseconds, so KernelErrors carry no stack unless this
   * is set (or KERNEL_ERROR_STACKS=1 is in the environment). The message names the errno and
   * the reason.
   */
  static captureStacks =
    (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env
      ?.KERNEL_ERROR_STACKS === "1";

  readonly errno: number;
  readonly errnoName: string;
  readonly context: string | undefined;

  constructor(errno: number, context?: string) {
    const name = errnoName(errno);
    const limit = Error.stackTraceLimit;
    if (!KernelError.captureStacks) Error.stackTraceLimit = 0;
    try {
      super(context ? `${name}: ${context}` : name);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = "KernelError";
    this.errno = errno;
    this.errnoName = name;
    this.context = context;
  }
}

/** Throw `errno` as a KernelError. Typed `never` so callers can `return fail(EINVAL)`. */
export function fail(errno: number, context?: string): never {
  throw new KernelError(errno, context);
}

export function isKernelError(e: unknown, errno?: number): e is KernelError {
  return e instanceof KernelError && (errno === undefined || e.errno === errno);
}

/** A WARN_ON that fired: a bug in the model or its caller, never an expected outcome. */
export class KernelWarning extends Error {
  constructor(message: string) {
    super(`WARNING: ${message}`);
    this.name = "KernelWarning";
  }
}

/**
 * WARN_ON. The kernel's macro (include/asm-generic/bug.h) prints a backtrace, taints and then
 * returns the condition, so callers write `if (WARN_ON(x)) return -EINVAL;` to limp on. In this
 * model a WARN is always a bug to surface, so a true condition throws `KernelWarning` and the
 * recovery branch could never run. The function therefore returns nothing: a WARN is a plain
 * statement, and the compiler rejects `if (WARN_ON(...))` with its dead recovery code.
 */
export function WARN_ON(condition: boolean, message = "WARN_ON"): void {
  if (condition) throw new KernelWarning(message);
}
