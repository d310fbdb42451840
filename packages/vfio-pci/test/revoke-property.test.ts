import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  PCI_COMMAND,
  PCI_D3hot,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
} from "../src/pci-regs.js";
import { VFIO_DEVICE_PCI_HOT_RESET, VFIO_DEVICE_RESET } from "../src/vfio-uapi.js";
import type { VfioPciDmaBuf } from "../src/vfio-pci-dmabuf.js";
import { MiB, TestImporter, cfgWrite, createDmaBuf, getBuf, gpu, machine } from "./helpers.js";

type Op =
  | { k: "cmd"; v: number; width: 1 | 2 | 4 }
  | { k: "cmdHigh" }
  | { k: "pm"; state: number }
  | { k: "reset" }
  | { k: "flr" }
  | { k: "hot" };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant("cmd" as const),
    v: fc.integer({ min: 0, max: 7 }),
    width: fc.constantFrom(1 as const, 2 as const, 4 as const),
  }),
  fc.constant({ k: "cmdHigh" as const }),
  fc.record({ k: fc.constant("pm" as const), state: fc.constantFrom(0, PCI_D3hot) }),
  fc.constant({ k: "reset" as const }),
  fc.constant({ k: "flr" as const }),
  fc.constant({ k: "hot" as const }),
);

describe("revoke invariants under random trigger sequences", () => {
  it("revoked ⇔ memory disabled after every operation; one notification per state change", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
        const m = machine();
        const { vdev, fd } = gpu(m);
        const bufs = [0, 1].map(() =>
          getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }])),
        );
        const imps = bufs.map((b) => new TestImporter(m.kernel, b));
        const privs = bufs.map((b) => b.priv as VfioPciDmaBuf);
        let prev = privs[0]!.revoked;
        const hr = new Uint8Array(12);
        new DataView(hr.buffer).setUint32(0, 12, true);
        for (const o of ops) {
          const before = imps[0]!.notifications;
          switch (o.k) {
            case "cmd":
              cfgWrite(m, fd, PCI_COMMAND, o.width, o.v);
              break;
            case "cmdHigh":
              cfgWrite(m, fd, PCI_COMMAND + 1, 1, 0);
              break;
            case "pm":
              cfgWrite(m, fd, vdev.pdev.pmCap + PCI_PM_CTRL, 2, o.state);
              break;
            case "reset":
              expect(m.libc.ioctl(fd, VFIO_DEVICE_RESET, 0)).toBe(0);
              break;
            case "flr":
              cfgWrite(m, fd, vdev.pdev.pcieCap + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR);
              break;
            case "hot":
              expect(m.libc.ioctl(fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(0);
              break;
          }
          const now = privs[0]!.revoked;
          // Paths that revoke and un-revoke within one call notify twice and end unchanged.
          const n = imps[0]!.notifications - before;
          expect(n === 0 || n === 1 || n === 2).toBe(true);
          if (now !== prev) expect(n % 2).toBe(1);
          else expect(n % 2).toBe(0);
          prev = now;
          for (const p of privs) expect(p.revoked).toBe(!vdev.memoryEnabled());
          expect(imps[1]!.notifications).toBe(imps[0]!.notifications);
          m.kernel.lockdep.assertNoneHeld();
        }
      }),
      { numRuns: 40 },
    );
  });
});
