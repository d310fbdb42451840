/**
 * VFIO_DEVICE_FEATURE_DMA_BUF with two failing conditions at once: the errno is the one of the
 * check that comes first in drivers/vfio/pci/vfio_pci_dmabuf.c vfio_pci_core_feature_dma_buf
 * (driver ops, vfio_check_feature, the header copy, nr_ranges/flags, region index, the ranges
 * copy, validate_dmabuf_input, the exporter allocation, get_dmabuf_phys, dma_buf_export,
 * dma_buf_fd). Swapping any two adjacent checks changes one of these answers.
 *
 * Checks that share an errno with a later one are told apart by failing the exporter
 * allocation (which sits between validate_dmabuf_input and get_dmabuf_phys): an input refused
 * by validation is EINVAL even then, where without that check it would reach the allocation.
 */
import {
  EFAULT,
  EINVAL,
  EMFILE,
  ENODEV,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  RLIMIT_NOFILE,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_SET,
  encodeDmaBufFeature,
} from "../src/vfio-uapi.js";
import { GPU, type Machine, MiB, PAGE, gpu, machine, openGranted } from "./helpers.js";

type Range = { offset: bigint; length: bigint };
const WHOLE: Range[] = [{ offset: 0n, length: 16n * MiB }];
const TOP = 1n << 64n;

function feature(
  m: Machine,
  fd: number,
  o: {
    regionIndex?: number;
    ranges?: Range[];
    nrRanges?: number;
    dmaBufFlags?: number;
    flags?: number;
    argsz?: number;
  },
): { ret: number; errno: number } {
  const buf = encodeDmaBufFeature({
    regionIndex: o.regionIndex ?? 0,
    openFlags: O_RDWR,
    ranges: o.ranges ?? WHOLE,
    ...(o.nrRanges === undefined ? {} : { nrRanges: o.nrRanges }),
    ...(o.dmaBufFlags === undefined ? {} : { dmaBufFlags: o.dmaBufFlags }),
    ...(o.flags === undefined ? {} : { flags: o.flags }),
    ...(o.argsz === undefined ? {} : { argsz: o.argsz }),
  });
  const ret = m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, buf);
  return { ret, errno: ret < 0 ? m.libc.errno : 0 };
}

/** The 1-based fail-nth position of `site` in a successful create of the whole BAR 0. */
function positionOf(m: Machine, fd: number, site: string): number {
  const fault = m.libc.task.fault;
  // Warm up (scratch buffers) so the counted run takes no first-use allocations.
  const warm = feature(m, fd, {});
  if (warm.ret >= 0) m.libc.close(warm.ret);
  fault.arm(1_000_000);
  const { ret } = feature(m, fd, {});
  const hit = [...fault.sitesHit];
  fault.disarm();
  expect(ret).toBeGreaterThan(0);
  m.libc.close(ret);
  const at = hit.indexOf(site);
  if (at < 0) throw new Error(`${site} not reached: ${hit.join(", ")}`);
  return at + 1;
}

/** Run `fn` with the fail-nth point of `site` armed; returns its result. */
function withFailing<T>(m: Machine, fd: number, site: string, fn: () => T): T {
  const nth = positionOf(m, fd, site);
  const fault = m.libc.task.fault;
  fault.arm(nth);
  try {
    return fn();
  } finally {
    fault.disarm();
  }
}

/** A user buffer whose `readable` bytes end exactly at an unmapped page. */
function atHole(m: Machine, bytes: Uint8Array, readable: number): bigint {
  const base = m.libc.mmap(
    0n,
    2n * PAGE,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0,
  );
  m.libc.munmap(base + PAGE, PAGE);
  const at = base + PAGE - BigInt(readable);
  m.libc.poke(at, bytes.subarray(0, readable));
  return at;
}

function ioctlAt(m: Machine, fd: number, at: bigint): number {
  return m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, at) < 0 ? m.libc.errno : 0;
}

describe("DMA_BUF: adjacent checks, both failing", () => {
  it("driver without get_dmabuf_phys before vfio_check_feature: EOPNOTSUPP, not EINVAL", () => {
    const m = machine();
    const vdev = m.mod.probe(m.bus.addDevice(GPU), { pciOps: null });
    const fd = openGranted(m, vdev);
    const set = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_BUF;
    expect(feature(m, fd, { flags: set }).errno).toBe(EOPNOTSUPP);
    expect(feature(m, fd, { argsz: 8 + 15 }).errno).toBe(EOPNOTSUPP);
  });

  it("vfio_check_feature's argsz before the header copy: EINVAL, not EFAULT", () => {
    const m = machine();
    const { fd } = gpu(m);
    const bytes = encodeDmaBufFeature({
      regionIndex: 0,
      openFlags: 0,
      ranges: WHOLE,
      argsz: 8 + 15,
    });
    expect(ioctlAt(m, fd, atHole(m, bytes, 8))).toBe(EINVAL);
    // The same bytes with a big enough argsz reach the copy.
    const ok = encodeDmaBufFeature({ regionIndex: 0, openFlags: 0, ranges: WHOLE });
    expect(ioctlAt(m, fd, atHole(m, ok, 8))).toBe(EFAULT);
  });

  it("nr_ranges / flags before the region index: EINVAL, not ENODEV", () => {
    const m = machine();
    const { fd } = gpu(m);
    expect(feature(m, fd, { regionIndex: 6, dmaBufFlags: 1 }).errno).toBe(EINVAL);
    expect(feature(m, fd, { regionIndex: 6, ranges: [], nrRanges: 0 }).errno).toBe(EINVAL);
  });

  it("region index before the ranges copy: ENODEV, not EFAULT or ENOMEM", () => {
    const m = machine();
    const { fd } = gpu(m);
    const bytes = encodeDmaBufFeature({ regionIndex: 6, openFlags: 0, ranges: WHOLE });
    expect(ioctlAt(m, fd, atHole(m, bytes, 24))).toBe(ENODEV);
    expect(feature(m, fd, { regionIndex: 6, nrRanges: 0xffffffff }).errno).toBe(ENODEV);
    expect(
      withFailing(m, fd, "memdup_array_user", () => feature(m, fd, { regionIndex: 6 })).errno,
    ).toBe(ENODEV);
  });

  it("the ranges copy before their validation: EFAULT / ENOMEM, not EINVAL", () => {
    const m = machine();
    const { fd } = gpu(m);
    const bad: Range[] = [
      { offset: 0n, length: 0n },
      { offset: 0n, length: PAGE },
    ];
    const bytes = encodeDmaBufFeature({ regionIndex: 0, openFlags: 0, ranges: bad });
    expect(ioctlAt(m, fd, atHole(m, bytes, 8 + 16 + 16))).toBe(EFAULT);
    expect(
      withFailing(m, fd, "memdup_array_user", () => feature(m, fd, { ranges: bad })).errno,
    ).toBe(ENOMEM);
  });

  it("validation before the exporter allocation: EINVAL, not ENOMEM", () => {
    const m = machine();
    const { fd } = gpu(m);
    expect(
      withFailing(m, fd, "vfio_pci_dma_buf alloc", () =>
        feature(m, fd, { ranges: [{ offset: 1n, length: PAGE }] }),
      ).errno,
    ).toBe(EINVAL);
  });

  it("the exporter allocation before get_dmabuf_phys: ENOMEM, not EINVAL or EOVERFLOW", () => {
    const m = machine();
    const { fd } = gpu(m);
    const noProvider = () =>
      feature(m, fd, { regionIndex: 1, ranges: [{ offset: 0n, length: PAGE }] });
    expect(withFailing(m, fd, "vfio_pci_dma_buf alloc", noProvider).errno).toBe(ENOMEM);
    const pastEnd = () => feature(m, fd, { ranges: [{ offset: 16n * MiB, length: PAGE }] });
    expect(withFailing(m, fd, "vfio_pci_dma_buf alloc", pastEnd).errno).toBe(ENOMEM);
    const wraps = () => feature(m, fd, { ranges: [{ offset: TOP - PAGE, length: PAGE }] });
    expect(withFailing(m, fd, "vfio_pci_dma_buf alloc", wraps).errno).toBe(ENOMEM);
  });

  it("get_dmabuf_phys: the P2P provider before the ranges; per range, wrap before the BAR end", () => {
    const m = machine();
    const { fd } = gpu(m);
    expect(
      feature(m, fd, { regionIndex: 1, ranges: [{ offset: TOP - PAGE, length: PAGE }] }).errno,
    ).toBe(EINVAL);
    // Wraps and (as a wrapped sum) would also look past the end: EOVERFLOW.
    expect(feature(m, fd, { ranges: [{ offset: TOP - 2n * PAGE, length: 16n * MiB }] }).errno).toBe(
      EOVERFLOW,
    );
  });

  it("get_dmabuf_phys before dma_buf_export, export before the fd: EINVAL, then ENOMEM not EMFILE", () => {
    const m = machine();
    const { fd } = gpu(m);
    const pastEnd = () =>
      feature(m, fd, { ranges: [{ offset: 16n * MiB - PAGE, length: 2n * PAGE }] });
    expect(withFailing(m, fd, "dma_buf_export", pastEnd).errno).toBe(EINVAL);
    const nth = positionOf(m, fd, "dma_buf_export");
    m.libc.setrlimit(RLIMIT_NOFILE, m.libc.process.files.openCount);
    expect(feature(m, fd, {}).errno).toBe(EMFILE);
    m.libc.task.fault.arm(nth);
    const r = feature(m, fd, {});
    m.libc.task.fault.disarm();
    expect(r.errno).toBe(ENOMEM);
  });
});

describe("DMA_BUF: each length check of validate_dmabuf_input on its own", () => {
  // Each input fails one check only; get_dmabuf_phys would refuse most of them later with the
  // same EINVAL, so the exporter allocation is failed to show the refusal comes from validation.
  const HALF = 1n << 63n;
  it.each([
    ["zero length", [{ offset: 0n, length: 0n }]],
    ["offset not page aligned", [{ offset: 0x800n, length: PAGE }]],
    ["length not page aligned", [{ offset: 0n, length: PAGE + 0x800n }]],
    [
      "sum overflows size_t (wraps to one page)",
      [
        { offset: 0n, length: TOP - PAGE },
        { offset: 0n, length: 2n * PAGE },
      ],
    ],
    ["sum has DMA_IOVA_USE_SWIOTLB (bit 63) set", [{ offset: 0n, length: HALF }]],
  ] as const)("%s: EINVAL before the allocation", (_name, ranges) => {
    const m = machine();
    const { fd } = gpu(m);
    const r = withFailing(m, fd, "vfio_pci_dma_buf alloc", () =>
      feature(m, fd, { ranges: [...ranges] }),
    );
    expect(r.errno).toBe(EINVAL);
    expect(feature(m, fd, { ranges: [...ranges] }).errno).toBe(EINVAL);
  });
});
