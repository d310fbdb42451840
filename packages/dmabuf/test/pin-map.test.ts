import { EIO, ENOMEM, EOPNOTSUPP, Kernel, KernelWarning, LockdepError, fail } from "@x/kernel";
import { describe, expect, it, vi } from "vitest";
import {
  DMA_BIDIRECTIONAL,
  DMA_TO_DEVICE,
  type DmaBufAttachment,
  type SgTable,
  dmaBufAttach,
  dmaBufDynamicAttach,
  dmaBufMapAttachment,
  dmaBufMapAttachmentUnlocked,
  dmaBufPin,
  dmaBufUnmapAttachment,
  dmaBufUnmapAttachmentUnlocked,
  dmaBufUnpin,
  dmaBufExport,
  dmaBufPut,
} from "../src/index.js";
import { dmaBufMoveNotifyEnabled, dmaBufSetMoveNotify } from "@x/dmabuf/testing";
import { dev, exporterOps, importerOps, pinOps, setup } from "./helpers.js";

function withPin(moveNotify = false) {
  const pins = pinOps();
  const kernel = new Kernel();
  dmaBufSetMoveNotify(kernel, moveNotify);
  return { ...setup(exporterOps(pins), {}, kernel), pins };
}

describe("dma_buf_pin / dma_buf_unpin", () => {
  it("call the exporter with the reservation lock held", () => {
    const { kernel, dmabuf, pins } = withPin();
    pins.pin.mockImplementation((a: DmaBufAttachment) => a.dmabuf.resv.assertHeld());
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    dmabuf.resv.with(() => {
      dmaBufPin(a);
      dmaBufUnpin(a);
    });
    expect(pins.pin).toHaveBeenCalledWith(a);
    expect(pins.unpin).toHaveBeenCalledWith(a);
  });

  it("without the reservation lock is a lockdep error and the exporter is not called", () => {
    const { kernel, dmabuf, pins } = withPin();
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    expect(() => dmaBufPin(a)).toThrow(LockdepError);
    expect(() => dmaBufUnpin(a)).toThrow(LockdepError);
    expect(pins.pin).not.toHaveBeenCalled();
    expect(pins.unpin).not.toHaveBeenCalled();
  });

  it("on a static attachment WARNs", () => {
    const { kernel, dmabuf } = withPin();
    const a = dmaBufAttach(kernel, dmabuf, dev);
    dmabuf.resv.with(() => {
      expect(() => dmaBufPin(a)).toThrow(KernelWarning);
      expect(() => dmaBufUnpin(a)).toThrow(KernelWarning);
    });
  });

  it("succeed as no-ops when the exporter has no pin op", () => {
    const { kernel, dmabuf } = setup();
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    dmabuf.resv.with(() => {
      dmaBufPin(a);
      dmaBufUnpin(a);
    });
  });

  it("return the exporter's pin error (VFIO refuses pinning importers with EOPNOTSUPP)", () => {
    const { kernel, dmabuf, pins } = withPin();
    pins.pin.mockImplementation(() => fail(EOPNOTSUPP));
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    dmabuf.resv.with(() =>
      expect(() => dmaBufPin(a)).toThrow(expect.objectContaining({ errno: EOPNOTSUPP })),
    );
  });

  it("an exporter op that takes the reservation lock again deadlocks (reported)", () => {
    const { kernel, dmabuf, pins } = withPin();
    pins.pin.mockImplementation((a: DmaBufAttachment) => a.dmabuf.resv.with(() => {}));
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    dmabuf.resv.with(() => expect(() => dmaBufPin(a)).toThrow(LockdepError));
  });
});

describe("dma_buf_map_attachment / dma_buf_unmap_attachment", () => {
  it("map and unmap call the exporter with the reservation lock held", () => {
    const { kernel, dmabuf, ops } = setup();
    ops.mapDmaBuf.mockImplementationOnce((a: DmaBufAttachment) => {
      a.dmabuf.resv.assertHeld();
      return exporterOps().mapDmaBuf(a, DMA_BIDIRECTIONAL);
    });
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    const sgt = dmabuf.resv.with(() => dmaBufMapAttachment(a, DMA_TO_DEVICE));
    expect(sgt.nents).toBe(1);
    expect(sgt.totalLength).toBe(0x1000n);
    expect(ops.mapDmaBuf).toHaveBeenCalledWith(a, DMA_TO_DEVICE);
    dmabuf.resv.with(() => dmaBufUnmapAttachment(a, sgt, DMA_TO_DEVICE));
    expect(ops.unmapDmaBuf).toHaveBeenCalledWith(a, sgt, DMA_TO_DEVICE);
  });

  it("need the reservation lock, for static and dynamic importers alike", () => {
    const { kernel, dmabuf, ops } = setup();
    for (const a of [
      dmaBufAttach(kernel, dmabuf, dev),
      dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps()),
    ]) {
      expect(() => dmaBufMapAttachment(a, DMA_BIDIRECTIONAL)).toThrow(LockdepError);
      const sgt = dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL);
      expect(() => dmaBufUnmapAttachment(a, sgt, DMA_BIDIRECTIONAL)).toThrow(LockdepError);
      dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_BIDIRECTIONAL);
      expect(dmabuf.resv.locked).toBe(false);
    }
    expect(ops.mapDmaBuf).toHaveBeenCalledTimes(2);
    expect(ops.unmapDmaBuf).toHaveBeenCalledTimes(2);
  });

  it("WARN (EINVAL) without an attachment; unmap without a table WARNs", () => {
    const { kernel, dmabuf } = setup();
    const a = dmaBufAttach(kernel, dmabuf, dev);
    const none = undefined as unknown as DmaBufAttachment;
    expect(() => dmaBufMapAttachment(none, DMA_BIDIRECTIONAL)).toThrow(KernelWarning);
    expect(() => dmaBufMapAttachmentUnlocked(none, DMA_BIDIRECTIONAL)).toThrow(KernelWarning);
    const noTable = undefined as unknown as SgTable;
    expect(() => dmaBufUnmapAttachmentUnlocked(a, noTable, DMA_BIDIRECTIONAL)).toThrow(
      KernelWarning,
    );
  });

  it("unmap WARNs, without calling the exporter, on a missing attachment or table", () => {
    const { kernel, dmabuf, ops } = setup();
    const a = dmaBufAttach(kernel, dmabuf, dev);
    const sgt = dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL);
    const none = undefined as unknown as DmaBufAttachment;
    const noTable = undefined as unknown as SgTable;
    for (const [att, table] of [
      [none, sgt],
      [a, noTable],
    ] as const) {
      expect(() => dmaBufUnmapAttachmentUnlocked(att, table, DMA_BIDIRECTIONAL)).toThrow(
        KernelWarning,
      );
      dmabuf.resv.with(() =>
        expect(() => dmaBufUnmapAttachment(att, table, DMA_BIDIRECTIONAL)).toThrow(KernelWarning),
      );
    }
    expect(ops.unmapDmaBuf).not.toHaveBeenCalled();
    expect(dmabuf.resv.locked).toBe(false);
  });

  it("a static importer pins on map and unpins on unmap when the exporter can pin", () => {
    const { kernel, dmabuf, pins, ops } = withPin(true);
    const a = dmaBufAttach(kernel, dmabuf, dev);
    const order: string[] = [];
    pins.pin.mockImplementation(() => order.push("pin"));
    pins.unpin.mockImplementation(() => order.push("unpin"));
    ops.mapDmaBuf.mockImplementation((att: DmaBufAttachment) => {
      order.push("map");
      return exporterOps().mapDmaBuf(att, DMA_BIDIRECTIONAL);
    });
    ops.unmapDmaBuf.mockImplementation(() => order.push("unmap"));
    const sgt = dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL);
    dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_BIDIRECTIONAL);
    expect(order).toEqual(["pin", "map", "unmap", "unpin"]);
  });

  it("a dynamic importer pins on map only when move-notify support is off", () => {
    for (const moveNotify of [false, true]) {
      const { kernel, dmabuf, pins } = withPin(moveNotify);
      expect(dmaBufMoveNotifyEnabled(kernel)).toBe(moveNotify);
      const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
      const sgt = dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL);
      dmaBufUnmapAttachmentUnlocked(a, sgt, DMA_BIDIRECTIONAL);
      const n = moveNotify ? 0 : 1;
      expect(pins.pin).toHaveBeenCalledTimes(n);
      expect(pins.unpin).toHaveBeenCalledTimes(n);
    }
  });

  it("Decision: move-notify support is off by default and fixed while buffers exist", () => {
    const { kernel, dmabuf } = setup();
    expect(dmaBufMoveNotifyEnabled(kernel)).toBe(false);
    expect(() => dmaBufSetMoveNotify(kernel, true)).toThrow(KernelWarning);
    dmaBufPut(dmabuf);
    dmaBufSetMoveNotify(kernel, true);
    expect(dmaBufMoveNotifyEnabled(kernel)).toBe(true);
  });

  it("a failing pin fails the map before the exporter maps (VFIO's EOPNOTSUPP)", () => {
    const { kernel, dmabuf, pins, ops } = withPin();
    pins.pin.mockImplementation(() => fail(EOPNOTSUPP));
    const a = dmaBufAttach(kernel, dmabuf, dev);
    expect(() => dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL)).toThrow(
      expect.objectContaining({ errno: EOPNOTSUPP }),
    );
    expect(ops.mapDmaBuf).not.toHaveBeenCalled();
    expect(pins.unpin).not.toHaveBeenCalled();
  });

  it("a failing map is returned and undoes the pin", () => {
    const { kernel, dmabuf, pins, ops } = withPin();
    ops.mapDmaBuf.mockImplementation(() => fail(EIO));
    const a = dmaBufAttach(kernel, dmabuf, dev);
    expect(() => dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL)).toThrow(
      expect.objectContaining({ errno: EIO }),
    );
    expect(pins.pin).toHaveBeenCalledTimes(1);
    expect(pins.unpin).toHaveBeenCalledTimes(1);
  });

  it("a map returning no table is ENOMEM and undoes the pin", () => {
    const { kernel, dmabuf, pins, ops } = withPin();
    ops.mapDmaBuf.mockImplementation(() => null);
    const a = dmaBufAttach(kernel, dmabuf, dev);
    expect(() => dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL)).toThrow(
      expect.objectContaining({ errno: ENOMEM }),
    );
    expect(pins.unpin).toHaveBeenCalledTimes(1);
  });

  it("a failed map through a dynamic attachment not pinned at map leaves pin and unpin alone", () => {
    const { kernel, dmabuf, pins, ops } = withPin(true);
    ops.mapDmaBuf.mockImplementation(() => null);
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
    expect(() => dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL)).toThrow(
      expect.objectContaining({ errno: ENOMEM }),
    );
    expect(pins.pin).not.toHaveBeenCalled();
    expect(pins.unpin).not.toHaveBeenCalled();
  });

  it("an exporter without pin is never pinned, whatever the importer", () => {
    const { kernel, dmabuf } = setup();
    const map = vi.fn(() => null);
    const other = dmaBufExport(kernel, {
      expName: "y",
      ops: exporterOps({ mapDmaBuf: map }),
      size: 1n,
      priv: 1,
    });
    const a = dmaBufAttach(kernel, other, dev);
    expect(() => dmaBufMapAttachmentUnlocked(a, DMA_BIDIRECTIONAL)).toThrow(
      expect.objectContaining({ errno: ENOMEM }),
    );
    expect(dmabuf.released).toBe(false);
  });
});
