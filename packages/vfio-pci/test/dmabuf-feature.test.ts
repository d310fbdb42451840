import { dmaBufList, dmaBufPut } from "@x/dmabuf";
import {
  EFAULT,
  EINVAL,
  EMFILE,
  ENODEV,
  ENOENT,
  ENOMEM,
  ENOTTY,
  EOPNOTSUPP,
  EOVERFLOW,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  RLIMIT_NOFILE,
  isKernelError,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  encodeDmaBufFeature,
} from "../src/vfio-uapi.js";
import { vfioPciCoreFeatureDmaBuf } from "../src/vfio-pci-dmabuf.js";
import {
  GPU,
  type Machine,
  MiB,
  PAGE,
  cfgWrite,
  createDmaBuf,
  getBuf,
  gpu,
  machine,
  openGranted,
} from "./helpers.js";

const GET = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
const WHOLE = [{ offset: 0n, length: 16n * MiB }];

/** Everything a failed create must leave as it was. */
function snapshot(m: Machine, vdev: ReturnType<typeof gpu>["vdev"]) {
  return {
    refs: vdev.registrationRefs,
    bufs: vdev.dmabufs.size,
    global: dmaBufList(m.kernel).length,
    fds: m.libc.process.files.openCount,
  };
}

/** VFIO_DEVICE_FEATURE with a DMA_BUF payload over the whole BAR 0; `argsz` overrides the size. */
function featureWhole(m: Machine, fd: number, flags: number, argsz?: number): number {
  return m.libc.ioctl(
    fd,
    VFIO_DEVICE_FEATURE,
    encodeDmaBufFeature({
      flags,
      regionIndex: 0,
      openFlags: 0,
      ranges: WHOLE,
      ...(argsz === undefined ? {} : { argsz }),
    }),
  );
}

function expectErr(m: Machine, ret: number, errno: number) {
  expect(ret).toBe(-1);
  expect(m.libc.errno).toBe(errno);
}

describe("VFIO_DEVICE_FEATURE_DMA_BUF: ordered checks", () => {
  it("succeeds with the fd as return value, size = Σ lengths, open_flags honoured", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const before = snapshot(m, vdev);
    const dfd = createDmaBuf(
      m,
      fd,
      0,
      [
        { offset: 0n, length: 2n * PAGE },
        { offset: 8n * PAGE, length: PAGE },
        { offset: 0n, length: PAGE },
      ],
      O_RDONLY | O_CLOEXEC,
    );
    expect(dfd).toBeGreaterThan(fd);
    const buf = getBuf(m, dfd);
    expect(buf.size).toBe(4n * PAGE);
    expect(m.libc.process.files.cloexec(dfd)).toBe(true);
    expect(buf.file.fMode & 2).toBe(0);
    const priv = buf.priv as import("../src/vfio-pci-dmabuf.js").VfioPciDmaBuf;
    const start = vdev.pdev.resource(0).start;
    expect([...priv.paddr]).toEqual([start, start + 8n * PAGE, start]);
    expect(priv.state).toBe("live");
    expect(vdev.registrationRefs).toBe(before.refs + 1);
    dmaBufPut(buf);
  });

  it("#1 a driver without get_dmabuf_phys: EOPNOTSUPP, even for PROBE", () => {
    const m = machine();
    const vdev = m.mod.probe(m.bus.addDevice(GPU), { pciOps: null });
    const fd = openGranted(m, vdev);
    expectErr(m, createDmaBuf(m, fd, 0, WHOLE), EOPNOTSUPP);
    const probe = encodeDmaBufFeature({
      flags: GET | VFIO_DEVICE_FEATURE_PROBE,
      regionIndex: 0,
      openFlags: 0,
      ranges: WHOLE,
    });
    expectErr(m, m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, probe), EOPNOTSUPP);
  });

  it("core validation before the handler: argsz < 8, unknown flags, GET|SET, unknown feature", () => {
    const m = machine();
    const { fd } = gpu(m);
    const f = (flags: number, argsz?: number) => featureWhole(m, fd, flags, argsz);
    expectErr(m, f(GET, 7), EINVAL);
    expectErr(m, f(GET | (1 << 19)), EINVAL);
    expectErr(m, f(GET | VFIO_DEVICE_FEATURE_SET), EINVAL);
    expect(f(GET | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PROBE)).toBe(-1); // SET unsupported
    expect(m.libc.errno).toBe(EINVAL);
    expectErr(m, f(VFIO_DEVICE_FEATURE_GET | 42), ENOTTY);
    expectErr(m, f(VFIO_DEVICE_FEATURE_GET | 1), ENOTTY); // migration: no mig ops
  });

  it("#2 vfio_check_feature: SET EINVAL, PROBE 0, neither EINVAL, payload < 16 EINVAL", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const before = snapshot(m, vdev);
    const f = (flags: number, argsz?: number) => featureWhole(m, fd, flags, argsz);
    expectErr(m, f(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_BUF), EINVAL);
    expect(f(GET | VFIO_DEVICE_FEATURE_PROBE)).toBe(0);
    expectErr(m, f(VFIO_DEVICE_FEATURE_DMA_BUF), EINVAL);
    expectErr(m, f(GET, 8 + 15), EINVAL);
    // argsz is not checked against nr_ranges (OBSERVATION): exactly the header is enough.
    expect(f(GET, 8 + 16)).toBeGreaterThan(0);
    expect(snapshot(m, vdev).bufs).toBe(before.bufs + 1);
  });

  it("#3 / #6 EFAULT copying the header or the ranges", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    // Two pages mapped, the second unmapped: a guaranteed hole after the first.
    const base = m.libc.mmap(
      0n,
      2n * PAGE,
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS,
      -1,
      0,
    );
    m.libc.munmap(base + PAGE, PAGE);
    const put = (at: bigint, bytes: Uint8Array) => m.libc.poke(at, bytes);
    const full = encodeDmaBufFeature({ regionIndex: 0, openFlags: O_RDWR, ranges: WHOLE });
    // Feature header fits, payload header does not.
    const a = base + PAGE - 8n;
    put(a, full.subarray(0, 8));
    expectErr(m, m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, a), EFAULT);
    // Both headers fit, the range array does not.
    const b = base + PAGE - 24n;
    put(b, full.subarray(0, 24));
    const before = snapshot(m, vdev);
    expectErr(m, m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b), EFAULT);
    expect(snapshot(m, vdev)).toEqual(before);
  });

  it("#4 nr_ranges 0 or flags ≠ 0: EINVAL", () => {
    const m = machine();
    const { fd } = gpu(m);
    expectErr(
      m,
      m.libc.ioctl(
        fd,
        VFIO_DEVICE_FEATURE,
        encodeDmaBufFeature({ regionIndex: 0, openFlags: 0, ranges: [], nrRanges: 0 }),
      ),
      EINVAL,
    );
    expectErr(
      m,
      m.libc.ioctl(
        fd,
        VFIO_DEVICE_FEATURE,
        encodeDmaBufFeature({ regionIndex: 0, openFlags: 0, ranges: WHOLE, dmaBufFlags: 1 << 28 }),
      ),
      EINVAL,
    );
  });

  it("#5 ROM, config, VGA and device-specific regions: ENODEV", () => {
    const m = machine();
    const { fd } = gpu(m);
    for (const idx of [6, 7, 8, 9, 0xffffffff])
      expectErr(m, createDmaBuf(m, fd, idx, WHOLE), ENODEV);
  });

  it("#6 ENOMEM duplicating the ranges (fault injection)", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    sweepSite(m, vdev, fd, "memdup_array_user", ENOMEM);
  });

  it("#6 ENOMEM for a ranges array larger than one kmalloc, before user memory is read", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const before = snapshot(m, vdev);
    const huge = encodeDmaBufFeature({
      regionIndex: 0,
      openFlags: 0,
      ranges: WHOLE,
      nrRanges: 0xffffffff,
    });
    expectErr(m, m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, huge), ENOMEM);
    expect(snapshot(m, vdev)).toEqual(before);
  });

  it("#7 per range: zero length, unaligned offset, unaligned length: EINVAL", () => {
    const m = machine();
    const { fd } = gpu(m);
    for (const r of [
      { offset: 0n, length: 0n },
      { offset: 100n, length: PAGE },
      { offset: 0n, length: PAGE + 1n },
    ])
      expectErr(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: PAGE }, r]), EINVAL);
  });

  it("#8 total overflows size_t, #9 total has bit 63: EINVAL, not EOVERFLOW", () => {
    const m = machine();
    const { fd } = gpu(m);
    const half = 1n << 63n;
    expectErr(
      m,
      createDmaBuf(m, fd, 0, [
        { offset: 0n, length: half },
        { offset: 0n, length: half },
      ]),
      EINVAL,
    );
    expectErr(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: half }]), EINVAL);
    // Just under 2^63 passes #8/#9 and fails later at the BAR bound (#13), also EINVAL.
    expectErr(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: half - PAGE }]), EINVAL);
  });

  it("#10 ENOMEM allocating the exporter object", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    sweepSite(m, vdev, fd, "vfio_pci_dma_buf alloc", ENOMEM);
  });

  it("#11 no P2P provider: I/O BAR, upper half of a 64-bit BAR, absent BAR: EINVAL", () => {
    const m = machine();
    const { fd } = gpu(m);
    for (const bar of [1, 3, 5])
      expectErr(m, createDmaBuf(m, fd, bar, [{ offset: 0n, length: PAGE }]), EINVAL);
  });

  it("#12 BAR start + offset (+ length) wrapping u64: EOVERFLOW", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const start = vdev.pdev.resource(0).start;
    const top = 1n << 64n;
    expectErr(m, createDmaBuf(m, fd, 0, [{ offset: top - PAGE, length: PAGE }]), EOVERFLOW);
    expectErr(
      m,
      createDmaBuf(m, fd, 0, [{ offset: top - start - PAGE, length: 2n * PAGE }]),
      EOVERFLOW,
    );
    // Checked per range in order: an earlier EINVAL (past the end) wins over a later overflow.
    expectErr(
      m,
      createDmaBuf(m, fd, 0, [
        { offset: 16n * MiB, length: PAGE },
        { offset: top - PAGE, length: PAGE },
      ]),
      EINVAL,
    );
  });

  it("#13 past the end of the BAR, and a sub-page BAR: EINVAL", () => {
    const m = machine();
    const { fd } = gpu(m);
    expectErr(m, createDmaBuf(m, fd, 0, [{ offset: 16n * MiB - PAGE, length: 2n * PAGE }]), EINVAL);
    expectErr(m, createDmaBuf(m, fd, 2, [{ offset: 0n, length: 2n * MiB }]), EINVAL);
    expectErr(m, createDmaBuf(m, fd, 4, [{ offset: 0n, length: PAGE }]), EINVAL);
    expect(createDmaBuf(m, fd, 2, [{ offset: MiB - PAGE, length: PAGE }])).toBeGreaterThan(0);
  });

  it("#14 registration gone (device being unregistered): ENODEV", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const ubuf = m.libc.malloc(64);
    m.libc.poke(
      ubuf,
      encodeDmaBufFeature({ regionIndex: 0, openFlags: 0, ranges: WHOLE }).subarray(8),
    );
    m.libc.close(fd);
    m.mod.remove(vdev);
    // Unreachable from user space (an open fd holds a registration); the driver call shows it.
    let err: unknown;
    m.kernel.runAs(m.libc.task, () => {
      try {
        vfioPciCoreFeatureDmaBuf(vdev, GET, ubuf, 32);
      } catch (e) {
        err = e;
      }
    });
    expect(isKernelError(err, ENODEV)).toBe(true);
    expect(vdev.registrationRefs).toBe(0);
  });

  it("#15 dma_buf_export failures: ENOENT (module ref) and ENOMEM, nothing left", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    sweepSite(m, vdev, fd, "try_module_get", ENOENT);
    sweepSite(m, vdev, fd, "dma_buf_getfile", ENOMEM);
    sweepSite(m, vdev, fd, "dma_buf_export", ENOMEM);
  });

  it("#16 starts revoked iff memory decode is off", () => {
    const m = machine();
    const { fd } = gpu(m);
    const live = getBuf(m, createDmaBuf(m, fd, 0, WHOLE));
    cfgWrite(m, fd, 4, 2, 0);
    const dead = getBuf(m, createDmaBuf(m, fd, 0, WHOLE));
    const state = (b: typeof live) =>
      (b.priv as import("../src/vfio-pci-dmabuf.js").VfioPciDmaBuf).state;
    expect(state(dead)).toBe("revoked");
    expect(state(live)).toBe("revoked");
    cfgWrite(m, fd, 4, 2, 2);
    expect([state(live), state(dead)]).toEqual(["live", "live"]);
    dmaBufPut(live);
    dmaBufPut(dead);
  });

  it("#17 fd table full: EMFILE, the release undoes everything once (no leak, no double free)", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const files = m.libc.process.files;
    m.libc.setrlimit(RLIMIT_NOFILE, files.openCount);
    // Warm the scratch buffer with a failing call so the next one needs no new mapping.
    createDmaBuf(m, fd, 0, WHOLE);
    const before = snapshot(m, vdev);
    expectErr(m, createDmaBuf(m, fd, 0, WHOLE), EMFILE);
    expect(snapshot(m, vdev)).toEqual(before);
    expect(vdev.dmabufs.size).toBe(0);
    m.libc.setrlimit(RLIMIT_NOFILE, 1024);
    expect(createDmaBuf(m, fd, 0, WHOLE)).toBeGreaterThan(0);
  });

  it("fail-nth sweep: every injected failure leaves no trace, then the call succeeds", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const buf = encodeDmaBufFeature({ regionIndex: 0, openFlags: O_RDWR, ranges: WHOLE });
    m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, new Uint8Array(buf));
    const fault = m.libc.task.fault;
    const failed: string[] = [];
    for (let n = 1; n < 50; n++) {
      const before = snapshot(m, vdev);
      fault.arm(n);
      const ret = m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, new Uint8Array(buf));
      const site = fault.failedSite;
      fault.disarm();
      if (site === undefined) {
        expect(ret).toBeGreaterThan(0);
        break;
      }
      failed.push(site);
      expect(ret).toBe(-1);
      expect(snapshot(m, vdev)).toEqual(before);
    }
    expect(failed).toEqual(
      expect.arrayContaining([
        "memdup_array_user",
        "vfio_pci_dma_buf alloc",
        "try_module_get",
        "dma_buf_getfile",
        "dma_buf_export",
      ]),
    );
  });
});

/** Fail exactly `site` on the next create and check errno and that nothing changed. */
function sweepSite(
  m: Machine,
  vdev: ReturnType<typeof gpu>["vdev"],
  fd: number,
  site: string,
  errno: number,
) {
  const buf = encodeDmaBufFeature({ regionIndex: 0, openFlags: O_RDWR, ranges: WHOLE });
  const fault = m.libc.task.fault;
  const warm = m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, new Uint8Array(buf));
  if (warm >= 0) m.libc.close(warm);
  for (let n = 1; n < 50; n++) {
    const before = snapshot(m, vdev);
    fault.arm(n);
    const ret = m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, new Uint8Array(buf));
    const hit = fault.failedSite;
    fault.disarm();
    if (hit === site) {
      expectErr(m, ret, errno);
      expect(snapshot(m, vdev)).toEqual(before);
      return;
    }
    if (ret >= 0) m.libc.close(ret);
    if (hit === undefined) break;
  }
  throw new Error(`site ${site} never reached`);
}
