import { Kernel, LockdepError, Mutex } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  type DmaBufAttachment,
  RESERVATION_WW_CLASS,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufMoveNotify,
  dmaResvInit,
} from "../src/index.js";
import { dev, importerOps, setup } from "./helpers.js";

describe("dma_buf_move_notify", () => {
  it("notifies every dynamic importer, newest first, skipping static ones", () => {
    const { kernel, dmabuf } = setup();
    const seen: DmaBufAttachment[] = [];
    const imp = {
      allowPeer2peer: true,
      moveNotify: (a: DmaBufAttachment) => {
        a.dmabuf.resv.assertHeld();
        seen.push(a);
      },
    };
    const a = dmaBufDynamicAttach(kernel, dmabuf, dev, imp);
    dmaBufAttach(kernel, dmabuf, dev);
    const c = dmaBufDynamicAttach(kernel, dmabuf, dev, imp);
    dmabuf.resv.with(() => dmaBufMoveNotify(dmabuf));
    expect(seen).toEqual([c, a]);
  });

  it("requires the exporter to hold the reservation lock", () => {
    const { kernel, dmabuf } = setup();
    const imp = importerOps();
    dmaBufDynamicAttach(kernel, dmabuf, dev, imp);
    expect(() => dmaBufMoveNotify(dmabuf)).toThrow(LockdepError);
    expect(imp.moveNotify).not.toHaveBeenCalled();
  });

  it("with no attachments does nothing", () => {
    const { dmabuf } = setup();
    dmabuf.resv.with(() => dmaBufMoveNotify(dmabuf));
  });

  it("an importer that takes the reservation lock in move_notify deadlocks (reported)", () => {
    const { kernel, dmabuf } = setup();
    dmaBufDynamicAttach(kernel, dmabuf, dev, {
      moveNotify: (a) => a.dmabuf.resv.with(() => {}),
    });
    dmabuf.resv.with(() => expect(() => dmaBufMoveNotify(dmabuf)).toThrow(LockdepError));
  });

  it("an importer cannot detach from inside move_notify", () => {
    const { kernel, dmabuf } = setup();
    dmaBufDynamicAttach(kernel, dmabuf, dev, {
      moveNotify: (a) => dmaBufDetach(a.dmabuf, a),
    });
    dmabuf.resv.with(() => expect(() => dmaBufMoveNotify(dmabuf)).toThrow(LockdepError));
    expect(dmabuf.resv.with(() => dmabuf.attachments)).toHaveLength(1);
  });
});

describe("lockdep: dma_resv -> importer lock", () => {
  // These take the importer lock in both orders on purpose: the recorded graph alone.
  function revocable() {
    const s = setup(undefined, undefined, new Kernel({ lockOrder: null }));
    const importerLock = new Mutex(s.kernel.lockdep, "iopt_pages.mutex");
    let mapped = true;
    const attach = dmaBufDynamicAttach(s.kernel, s.dmabuf, dev, {
      allowPeer2peer: true,
      moveNotify: () => importerLock.with(() => (mapped = false)),
    });
    return { ...s, importerLock, attach, isMapped: () => mapped };
  }

  it("a revoke records resv -> importer lock", () => {
    const { kernel, dmabuf, importerLock, isMapped } = revocable();
    expect(kernel.lockdep.orderRecorded(RESERVATION_WW_CLASS, importerLock.className)).toBe(false);
    dmabuf.resv.with(() => dmaBufMoveNotify(dmabuf));
    expect(isMapped()).toBe(false);
    expect(kernel.lockdep.orderRecorded(RESERVATION_WW_CLASS, importerLock.className)).toBe(true);
  });

  it("then taking resv under the importer lock is caught as an inversion", () => {
    const { dmabuf, importerLock } = revocable();
    dmabuf.resv.with(() => dmaBufMoveNotify(dmabuf));
    importerLock.lock();
    expect(() => dmabuf.resv.lock()).toThrow(/circular locking/);
    importerLock.unlock();
  });

  it("and the inverse order first makes the revoke the one that is caught", () => {
    const { dmabuf, importerLock } = revocable();
    importerLock.with(() => dmabuf.resv.with(() => {}));
    dmabuf.resv.with(() => expect(() => dmaBufMoveNotify(dmabuf)).toThrow(/circular locking/));
  });

  it("two reservation locks without an acquire context are a recursive-class report", () => {
    const { kernel, dmabuf } = setup();
    const second = dmaResvInit(kernel);
    dmabuf.resv.with(() => expect(() => second.lock()).toThrow(/recursive locking/));
  });
});
