/**
 * One IOMMU_TEST_CMD in flight: its decoded header (from iommufd's dispatcher), the op's view of
 * the union member, and the user-page look-ups several ops make (get_user_pages_fast of one
 * page, which faults the page in).
 */
import {
  type FieldSpec,
  IOMMUFD_OBJ_SELFTEST,
  type IommufdCtx,
  type IommufdUcmd,
  type Struct,
} from "@x/iommufd";
import type { TestCmdHandler } from "@x/iommufd/testing";
import {
  EINVAL,
  type Kernel,
  PAGE_SIZE,
  fail,
  PfnRuns,
  copyStructFromUser,
  pinUserPagesFast,
  unpinUserPageRuns,
} from "@x/kernel";
import type { SelftestObj } from "./selftest.js";

/** A command in flight, with its decoded header. */
export type TestUcmd = Parameters<TestCmdHandler>[0];

/** One op of IOMMU_TEST_CMD; its return value is the ioctl's. */
export type TestOp = (ucmd: TestUcmd) => number;

/**
 * The kernel copy of the union member, decoded right after its bytes move and then dead, so
 * one serves every op (the copy's lock boundaries all come before its bytes move, as for
 * iommufd's own copy of the header). Grown to the largest member: IOMMU_TEST_CMD's 72 bytes
 * would otherwise cost V8 an off-heap buffer per op.
 */
let memberBuf = new Uint8Array(64);

/** The op's view of the command: its union member, decoded from the user's bytes. */
export function ucmdMember<S extends FieldSpec>(ucmd: TestUcmd, member: Struct<S>): IommufdUcmd<S> {
  if (memberBuf.length < member.size) memberBuf = new Uint8Array(member.size);
  // The member is read up to the user's size (never past it: the rest of the union is not this
  // member's), zero-extended when shorter.
  const n = Math.min(ucmd.userSize, member.size);
  copyStructFromUser(ucmd.ctx.kernel, member.size, ucmd.ubuffer, n, memberBuf);
  return {
    ctx: ucmd.ctx,
    ubuffer: ucmd.ubuffer,
    userSize: ucmd.userSize,
    struct: member,
    cmd: member.decode(memberBuf),
  };
}

/**
 * The PFN behind the user page holding `uptr` and the pins it had: the look-up's own pin is
 * dropped again before returning.
 */
export function userPagePins(kernel: Kernel, uptr: bigint): { pfn: number; pins: number } {
  const runs = new PfnRuns(1);
  pinUserPagesFast(kernel, uptr & ~BigInt(PAGE_SIZE - 1), 1, 0, runs);
  const pfn = runs.pfn(0);
  const pins = kernel.mem.pinCount(pfn) - 1;
  unpinUserPageRuns(kernel, runs, false);
  return { pfn, pins };
}

export function userPagePfn(kernel: Kernel, uptr: bigint): number {
  return userPagePins(kernel, uptr).pfn;
}

/** iommufd_test_get_selftest_obj: ENOENT, or EINVAL for a selftest object without a device. */
export function withSelftestObj<R>(ctx: IommufdCtx, id: number, fn: (sobj: SelftestObj) => R): R {
  return ctx.withObject<SelftestObj, R>(id, IOMMUFD_OBJ_SELFTEST, (sobj) => {
    if (!sobj.idev) fail(EINVAL, "selftest object has no device");
    return fn(sobj);
  });
}
