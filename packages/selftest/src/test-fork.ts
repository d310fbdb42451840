/**
 * fork(2) and waitpid(2) inside a test body, as the C tests call them.
 *
 * The forked child is a process of the model (`Libc.fork`: its own descriptor table and a
 * copy-on-write address space) with its own test handle reporting into the instance's result,
 * as the C harness shares `_metadata` with every fork: an ASSERT failing in the child runs the
 * fixture teardown there (once for the whole test) and kills the child with SIGABRT, and the
 * test fails even though the parent never reads the child's status.
 *
 * The model has no scheduler. The child runs as soon as it is forked, up to the point where the
 * C child would sleep; its body is a generator that yields there the condition that wakes it.
 * The parent's `waitpid` runs it on once that condition holds; if it does not, the parent would
 * wait forever (the C test would hit the harness timeout) and TaskWouldSleepForever fails the
 * instance. Likewise a parent that waits for something a dead child never did (an eventfd it
 * never wrote) throws TaskWouldSleepForever from that read.
 */
import { type Libc, isKernelError } from "@x/kernel";
import type { TestMetadata } from "./harness.js";

/** What a sleeping child waits for: true once it can run on. */
export type WakeCondition = () => boolean;

type ChildSteps = Generator<WakeCondition, number, void>;

/** A child's body: returns its exit code; a generator body yields where the child sleeps. */
export type ChildBody<T> = (t: T) => number | ChildSteps;

interface HasLibc {
  readonly libc: Libc;
}

/** A forked child of a test; `pid` is -1 when fork failed (the C `child` value). */
export class TestChild<T extends TestMetadata<unknown, unknown, HasLibc>> {
  private wake: WakeCondition | undefined;
  private steps: ChildSteps | undefined;

  constructor(
    readonly pid: number,
    private readonly t: T | undefined,
    private readonly body: ChildBody<T>,
  ) {
    if (t) this.run();
  }

  /** Runs the child until it sleeps or ends. */
  private run(): void {
    const t = this.t!;
    let r: IteratorResult<WakeCondition, number> | undefined;
    const ran = t.childStep(() => {
      if (!this.steps) {
        const started = this.body(t);
        if (typeof started === "number") r = { done: true, value: started };
        else this.steps = started;
      }
      r ??= this.steps!.next();
    });
    if (!ran) t.sys.libc.abort();
    else if (r!.done) t.sys.libc.exit(r!.value);
    else this.wake = r!.value;
  }

  /** Lets a sleeping child run on if what it waits for has happened. */
  schedule(): void {
    while (this.wake?.()) {
      this.wake = undefined;
      this.run();
    }
  }
}

/**
 * fork() in a test: the child runs `body` with its own handle. A failed fork (-1 with errno in
 * the parent's libc) runs nothing.
 */
export function fork<T extends TestMetadata<unknown, unknown, HasLibc>>(
  t: T,
  body: ChildBody<T>,
): TestChild<T> {
  let libc: Libc;
  try {
    libc = t.sys.libc.fork();
  } catch (e) {
    if (!isKernelError(e)) throw e;
    return new TestChild<T>(-1, undefined, body);
  }
  const child = t.forkChild({ ...t.sys, libc }) as T;
  return new TestChild(libc.pid, child, body);
}

/** waitpid(child, &wstatus, 0) in the parent, after the child got to run. */
export function waitpid<T extends TestMetadata<unknown, unknown, HasLibc>>(
  t: T,
  child: TestChild<T>,
  wstatus?: { value: number },
): number {
  child.schedule();
  return t.sys.libc.waitpid(child.pid, wstatus);
}
