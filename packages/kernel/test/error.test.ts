import { inspect } from "node:util";
import { afterEach, describe, expect, it, vi } from "vitest";

// error.ts decides at evaluation whether KernelErrors capture stacks (KERNEL_ERROR_STACKS): each
// test evaluates a fresh copy of it, under the environment it sets up.
async function freshError() {
  vi.resetModules();
  return import("../src/error.js");
}

/** Sets KERNEL_ERROR_STACKS for the module evaluated next (undefined removes it). */
function setStacksEnv(value: string | undefined): void {
  if (value === undefined) delete process.env.KERNEL_ERROR_STACKS;
  else process.env.KERNEL_ERROR_STACKS = value;
}

describe("error.ts, evaluated per test", () => {
  const savedEnv = process.env.KERNEL_ERROR_STACKS;
  const realProcess = globalThis.process;
  afterEach(() => {
    globalThis.process = realProcess;
    setStacksEnv(savedEnv);
  });

  it("captures stacks unless KERNEL_ERROR_STACKS=0", async () => {
    setStacksEnv("0");
    expect((await freshError()).KernelError.captureStacks).toBe(false);
    setStacksEnv("1");
    expect((await freshError()).KernelError.captureStacks).toBe(true);
    setStacksEnv(undefined);
    const { KernelError } = await freshError();
    expect(KernelError.captureStacks).toBe(true);
    expect(new KernelError(22).stack).toContain("\n");
  });

  it("captures stacks where there is no process environment (the web page)", async () => {
    globalThis.process = { ...realProcess, env: undefined } as unknown as NodeJS.Process;
    const noEnv = await freshError();
    globalThis.process = undefined as unknown as NodeJS.Process;
    const noProcess = await freshError();
    globalThis.process = realProcess;
    expect([noEnv.KernelError.captureStacks, noProcess.KernelError.captureStacks]).toEqual([
      true,
      true,
    ]);
  });

  it("prints bigint details in hex, negative ones and zero too", async () => {
    const { KernelError } = await freshError();
    const e = new KernelError(22, "span", { delta: -0x10n, zero: 0n, iova: 0x1000n });
    expect(e.message).toBe("EINVAL (22): span: delta=-0x10 zero=0x0 iova=0x1000");
  });

  it("inspects a stackless KernelError as its name and message", async () => {
    const { KernelError, withoutErrorStacks } = await freshError();
    const e = withoutErrorStacks(() => new KernelError(12, "injected"));
    expect(inspect(e)).toBe("KernelError: ENOMEM (12): injected");
  });

  it("formats a stackless KernelError's message when read; an assigned one replaces it", async () => {
    const { KernelError, withoutErrorStacks } = await freshError();
    const e = withoutErrorStacks(() => new KernelError(22, "span", { iova: 0x1000n }));
    expect(Object.hasOwn(e, "message")).toBe(false);
    expect([e.message, String(e)]).toEqual([
      "EINVAL (22): span: iova=0x1000",
      "KernelError: EINVAL (22): span: iova=0x1000",
    ]);
    e.message = "rewritten";
    e.message += " twice";
    expect([e.message, Object.keys(e).includes("message")]).toEqual(["rewritten twice", false]);
  });

  it("names a WARN: KernelWarning, and WARN_ON's text without a message", async () => {
    const { KernelWarning, WARN_ON } = await freshError();
    expect(String(new KernelWarning("x"))).toBe("KernelWarning: WARNING: x");
    let caught: unknown;
    try {
      WARN_ON(true);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(KernelWarning);
    expect((caught as Error).message).toBe("WARNING: WARN_ON");
  });
});
