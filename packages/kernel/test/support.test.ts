import { inspect } from "node:util";
import { describe, expect, it, vi } from "vitest";
import {
  CAP_IPC_LOCK,
  CAP_SYS_ADMIN,
  CAP_SYS_RESOURCE,
  EBADF,
  EINVAL,
  EMFILE,
  ENOENT,
  ENOMEM,
  ERRNO_NAMES,
  FMODE_READ,
  FMODE_WRITE,
  FaultInjector,
  FdTable,
  File,
  Kernel,
  KernelError,
  KernelWarning,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  RLIMIT_MEMLOCK,
  RLIMIT_NOFILE,
  SymbolTable,
  defineSymbol,
  TraceBus,
  WARN_ON,
  errnoName,
  fail,
  isKernelError,
} from "../src/index.js";
import { expectErrno } from "./helpers.js";

declare module "../src/index.js" {
  interface TraceEvents {
    "test:event": { n: number };
  }
}

// The stack tests evaluate error.ts afresh: a fault injector another test file left armed keeps
// stacks off in the module they share (`pnpm mutate` runs the files in one module graph).
describe("errno and errors", () => {
  it("uses the asm-generic values and names", () => {
    expect(ERRNO_NAMES[22]).toBe("EINVAL");
    expect(errnoName(14)).toBe("EFAULT");
    expect(errnoName(4242)).toBe("E4242");
    const e = new KernelError(EINVAL, "why");
    expect([e.errno, e.errnoName, e.context, e.message]).toEqual([
      22,
      "EINVAL",
      "why",
      "EINVAL (22): why",
    ]);
    expect(isKernelError(e, EINVAL)).toBe(true);
    expect(isKernelError(e, EBADF)).toBe(false);
    expect(isKernelError(new Error("x"))).toBe(false);
    expectErrno(() => fail(EBADF), EBADF);
  });

  it("a KernelError's message names the errno, its number, the reason and the values in hex", () => {
    const e = new KernelError(EINVAL, "iova not aligned", { iova: 0x1000n, alignment: 0x2000n });
    expect(e.message).toBe("EINVAL (22): iova not aligned: iova=0x1000 alignment=0x2000");
    expect(new KernelError(EBADF).message).toBe("EBADF (9)");
    expect(new KernelError(EBADF, undefined, { fd: 7, path: undefined }).message).toBe(
      "EBADF (9): fd=7",
    );
    expectErrno(() => fail(EINVAL, "length", { length: 0n }), EINVAL);
  });

  it("a KernelError carries a stack by default and prints it when inspected", async () => {
    vi.resetModules();
    const fresh = await import("../src/error.js");
    const e = new fresh.KernelError(ENOENT, "iommu_ioas_unmap", { iova: 0x10000n });
    expect(e.stack).toMatch(/support\.test\.ts/);
    const shown = inspect(e);
    expect(shown.split("\n")[0]).toBe("KernelError: ENOENT (2): iommu_ioas_unmap: iova=0x10000");
    expect(shown).toMatch(/\n +at .*support\.test\.ts/);
  });

  it("no stacks while a fault injector is armed or inside withoutErrorStacks", async () => {
    vi.resetModules();
    const { FaultInjector } = await import("../src/fault.js");
    const { KernelError, withoutErrorStacks } = await import("../src/error.js");
    const fault = new FaultInjector();
    fault.arm(3);
    const armed = new KernelError(ENOMEM, "injected");
    fault.disarm();
    expect(armed.stack).not.toContain("\n");
    expect(inspect(armed)).toBe("KernelError: ENOMEM (12): injected");
    const quiet = withoutErrorStacks(() => new KernelError(ENOMEM));
    expect(quiet.stack).not.toContain("\n");
    expect(new KernelError(ENOMEM).stack).toContain("\n");
  });

  it("WARN_ON throws a KernelWarning when the condition holds", () => {
    expect(WARN_ON(false)).toBeUndefined();
    expect(() => WARN_ON(true, "bad")).toThrow(KernelWarning);
    expect(() => WARN_ON(true, "bad")).toThrow("WARNING: bad");
  });
});

describe("process lifetime", () => {
  it("a non-root process starts with no capabilities; task ids only grow; a second exit is a WARN", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const p = k.newProcess(1000);
    expect([...p.cred.caps, ...p.cred.permitted]).toEqual([]);
    const a = k.newTask(p);
    const b = k.newTask(p);
    expect(b.tid).toBe(a.tid + 1);
    k.exit(p, 1);
    // The WARN comes first: the wait status of the first exit stays.
    expect(() => k.exit(p, 2)).toThrow(KernelWarning);
    expect(p.exitStatus).toBe(1 << 8);
  });
});

describe("process limits", () => {
  it("starts with the kernel's INIT_RLIMITS: 1024 files, 8 MiB locked (MLOCK_LIMIT), others unlimited", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const p = k.newProcess(1000);
    expect([p.rlimit(RLIMIT_NOFILE), p.rlimit(RLIMIT_MEMLOCK), p.files.maxFds]).toEqual([
      1024,
      8 << 20,
      1024,
    ]);
    expect(p.rlimit(0)).toBe(Number.MAX_SAFE_INTEGER);
    // Only RLIMIT_NOFILE bounds the descriptor table.
    p.setRlimit(RLIMIT_MEMLOCK, 4096);
    expect(p.files.maxFds).toBe(1024);
    p.setRlimit(RLIMIT_NOFILE, 16);
    expect(p.files.maxFds).toBe(16);
  });
});

describe("fault injection (fail-nth)", () => {
  it("fails the N-th point once, reads 0 after, records the sites while armed", () => {
    const f = new FaultInjector();
    expect(f.shouldFail("a")).toBe(false);
    expect(f.sitesHit).toEqual([]);
    f.arm(2);
    expect(f.read()).toBe(2);
    expect(f.shouldFail("a")).toBe(false);
    expect(f.shouldFail("b")).toBe(true);
    expect(f.read()).toBe(0);
    expect(f.shouldFail("c")).toBe(false);
    expect(f.failedSite).toBe("b");
    expect(f.sitesHit).toEqual(["a", "b", "c"]);
    f.disarm();
    f.shouldFail("d");
    expect(f.sitesHit).toEqual(["a", "b", "c"]);
    expect(() => f.arm(-1)).toThrow(RangeError);
    // Writing 0 to fail-nth is allowed and leaves nothing armed (proc_fail_nth_write).
    f.arm(0);
    expect([f.read(), f.shouldFail("e")]).toEqual([0, false]);
  });

  it("is per task: another task's points do not count", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const other = k.newTask(k.current.process);
    k.current.fault.arm(1);
    expect(k.runAs(other, () => k.shouldFail("x"))).toBe(false);
    expect(k.shouldFail("y")).toBe(true);
  });
});

describe("symbols", () => {
  it("exports, gets with a reference, refuses to unexport while used", () => {
    const s = new SymbolTable();
    const f = defineSymbol<number>("f");
    expect(s.symbolGet(f)).toBeUndefined();
    expect(s.refs(f)).toBe(0);
    // Keyed by name (kernel/module/main.c find_symbol): two symbols are two entries.
    const g = defineSymbol<number>("g");
    expect(g.name).toBe("g");
    s.exportSymbol(g, 7);
    expect(s.symbolGet(g)).toBe(7);
    s.symbolPut(g);
    s.exportSymbol(f, 42, "mod");
    expect(() => s.exportSymbol(f, 1)).toThrow(KernelWarning);
    expect(s.symbolGet(f)).toBe(42);
    expect(s.refs(f)).toBe(1);
    expect(() => s.unexportSymbol(f)).toThrow(/still has 1 users/);
    s.symbolPut(f);
    expect(() => s.symbolPut(f)).toThrow(KernelWarning);
    s.unexportSymbol(f);
    expect(s.has(f)).toBe(false);
    expect(() => s.unexportSymbol(f)).toThrow(KernelWarning);
  });
});

describe("trace", () => {
  it("delivers typed events to listeners in order, and records around a call", () => {
    const t = new TraceBus();
    expect(t.active).toBe(false);
    t.emit("test:event", { n: 0 });
    const { result, records } = t.record(() => {
      t.emit("test:event", { n: 1 });
      t.emit("test:event", { n: 2 });
      return "done";
    });
    expect(result).toBe("done");
    // The event emitted with no listener made no record: numbering starts at the first one.
    expect(records.map((r) => r.seq)).toEqual([1, 2]);
    expect(records.map((r) => [r.name, (r.data as { n: number }).n])).toEqual([
      ["test:event", 1],
      ["test:event", 2],
    ]);
    expect(records[1]!.seq).toBe(records[0]!.seq + 1);
    expect(t.active).toBe(false);
  });
});

describe("files and the fd table", () => {
  it("a fork's copy (dup_fd) and the entries skip closed descriptors; a file is released only by its last put", () => {
    const t = new FdTable();
    const files = [0, 1, 2].map(() => new File({ name: "f" }, undefined));
    for (const f of files) t.install(f);
    t.close(1);
    expect(files.map((f) => f.released)).toEqual([false, true, false]);
    const child = t.clone();
    expect([...t.entries()].map(([fd]) => fd)).toEqual([0, 2]);
    expect([...child.entries()].map(([fd]) => fd)).toEqual([0, 2]);
    expect(files[0]!.refcount).toBe(2);
  });

  it("derives fmode from the access mode and releases once on the last put", () => {
    let released = 0;
    const ops = { name: "t", release: () => void released++ };
    expect(new File(ops, null, O_RDONLY).fMode).toBe(FMODE_READ);
    expect(new File(ops, null, O_WRONLY).fMode).toBe(FMODE_WRITE);
    const f = new File(ops, null, O_RDWR);
    expect(f.fMode).toBe(FMODE_READ | FMODE_WRITE);
    f.get();
    f.put();
    expect(released).toBe(0);
    f.put();
    expect(released).toBe(1);
    expect(f.released).toBe(true);
    expect(() => f.put()).toThrow(KernelWarning);
    expect(() => f.get()).toThrow(KernelWarning);
  });

  it("installs at the lowest free fd, EMFILE at the limit, EBADF for bad fds, closes on exec", () => {
    const t = new FdTable(3);
    const mk = () => new File({ name: "t" }, null);
    expect(t.install(mk())).toBe(0);
    expect(t.install(mk(), O_CLOEXEC)).toBe(1);
    expect(t.install(mk())).toBe(2);
    expectErrno(() => t.install(mk()), EMFILE);
    expectErrno(() => t.peekUnused(), EMFILE);
    t.close(1);
    expect(t.peekUnused()).toBe(1);
    expectErrno(() => t.lookup(1), EBADF);
    expectErrno(() => t.fget(-3), EBADF);
    expectErrno(() => t.dup(0, -1), EINVAL);
    expect(t.dup(0, 1, O_CLOEXEC)).toBe(1);
    expect(t.cloexec(1)).toBe(true);
    const c = t.clone();
    expect(t.lookup(0).refcount).toBe(4);
    t.closeAll(true);
    expect(t.isOpen(1)).toBe(false);
    expect(t.openCount).toBe(2);
    expect([...c.entries()].map(([fd]) => fd)).toEqual([0, 1, 2]);
    c.closeAll();
    expect(c.openCount).toBe(0);
  });
});

describe("kernel", () => {
  it("gives root the admin capabilities, shares a user struct per uid", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const root = k.current.process;
    expect(root.capable(CAP_SYS_ADMIN)).toBe(true);
    expect(root.capable(CAP_IPC_LOCK)).toBe(true);
    expect(root.capable(CAP_SYS_RESOURCE)).toBe(true);
    const u1 = k.newProcess(1000);
    const u2 = k.newProcess(1000, [CAP_IPC_LOCK]);
    expect(u1.capable(CAP_IPC_LOCK)).toBe(false);
    expect(u2.capable(CAP_IPC_LOCK)).toBe(true);
    expect(u1.cred.user).toBe(u2.cred.user);
    expect(u1.mm).not.toBe(u2.mm);
  });

  it("registers device nodes once and opens them; ENOENT otherwise", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    k.registerDevice("/dev/x", (_k, flags) => new File({ name: "x" }, null, flags));
    expect(() => k.registerDevice("/dev/x", () => new File({ name: "x" }, null))).toThrow(
      KernelWarning,
    );
    expect(k.hasDevice("/dev/x")).toBe(true);
    expect(k.openDevice("/dev/x", O_RDONLY).fMode).toBe(FMODE_READ);
    k.unregisterDevice("/dev/x");
    expectErrno(() => k.openDevice("/dev/x", O_RDONLY), ENOENT);
    expect(k.anonFile({ name: "anon" }, 5, O_RDWR).priv).toBe(5);
  });

  it("runAs switches current and restores it even on a throw", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const t = k.newTask(k.newProcess(5));
    const before = k.current;
    expect(() =>
      k.runAs(t, () => {
        expect(k.current).toBe(t);
        throw new Error("x");
      }),
    ).toThrow("x");
    expect(k.current).toBe(before);
  });

  it("rejects a RAM size beyond 8 TiB", () => {
    expectErrno(() => new Kernel({ ramBytes: 9n << 40n }), EINVAL);
  });
});
