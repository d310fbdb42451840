import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Struct, getU32, setU64 } from "../src/uapi.js";

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

  it("Struct encodes and decodes every field kind little-endian at its offset, others untouched", () => {
    // Odd offsets for the narrow kinds, as packed vendor structs have them.
    const s = new Struct("test_struct", 32, {
      a: [1, "u8"],
      b: [3, "u16"],
      c: [5, "u32"],
      d: [9, "s32"],
      e: [16, "u64"],
      f: [25, "u8x3"],
    });
    fc.assert(
      fc.property(
        fc.record({
          a: fc.integer({ min: 0, max: 0xff }),
          b: fc.integer({ min: 0, max: 0xffff }),
          c: fc.integer({ min: 0, max: 0xffffffff }),
          d: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
          e: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
          f: fc.integer({ min: 0, max: 0xffffff }),
        }),
        (v) => {
          const buf = s.encode(v, new Uint8Array(32).fill(0xa5));
          const dv = new DataView(buf.buffer);
          expect(buf[1]).toBe(v.a);
          expect(dv.getUint16(3, true)).toBe(v.b);
          expect(dv.getUint32(5, true)).toBe(v.c);
          expect(dv.getInt32(9, true)).toBe(v.d);
          expect(dv.getBigUint64(16, true)).toBe(v.e);
          expect(buf[25]! | (buf[26]! << 8) | (buf[27]! << 16)).toBe(v.f);
          for (const i of [0, 2, 13, 14, 15, 24, 28, 29, 30, 31]) expect(buf[i]).toBe(0xa5);
          expect(s.decode(buf)).toEqual({ ...v, e: v.e });
          // A short buffer reads as zero-filled past its end.
          expect(s.decode(buf.subarray(0, 16))).toEqual({ ...v, e: 0n, f: 0 });
        },
      ),
    );
    expect(() => s.encode({ e: 1 as unknown as bigint })).toThrow(TypeError);
    expect(() => s.encode({ a: 1n as unknown as number })).toThrow(TypeError);
  });
});
