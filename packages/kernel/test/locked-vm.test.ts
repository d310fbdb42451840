import { describe, expect, it } from "vitest";
import {
  CAP_IPC_LOCK,
  ENOMEM,
  Kernel,
  KernelWarning,
  LockdepError,
  RLIMIT_MEMLOCK,
  accountLockedVm,
  accountLockedVmLocked,
  decrUserLockedVm,
  incrUserLockedVm,
  memlockLimitPages,
  updatePinnedVm,
} from "../src/index.js";
import { expectErrno } from "./helpers.js";

function user(caps: number[] = []) {
  const k = new Kernel({ ramBytes: 1n << 30n });
  const p = k.newProcess(1000, caps);
  p.setRlimit(RLIMIT_MEMLOCK, 16 * 4096);
  const task = k.newTask(p);
  return { k, p, task };
}

describe("pinned-memory accounting", () => {
  it("RLIMIT_MEMLOCK in pages", () => {
    const { p } = user();
    expect(memlockLimitPages(p)).toBe(16);
  });

  it("user locked_vm: charges up to the limit, ENOMEM past it with no change, shared per uid", () => {
    const { k, p } = user();
    incrUserLockedVm(p.cred.user, p, 10);
    expectErrno(() => incrUserLockedVm(p.cred.user, p, 7), ENOMEM);
    expect(p.cred.user.lockedVm).toBe(10);
    const sibling = k.newProcess(1000);
    sibling.setRlimit(RLIMIT_MEMLOCK, 16 * 4096);
    expect(sibling.cred.user.lockedVm).toBe(10);
    incrUserLockedVm(sibling.cred.user, sibling, 6);
    decrUserLockedVm(p.cred.user, 16);
    expect(p.cred.user.lockedVm).toBe(0);
    expect(() => decrUserLockedVm(p.cred.user, 1)).toThrow(KernelWarning);
    expect(p.cred.user.lockedVm).toBe(0);
  });

  it("mm locked_vm: ENOMEM past the limit unless CAP_IPC_LOCK; takes mmap_lock", () => {
    const { k, p, task } = user();
    k.runAs(task, () => {
      accountLockedVm(k, p.mm, 16, true);
      expectErrno(() => accountLockedVm(k, p.mm, 1, true), ENOMEM);
      expect(p.mm.lockedVm).toBe(16);
      accountLockedVm(k, p.mm, 16, false);
      expect(() => accountLockedVm(k, p.mm, 1, false)).toThrow(KernelWarning);
      expect(p.mm.lockedVm).toBe(0);
    });
    const capped = user([CAP_IPC_LOCK]);
    capped.k.runAs(capped.task, () => accountLockedVm(capped.k, capped.p.mm, 1000, true));
    expect(capped.p.mm.lockedVm).toBe(1000);
  });

  it("the locked variant requires mmap_lock held for write and honours bypass", () => {
    const { p } = user();
    expect(() => accountLockedVmLocked(p.mm, 1, true, p, false)).toThrow(LockdepError);
    p.mm.mmapLock.withWrite(() => {
      expectErrno(() => accountLockedVmLocked(p.mm, 17, true, p, false), ENOMEM);
      accountLockedVmLocked(p.mm, 17, true, p, true);
    });
    expect(p.mm.lockedVm).toBe(17);
  });

  it("account_locked_vm of 0 pages returns before taking mmap_lock (mm/util.c)", () => {
    const { k, p, task } = user();
    k.runAs(task, () => p.mm.mmapLock.withRead(() => accountLockedVm(k, p.mm, 0, true)));
    expect(p.mm.lockedVm).toBe(0);
  });

  it("pinned_vm rises and falls; below zero is a WARN", () => {
    const { p } = user();
    updatePinnedVm(p.mm, 5, true);
    updatePinnedVm(p.mm, 2, false);
    expect(p.mm.pinnedVm).toBe(3);
    expect(() => updatePinnedVm(p.mm, 4, false)).toThrow(KernelWarning);
    expect(p.mm.pinnedVm).toBe(3);
  });
});
