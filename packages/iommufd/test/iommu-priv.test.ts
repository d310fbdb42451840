/**
 * Driver data copied from user space: __iommu_copy_struct_from_user and
 * __iommu_copy_struct_from_user_array (include/linux/iommu.h).
 */
import { EFAULT, EINVAL, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { iommuCopyStructFromUser, iommuCopyStructFromUserArray } from "../src/index.js";
import { PAGE, anonBuffer, createSystem, errnoOf } from "./ioctl-helpers.js";

const TYPE = 0xa5;

function setup() {
  const sys = createSystem();
  const buf = anonBuffer(sys.libc, PAGE);
  // Entry i of 8-byte entries is the bytes i * 8 + 1 .. i * 8 + 8.
  sys.libc.poke(
    buf,
    Uint8Array.from({ length: 64 }, (_, i) => i + 1),
  );
  return { sys, buf };
}

describe("__iommu_copy_struct_from_user", () => {
  it("copies data.len bytes and zero-fills up to the kernel's size", () => {
    const { sys, buf } = setup();
    const out = iommuCopyStructFromUser(sys.kernel, { type: TYPE, uptr: buf, len: 4 }, TYPE, 8, 4);
    expect([...out]).toEqual([1, 2, 3, 4, 0, 0, 0, 0]);
  });

  it("EINVAL for another type or a length outside [min_len, size]; EFAULT for unreadable data", () => {
    const { sys, buf } = setup();
    const copy = (type: number, uptr: bigint, len: number) => () =>
      iommuCopyStructFromUser(sys.kernel, { type, uptr, len }, TYPE, 8, 4);
    expect(errnoOf(copy(TYPE + 1, buf, 8))).toBe(EINVAL);
    expect(errnoOf(copy(TYPE, buf, 3))).toBe(EINVAL);
    expect(errnoOf(copy(TYPE, buf, 9))).toBe(EINVAL);
    expect(copy(TYPE, buf, 8)()).toHaveLength(8);
    expect(errnoOf(copy(TYPE, buf + PAGE - 4n, 8))).toBe(EFAULT);
  });
});

describe("__iommu_copy_struct_from_user_array", () => {
  it("entry `index` starts at uptr + entry_len * index", () => {
    const { sys, buf } = setup();
    const array = { type: TYPE, uptr: buf, entryLen: 8, entryNum: 4 };
    for (const index of [0, 1, 3]) {
      const out = iommuCopyStructFromUserArray(sys.kernel, array, TYPE, index, 8, 8);
      expect([...out]).toEqual(Array.from({ length: 8 }, (_, i) => index * 8 + i + 1));
    }
    // A short entry (entry_len 4 of an 8-byte struct) is zero-extended, at a 4-byte stride.
    const short = { type: TYPE, uptr: buf, entryLen: 4, entryNum: 4 };
    const out = iommuCopyStructFromUserArray(sys.kernel, short, TYPE, 2, 8, 4);
    expect([...out]).toEqual([9, 10, 11, 12, 0, 0, 0, 0]);
  });

  it("an index at or past entry_num is a WARN; the entry checks follow the single-struct rules", () => {
    const { sys, buf } = setup();
    const array = { type: TYPE, uptr: buf, entryLen: 8, entryNum: 2 };
    expect(() => iommuCopyStructFromUserArray(sys.kernel, array, TYPE, 2, 8, 8)).toThrow(
      KernelWarning,
    );
    expect(() =>
      iommuCopyStructFromUserArray(sys.kernel, { ...array, entryNum: 0 }, TYPE, 0, 8, 8),
    ).toThrow(KernelWarning);
    expect(iommuCopyStructFromUserArray(sys.kernel, array, TYPE, 1, 8, 8)[0]).toBe(9);
    expect(errnoOf(() => iommuCopyStructFromUserArray(sys.kernel, array, TYPE + 1, 0, 8, 8))).toBe(
      EINVAL,
    );
    expect(errnoOf(() => iommuCopyStructFromUserArray(sys.kernel, array, TYPE, 0, 16, 12))).toBe(
      EINVAL,
    );
  });
});
