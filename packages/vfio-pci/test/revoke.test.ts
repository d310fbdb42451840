import {
  DMA_BIDIRECTIONAL,
  RESERVATION_WW_CLASS,
  VFIO_PCI_DMA_BUF_IOMMUFD_MAP,
  dmaBufAttach,
  dmaBufExport,
  dmaBufMapAttachment,
  dmaBufPut,
  symDmaBufIommufdMap,
} from "@x/dmabuf";
import {
  EBADF,
  EFD_NONBLOCK,
  EINVAL,
  ENODEV,
  EOPNOTSUPP,
  Kernel,
  KernelWarning,
  Libc,
  isKernelError,
} from "@x/kernel";
import { pciRoot } from "../src/pci.js";
import { loadVfioPci } from "../src/vfio-pci.js";
import { describe, expect, it } from "vitest";
import {
  PCI_COMMAND,
  PCI_D3hot,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_AF_CTRL,
  PCI_AF_CTRL_FLR,
  PCI_PM_CTRL,
} from "../src/pci-regs.js";
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
  VFIO_DEVICE_FEATURE_LOW_POWER_EXIT,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
} from "../src/vfio-uapi.js";
import { type VfioPciDmaBuf, vfioPciDmaBufMove } from "../src/vfio-pci-dmabuf.js";
import {
  GPU,
  type Machine,
  MiB,
  PAGE,
  TestImporter,
  cfgWrite,
  createDmaBuf,
  getBuf,
  gpu,
  machine,
  openGranted,
  catchErr,
} from "./helpers.js";

const WHOLE = [{ offset: 0n, length: 16n * MiB }];

/** A device with one whole-BAR dma-buf and a dynamic importer on it. */
function withBuf(m: Machine = machine(), spec = GPU) {
  const { vdev, fd } = gpu(m, spec);
  const dfd = createDmaBuf(m, fd, 0, WHOLE);
  const buf = getBuf(m, dfd);
  const priv = buf.priv as VfioPciDmaBuf;
  const imp = new TestImporter(m.kernel, buf);
  return { m, vdev, fd, dfd, buf, priv, imp };
}

function feature(
  m: Machine,
  fd: number,
  feat: number,
  payload: Uint8Array = new Uint8Array(0),
): number {
  const b = new Uint8Array(8 + payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, b.length, true);
  v.setUint32(4, VFIO_DEVICE_FEATURE_SET | feat, true);
  b.set(payload, 8);
  return m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b);
}

describe("exporter state machine", () => {
  it("created while MEM is off: revoked, attach ENODEV, MEM on un-revokes with one notification", () => {
    const m = machine();
    const { fd } = gpu(m);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    const buf = getBuf(m, createDmaBuf(m, fd, 0, WHOLE));
    const priv = buf.priv as VfioPciDmaBuf;
    expect(priv.state).toBe("revoked");
    expect(
      isKernelError(
        catchErr(() => new TestImporter(m.kernel, buf)),
        ENODEV,
      ),
    ).toBe(true);
    // A static importer is refused first for being static.
    expect(
      isKernelError(
        catchErr(() => dmaBufAttach(m.kernel, buf, {})),
        EOPNOTSUPP,
      ),
    ).toBe(true);
    cfgWrite(m, fd, PCI_COMMAND, 2, 2);
    expect(priv.state).toBe("live");
    const imp = new TestImporter(m.kernel, buf);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(imp.notifications).toBe(1);
  });

  it("COMMAND.MEMORY clear / set: one notification per change, none for a no-change write", () => {
    const { m, fd, priv, imp } = withBuf();
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect([priv.state, imp.notifications]).toEqual(["revoked", 1]);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(imp.notifications).toBe(1);
    cfgWrite(m, fd, PCI_COMMAND, 2, 2);
    expect([priv.state, imp.notifications]).toEqual(["live", 2]);
    cfgWrite(m, fd, PCI_COMMAND, 2, 6);
    expect(imp.notifications).toBe(2);
    // A write that does not start at PCI_COMMAND is not the trigger.
    cfgWrite(m, fd, PCI_COMMAND + 1, 1, 0);
    expect(priv.state).toBe("live");
    // A 4-byte write at COMMAND (with STATUS) is.
    cfgWrite(m, fd, PCI_COMMAND, 4, 0);
    expect([priv.state, imp.notifications]).toEqual(["revoked", 3]);
  });

  it("map_dma_buf and the iommufd map refuse a revoked buffer with ENODEV", () => {
    const { m, fd, buf, priv, imp } = withBuf();
    const map = () => buf.resv.with(() => symDmaBufIommufdMap(m.kernel, imp.attach));
    expect(map()).toEqual({ paddr: priv.paddr[0], len: 16n * MiB });
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(isKernelError(catchErr(map), ENODEV)).toBe(true);
    expect(
      isKernelError(
        catchErr(() => buf.resv.with(() => dmaBufMapAttachment(imp.attach, DMA_BIDIRECTIONAL))),
        ENODEV,
      ),
    ).toBe(true);
  });

  it("PMCSR D3hot revokes, D0 un-revokes (NoSoftRst- config restored)", () => {
    const { m, vdev, fd, priv, imp } = withBuf();
    const pm = vdev.pdev.pmCap + PCI_PM_CTRL;
    cfgWrite(m, fd, pm, 2, PCI_D3hot);
    expect([vdev.pdev.powerState, priv.state, imp.notifications]).toEqual([
      PCI_D3hot,
      "revoked",
      1,
    ]);
    cfgWrite(m, fd, pm, 2, 0);
    expect([vdev.pdev.powerState, priv.state, imp.notifications]).toEqual([0, "live", 2]);
    expect(vdev.pdev.decodesMemory).toBe(true);
  });

  it("low-power entry revokes; entry twice is EINVAL and stays revoked; exit un-revokes", () => {
    const { m, vdev, fd, priv, imp } = withBuf();
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(0);
    expect([priv.state, imp.notifications, vdev.pdev.powerState]).toEqual([
      "revoked",
      1,
      PCI_D3hot,
    ]);
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect([priv.state, imp.notifications]).toEqual(["revoked", 1]);
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)).toBe(0);
    expect([priv.state, imp.notifications, vdev.pdev.powerState]).toEqual(["live", 2, 0]);
  });

  it("wake-up through the registered eventfd leaves low power but does not un-revoke", () => {
    const { m, vdev, fd, priv, imp } = withBuf();
    const wake = new Uint8Array(8);
    // eventfd_ctx_fdget: a file that is not an eventfd is EINVAL, a closed descriptor EBADF;
    // both leave the device awake and the buffer live.
    new DataView(wake.buffer).setInt32(0, fd, true);
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, wake)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    new DataView(wake.buffer).setInt32(0, 999, true);
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, wake)).toBe(-1);
    expect(m.libc.errno).toBe(EBADF);
    expect([vdev.pmRuntimeEngaged, priv.state]).toEqual([false, "live"]);
    const efd = m.libc.eventfd(0, EFD_NONBLOCK);
    new DataView(wake.buffer).setInt32(0, efd, true);
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, wake)).toBe(0);
    const ctx = vdev.pmWakeEventfdCtx!;
    expect(ctx.refcount).toBe(2);
    expect(priv.state).toBe("revoked");
    // The device fd's ioctl resumes the device first (vfio_device_pm_runtime_get), which
    // signals the registered eventfd and leaves the engaged state: a second entry succeeds.
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, wake)).toBe(0);
    expect([vdev.pmWakeEventfdCtx, ctx.refcount]).toEqual([ctx, 2]);
    vdev.pmWake();
    expect([vdev.pmRuntimeEngaged, vdev.pdev.powerState]).toEqual([false, 0]);
    // vfio_pci_runtime_resume signalled the eventfd at each wake-up and dropped its reference.
    const count = new Uint8Array(8);
    expect(m.libc.read(efd, count)).toBe(8);
    expect(new DataView(count.buffer).getBigUint64(0, true)).toBe(2n);
    expect([vdev.pmWakeEventfdCtx, ctx.refcount]).toEqual([undefined, 1]);
    expect([priv.state, imp.notifications]).toEqual(["revoked", 1]);
    cfgWrite(m, fd, PCI_COMMAND, 2, 2);
    expect([priv.state, imp.notifications]).toEqual(["live", 2]);
    new DataView(wake.buffer).setInt32(0, -1, true);
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, wake)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
  });

  it("VFIO_DEVICE_RESET: EINVAL without reset_works (no transition); otherwise revoke + un-revoke", () => {
    const m = machine();
    // Two functions on one bus, no FLR and no PM: no reset method, reset_works stays false.
    const noReset = { vendor: 1, device: 2, bars: [{ type: "mem64" as const, size: 16n * MiB }] };
    const a = withBuf(m, noReset);
    m.bus.addDevice({ vendor: 1, device: 3 });
    // reset_works is computed at open, when `a` was alone: reopen now.
    m.libc.close(a.fd);
    const fdA = openGranted(m, a.vdev);
    expect(a.vdev.resetWorks).toBe(false);
    const bufA = getBuf(m, createDmaBuf(m, fdA, 0, WHOLE));
    const impA = new TestImporter(m.kernel, bufA);
    expect(m.libc.ioctl(fdA, VFIO_DEVICE_RESET, 0)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect(impA.notifications).toBe(0);

    const b = withBuf();
    const resets = b.vdev.pdev.resetCount;
    expect(b.m.libc.ioctl(b.fd, VFIO_DEVICE_RESET, 0)).toBe(0);
    expect([b.priv.state, b.imp.notifications, b.vdev.pdev.resetCount]).toEqual([
      "live",
      2,
      resets + 1,
    ]);
  });

  it("config FLR via PCIe DEVCTL and AF CTRL, honoured only with the capability bit", () => {
    const pcie = withBuf();
    cfgWrite(pcie.m, pcie.fd, pcie.vdev.pdev.pcieCap + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR);
    expect([pcie.imp.notifications, pcie.priv.state]).toEqual([2, "live"]);
    expect(pcie.vdev.pdev.resetCount).toBe(2); // open + FLR

    const noCap = withBuf(machine(), { ...GPU, pcie: { flr: false } });
    const r0 = noCap.vdev.pdev.resetCount;
    cfgWrite(
      noCap.m,
      noCap.fd,
      noCap.vdev.pdev.pcieCap + PCI_EXP_DEVCTL,
      2,
      PCI_EXP_DEVCTL_BCR_FLR,
    );
    expect([noCap.imp.notifications, noCap.vdev.pdev.resetCount]).toEqual([0, r0]);

    const af = withBuf(machine(), { ...GPU, pcie: false, af: { flr: true, tp: true } });
    cfgWrite(af.m, af.fd, af.vdev.pdev.afCap + PCI_AF_CTRL, 1, PCI_AF_CTRL_FLR);
    expect(af.imp.notifications).toBe(2);
    const afNoTp = withBuf(machine(), { ...GPU, pcie: false, af: { flr: true, tp: false } });
    cfgWrite(afNoTp.m, afNoTp.fd, afNoTp.vdev.pdev.afCap + PCI_AF_CTRL, 1, PCI_AF_CTRL_FLR);
    expect(afNoTp.imp.notifications).toBe(0);
  });

  it("a reset with memory disabled revokes and stays revoked", () => {
    const { m, fd, priv, imp } = withBuf();
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_RESET, 0)).toBe(0);
    expect([priv.state, imp.notifications]).toEqual(["revoked", 1]);
  });

  it("hot reset: revoke + un-revoke on every open device of the set", () => {
    const m = machine();
    const a = withBuf(m);
    const b = withBuf(m);
    const hr = new Uint8Array(12);
    new DataView(hr.buffer).setUint32(0, 12, true);
    expect(m.libc.ioctl(a.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(0);
    expect([a.imp.notifications, b.imp.notifications]).toEqual([2, 2]);
    expect([a.priv.state, b.priv.state]).toEqual(["live", "live"]);
    // flags, count and a bus without reset.
    new DataView(hr.buffer).setUint32(4, 1, true);
    expect(m.libc.ioctl(a.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    new DataView(hr.buffer).setUint32(4, 0, true);
    new DataView(hr.buffer).setUint32(8, 1, true);
    expect(m.libc.ioctl(a.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    new DataView(hr.buffer).setUint32(8, 0, true);
    m.bus.busResetPossible = false;
    expect(m.libc.ioctl(a.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(-1);
    expect(m.libc.errno).toBe(19);
  });

  it("hot reset with a contended memory_lock: EBUSY, partial unwind restores the first device", () => {
    const m = machine();
    const a = withBuf(m);
    const b = withBuf(m);
    const other = m.kernel.newTask(m.libc.process);
    m.kernel.runAs(other, () => b.vdev.memoryLock.downRead());
    const hr = new Uint8Array(12);
    new DataView(hr.buffer).setUint32(0, 12, true);
    expect(m.libc.ioctl(a.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(-1);
    expect(m.libc.errno).toBe(16);
    expect([a.imp.notifications, a.priv.state]).toEqual([2, "live"]);
    expect([b.imp.notifications, b.priv.state]).toEqual([0, "live"]);
    expect(a.vdev.pdev.resetCount).toBe(1);
    m.kernel.runAs(other, () => b.vdev.memoryLock.upRead());
  });

  it("close with an attached importer: one final notification, zombie; reopen leaves it dead", () => {
    const { m, vdev, fd, buf, priv, imp } = withBuf();
    const refs = vdev.registrationRefs;
    m.libc.close(fd);
    expect([priv.state, imp.notifications, priv.vdev]).toEqual(["zombie", 1, undefined]);
    expect(vdev.registrationRefs).toBe(refs - 2); // the fd's and the dma-buf's
    expect(vdev.dmabufs.size).toBe(0);
    const fd2 = openGranted(m, vdev);
    expect(priv.state).toBe("zombie");
    expect(
      isKernelError(
        catchErr(() => buf.resv.with(() => symDmaBufIommufdMap(m.kernel, imp.attach))),
        ENODEV,
      ),
    ).toBe(true);
    expect(
      isKernelError(
        catchErr(() => new TestImporter(m.kernel, buf)),
        ENODEV,
      ),
    ).toBe(true);
    cfgWrite(m, fd2, PCI_COMMAND, 2, 0);
    cfgWrite(m, fd2, PCI_COMMAND, 2, 2);
    expect([priv.state, imp.notifications]).toEqual(["zombie", 1]);
    imp.detach();
    dmaBufPut(buf);
  });

  it("close of an already revoked buffer still notifies once more", () => {
    const { m, fd, priv, imp } = withBuf();
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    m.libc.close(fd);
    expect([priv.state, imp.notifications]).toEqual(["zombie", 2]);
  });

  it("release: the last put unlinks and drops the registration exactly once", () => {
    const { m, vdev, dfd, buf, priv, imp } = withBuf();
    const refs = vdev.registrationRefs;
    imp.detach();
    dmaBufPut(buf);
    m.libc.close(dfd);
    expect([priv.state, vdev.dmabufs.size, vdev.registrationRefs]).toEqual(["freed", 0, refs - 1]);
  });

  it("unbind is blocked by an open device fd, not by a zombie dma-buf", () => {
    const { m, vdev, fd, buf, imp } = withBuf();
    expect(() => m.mod.remove(vdev)).toThrow(KernelWarning);
    m.libc.close(fd);
    m.mod.remove(vdev);
    expect(m.kernel.hasDevice("/dev/vfio/devices/vfio0")).toBe(false);
    imp.detach();
    dmaBufPut(buf);
  });

  it("the iommufd map: foreign buffer and multi-range buffer EOPNOTSUPP; resv must be held", () => {
    const m = machine();
    const { fd } = gpu(m);
    const multi = getBuf(
      m,
      createDmaBuf(m, fd, 0, [
        { offset: 0n, length: PAGE },
        { offset: PAGE, length: PAGE },
      ]),
    );
    const imp = new TestImporter(m.kernel, multi);
    expect(
      isKernelError(
        catchErr(() => multi.resv.with(() => symDmaBufIommufdMap(m.kernel, imp.attach))),
        EOPNOTSUPP,
      ),
    ).toBe(true);
    expect(() => symDmaBufIommufdMap(m.kernel, imp.attach)).toThrow(/not held/);
    const foreign = dmaBufExport(m.kernel, {
      expName: "other",
      size: PAGE,
      priv: {},
      ops: { mapDmaBuf: () => null, unmapDmaBuf: () => {}, release: () => {} },
    });
    const fimp = new TestImporter(m.kernel, foreign);
    expect(
      isKernelError(
        catchErr(() => foreign.resv.with(() => symDmaBufIommufdMap(m.kernel, fimp.attach))),
        EOPNOTSUPP,
      ),
    ).toBe(true);
    expect(m.kernel.symbols.has(VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toBe(true);
    expect(m.kernel.symbols.refs(VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toBe(0);
  });

  it("map_dma_buf builds a bus-address table for a peer on the bus, EINVAL for a non-PCI importer", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, {
      ...GPU,
      bars: [{ type: "mem64", size: 16n * MiB, busOffset: 0x1000_0000n }],
    });
    const peer = m.bus.addDevice({ vendor: 1, device: 9 });
    const buf = getBuf(
      m,
      createDmaBuf(m, fd, 0, [
        { offset: PAGE, length: 2n * PAGE },
        { offset: 0n, length: PAGE },
      ]),
    );
    const imp = new TestImporter(m.kernel, buf, peer);
    const sgt = buf.resv.with(() => dmaBufMapAttachment(imp.attach, DMA_BIDIRECTIONAL));
    const start = vdev.pdev.resource(0).start;
    expect([...sgt.dmaAddress]).toEqual([start + PAGE + 0x1000_0000n, start + 0x1000_0000n]);
    expect([...sgt.dmaLength]).toEqual([8192, 4096]);
    const other = new TestImporter(m.kernel, buf, {});
    expect(
      isKernelError(
        catchErr(() => buf.resv.with(() => dmaBufMapAttachment(other.attach, DMA_BIDIRECTIONAL))),
        EINVAL,
      ),
    ).toBe(true);
  });

  it("lockdep records memory_lock -> dma_resv", () => {
    const { m, vdev, fd } = withBuf();
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(m.kernel.lockdep.orderRecorded(vdev.memoryLock.className, RESERVATION_WW_CLASS)).toBe(
      true,
    );
    expect(m.kernel.lockdep.orderRecorded(RESERVATION_WW_CLASS, vdev.memoryLock.className)).toBe(
      false,
    );
  });

  it("DYING: a buffer whose last reference is gone is skipped by move until release unlinks it", () => {
    const { m, vdev, dfd, buf, priv, imp } = withBuf();
    imp.detach();
    dmaBufPut(buf);
    // Another task holds memory_lock for write when the last fput runs: the release waits, and
    // meanwhile that task's move sees a dying file and skips it.
    const other = m.kernel.newTask(m.libc.process);
    m.kernel.runAs(other, () => vdev.memoryLock.downWrite());
    let seen: string | undefined;
    m.kernel.lockdep.onContended = () => {
      m.kernel.lockdep.onContended = undefined;
      seen = priv.state;
      m.kernel.runAs(other, () => {
        vfioPciDmaBufMove(vdev, true);
        vdev.memoryLock.upWrite();
      });
    };
    m.libc.close(dfd);
    expect(seen).toBe("dying");
    expect([priv.state, priv.revoked, vdev.dmabufs.size]).toEqual(["freed", false, 0]);
  });

  it("decided: a COMMAND write while low power is engaged wakes the device and un-revokes", () => {
    const { m, vdev, fd, priv, imp } = withBuf();
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(0);
    expect(vdev.pdev.powerState).toBe(PCI_D3hot);
    cfgWrite(m, fd, PCI_COMMAND, 2, 2);
    // The access resumed the function (D0), memory is enabled, so the buffer came back; the
    // function then went back to sleep with the buffer live, as the kernel's predicate allows.
    expect([priv.state, imp.notifications, vdev.pmRuntimeEngaged, vdev.pdev.powerState]).toEqual([
      "live",
      2,
      true,
      PCI_D3hot,
    ]);
  });

  it("close order: baseline resets the function with live importers; the 2026 order zombies first", () => {
    for (const [cleanupFirst, seen] of [
      [false, ["pci:reset", "vfio-pci:dmabuf zombie"]],
      [true, ["vfio-pci:dmabuf zombie", "pci:reset"]],
    ] as const) {
      const kernel = new Kernel();
      const libc = new Libc(kernel);
      const mod = loadVfioPci(kernel, { closeCleanupFirst: cleanupFirst });
      const m = { kernel, libc, mod, bus: pciRoot(kernel).newBus() };
      const { priv, fd, imp } = withBuf(m);
      const events: string[] = [];
      const off = kernel.trace.on((r) => {
        if (r.name === "vfio-pci:dmabuf")
          events.push(`${r.name} ${(r.data as { state: string }).state}`);
        if (r.name === "pci:reset") events.push(r.name);
      });
      m.libc.close(fd);
      off();
      expect(events).toEqual(seen);
      expect([priv.state, imp.notifications]).toEqual(["zombie", 1]);
    }
  });

  it("close while in low power: runtime PM is left while suspended, so no un-revoke first", () => {
    const { m, fd, priv, imp } = withBuf();
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(0);
    m.libc.close(fd);
    expect([priv.state, imp.notifications]).toEqual(["zombie", 2]);
  });
});
