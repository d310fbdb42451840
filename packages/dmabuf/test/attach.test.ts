import { EBUSY, ENOMEM, KernelError, KernelWarning, LockdepError, fail } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  type DmaBuf,
  type DmaBufAttachOps,
  type DmaBufAttachment,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufDynamicAttach,
} from "../src/index.js";
import { dev, exporterOps, importerOps, setup } from "./helpers.js";

function listed(dmabuf: DmaBuf): DmaBufAttachment[] {
  return dmabuf.resv.with(() => dmabuf.attachments);
}

describe("dma_buf_attach (static)", () => {
  it("makes an attachment without importer ops and without peer2peer", () => {
    const { kernel, dmabuf, ops } = setup();
    const a = dmaBufAttach(kernel, dmabuf, dev);
    expect(a.dmabuf).toBe(dmabuf);
    expect(a.dev).toBe(dev);
    expect(a.importerOps).toBeUndefined();
    expect(a.importerPriv).toBeUndefined();
    expect(a.peer2peer).toBe(false);
    expect(a.isDynamic).toBe(false);
    expect(ops.attach).toHaveBeenCalledWith(dmabuf, a);
    expect(listed(dmabuf)).toEqual([a]);
  });
});

describe("dma_buf_dynamic_attach", () => {
  it("copies allow_peer2peer and keeps the importer's ops and priv", () => {
    const { kernel, dmabuf } = setup();
    const imp = importerOps(true);
    const priv = { pages: 1 };
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, imp, priv);
    expect(a.peer2peer).toBe(true);
    expect(a.isDynamic).toBe(true);
    expect(a.importerOps).toBe(imp);
    expect(a.importerPriv).toBe(priv);
    const b = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps(false));
    expect(b.peer2peer).toBe(false);
    const c = dmaBufDynamicAttach(kernel, dmabuf, dev, { moveNotify: () => {} });
    expect(c.peer2peer).toBe(false);
    expect(listed(dmabuf)).toEqual([c, b, a]);
  });

  it("importer ops without move_notify: WARN (EINVAL), exporter not called, nothing linked", () => {
    const { kernel, dmabuf, ops } = setup();
    const bad = { allowPeer2peer: true } as unknown as DmaBufAttachOps;
    expect(() => dmaBufDynamicAttach(kernel, dmabuf, dev, bad)).toThrow(KernelWarning);
    expect(ops.attach).not.toHaveBeenCalled();
    expect(listed(dmabuf)).toEqual([]);
  });

  it("no device or no buffer: WARN (EINVAL)", () => {
    const { kernel, dmabuf } = setup();
    expect(() => dmaBufAttach(kernel, dmabuf, undefined as unknown as object)).toThrow(
      KernelWarning,
    );
    expect(() => dmaBufAttach(kernel, undefined as unknown as DmaBuf, dev)).toThrow(KernelWarning);
    expect(listed(dmabuf)).toEqual([]);
  });

  it("the exporter's attach error is returned and nothing is linked", () => {
    const attach = () => fail(EBUSY, "not reachable by this device");
    const { kernel, dmabuf } = setup(exporterOps({ attach }));
    expect(() => dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps())).toThrow(
      expect.objectContaining({ errno: EBUSY }),
    );
    expect(listed(dmabuf)).toEqual([]);
    expect(dmabuf.file.refcount).toBe(1);
  });

  it("an injected allocation failure is ENOMEM before the exporter is asked", () => {
    const { kernel, dmabuf, ops } = setup();
    kernel.current.fault.arm(1);
    expect(() => dmaBufAttach(kernel, dmabuf, dev)).toThrow(
      expect.objectContaining({ errno: ENOMEM }),
    );
    expect(kernel.current.fault.failedSite).toBe("dma_buf_dynamic_attach");
    expect(ops.attach).not.toHaveBeenCalled();
    expect(listed(dmabuf)).toEqual([]);
  });

  it("the exporter's attach and detach run without the reservation lock; the exporter may set priv", () => {
    const { kernel, dmabuf } = setup(
      exporterOps({
        attach: (d, a) => {
          expect(d.resv.isHeld).toBe(false);
          a.priv = "exporter";
        },
        detach: (d, a) => {
          expect(d.resv.isHeld).toBe(false);
          expect(listed(d)).not.toContain(a);
        },
      }),
    );
    const a = dmaBufAttach(kernel, dmabuf, dev);
    expect(a.priv).toBe("exporter");
    dmaBufDetach(dmabuf, a);
  });

  it("attach and detach with the reservation lock held break the locking convention", () => {
    const { kernel, dmabuf, ops } = setup();
    const a = dmaBufAttach(kernel, dmabuf, dev);
    dmabuf.resv.lock();
    expect(() => dmaBufAttach(kernel, dmabuf, dev)).toThrow(LockdepError);
    expect(() => dmaBufDetach(dmabuf, a)).toThrow(LockdepError);
    dmabuf.resv.unlock();
    expect(ops.attach).toHaveBeenCalledTimes(1);
    expect(listed(dmabuf)).toEqual([a]);
  });

  it("the attachment list can only be read under the reservation lock", () => {
    const { kernel, dmabuf } = setup();
    dmaBufAttach(kernel, dmabuf, dev);
    expect(() => dmabuf.attachments).toThrow(LockdepError);
  });
});

describe("dma_buf_detach", () => {
  it("unlinks, then calls the exporter's detach", () => {
    const { kernel, dmabuf, ops } = setup();
    const a = dmaBufAttach(kernel, dmabuf, dev);
    const b = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    dmaBufDetach(dmabuf, a);
    expect(ops.detach).toHaveBeenCalledWith(dmabuf, a);
    expect(listed(dmabuf)).toEqual([b]);
  });

  it("WARNs on a second detach, a foreign attachment or missing arguments", () => {
    const { kernel, dmabuf, ops } = setup();
    const other = setup().dmabuf;
    const a = dmaBufAttach(kernel, dmabuf, dev);
    expect(() => dmaBufDetach(other, a)).toThrow(KernelWarning);
    expect(() => dmaBufDetach(dmabuf, undefined as unknown as DmaBufAttachment)).toThrow(
      KernelWarning,
    );
    dmaBufDetach(dmabuf, a);
    expect(() => dmaBufDetach(dmabuf, a)).toThrow(KernelWarning);
    expect(ops.detach).toHaveBeenCalledTimes(1);
  });

  it("checks its arguments before taking any lock (a foreign attachment is a WARN, not lockdep)", () => {
    const { kernel, dmabuf, ops } = setup();
    const other = setup(exporterOps(), {}, kernel).dmabuf;
    const a = dmaBufAttach(kernel, dmabuf, dev);
    other.resv.with(() => {
      let thrown: unknown;
      try {
        dmaBufDetach(other, a);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(KernelWarning);
      expect(thrown).not.toBeInstanceOf(LockdepError);
    });
    expect(ops.detach).not.toHaveBeenCalled();
    expect(listed(dmabuf)).toEqual([a]);
  });

  it("a detach error from the exporter surfaces", () => {
    const detach = () => {
      throw new KernelError(EBUSY);
    };
    const { kernel, dmabuf } = setup(exporterOps({ detach }));
    const a = dmaBufAttach(kernel, dmabuf, dev);
    expect(() => dmaBufDetach(dmabuf, a)).toThrow(KernelError);
  });
});
