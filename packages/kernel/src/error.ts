import { errnoName } from "./errno.js";

/** Values that explain a failure: bigints (IOVAs, addresses, lengths) print in hex. */
export type FailDetails = Readonly<Record<string, bigint | number | string | boolean | undefined>>;

const hex = (v: bigint) => (v < 0n ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`);

/**
 * "EINVAL (22): iova not aligned: iova=0x1000 alignment=0x2000" — the errno's name and number,
 * the reason, then each detail as name=value (bigints in hex, undefined ones left out).
 */
function formatKernelError(
  name: string,
  errno: number,
  reason?: string,
  details?: FailDetails,
): string {
  let text = `${name} (${errno})`;
  if (reason) text += `: ${reason}`;
  // A plain loop: fuzzers and sweeps format thousands of these a second.
  let pairs = "";
  for (const k in details) {
    const v = details[k];
    if (v === undefined) continue;
    pairs += `${pairs ? " " : ""}${k}=${typeof v === "bigint" ? hex(v) : String(v)}`;
  }
  return pairs ? `${text}: ${pairs}` : text;
}

/** Owners (an armed fault injector, a running fuzzer) that turned stack capture off. */
const stacklessOwners = new Set<object>();

/**
 * Turn JS stack capture for KernelErrors off (`quiet`) or back on for `owner`; while any owner
 * has it off, new KernelErrors carry no stack. Fail-nth sweeps and fuzzers raise thousands of
 * expected errnos, and a stack costs microseconds each.
 */
export function setErrorStacksQuiet(owner: object, quiet: boolean): void {
  if (quiet) stacklessOwners.add(owner);
  else stacklessOwners.delete(owner);
}

/** Run `fn` with KernelError stacks off (a fuzzer's whole run). */
export function withoutErrorStacks<T>(fn: () => T): T {
  const owner = {};
  setErrorStacksQuiet(owner, true);
  try {
    return fn();
  } finally {
    setErrorStacksQuiet(owner, false);
  }
}

/**
 * An errno crossing a function boundary. Kernel functions that return -errno in C throw this;
 * the user-space facade turns it into `-1` with `errno` set.
 */
export class KernelError extends Error {
  /**
   * Decision: an error that reaches a person should say where it came from, so KernelErrors
   * capture a stack by default. KERNEL_ERROR_STACKS=0 in the environment, or setting this to
   * false, turns capture off everywhere; sweeps and fuzzers turn it off for their own run with
   * `setErrorStacksQuiet` / `withoutErrorStacks`.
   */
  static captureStacks =
    (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env
      ?.KERNEL_ERROR_STACKS !== "0";

  readonly errno: number;
  readonly errnoName: string;
  /** The reason given at the throw site. */
  readonly context: string | undefined;
  readonly details: FailDetails | undefined;

  constructor(errno: number, context?: string, details?: FailDetails) {
    const name = errnoName(errno);
    if (KernelError.captureStacks && stacklessOwners.size === 0) {
      super(formatKernelError(name, errno, context, details));
    } else {
      // Stackless ones are the expected errnos of sweeps and fuzzers, most never read: their
      // message is formatted on first read (the getter below), which halves their cost.
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 0;
      try {
        super();
      } finally {
        Error.stackTraceLimit = limit;
      }
    }
    this.name = "KernelError";
    this.errno = errno;
    this.errnoName = name;
    this.context = context;
    this.details = details;
  }

  /** What node prints for an uncaught one: the message and, when captured, where it came from. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.stack?.includes("\n") ? this.stack : `${this.name}: ${this.message}`;
  }
}

/**
 * The message of a stackless KernelError, formatted whenever it is read. Assigning one (test
 * runners rewrite messages) makes it an own property, as on any Error.
 */
Object.defineProperty(KernelError.prototype, "message", {
  get(this: KernelError): string {
    return formatKernelError(this.errnoName, this.errno, this.context, this.details);
  },
  set(this: KernelError, value: string) {
    Object.defineProperty(this, "message", { value, writable: true });
  },
});

/**
 * Throw `errno` as a KernelError, with the reason and the values that explain it
 * (`fail(EINVAL, "iova not aligned", { iova, alignment })`). Typed `never` so callers can
 * `return fail(EINVAL)`.
 */
export function fail(errno: number, context?: string, details?: FailDetails): never {
  throw new KernelError(errno, context, details);
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
