import {
  EBADF,
  EINVAL,
  EMFILE,
  ENOENT,
  ENOMEM,
  FMODE_READ,
  FMODE_WRITE,
  KernelWarning,
  LockdepError,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  MAP_SHARED,
  PROT_READ,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type Vma,
  WwMutex,
} from "@x/kernel";
import { describe, expect, it, vi } from "vitest";
import {
  type DmaBuf,
  type DmaBufOps,
  RESERVATION_WW_CLASS,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufExport,
  dmaBufFd,
  dmaBufGet,
  dmaBufList,
  dmaBufPut,
  getDmaBuf,
  isDmaBufFile,
} from "../src/index.js";
import { dev, exporterOps, pinOps, setup } from "./helpers.js";

function expectErrno(fn: () => unknown, errno: number) {
  expect(fn).toThrow(expect.objectContaining({ errno }));
}

describe("dma_buf_export", () => {
  it("makes a buffer with one file reference, its own resv, and lists it", () => {
    const { kernel, dmabuf } = setup();
    expect(dmabuf.file.refcount).toBe(1);
    expect(dmabuf.size).toBe(0x10000n);
    expect(dmabuf.priv).toEqual({ tag: "priv" });
    expect(dmabuf.owner).toBe("test");
    expect(dmabuf.resv).toBeInstanceOf(WwMutex);
    expect(dmabuf.resv.className).toBe(RESERVATION_WW_CLASS);
    expect(isDmaBufFile(dmabuf.file)).toBe(true);
    expect(dmabuf.file.priv).toBe(dmabuf);
    expect(dmaBufList(kernel)).toEqual([dmabuf]);
  });

  it.each([
    ["priv", { priv: undefined }],
    ["priv (null)", { priv: null }],
    ["ops", { ops: undefined }],
  ])("WARNs and fails EINVAL without %s, creating nothing", (_what, info) => {
    const { kernel } = setup();
    const before = dmaBufList(kernel).length;
    expect(() =>
      dmaBufExport(kernel, {
        expName: "x",
        ops: exporterOps(),
        size: 4096n,
        priv: 1,
        ...(info as object),
      }),
    ).toThrow(KernelWarning);
    expect(dmaBufList(kernel)).toHaveLength(before);
  });

  it.each(["mapDmaBuf", "unmapDmaBuf", "release"] as const)(
    "WARNs without the mandatory op %s",
    (op) => {
      const { kernel } = setup();
      const ops: Partial<DmaBufOps> = exporterOps();
      delete ops[op];
      expect(() =>
        dmaBufExport(kernel, { expName: "x", ops: ops as DmaBufOps, size: 4096n, priv: 1 }),
      ).toThrow(KernelWarning);
      expect(dmaBufList(kernel)).toHaveLength(1);
    },
  );

  it.each(["pin", "unpin"] as const)("WARNs when only %s is provided", (op) => {
    const { kernel } = setup();
    const ops = { ...exporterOps(), [op]: vi.fn() };
    expect(() => dmaBufExport(kernel, { expName: "x", ops, size: 4096n, priv: 1 })).toThrow(
      KernelWarning,
    );
    expect(() =>
      dmaBufExport(kernel, {
        expName: "x",
        ops: { ...exporterOps(), ...pinOps() },
        size: 1n,
        priv: 1,
      }),
    ).not.toThrow();
  });

  it.each([
    [1, "try_module_get", ENOENT],
    [2, "dma_buf_getfile", ENOMEM],
    [3, "dma_buf_export", ENOMEM],
  ])(
    "an injected failure at point %i (%s) fails with errno %i and leaves nothing",
    (nth, site, errno) => {
      const { kernel, ops } = setup();
      const fault = kernel.current.fault;
      fault.arm(nth);
      expectErrno(() => dmaBufExport(kernel, { expName: "x", ops, size: 4096n, priv: 1 }), errno);
      expect(fault.failedSite).toBe(site);
      expect(dmaBufList(kernel)).toHaveLength(1);
      expect(kernel.current.process.files.openCount).toBe(0);
      expect(ops.release).not.toHaveBeenCalled();
    },
  );

  it("keeps only the access mode and O_NONBLOCK of the flags", () => {
    const cases: Array<[number, number]> = [
      [O_RDONLY, FMODE_READ],
      [O_WRONLY, FMODE_WRITE],
      [O_RDWR, FMODE_READ | FMODE_WRITE],
    ];
    for (const [acc, fmode] of cases) {
      const { dmabuf } = setup(exporterOps(), { flags: acc | O_NONBLOCK | O_CLOEXEC | 0o100 });
      expect(dmabuf.file.fFlags).toBe(acc | O_NONBLOCK);
      expect(dmabuf.file.fMode).toBe(fmode);
    }
  });

  it("uses a reservation object supplied by the exporter", () => {
    const { kernel } = setup();
    const resv = new WwMutex(kernel.lockdep, RESERVATION_WW_CLASS);
    const d = dmaBufExport(kernel, { expName: "x", ops: exporterOps(), size: 1n, priv: 1, resv });
    expect(d.resv).toBe(resv);
    // A shared resv may be held by its owner while this buffer goes away.
    resv.lock();
    expect(() => dmaBufPut(d)).toThrow(LockdepError);
    resv.unlock();
  });

  it("finalises only its own reservation object at release (dma_resv_fini WARNs if locked)", () => {
    const { kernel } = setup();
    const owner = kernel.newTask(kernel.current.process);
    // A shared resv locked by its owner on another task: the buffer goes without a WARN.
    const resv = new WwMutex(kernel.lockdep, RESERVATION_WW_CLASS);
    const ops = exporterOps();
    const shared = dmaBufExport(kernel, { expName: "x", ops, size: 1n, priv: 1, resv });
    kernel.runAs(owner, () => resv.lock());
    dmaBufPut(shared);
    expect(ops.release).toHaveBeenCalledTimes(1);
    expect(resv.locked).toBe(true);
    kernel.runAs(owner, () => resv.unlock());
    // Its own resv locked elsewhere: released, then the finalisation WARNs.
    const own = setup(exporterOps(), {}, kernel);
    kernel.runAs(owner, () => own.dmabuf.resv.lock());
    expect(() => dmaBufPut(own.dmabuf)).toThrow(KernelWarning);
    expect(own.ops.release).toHaveBeenCalledTimes(1);
    expect(own.dmabuf.released).toBe(true);
    kernel.runAs(owner, () => own.dmabuf.resv.unlock());
  });

  it("links the buffer under dmabuf_list_mutex", () => {
    const { kernel } = setup();
    const taken: string[] = [];
    kernel.lockdep.onBoundary = (kind, lock) => {
      if (kind === "acquire") taken.push(lock.className);
    };
    setup(exporterOps(), {}, kernel);
    dmaBufList(kernel);
    kernel.lockdep.onBoundary = undefined;
    expect(taken).toEqual(["dmabuf_list_mutex", "dmabuf_list_mutex"]);
  });
});

describe("dma_buf_fd", () => {
  it("installs the file, consuming the export reference, honouring O_CLOEXEC", () => {
    const { kernel, dmabuf } = setup();
    const files = kernel.current.process.files;
    const fd = dmaBufFd(kernel, dmabuf, O_CLOEXEC);
    expect(files.lookup(fd)).toBe(dmabuf.file);
    expect(files.cloexec(fd)).toBe(true);
    expect(dmabuf.file.refcount).toBe(1);
    getDmaBuf(dmabuf);
    const fd2 = dmaBufFd(kernel, dmabuf, 0);
    expect(files.cloexec(fd2)).toBe(false);
    expect(dmabuf.file.refcount).toBe(2);
  });

  it("EINVAL without a buffer", () => {
    const { kernel } = setup();
    expectErrno(() => dmaBufFd(kernel, undefined as unknown as DmaBuf, 0), EINVAL);
  });

  it("EMFILE leaves no descriptor and the reference with the caller", () => {
    const { kernel, dmabuf, ops } = setup();
    const files = kernel.current.process.files;
    files.maxFds = 0;
    expectErrno(() => dmaBufFd(kernel, dmabuf, O_CLOEXEC), EMFILE);
    expect(files.openCount).toBe(0);
    expect(dmabuf.file.refcount).toBe(1);
    dmaBufPut(dmabuf);
    expect(ops.release).toHaveBeenCalledTimes(1);
  });
});

describe("dma_buf_get / get_dma_buf / dma_buf_put", () => {
  it("dma_buf_get takes a reference", () => {
    const { kernel, dmabuf } = setup();
    const fd = dmaBufFd(kernel, dmabuf);
    expect(dmaBufGet(kernel, fd)).toBe(dmabuf);
    expect(dmabuf.file.refcount).toBe(2);
  });

  it("EBADF for no such descriptor", () => {
    const { kernel } = setup();
    expectErrno(() => dmaBufGet(kernel, 5), EBADF);
    expectErrno(() => dmaBufGet(kernel, -1), EBADF);
  });

  it("EINVAL for a file that is not a dma-buf, dropping the reference it took", () => {
    const { kernel } = setup();
    const other = kernel.anonFile({ name: "other" }, null, O_RDWR);
    const fd = kernel.current.process.files.install(other);
    expectErrno(() => dmaBufGet(kernel, fd), EINVAL);
    expect(other.refcount).toBe(1);
  });

  it("releases exactly once on the last put: unlisted, then the exporter's release", () => {
    const { kernel, dmabuf, ops } = setup();
    ops.release.mockImplementation((d: DmaBuf) => {
      expect(d.resv.isHeld).toBe(false);
      expect(dmaBufList(kernel)).toEqual([]);
    });
    const fd = dmaBufFd(kernel, dmabuf);
    const ref = dmaBufGet(kernel, fd);
    getDmaBuf(ref);
    dmaBufPut(ref);
    kernel.current.process.files.close(fd);
    expect(ops.release).not.toHaveBeenCalled();
    expect(dmabuf.released).toBe(false);
    dmaBufPut(ref);
    expect(ops.release).toHaveBeenCalledTimes(1);
    expect(ops.release).toHaveBeenCalledWith(dmabuf);
    expect(dmabuf.released).toBe(true);
    expect(() => dmaBufPut(ref)).toThrow(KernelWarning);
    expect(ops.release).toHaveBeenCalledTimes(1);
  });

  it("dma_buf_put of nothing WARNs", () => {
    expect(() => dmaBufPut(undefined as unknown as DmaBuf)).toThrow(KernelWarning);
  });

  it("WARNs when released with attachments left", () => {
    const { kernel, dmabuf, ops } = setup();
    dmaBufAttach(kernel, dmabuf, dev);
    expect(() => dmaBufPut(dmabuf)).toThrow(KernelWarning);
    expect(ops.release).toHaveBeenCalledTimes(1);
  });

  it("the last put with the reservation lock held breaks the locking convention", () => {
    const { dmabuf, ops } = setup();
    dmabuf.resv.lock();
    expect(() => dmaBufPut(dmabuf)).toThrow(LockdepError);
    expect(ops.release).not.toHaveBeenCalled();
    dmabuf.resv.unlock();
  });

  it("an fd in a forked table and a dup'd fd each keep the buffer alive", () => {
    const { kernel, dmabuf, ops } = setup();
    const files = kernel.current.process.files;
    const fd = dmaBufFd(kernel, dmabuf);
    const dup = files.dup(fd);
    const child = files.clone();
    files.close(fd);
    files.close(dup);
    expect(ops.release).not.toHaveBeenCalled();
    child.closeAll();
    expect(ops.release).toHaveBeenCalledTimes(1);
  });

  it("closing the fd does not release a buffer an importer holds and is attached to", () => {
    const { kernel, dmabuf, ops } = setup();
    const fd = dmaBufFd(kernel, dmabuf);
    const ref = dmaBufGet(kernel, fd);
    const attach = dmaBufAttach(kernel, ref, dev);
    kernel.current.process.files.close(fd);
    expect(ops.release).not.toHaveBeenCalled();
    dmaBufDetach(ref, attach);
    dmaBufPut(ref);
    expect(ops.release).toHaveBeenCalledTimes(1);
  });
});

describe("size, lseek and mmap", () => {
  it("lseek discovers the size with SEEK_END(0) and rewinds with SEEK_SET(0)", () => {
    const { dmabuf } = setup();
    const llseek = dmabuf.file.fops.llseek!;
    expect(llseek(dmabuf.file, 0n, SEEK_END)).toBe(0x10000n);
    expect(llseek(dmabuf.file, 0n, SEEK_SET)).toBe(0n);
  });

  it("lseek: EINVAL for other whences, then for a non-zero offset", () => {
    const { dmabuf } = setup();
    const llseek = dmabuf.file.fops.llseek!;
    expectErrno(() => llseek(dmabuf.file, 0n, SEEK_CUR), EINVAL);
    expectErrno(() => llseek(dmabuf.file, 1n, SEEK_CUR), EINVAL);
    expectErrno(() => llseek(dmabuf.file, 4096n, SEEK_SET), EINVAL);
    expectErrno(() => llseek(dmabuf.file, -1n, SEEK_END), EINVAL);
  });

  it("mmap is refused (EINVAL) when the exporter has no mmap op, leaving no mapping", () => {
    const { kernel, dmabuf } = setup();
    const mm = kernel.current.process.mm;
    const req = { addr: 0n, len: 0x1000n, prot: PROT_READ, flags: MAP_SHARED, file: dmabuf.file };
    expectErrno(() => mm.mmap(req), EINVAL);
    expect(dmabuf.file.refcount).toBe(1);
  });

  it("mmap checks the range against the size, then calls the exporter without resv", () => {
    const seen: Vma[] = [];
    const mmap = vi.fn((d: DmaBuf, vma: Vma) => {
      expect(d.resv.isHeld).toBe(false);
      seen.push(vma);
    });
    const { kernel, dmabuf } = setup(exporterOps({ mmap }));
    const mm = kernel.current.process.mm;
    const map = (len: bigint, offset: bigint) =>
      mm.mmap({ addr: 0n, len, prot: PROT_READ, flags: MAP_SHARED, file: dmabuf.file, offset });
    map(0x10000n, 0n);
    map(0x1000n, 0xf000n);
    expect(seen.map((v) => [v.pgoff, v.npages])).toEqual([
      [0, 16],
      [15, 1],
    ]);
    expectErrno(() => map(0x10000n, 0x1000n), EINVAL);
    expectErrno(() => map(0x11000n, 0n), EINVAL);
    expect(mmap).toHaveBeenCalledTimes(2);
    // Each mapping holds a file reference, so it keeps the buffer alive.
    expect(dmabuf.file.refcount).toBe(3);
    dmabuf.resv.lock();
    expect(() => map(0x1000n, 0n)).toThrow(LockdepError);
    dmabuf.resv.unlock();
  });
});
