import { EBADF, EINVAL, ENOMEM, KernelWarning, O_CLOEXEC, O_RDWR, isKernelError } from "@x/kernel";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type DmaBuf,
  type DmaBufAttachment,
  dmaBufAttach,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufFd,
  dmaBufGet,
  dmaBufList,
  dmaBufMoveNotify,
  dmaBufPut,
  getDmaBuf,
} from "../src/index.js";
import { dev, exporterOps, importerOps, setup } from "./helpers.js";

const KINDS = [
  "fd",
  "dup",
  "close",
  "get",
  "getDmaBuf",
  "put",
  "attach",
  "attachFails",
  "detach",
  "getBadFd",
  "moveNotify",
] as const;

const opArb = fc.record({
  kind: fc.constantFrom(...KINDS),
  i: fc.nat(64),
  flag: fc.boolean(),
});

/**
 * Drives one buffer through random sequences of reference and attachment operations the way
 * importers use them (an attachment is made while holding a reference and owns one until it is
 * detached), checking after every step that the file refcount is the number of holders, and
 * that release happens exactly once, when the last holder goes, with nothing attached.
 */
function run(ops: Array<{ kind: (typeof KINDS)[number]; i: number; flag: boolean }>): void {
  let releases = 0;
  const exporter = exporterOps({
    release: (d: DmaBuf) => {
      releases++;
      expect(d.resv.with(() => d.attachments)).toEqual([]);
    },
  });
  const { kernel, dmabuf } = setup(exporter);
  const files = kernel.current.process.files;
  const otherFd = files.install(kernel.anonFile({ name: "other" }, null, O_RDWR));
  let refs = 1;
  const fds: number[] = [];
  const attached: DmaBufAttachment[] = [];
  const notified = new Map<DmaBufAttachment, number>();
  const holders = () => refs + fds.length + attached.length;
  const pick = <T>(xs: T[], i: number) => xs[i % xs.length] as T;

  const check = () => {
    if (holders() > 0) {
      expect(releases).toBe(0);
      expect(dmabuf.released).toBe(false);
      expect(dmabuf.file.refcount).toBe(holders());
      expect(dmaBufList(kernel)).toEqual([dmabuf]);
    } else {
      expect(releases).toBe(1);
      expect(dmabuf.released).toBe(true);
      expect(dmaBufList(kernel)).toEqual([]);
    }
  };

  for (const { kind, i, flag } of ops) {
    if (holders() === 0) break;
    switch (kind) {
      case "fd":
        if (refs > 0) {
          fds.push(dmaBufFd(kernel, dmabuf, flag ? O_CLOEXEC : 0));
          refs--;
        }
        break;
      case "dup":
        if (fds.length) fds.push(files.dup(pick(fds, i)));
        break;
      case "close":
        if (fds.length) files.close(fds.splice(i % fds.length, 1)[0] as number);
        break;
      case "get":
        if (fds.length) {
          expect(dmaBufGet(kernel, pick(fds, i))).toBe(dmabuf);
          refs++;
        }
        break;
      case "getDmaBuf":
        if (refs > 0) {
          getDmaBuf(dmabuf);
          refs++;
        }
        break;
      case "put":
        if (refs > 0) {
          refs--;
          dmaBufPut(dmabuf);
        }
        break;
      case "attach":
        if (refs > 0) {
          getDmaBuf(dmabuf);
          const imp = importerOps();
          imp.moveNotify.mockImplementation((a: DmaBufAttachment) =>
            notified.set(a, (notified.get(a) ?? 0) + 1),
          );
          attached.push(
            flag
              ? dmaBufDynamicAttach(kernel, dmabuf, dev, imp)
              : dmaBufAttach(kernel, dmabuf, dev),
          );
        }
        break;
      case "attachFails":
        if (refs > 0) {
          getDmaBuf(dmabuf);
          kernel.current.fault.arm(1);
          expect(() => dmaBufAttach(kernel, dmabuf, dev)).toThrow(
            expect.objectContaining({ errno: ENOMEM }),
          );
          dmaBufPut(dmabuf);
        }
        break;
      case "detach":
        if (attached.length) {
          const [a] = attached.splice(i % attached.length, 1) as [DmaBufAttachment];
          dmaBufDetach(dmabuf, a);
          dmaBufPut(dmabuf);
        }
        break;
      case "getBadFd": {
        const fd = flag ? otherFd : 100 + i;
        try {
          dmaBufGet(kernel, fd);
          expect.unreachable();
        } catch (e) {
          expect(isKernelError(e, flag ? EINVAL : EBADF)).toBe(true);
        }
        break;
      }
      case "moveNotify":
        if (attached.length) {
          const before = new Map(notified);
          dmabuf.resv.with(() => dmaBufMoveNotify(dmabuf));
          for (const a of attached) {
            const n = (notified.get(a) ?? 0) - (before.get(a) ?? 0);
            expect(n).toBe(a.isDynamic ? 1 : 0);
          }
        }
        break;
    }
    check();
  }

  // Every holder lets go, importers first as they must; release happens at the very end.
  for (const a of attached.splice(0)) {
    dmaBufDetach(dmabuf, a);
    dmaBufPut(dmabuf);
  }
  for (const fd of fds.splice(0)) files.close(fd);
  while (refs > 0) {
    refs--;
    dmaBufPut(dmabuf);
  }
  check();
  expect(releases).toBe(1);
}

describe("reference counting and lifetime (property)", () => {
  it("release happens exactly once, when the last holder goes, never while attached", () => {
    fc.assert(fc.property(fc.array(opArb, { maxLength: 40 }), run), { numRuns: 300 });
  });

  it("an importer that drops its reference while still attached is caught at release", () => {
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { minLength: 1, maxLength: 6 }),
        fc.nat(5),
        (kinds, extra) => {
          const { kernel, dmabuf, ops } = setup();
          for (let n = 0; n < extra; n++) getDmaBuf(dmabuf);
          for (const dynamic of kinds)
            if (dynamic) dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
            else dmaBufAttach(kernel, dmabuf, dev);
          for (let n = 0; n < extra; n++) dmaBufPut(dmabuf);
          expect(ops.release).not.toHaveBeenCalled();
          expect(() => dmaBufPut(dmabuf)).toThrow(KernelWarning);
          expect(ops.release).toHaveBeenCalledTimes(1);
        },
      ),
      { numRuns: 50 },
    );
  });

  it("a fixed interleaving: the user closes first, the importer keeps it alive", () => {
    run([
      { kind: "fd", i: 0, flag: true },
      { kind: "get", i: 0, flag: false },
      { kind: "attach", i: 0, flag: true },
      { kind: "close", i: 0, flag: false },
      { kind: "moveNotify", i: 0, flag: false },
      { kind: "put", i: 0, flag: false },
      { kind: "detach", i: 0, flag: false },
    ]);
  });
});
