import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { getU32, setU64 } from "../src/uapi.js";

// The struct codecs read and write fields byte by byte; they must agree with a little-endian
// DataView at any offset, aligned or not, inside a larger buffer.
describe("uapi field bytes", () => {
  it("getU32 reads what DataView.setUint32(le) wrote", () => {
    fc.assert(
      fc.property(fc.nat(60), fc.integer({ min: 0, max: 0xffffffff }), (off, v) => {
        const b = new Uint8Array(64);
        new DataView(b.buffer).setUint32(off, v, true);
        expect(getU32(b, off)).toBe(v);
      }),
    );
  });

  it("setU64 writes what DataView.getBigUint64(le) reads, wrapping to 64 bits", () => {
    fc.assert(
      fc.property(fc.nat(56), fc.bigInt({ min: -(1n << 64n), max: (1n << 65n) - 1n }), (off, v) => {
        const b = new Uint8Array(64).fill(0xa5);
        setU64(b, off, v);
        expect(new DataView(b.buffer).getBigUint64(off, true)).toBe(BigInt.asUintN(64, v));
        expect(b.slice(0, off).every((x) => x === 0xa5)).toBe(true);
        expect(b.slice(off + 8).every((x) => x === 0xa5)).toBe(true);
      }),
    );
  });
});
