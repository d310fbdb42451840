/**
 * Several conditions failing at once: the errno is the one of the first check in the kernel's
 * order (drivers/iommu/iommufd/ioas.c iommufd_ioas_map / _map_file / _copy / _unmap /
 * iommufd_ioas_option, hw_pagetable.c iommufd_hwpt_alloc, main.c iommufd_option and
 * iommufd_option_rlimit_mode). Each case names the checks that fail, first one first; swapping
 * two of them changes the answer. Nothing is left behind by any of them.
 */
import { EBUSY, EINVAL, ENOENT, EOPNOTSUPP, EOVERFLOW, EPERM, Libc } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IommufdClient,
  iommu_hwpt_alloc,
  iommu_ioas_copy,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_option,
} from "../src/index.js";
import {
  PAGE,
  type TestSystem,
  anonBuffer,
  attachTestDevice,
  createSystem,
  memfdBuffer,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";

const ULONG_MAX = (1n << 64n) - 1n;
const RW = 6;
const FIXED = 1;
const BAD_ID = 999;

function setup() {
  const sys = createSystem();
  const ioas = sys.fd.ioasAlloc();
  const { idev } = attachTestDevice(sys, ioas);
  const va = anonBuffer(sys.libc, 4n * PAGE);
  const { mfd } = memfdBuffer(sys.libc, 4n * PAGE);
  const mapped = sys.fd.ioasMap({ ioasId: ioas, userVa: va, length: 4n * PAGE });
  return { sys, ioas, devId: idev.id, va, mfd, mapped };
}

type Setup = ReturnType<typeof setup>;
type Case = readonly [failing: string, errno: number, cmd: number, bytes: (s: Setup) => Uint8Array];

function run(cases: readonly Case[]) {
  it.each(cases)("%s → %s", (_failing, errno, cmd, bytes) => {
    const s = setup();
    const before = snapshot(s.sys);
    expect(rawIoctl(s.sys, cmd, bytes(s)).errno).toBe(errno);
    expect(snapshot(s.sys)).toBe(before);
  });
}

const map = (s: Setup, v: Partial<Parameters<typeof iommu_ioas_map.encode>[0]>) =>
  iommu_ioas_map.encode({
    size: 40,
    flags: RW,
    ioas_id: s.ioas,
    user_va: s.va,
    length: PAGE,
    ...v,
  });
const mapFile = (s: Setup, v: Partial<Parameters<typeof iommu_ioas_map_file.encode>[0]>) =>
  iommu_ioas_map_file.encode({
    size: 40,
    flags: RW,
    ioas_id: s.ioas,
    fd: s.mfd,
    length: PAGE,
    ...v,
  });
const copy = (s: Setup, v: Partial<Parameters<typeof iommu_ioas_copy.encode>[0]>) =>
  iommu_ioas_copy.encode({
    size: 40,
    flags: RW,
    dst_ioas_id: s.ioas,
    src_ioas_id: s.ioas,
    length: 4n * PAGE,
    src_iova: s.mapped,
    ...v,
  });
const unmap = (s: Setup, v: Partial<Parameters<typeof iommu_ioas_unmap.encode>[0]>) =>
  iommu_ioas_unmap.encode({ size: 24, ioas_id: s.ioas, iova: s.mapped, length: 4n * PAGE, ...v });
const hwpt = (s: Setup, v: Partial<Parameters<typeof iommu_hwpt_alloc.encode>[0]>) =>
  iommu_hwpt_alloc.encode({ size: 48, dev_id: s.devId, pt_id: s.ioas, ...v });
const option = (v: Partial<Parameters<typeof iommu_option.encode>[0]>) =>
  iommu_option.encode({ size: 24, ...v });

describe("IOMMU_IOAS_MAP", () => {
  run([
    [
      "flags, iova overflow, no R/W, IOAS id",
      EOPNOTSUPP,
      IOMMU_IOAS_MAP,
      (s) => map(s, { flags: 1 << 3, iova: ULONG_MAX, ioas_id: BAD_ID }),
    ],
    [
      "__reserved, length overflow",
      EOPNOTSUPP,
      IOMMU_IOAS_MAP,
      (s) => map(s, { __reserved: 1, length: ULONG_MAX }),
    ],
    [
      "length overflow, no R/W, IOAS id",
      EOVERFLOW,
      IOMMU_IOAS_MAP,
      (s) => map(s, { flags: FIXED, length: ULONG_MAX, ioas_id: BAD_ID }),
    ],
    ["no R/W, IOAS id", EINVAL, IOMMU_IOAS_MAP, (s) => map(s, { flags: FIXED, ioas_id: BAD_ID })],
    ["IOAS id, length 0", ENOENT, IOMMU_IOAS_MAP, (s) => map(s, { ioas_id: BAD_ID, length: 0n })],
  ]);
});

describe("IOMMU_IOAS_MAP_FILE", () => {
  run([
    [
      "flags, iova overflow, fd",
      EOPNOTSUPP,
      IOMMU_IOAS_MAP_FILE,
      (s) => mapFile(s, { flags: 1 << 3, iova: ULONG_MAX, fd: -1 }),
    ],
    [
      "iova overflow, no R/W, IOAS id, fd",
      EOVERFLOW,
      IOMMU_IOAS_MAP_FILE,
      (s) => mapFile(s, { flags: FIXED, iova: ULONG_MAX, ioas_id: BAD_ID, fd: -1 }),
    ],
    [
      "no R/W, IOAS id, fd",
      EINVAL,
      IOMMU_IOAS_MAP_FILE,
      (s) => mapFile(s, { flags: 0, ioas_id: BAD_ID, fd: -1 }),
    ],
    ["IOAS id, fd", ENOENT, IOMMU_IOAS_MAP_FILE, (s) => mapFile(s, { ioas_id: BAD_ID, fd: -1 })],
  ]);
});

describe("IOMMU_IOAS_COPY", () => {
  run([
    [
      "flags, length overflow, source id",
      EOPNOTSUPP,
      IOMMU_IOAS_COPY,
      (s) => copy(s, { flags: 1 << 3, length: ULONG_MAX, src_ioas_id: BAD_ID }),
    ],
    [
      "dst_iova overflow, no R/W, source id",
      EOVERFLOW,
      IOMMU_IOAS_COPY,
      (s) => copy(s, { flags: FIXED, dst_iova: ULONG_MAX, src_ioas_id: BAD_ID }),
    ],
    [
      "no R/W, source id",
      EINVAL,
      IOMMU_IOAS_COPY,
      (s) => copy(s, { flags: FIXED, src_ioas_id: BAD_ID }),
    ],
    [
      "source id, length 0",
      ENOENT,
      IOMMU_IOAS_COPY,
      (s) => copy(s, { src_ioas_id: BAD_ID, length: 0n }),
    ],
    [
      "length 0 (iopt_get_pages), destination id",
      EINVAL,
      IOMMU_IOAS_COPY,
      (s) => copy(s, { length: 0n, dst_ioas_id: BAD_ID }),
    ],
    [
      "source range not a mapping, destination id",
      ENOENT,
      IOMMU_IOAS_COPY,
      (s) => copy(s, { src_iova: s.mapped + 8n * PAGE, dst_ioas_id: BAD_ID }),
    ],
  ]);
});

describe("IOMMU_IOAS_UNMAP", () => {
  run([
    [
      "IOAS id, iova overflow",
      ENOENT,
      IOMMU_IOAS_UNMAP,
      (_s) => iommu_ioas_unmap.encode({ size: 24, ioas_id: BAD_ID, iova: ULONG_MAX, length: PAGE }),
    ],
    [
      "iova overflow, nothing there",
      EOVERFLOW,
      IOMMU_IOAS_UNMAP,
      (s) => unmap(s, { iova: ULONG_MAX, length: PAGE }),
    ],
    [
      "iova + length wraps, nothing there",
      EOVERFLOW,
      IOMMU_IOAS_UNMAP,
      (s) => unmap(s, { iova: 1n << 63n, length: (1n << 63n) + PAGE }),
    ],
    [
      "length 0, nothing there",
      EINVAL,
      IOMMU_IOAS_UNMAP,
      (s) => unmap(s, { iova: s.mapped + 8n * PAGE, length: 0n }),
    ],
  ]);
});

describe("IOMMU_HWPT_ALLOC", () => {
  run([
    [
      "__reserved, data_len without type, device id",
      EOPNOTSUPP,
      IOMMU_HWPT_ALLOC,
      (s) => hwpt(s, { __reserved: 1, data_len: 8, dev_id: BAD_ID }),
    ],
    [
      "data type without data, device id, pt id",
      EINVAL,
      IOMMU_HWPT_ALLOC,
      (s) => hwpt(s, { data_type: IOMMU_HWPT_DATA_SELFTEST, dev_id: BAD_ID, pt_id: BAD_ID }),
    ],
    [
      "device id, pt id",
      ENOENT,
      IOMMU_HWPT_ALLOC,
      (s) => hwpt(s, { dev_id: BAD_ID, pt_id: BAD_ID }),
    ],
  ]);
});

describe("IOMMU_OPTION", () => {
  run([
    [
      "__reserved, HUGE_PAGES of no IOAS",
      EOPNOTSUPP,
      IOMMU_OPTION,
      () => option({ __reserved: 1, option_id: IOMMU_OPTION_HUGE_PAGES, object_id: BAD_ID }),
    ],
    [
      "HUGE_PAGES: IOAS id, op",
      ENOENT,
      IOMMU_OPTION,
      () => option({ option_id: IOMMU_OPTION_HUGE_PAGES, object_id: BAD_ID, op: 7 }),
    ],
    [
      "HUGE_PAGES: op, value",
      EOPNOTSUPP,
      IOMMU_OPTION,
      (s) => option({ option_id: IOMMU_OPTION_HUGE_PAGES, object_id: s.ioas, op: 7, val64: 5n }),
    ],
    [
      "RLIMIT_MODE: object id, op",
      EOPNOTSUPP,
      IOMMU_OPTION,
      (s) => option({ option_id: IOMMU_OPTION_RLIMIT_MODE, object_id: s.ioas, op: 7 }),
    ],
    [
      "RLIMIT_MODE: objects exist, value",
      EBUSY,
      IOMMU_OPTION,
      () => option({ option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64: 2n }),
    ],
  ]);

  it("RLIMIT_MODE SET without CAP_SYS_RESOURCE: EPERM before objects (EBUSY) and value (EINVAL)", () => {
    const s: { sys: TestSystem } = { sys: createSystem() };
    const libc = new Libc(s.sys.kernel, s.sys.kernel.newProcess(1000));
    const fd = IommufdClient.open(libc);
    fd.ioasAlloc();
    const va = libc.malloc(24);
    libc.poke(
      va,
      option({ option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64: 2n }),
    );
    expect(libc.ioctl(fd.fd, IOMMU_OPTION, va)).toBe(-1);
    expect(libc.errno).toBe(EPERM);
    libc.poke(
      va,
      option({
        option_id: IOMMU_OPTION_RLIMIT_MODE,
        op: IOMMU_OPTION_OP_SET,
        object_id: 1,
        val64: 2n,
      }),
    );
    expect(libc.ioctl(fd.fd, IOMMU_OPTION, va)).toBe(-1);
    expect(libc.errno).toBe(EOPNOTSUPP);
  });
});
