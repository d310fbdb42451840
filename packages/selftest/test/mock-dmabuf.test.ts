import {
  IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
  dmaBufDynamicAttach,
  dmaBufDetach,
  dmaBufExport,
  dmaBufGet,
  dmaBufIommufdMap,
  dmaBufPut,
} from "@x/dmabuf";
import {
  EBADF,
  EINVAL,
  ENODEV,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  Kernel,
  KernelError,
  Libc,
  O_CLOEXEC,
  PAGE_SIZE,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  iommufdTestDmaBufIommufdMap,
  iommufdTestDmabufGet,
  iommufdTestDmabufRevoke,
  registerMockDmabufHook,
} from "../src/mock-dmabuf.js";

function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return e.errno;
    throw e;
  }
  return 0;
}

function setup() {
  const kernel = new Kernel();
  registerMockDmabufHook(kernel);
  const libc = new Libc(kernel);
  return { kernel, libc };
}

describe("selftest dma-buf exporter", () => {
  it("DMABUF_GET rounds up to pages, bounds 1..512 pages, returns an O_CLOEXEC fd", () => {
    const { kernel, libc } = setup();
    const files = kernel.current.process.files;
    const before = kernel.mem.allocatedPages();
    expect(errnoOf(() => iommufdTestDmabufGet(kernel, O_CLOEXEC, 0))).toBe(EINVAL);
    expect(errnoOf(() => iommufdTestDmabufGet(kernel, O_CLOEXEC, 512 * PAGE_SIZE + 1))).toBe(
      EINVAL,
    );
    expect(kernel.mem.allocatedPages()).toBe(before);
    const fd = iommufdTestDmabufGet(kernel, O_CLOEXEC, 3 * PAGE_SIZE + 1);
    expect(files.cloexec(fd)).toBe(true);
    const dmabuf = dmaBufGet(kernel, fd);
    expect(dmabuf.size).toBe(BigInt(4 * PAGE_SIZE));
    dmaBufPut(dmabuf);
    expect(libc.close(fd)).toBe(0);
    expect(dmabuf.released).toBe(true);
    expect(kernel.mem.allocatedPages()).toBe(before);
  });

  it("an injected allocation failure leaves nothing behind", () => {
    const { kernel } = setup();
    const files = kernel.current.process.files;
    for (let n = 1; ; n++) {
      const pages = kernel.mem.allocatedPages();
      const open = files.openCount;
      kernel.current.fault.arm(n);
      let fd = -1;
      const err = errnoOf(() => {
        fd = iommufdTestDmabufGet(kernel, O_CLOEXEC, PAGE_SIZE);
      });
      const fired = kernel.current.fault.read() === 0;
      kernel.current.fault.disarm();
      if (!fired) {
        expect(err).toBe(0);
        files.close(fd);
        break;
      }
      expect(err).not.toBe(0);
      expect([ENOMEM, ENOENT]).toContain(err);
      expect(kernel.mem.allocatedPages()).toBe(pages);
      expect(files.openCount).toBe(open);
      expect(n).toBeLessThan(50);
    }
  });

  it("the interconnect hook gives the buffer's one range, ENODEV while revoked, and is asked first", () => {
    const { kernel } = setup();
    const fd = iommufdTestDmabufGet(kernel, 0, 2 * PAGE_SIZE);
    const dmabuf = dmaBufGet(kernel, fd);
    let notified = 0;
    const attach = dmaBufDynamicAttach(
      kernel,
      dmabuf,
      {},
      {
        allowPeer2peer: true,
        moveNotify: () => notified++,
      },
    );
    const phys = dmabuf.resv.with(() => dmaBufIommufdMap(kernel, attach));
    expect(phys.len).toBe(BigInt(2 * PAGE_SIZE));
    expect(kernel.mem.refCount(Number(phys.paddr / BigInt(PAGE_SIZE)))).toBeGreaterThan(0);
    iommufdTestDmabufRevoke(kernel, fd, true);
    expect(notified).toBe(1);
    expect(errnoOf(() => dmabuf.resv.with(() => dmaBufIommufdMap(kernel, attach)))).toBe(ENODEV);
    iommufdTestDmabufRevoke(kernel, fd, false);
    expect(notified).toBe(2);
    expect(dmabuf.resv.with(() => dmaBufIommufdMap(kernel, attach))).toEqual(phys);
    expect(kernel.symbols.refs(IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP)).toBe(0);
    dmaBufDetach(dmabuf, attach);
    dmaBufPut(dmabuf);
    kernel.current.process.files.close(fd);
  });

  it("foreign dma-bufs: hook says EOPNOTSUPP, REVOKE says EOPNOTSUPP, bad fd EBADF", () => {
    const { kernel } = setup();
    const other = dmaBufExport(kernel, {
      expName: "other",
      ops: { mapDmaBuf: () => null, unmapDmaBuf() {}, release() {} },
      size: 4096n,
      priv: {},
    });
    const attach = dmaBufDynamicAttach(kernel, other, {}, { moveNotify() {} });
    expect(errnoOf(() => other.resv.with(() => iommufdTestDmaBufIommufdMap(attach)))).toBe(
      EOPNOTSUPP,
    );
    dmaBufDetach(other, attach);
    const fd = kernel.current.process.files.install(other.file);
    expect(errnoOf(() => iommufdTestDmabufRevoke(kernel, fd, true))).toBe(EOPNOTSUPP);
    expect(errnoOf(() => iommufdTestDmabufRevoke(kernel, 999, true))).toBe(EBADF);
    kernel.current.process.files.close(fd);
    expect(other.released).toBe(true);
  });
});
