import { describe, expect, it, vi } from "vitest";

describe("include/linux/limits.h", () => {
  // Imported inside the test: U64_MAX is computed when limits.ts is evaluated, so this test is
  // the one that evaluates it.
  it("U64_MAX is the largest u64, 2^64 - 1", async () => {
    vi.resetModules();
    const { U64_MAX } = await import("../src/limits.js");
    expect(U64_MAX).toBe(0xffff_ffff_ffff_ffffn);
    expect(BigInt.asUintN(64, U64_MAX + 1n)).toBe(0n);
  });
});
