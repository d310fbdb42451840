import {
  EADDRINUSE,
  EBADF,
  EBUSY,
  EEXIST,
  EFAULT,
  EINVAL,
  EMSGSIZE,
  ENOENT,
  EOPNOTSUPP,
  EOVERFLOW,
  CAP_SYS_RESOURCE,
  EPERM,
  KernelError,
  Libc,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  type Decoded,
  type FieldSpec,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA as FIXED,
  IOMMU_IOAS_MAP_READABLE as R,
  IOMMU_IOAS_MAP_WRITEABLE as W,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  type Struct,
  U64_MAX,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_iova_range,
  iommu_option,
} from "../src/index.js";
import {
  PAGE,
  type TestSystem,
  anonBuffer,
  attachTestDevice,
  createSystem,
  errnoOf,
  memfdBuffer,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";

interface Fixture {
  sys: TestSystem;
  ioas: number;
  buf: bigint;
  mfd: number;
}

/** An IOAS with one page mapped at 0x10000, a 16-page anonymous buffer and a 16-page memfd. */
function fixture(): Fixture {
  const sys = createSystem();
  const ioas = sys.fd.ioasAlloc();
  const buf = anonBuffer(sys.libc, 16n * PAGE);
  const { mfd } = memfdBuffer(sys.libc, 16n * PAGE);
  sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0x10000n });
  return { sys, ioas, buf, mfd };
}

type Row<S extends FieldSpec> = [
  name: string,
  errno: number,
  values: (f: Fixture) => Partial<Decoded<S>>,
];

/**
 * One row per ordered check: each row breaks its own check and, where the fields allow it,
 * every later one too, so the row's errno proves its check runs first. Every failure must leave
 * the machine exactly as it was.
 */
function errnoTable<S extends FieldSpec>(
  cmd: number,
  s: Struct<S>,
  base: (f: Fixture) => Partial<Decoded<S>>,
  rows: Row<S>[],
): void {
  it.each(rows)("%s", (_name, errno, values) => {
    const f = fixture();
    const before = snapshot(f.sys);
    const bytes = s.encode({ size: s.size, ...base(f), ...values(f) } as Partial<Decoded<S>>);
    const r = rawIoctl(f.sys, cmd, bytes);
    expect(r.ret).toBe(-1);
    expect(r.errno).toBe(errno);
    expect(snapshot(f.sys)).toBe(before);
  });
}

describe("IOMMU_IOAS_ALLOC errnos", () => {
  errnoTable(IOMMU_IOAS_ALLOC, iommu_ioas_alloc, () => ({}), [
    ["flags", EOPNOTSUPP, () => ({ flags: 1 })],
  ]);
});

describe("IOMMU_IOAS_MAP errnos", () => {
  errnoTable(
    IOMMU_IOAS_MAP,
    iommu_ioas_map,
    (f) => ({ flags: R | W, ioas_id: f.ioas, user_va: f.buf, length: PAGE }),
    [
      ["unknown flag", EOPNOTSUPP, () => ({ flags: 8 | R, __reserved: 1, length: U64_MAX })],
      ["__reserved", EOPNOTSUPP, () => ({ __reserved: 1, length: U64_MAX, flags: 0 })],
      ["length U64_MAX", EOVERFLOW, () => ({ length: U64_MAX, flags: 0, ioas_id: 99 })],
      ["iova U64_MAX", EOVERFLOW, () => ({ iova: U64_MAX, flags: FIXED, ioas_id: 99 })],
      ["neither R nor W", EINVAL, () => ({ flags: FIXED, ioas_id: 99 })],
      ["unknown IOAS", ENOENT, () => ({ ioas_id: 99, length: 0n })],
      ["length 0", EINVAL, () => ({ length: 0n })],
      ["user_va + length overflows", EOVERFLOW, () => ({ user_va: U64_MAX - 100n })],
      ["fixed IOVA on an area", EEXIST, () => ({ flags: FIXED | R, iova: 0x10000n })],
      [
        "fixed IOVA unaligned to the area",
        EEXIST,
        () => ({ flags: FIXED | R, iova: 0xf000n, length: 2n * PAGE }),
      ],
    ],
  );
});

describe("IOMMU_IOAS_MAP_FILE errnos (P7/P8 dispatch)", () => {
  errnoTable(
    IOMMU_IOAS_MAP_FILE,
    iommu_ioas_map_file,
    (f) => ({ flags: R | W, ioas_id: f.ioas, fd: f.mfd, start: 0n, length: PAGE }),
    [
      ["unknown flag", EOPNOTSUPP, () => ({ flags: 0x10 | W, length: U64_MAX, fd: -1 })],
      ["length U64_MAX", EOVERFLOW, () => ({ length: U64_MAX, flags: 0, ioas_id: 99 })],
      ["iova U64_MAX", EOVERFLOW, () => ({ iova: U64_MAX, flags: FIXED, ioas_id: 99 })],
      ["neither R nor W", EINVAL, () => ({ flags: 0, ioas_id: 99, fd: -1 })],
      ["unknown IOAS", ENOENT, () => ({ ioas_id: 99, length: 0n, fd: -1 })],
      ["length 0 before the fd", EINVAL, () => ({ length: 0n, fd: -1 })],
      ["start + length overflows before the fd", EOVERFLOW, () => ({ start: U64_MAX, fd: -1 })],
      ["negative fd", EBADF, () => ({ fd: -1 })],
      ["closed fd", EBADF, () => ({ fd: 900 })],
      ["fixed IOVA on an area", EEXIST, () => ({ flags: FIXED | R, iova: 0x10000n })],
    ],
  );
});

describe("IOMMU_IOAS_COPY errnos", () => {
  errnoTable(
    IOMMU_IOAS_COPY,
    iommu_ioas_copy,
    (f) => ({
      flags: R | W,
      dst_ioas_id: f.ioas,
      src_ioas_id: f.ioas,
      length: PAGE,
      src_iova: 0x10000n,
    }),
    [
      ["unknown flag", EOPNOTSUPP, () => ({ flags: 8, length: U64_MAX })],
      ["length U64_MAX", EOVERFLOW, () => ({ length: U64_MAX, flags: 0 })],
      ["src_iova U64_MAX", EOVERFLOW, () => ({ src_iova: U64_MAX, flags: 0 })],
      ["dst_iova U64_MAX", EOVERFLOW, () => ({ dst_iova: U64_MAX, flags: 0 })],
      ["neither R nor W", EINVAL, () => ({ flags: FIXED, src_ioas_id: 99 })],
      ["unknown source IOAS", ENOENT, () => ({ src_ioas_id: 99, dst_ioas_id: 98 })],
      ["length 0", EINVAL, () => ({ length: 0n, dst_ioas_id: 98 })],
      ["source hole", ENOENT, () => ({ src_iova: 0x20000n, dst_ioas_id: 98 })],
      ["unknown destination IOAS", ENOENT, () => ({ dst_ioas_id: 98 })],
      ["fixed destination on an area", EEXIST, () => ({ flags: FIXED | R, dst_iova: 0x10000n })],
    ],
  );
});

describe("IOMMU_IOAS_UNMAP errnos", () => {
  errnoTable(
    IOMMU_IOAS_UNMAP,
    iommu_ioas_unmap,
    (f) => ({ ioas_id: f.ioas, iova: 0x10000n, length: PAGE }),
    [
      ["unknown IOAS first", ENOENT, () => ({ ioas_id: 99, length: U64_MAX })],
      ["length U64_MAX", EOVERFLOW, () => ({ length: U64_MAX, iova: 1n })],
      ["iova U64_MAX", EOVERFLOW, () => ({ iova: U64_MAX })],
      // Its end does not overflow: only iommufd_ioas_unmap's own bound refuses it.
      ["iova U64_MAX, length 1", EOVERFLOW, () => ({ iova: U64_MAX, length: 1n })],
      ["length 0", EINVAL, () => ({ length: 0n })],
      ["iova + length overflows", EOVERFLOW, () => ({ iova: U64_MAX - 1n, length: 4n })],
      ["half of an area", ENOENT, () => ({ length: PAGE / 2n })],
      ["nothing mapped", ENOENT, () => ({ iova: 0x40000n })],
    ],
  );
});

describe("IOMMU_IOAS_IOVA_RANGES / ALLOW_IOVAS errnos", () => {
  errnoTable(IOMMU_IOAS_IOVA_RANGES, iommu_ioas_iova_ranges, (f) => ({ ioas_id: f.ioas }), [
    ["__reserved", EOPNOTSUPP, () => ({ __reserved: 1, ioas_id: 99 })],
    ["unknown IOAS", ENOENT, () => ({ ioas_id: 99 })],
    ["array pointer faults", EFAULT, () => ({ num_iovas: 1, allowed_iovas: 8n })],
  ]);
  errnoTable(IOMMU_IOAS_ALLOW_IOVAS, iommu_ioas_allow_iovas, (f) => ({ ioas_id: f.ioas }), [
    ["__reserved", EOPNOTSUPP, () => ({ __reserved: 1, ioas_id: 99 })],
    ["unknown IOAS", ENOENT, () => ({ ioas_id: 99, num_iovas: 1, allowed_iovas: 0n })],
  ]);

  it("ALLOW_IOVAS: ranges sharing one address overlap, adjacent ones do not", () => {
    // iommufd_ioas_load_iovas: each entry read at its own offset, any common IOVA is EINVAL.
    const f = fixture();
    const allow = (ranges: Array<[bigint, bigint]>): number =>
      errnoOf(() =>
        f.sys.fd.ioasAllowIovas(
          f.ioas,
          ranges.map(([start, last]) => ({ start, last })),
        ),
      );
    expect(
      allow([
        [0x2000n, 0x2fffn],
        [0x1000n, 0x2000n],
      ]),
    ).toBe(EINVAL);
    expect(
      allow([
        [0x1000n, 0x1fffn],
        [0x1fffn, 0x2fffn],
      ]),
    ).toBe(EINVAL);
    f.sys.fd.ioasAllowIovas(f.ioas, [
      { start: 0x1000n, last: 0x1fffn },
      { start: 0x2000n, last: 0x2fffn },
      { start: 0x100000n, last: 0x1fffffn },
    ]);
  });

  it("IOVA_RANGES with room for exactly every range fills it and succeeds", () => {
    const f = fixture();
    const { sys } = f;
    sys.ctx.withObject(f.ioas, 4, (o) => {
      (
        o as unknown as { iopt: { reserveIova(a: bigint, b: bigint, w: unknown): void } }
      ).iopt.reserveIova(PAGE, 2n * PAGE - 1n, "t");
    });
    const arr = sys.libc.malloc(32);
    const r = rawIoctl(
      sys,
      IOMMU_IOAS_IOVA_RANGES,
      iommu_ioas_iova_ranges.encode({
        size: 32,
        ioas_id: f.ioas,
        num_iovas: 2,
        allowed_iovas: arr,
      }),
    );
    expect(r.errno).toBe(0);
    expect(iommu_ioas_iova_ranges.decode(r.buf).num_iovas).toBe(2);
    expect(iommu_iova_range.decode(sys.libc.peek(arr + 16n, 16))).toEqual({
      start: 2n * PAGE,
      last: U64_MAX,
    });
  });

  it("ALLOW_IOVAS: bad pointer, empty range, overlap, reserved; the old list stays", () => {
    const f = fixture();
    const { sys } = f;
    sys.fd.ioasAllowIovas(f.ioas, [{ start: 0x100000n, last: 0x1fffffn }]);
    const before = snapshot(sys);
    const put = (ranges: Array<[bigint, bigint]>): bigint => {
      const at = sys.libc.malloc(16 * ranges.length + 16);
      ranges.forEach(([start, last], i) => {
        sys.libc.poke(at + BigInt(16 * i), iommu_iova_range.encode({ start, last }));
      });
      return at;
    };
    const call = (num: number, uptr: bigint) =>
      rawIoctl(
        sys,
        IOMMU_IOAS_ALLOW_IOVAS,
        iommu_ioas_allow_iovas.encode({
          size: 24,
          ioas_id: f.ioas,
          num_iovas: num,
          allowed_iovas: uptr,
        }),
      ).errno;
    expect(call(1, 0n)).toBe(14);
    expect(call(1, put([[5n, 5n]]))).toBe(EINVAL);
    expect(
      call(
        2,
        put([
          [0n, 0x1000n],
          [0x800n, 0x2000n],
        ]),
      ),
    ).toBe(EINVAL);
    sys.ctx.withObject(f.ioas, 4, (ioas) =>
      (
        ioas as never as { iopt: { reserveIova: (a: bigint, b: bigint, o: unknown) => void } }
      ).iopt.reserveIova(0x4000000n, 0x4000fffn, "test"),
    );
    const withReserved = snapshot(sys);
    expect(call(1, put([[0x4000000n, 0x5000000n]]))).toBe(EADDRINUSE);
    expect(snapshot(sys)).toBe(withReserved);
    expect(before).not.toBe(withReserved);
  });
});

describe("IOMMU_OPTION", () => {
  errnoTable(
    IOMMU_OPTION,
    iommu_option,
    () => ({ option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET }),
    [
      ["__reserved", EOPNOTSUPP, () => ({ __reserved: 1, option_id: 9 })],
      ["unknown option", EOPNOTSUPP, () => ({ option_id: 9 })],
      ["RLIMIT_MODE with an object", EOPNOTSUPP, () => ({ object_id: 1 })],
      ["RLIMIT_MODE unknown op", EOPNOTSUPP, () => ({ op: 7 })],
      [
        "RLIMIT_MODE SET while objects exist",
        EBUSY,
        () => ({ op: IOMMU_OPTION_OP_SET, val64: 5n }),
      ],
      [
        "HUGE_PAGES: lookup before op",
        ENOENT,
        () => ({ option_id: IOMMU_OPTION_HUGE_PAGES, object_id: 99, op: 7 }),
      ],
      [
        "HUGE_PAGES unknown op",
        EOPNOTSUPP,
        (f) => ({ option_id: IOMMU_OPTION_HUGE_PAGES, object_id: f.ioas, op: 7 }),
      ],
      [
        "HUGE_PAGES value 2",
        EINVAL,
        (f) => ({
          option_id: IOMMU_OPTION_HUGE_PAGES,
          object_id: f.ioas,
          op: IOMMU_OPTION_OP_SET,
          val64: 2n,
        }),
      ],
    ],
  );

  it("RLIMIT_MODE: EPERM before EBUSY without CAP_SYS_RESOURCE", () => {
    const sys = createSystem();
    sys.fd.ioasAlloc();
    sys.libc.process.cred.caps.delete(CAP_SYS_RESOURCE);
    expect(errnoOf(() => sys.fd.setRlimitModeMm(true))).toBe(EPERM);
  });

  it("RLIMIT_MODE: GET, SET by a privileged process, EBUSY once objects exist", () => {
    const sys = createSystem();
    expect(sys.fd.getRlimitModeMm()).toBe(false);
    sys.fd.setRlimitModeMm(true);
    expect(sys.fd.getRlimitModeMm()).toBe(true);
    expect(errnoOf(() => sys.fd.option({ optionId: 0, op: IOMMU_OPTION_OP_SET, val64: 2n }))).toBe(
      EINVAL,
    );
    sys.fd.ioasAlloc();
    expect(errnoOf(() => sys.fd.setRlimitModeMm(false))).toBe(EBUSY);
    expect(sys.fd.getRlimitModeMm()).toBe(true);
  });

  it("only val64 is copied back", () => {
    const sys = createSystem();
    const id = sys.fd.ioasAlloc();
    const bytes = iommu_option.encode({
      size: 24,
      option_id: 1,
      op: IOMMU_OPTION_OP_GET,
      object_id: id,
    });
    bytes[0] = 0x55; // a size the kernel echoes nowhere else
    bytes[0] = 24;
    const r = rawIoctl(sys, IOMMU_OPTION, bytes);
    expect(r.ret).toBe(0);
    expect(iommu_option.decode(r.buf).val64).toBe(1n);
  });

  it("HUGE_PAGES (kselftest ioas_option_huge_pages)", () => {
    const { fd } = createSystem();
    const id = fd.ioasAlloc();
    expect(fd.getHugePages(id)).toBe(true);
    fd.setHugePages(id, false);
    expect(fd.getHugePages(id)).toBe(false);
    expect(errnoOf(() => fd.option({ optionId: 1, op: 0, objectId: id, val64: 2n }))).toBe(EINVAL);
    fd.setHugePages(id, true);
    expect(fd.getHugePages(id)).toBe(true);
  });
});

describe("copy-back faults", () => {
  it("IOAS_MAP whose IOVA cannot be copied back is EFAULT and the mapping stays, as in the kernel", () => {
    const f = fixture();
    const { libc } = f.sys;
    const mfd = libc.memfdCreate("ro", 0);
    libc.ftruncate(mfd, 4096);
    const rw = libc.mmap(0n, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    const ro = libc.mmap(0n, 4096, PROT_READ, MAP_SHARED, mfd, 0);
    libc.poke(
      rw,
      iommu_ioas_map.encode({
        size: 40,
        flags: R | W,
        ioas_id: f.ioas,
        user_va: f.buf,
        length: PAGE,
      }),
    );
    expect(libc.ioctl(f.sys.fd.fd, IOMMU_IOAS_MAP, ro)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(f.sys.fd.unmapAll(f.ioas)).toBe(2n * PAGE);
  });
});

describe("IOAS behaviour (kselftest iommufd_ioas, no_domain and mock_domain)", () => {
  for (const withDomain of [false, true]) {
    const variant = withDomain ? "mock_domain" : "no_domain";

    function setup() {
      const sys = createSystem();
      const ioas = sys.fd.ioasAlloc();
      // 2 MiB aligned like the selftests' global buffer, so IOVA alignment follows the length.
      const raw = anonBuffer(sys.libc, 4n << 20n);
      const buf = (raw + (2n << 20n) - 1n) & ~((2n << 20n) - 1n);
      const base = withDomain ? 1n << 24n : 0n;
      if (withDomain) attachTestDevice(sys, ioas);
      return { sys, fd: sys.fd, ioas, buf, base };
    }

    it(`${variant}: area`, () => {
      const { fd, ioas, buf, base } = setup();
      for (let i = 0n; i < 10n; i++)
        expect(
          errnoOf(() => fd.ioasUnmap({ ioasId: ioas, iova: base + i * PAGE, length: PAGE })),
        ).toBe(ENOENT);
      for (let i = 0n; i < 10n; i++)
        fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: base + i * PAGE });
      for (let i = 0n; i < 10n; i++)
        expect(fd.ioasUnmap({ ioasId: ioas, iova: base + i * PAGE, length: PAGE })).toBe(PAGE);
      fd.ioasMap({ ioasId: ioas, userVa: buf, length: 2n * PAGE, iova: base });
      expect(errnoOf(() => fd.ioasUnmap({ ioasId: ioas, iova: base, length: PAGE }))).toBe(ENOENT);
      expect(errnoOf(() => fd.ioasUnmap({ ioasId: ioas, iova: base + PAGE, length: PAGE }))).toBe(
        ENOENT,
      );
      for (const off of [0n, PAGE, 2n * PAGE - PAGE, PAGE])
        expect(
          errnoOf(() => fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: base + off })),
        ).toBe(EEXIST);
      expect(fd.unmapAll(ioas)).toBe(2n * PAGE);
      expect(fd.unmapAll(ioas)).toBe(0n);
    });

    it(`${variant}: area_auto_iova`, () => {
      const { sys, fd, ioas, buf } = setup();
      for (let i = 1n; i <= 10n; i++) {
        const iova = fd.ioasMap({ ioasId: ioas, userVa: buf, length: i * PAGE });
        const lowest = (i * PAGE) & -(i * PAGE);
        expect(iova % lowest).toBe(0n);
        fd.ioasUnmap({ ioasId: ioas, iova, length: i * PAGE });
      }
      sys.ctx.withObject(ioas, 4, (o) => {
        (
          o as unknown as { iopt: { reserveIova(a: bigint, b: bigint, w: unknown): void } }
        ).iopt.reserveIova((1n << 24n) + 4n * PAGE, (1n << 24n) + 104n * PAGE - 1n, "test");
      });
      expect(
        errnoOf(() =>
          fd.ioasAllowIovas(ioas, [{ start: (1n << 24n) + PAGE, last: (1n << 24n) + 600n * PAGE }]),
        ),
      ).toBe(EADDRINUSE);
      const allowed = { start: (1n << 24n) + 200n * PAGE, last: (1n << 24n) + 400n * PAGE - 1n };
      fd.ioasAllowIovas(ioas, [allowed]);
      for (let i = 1n; i <= 10n; i++) {
        const iova = fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE });
        expect(iova >= allowed.start && iova <= allowed.last).toBe(true);
      }
    });

    it(`${variant}: copy_area`, () => {
      const { fd, ioas, buf, base } = setup();
      fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: base });
      expect(
        fd.ioasCopy({
          dstIoasId: ioas,
          srcIoasId: ioas,
          srcIova: base,
          length: PAGE,
          dstIova: base + PAGE,
          flags: W,
        }),
      ).toBe(base + PAGE);
      const other = fd.ioasAlloc();
      expect(
        fd.ioasCopy({
          dstIoasId: other,
          srcIoasId: ioas,
          srcIova: base,
          length: PAGE,
          dstIova: 0n,
          flags: W,
        }),
      ).toBe(0n);
    });

    it(`${variant}: iova_ranges`, () => {
      const { sys, fd, ioas } = setup();
      const r = fd.ioasIovaRanges(ioas);
      if (withDomain) {
        expect(r.ranges).toEqual([{ start: 1n << 24n, last: (1n << 31n) - 1n }]);
        expect(r.alignment).toBe(2048n);
      } else {
        expect(r.ranges).toEqual([{ start: 0n, last: U64_MAX }]);
        expect(r.alignment).toBe(1n);
      }
      // num_iovas 0: EMSGSIZE, the count written back, the array untouched.
      const arr = sys.libc.malloc(32);
      sys.libc.poke(arr, new Uint8Array(32).fill(0xee));
      const q = rawIoctl(
        sys,
        IOMMU_IOAS_IOVA_RANGES,
        iommu_ioas_iova_ranges.encode({ size: 32, ioas_id: ioas, allowed_iovas: arr }),
      );
      expect(q.errno).toBe(EMSGSIZE);
      expect(iommu_ioas_iova_ranges.decode(q.buf).num_iovas).toBe(1);
      expect(sys.libc.peek(arr, 32).every((b) => b === 0xee)).toBe(true);
      if (!withDomain) {
        sys.ctx.withObject(ioas, 4, (o) => {
          (
            o as unknown as { iopt: { reserveIova(a: bigint, b: bigint, w: unknown): void } }
          ).iopt.reserveIova(PAGE, 2n * PAGE - 1n, "t");
        });
        expect(fd.ioasIovaRanges(ioas).ranges).toEqual([
          { start: 0n, last: PAGE - 1n },
          { start: 2n * PAGE, last: U64_MAX },
        ]);
        const one = rawIoctl(
          sys,
          IOMMU_IOAS_IOVA_RANGES,
          iommu_ioas_iova_ranges.encode({
            size: 32,
            ioas_id: ioas,
            num_iovas: 1,
            allowed_iovas: arr,
          }),
        );
        expect(one.errno).toBe(EMSGSIZE);
        expect(iommu_ioas_iova_ranges.decode(one.buf).num_iovas).toBe(2);
        expect(iommu_iova_range.decode(sys.libc.peek(arr, 16))).toEqual({
          start: 0n,
          last: PAGE - 1n,
        });
        expect(sys.libc.peek(arr + 16n, 16).every((b) => b === 0xee)).toBe(true);
      }
    });

    it(`${variant}: ioas_destroy / ioas_area_destroy`, () => {
      const { fd, ioas, buf, base } = setup();
      fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: base });
      if (withDomain) expect(errnoOf(() => fd.destroy(ioas))).toBe(EBUSY);
      else fd.destroy(ioas);
    });

    it(`${variant}: map_file of a memfd, then close of the memfd changes nothing`, () => {
      const { sys, fd, ioas, base } = setup();
      const { mfd } = memfdBuffer(sys.libc, 4n * PAGE);
      const iova = fd.ioasMapFile({
        ioasId: ioas,
        fd: mfd,
        start: PAGE,
        length: 2n * PAGE,
        iova: base,
      });
      expect(iova).toBe(base);
      sys.libc.close(mfd);
      expect(fd.ioasUnmap({ ioasId: ioas, iova, length: 2n * PAGE })).toBe(2n * PAGE);
      expect(sys.kernel.mem.totalPinned()).toBe(0);
    });
  }

  it("a process without the file cannot use its ids: another open is another context", () => {
    const a = createSystem();
    const id = a.fd.ioasAlloc();
    const other = new Libc(a.kernel, a.kernel.newProcess(0));
    const fd2 = other.open("/dev/iommu", 2);
    expect(fd2).toBeGreaterThanOrEqual(0);
    const r = other.ioctl(
      fd2,
      IOMMU_IOAS_MAP,
      iommu_ioas_map.encode({ size: 40, flags: R, ioas_id: id, length: PAGE, user_va: 0x10000n }),
    );
    expect(r).toBe(-1);
    expect(other.errno).toBe(ENOENT);
    expect(KernelError).toBeDefined();
  });
});
