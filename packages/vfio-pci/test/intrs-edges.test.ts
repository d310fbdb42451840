/**
 * VFIO_DEVICE_SET_IRQS and GET_IRQ_INFO at their edges, as drivers/vfio/pci/vfio_pci_intrs.c
 * and drivers/vfio/virqfd.c define them: the INTx mask / unmask / trigger handlers with their
 * start / count rules and data types, INTx without PCI 2.3 masking, the unmask eventfd
 * (virqfd), MSI loopback, ERR / REQ eventfds, and the injected allocation failures.
 */
import { EBUSY, EFD_NONBLOCK, EINVAL, ENODEV, ENOMEM, ENOTTY } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { pciIntxAssert, pciIntxDeassert } from "../src/pci-irq.js";
import type { PciDevSpec } from "../src/pci.js";
import {
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_QSIZE,
} from "../src/pci-regs.js";
import {
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_REQ_IRQ_INDEX,
  encodeIrqSet,
  vfio_irq_info,
} from "../src/vfio-uapi.js";
import { vfioPciAerErrDetected, vfioPciCoreRequest } from "../src/vfio-pci-intrs.js";
import { MiB, type Machine, cfgWrite, gpu, machine } from "./helpers.js";

const NIC: PciDevSpec = {
  vendor: 0x8086,
  device: 0x1572,
  bars: [{ type: "mem64", size: MiB }, undefined, undefined, { type: "mem64", size: 0x8000n }],
  pcie: { flr: true },
  msi: { vectors: 8, is64: true, maskbit: true },
  msix: { vectors: 64, tableBar: 3, tableOffset: 0, pbaBar: 3, pbaOffset: 0x2000 },
};

/** Conventional PCI, INTx only. */
const CONV: PciDevSpec = { vendor: 0x8086, device: 0x100e, bars: [{ type: "mem32", size: MiB }] };

const INTX = VFIO_PCI_INTX_IRQ_INDEX;
const NONE = VFIO_IRQ_SET_DATA_NONE;
const BOOL = VFIO_IRQ_SET_DATA_BOOL;
const EVENTFD = VFIO_IRQ_SET_DATA_EVENTFD;
const TRIGGER = VFIO_IRQ_SET_ACTION_TRIGGER;
const MASK = VFIO_IRQ_SET_ACTION_MASK;
const UNMASK = VFIO_IRQ_SET_ACTION_UNMASK;

function setIrqs(m: Machine, fd: number, opts: Parameters<typeof encodeIrqSet>[0]): number {
  const r = m.libc.ioctl(fd, VFIO_DEVICE_SET_IRQS, encodeIrqSet(opts));
  return r < 0 ? -m.libc.errno : r;
}

function efd(m: Machine): number {
  return m.libc.eventfd(0, EFD_NONBLOCK);
}

function drain(m: Machine, fd: number): number {
  const b = new Uint8Array(8);
  if (m.libc.read(fd, b) < 0) return 0;
  return Number(new DataView(b.buffer).getBigUint64(0, true));
}

function signal(m: Machine, fd: number): void {
  const b = new Uint8Array(8);
  b[0] = 1;
  expect(m.libc.write(fd, b)).toBe(8);
}

function open(m: Machine, spec: PciDevSpec) {
  const r = gpu(m, spec);
  cfgWrite(m, r.fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  return r;
}

/** INTx enabled with a fresh trigger eventfd; returns it. */
function intxOn(m: Machine, fd: number): number {
  const e = efd(m);
  expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [e] })).toBe(0);
  return e;
}

/** Arm fail-nth at increasing n until `site` is the one that fails; the call's result. */
function failAt(m: Machine, site: string, call: () => number): number {
  const fault = m.libc.task.fault;
  for (let n = 1; n < 50; n++) {
    fault.arm(n);
    const r = call();
    const hit = fault.failedSite;
    fault.disarm();
    if (hit === site) return r;
    if (r === 0) throw new Error(`${site} never reached`);
  }
  throw new Error(`${site} never reached`);
}

describe("INTx: MASK, UNMASK and TRIGGER handlers (vfio_pci_set_intx_*)", () => {
  it("MASK needs INTx enabled and count 1; DATA_NONE and a true BOOL mask, a false BOOL does not", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    expect(setIrqs(m, fd, { flags: NONE | MASK, index: INTX, count: 1 })).toBe(-EINVAL);
    const e = intxOn(m, fd);
    expect(setIrqs(m, fd, { flags: NONE | MASK, index: INTX, count: 0 })).toBe(-EINVAL);
    expect(setIrqs(m, fd, { flags: BOOL | MASK, index: INTX, count: 1, data: [0] })).toBe(0);
    expect(vdev.irqCtx.get(0)!.masked).toBe(false);
    expect(setIrqs(m, fd, { flags: BOOL | MASK, index: INTX, count: 1, data: [1] })).toBe(0);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    expect(vdev.pdev.command & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(0);
    // UNMASK with a false BOOL leaves it masked; DATA_NONE unmasks and the pending line fires.
    expect(setIrqs(m, fd, { flags: BOOL | UNMASK, index: INTX, count: 1, data: [0] })).toBe(0);
    expect(drain(m, e)).toBe(0);
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: INTX, count: 1 })).toBe(0);
    expect(drain(m, e)).toBe(1);
    pciIntxDeassert(vdev.pdev);
    expect(setIrqs(m, fd, { flags: NONE | MASK, index: INTX, count: 1 })).toBe(0);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
  });

  it("UNMASK needs INTx enabled and count 1; unmasking what is not masked sends nothing", () => {
    const m = machine();
    const { fd } = open(m, NIC);
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: INTX, count: 1 })).toBe(-EINVAL);
    const e = intxOn(m, fd);
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: INTX, count: 0 })).toBe(-EINVAL);
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: INTX, count: 1 })).toBe(0);
    expect(drain(m, e)).toBe(0);
  });

  it("UNMASK while the user's COMMAND.INTX_DISABLE is set keeps INTx masked", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    const e = intxOn(m, fd);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
    cfgWrite(
      m,
      fd,
      PCI_COMMAND,
      2,
      PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE,
    );
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: INTX, count: 1 })).toBe(0);
    expect(drain(m, e)).toBe(0);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
  });

  it("TRIGGER: fd -1 enables INTx without an eventfd; the eventfd can be swapped; loopback", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    // Loopback of INTx that is not enabled, and DATA_NONE count 0 without INTx: EINVAL.
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 1 })).toBe(-EINVAL);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 0 })).toBe(-EINVAL);
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [-1] })).toBe(0);
    expect(vdev.irqType).toBe(INTX);
    // An interrupt with no eventfd: masked, nothing to signal.
    pciIntxAssert(vdev.pdev);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    pciIntxDeassert(vdev.pdev);
    const e = efd(m);
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [e] })).toBe(0);
    expect(vdev.irqType).toBe(INTX);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 1 })).toBe(0);
    expect(drain(m, e)).toBe(1);
    expect(setIrqs(m, fd, { flags: BOOL | TRIGGER, index: INTX, count: 1, data: [0] })).toBe(0);
    expect(drain(m, e)).toBe(0);
    expect(setIrqs(m, fd, { flags: BOOL | TRIGGER, index: INTX, count: 1, data: [1] })).toBe(0);
    expect(drain(m, e)).toBe(1);
    // The user's INTX_DISABLE silences the loopback too (vfio_send_intx_eventfd).
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 1 })).toBe(0);
    expect(drain(m, e)).toBe(0);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    // Back to no eventfd, then disabled.
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [-1] })).toBe(0);
    expect(vdev.irqCtx.get(0)!.trigger).toBeUndefined();
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 0 })).toBe(0);
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
  });

  it("INTx TRIGGER while MSI is on is EINVAL; MSI count 0 while INTx is on is EINVAL and keeps INTx", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: 1, count: 1, data: [efd(m)] })).toBe(
      0,
    );
    expect(
      setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [efd(m)] }),
    ).toBe(-EINVAL);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: 1, count: 0 })).toBe(0);
    intxOn(m, fd);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: 1, count: 0 })).toBe(-EINVAL);
    expect(vdev.irqType).toBe(INTX);
  });

  it("re-enabling INTx after an automask clears the device's DisINTx: the pending line fires", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    intxOn(m, fd);
    pciIntxAssert(vdev.pdev);
    expect(vdev.pdev.command & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 0 })).toBe(0);
    // vfio_intx_enable's pci_intx(pdev, !masked) lets the still-asserted line through.
    const e = intxOn(m, fd);
    expect(drain(m, e)).toBe(1);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
  });

  it("a function without an IRQ is ENODEV with fd -1 too; injected failures leave INTx off", () => {
    const m = machine();
    const none = open(m, { ...CONV, irq: 0 });
    expect(
      setIrqs(m, none.fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [-1] }),
    ).toBe(-ENODEV);
    const { vdev, fd } = open(m, CONV);
    for (const site of ["vfio_irq_ctx_alloc", "request_irq"]) {
      const e = efd(m);
      const r = failAt(m, site, () =>
        setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [e] }),
      );
      expect(r).toBe(-ENOMEM);
      expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
      expect(vdev.irqCtx.size).toBe(0);
      expect(vdev.pdev.hostIrq.intxHandler).toBeUndefined();
    }
    const e = efd(m);
    expect(
      failAt(m, "memdup_user", () =>
        setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [e] }),
      ),
    ).toBe(-ENOMEM);
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
    // DATA_NONE carries no data: nothing is copied, so nothing can fail there.
    m.libc.task.fault.arm(1);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 0 })).toBe(-EINVAL);
    expect(m.libc.task.fault.sitesHit).not.toContain("memdup_user");
    m.libc.task.fault.disarm();
  });
});

describe("an eventfd at fd 0", () => {
  it("is a valid trigger for INTx, the unmask virqfd and ERR", () => {
    const m = machine();
    const e = efd(m);
    expect(e).toBe(0);
    const { vdev, fd } = open(m, NIC);
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 1, data: [0] })).toBe(0);
    expect(vdev.irqCtx.get(0)!.trigger).toBeDefined();
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: INTX, count: 0 })).toBe(-EINVAL);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: INTX, count: 0 })).toBe(0);
    intxOn(m, fd);
    expect(setIrqs(m, fd, { flags: EVENTFD | UNMASK, index: INTX, count: 1, data: [0] })).toBe(0);
    expect(vdev.irqCtx.get(0)!.unmask).toBeDefined();
    const ERR = VFIO_PCI_ERR_IRQ_INDEX;
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: ERR, count: 1, data: [0] })).toBe(0);
    expect(vdev.errTrigger).toBeDefined();
  });
});

describe("INTx without PCI 2.3 masking (the line is disabled at the interrupt controller)", () => {
  const BROKEN: PciDevSpec = { ...CONV, intxMaskBroken: true };

  it("MASK disables the line, once; UNMASK enables it, once", () => {
    const m = machine();
    const { vdev, fd } = open(m, BROKEN);
    const e = intxOn(m, fd);
    expect(setIrqs(m, fd, { flags: NONE | MASK, index: INTX, count: 1 })).toBe(0);
    expect(setIrqs(m, fd, { flags: NONE | MASK, index: INTX, count: 1 })).toBe(0);
    expect(vdev.pdev.hostIrq.intxDepth).toBe(1);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(0);
    pciIntxDeassert(vdev.pdev);
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: INTX, count: 1 })).toBe(0);
    expect(vdev.pdev.hostIrq.intxDepth).toBe(0);
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: INTX, count: 1 })).toBe(0);
    expect(vdev.pdev.hostIrq.intxDepth).toBe(0);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
  });

  it("enabled while the user's INTX_DISABLE is set, the line starts disabled (IRQF_NO_AUTOEN)", () => {
    const m = machine();
    const { vdev, fd } = open(m, BROKEN);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
    const e = intxOn(m, fd);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(0);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(drain(m, e)).toBe(1);
  });

  it("with PCI 2.3 masking, INTx enabled under INTX_DISABLE delivers once it is cleared", () => {
    const m = machine();
    const { vdev, fd } = open(m, CONV);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
    const e = intxOn(m, fd);
    expect(vdev.pdev.hostIrq.intxDepth).toBe(0);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
  });

  it("clearing INTX_DISABLE while INTx is unused clears the device's bit too", () => {
    const m = machine();
    const { vdev, fd } = open(m, CONV);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
    expect(vdev.pdev.command & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    expect(vdev.pdev.command & PCI_COMMAND_INTX_DISABLE).toBe(0);
  });
});

describe("the unmask eventfd (vfio_virqfd_enable)", () => {
  it("each signal unmasks; a line still asserted fires the trigger again; registering alone does nothing", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    const e = intxOn(m, fd);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
    const u = efd(m);
    expect(setIrqs(m, fd, { flags: EVENTFD | UNMASK, index: INTX, count: 1, data: [u] })).toBe(0);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    // Still asserted: the unmask finds it pending, stays masked and fires again (the thread).
    signal(m, u);
    expect(drain(m, e)).toBe(1);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    pciIntxDeassert(vdev.pdev);
    signal(m, u);
    expect(vdev.irqCtx.get(0)!.masked).toBe(false);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
    pciIntxDeassert(vdev.pdev);
    signal(m, u);
    expect(vdev.irqCtx.get(0)!.masked).toBe(false);
  });

  it("closing the eventfd tears the virqfd down, so another one can be set", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    const e = intxOn(m, fd);
    const u = efd(m);
    expect(setIrqs(m, fd, { flags: EVENTFD | UNMASK, index: INTX, count: 1, data: [u] })).toBe(0);
    expect(setIrqs(m, fd, { flags: EVENTFD | UNMASK, index: INTX, count: 1, data: [efd(m)] })).toBe(
      -EBUSY,
    );
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
    expect(m.libc.close(u)).toBe(0);
    expect(vdev.irqCtx.get(0)!.unmask).toBeUndefined();
    // The release (POLLHUP) is not an unmask: no handler, no second trigger.
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    expect(drain(m, e)).toBe(0);
    expect(setIrqs(m, fd, { flags: EVENTFD | UNMASK, index: INTX, count: 1, data: [efd(m)] })).toBe(
      0,
    );
  });

  it("an injected virqfd allocation failure is ENOMEM and sets nothing", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    intxOn(m, fd);
    const u = efd(m);
    expect(
      failAt(m, "virqfd", () =>
        setIrqs(m, fd, { flags: EVENTFD | UNMASK, index: INTX, count: 1, data: [u] }),
      ),
    ).toBe(-ENOMEM);
    expect(vdev.irqCtx.get(0)!.unmask).toBeUndefined();
  });
});

describe("MSI / MSI-X", () => {
  it("loopback signals exactly the vectors asked, BOOL data by position from start", () => {
    const m = machine();
    const { fd } = open(m, NIC);
    const fds = [efd(m), efd(m), efd(m), efd(m)];
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: 1, count: 4, data: fds })).toBe(0);
    expect(setIrqs(m, fd, { flags: NONE | TRIGGER, index: 1, start: 0, count: 2 })).toBe(0);
    expect(fds.map((f) => drain(m, f))).toEqual([1, 1, 0, 0]);
    expect(
      setIrqs(m, fd, { flags: BOOL | TRIGGER, index: 1, start: 1, count: 3, data: [1, 0, 1] }),
    ).toBe(0);
    expect(fds.map((f) => drain(m, f))).toEqual([0, 1, 0, 1]);
  });

  it("MSI-X loopback skips a vector without an eventfd", () => {
    const m = machine();
    const { fd } = open(m, NIC);
    const fds = [efd(m), -1, efd(m)];
    expect(
      setIrqs(m, fd, {
        flags: EVENTFD | TRIGGER,
        index: VFIO_PCI_MSIX_IRQ_INDEX,
        count: 3,
        data: fds,
      }),
    ).toBe(0);
    expect(
      setIrqs(m, fd, { flags: NONE | TRIGGER, index: VFIO_PCI_MSIX_IRQ_INDEX, count: 3 }),
    ).toBe(0);
    expect([fds[0]!, fds[2]!].map((f) => drain(m, f))).toEqual([1, 1]);
  });

  it("memory decode forced on to program MSI-X is turned off again", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, NIC);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    expect(
      setIrqs(m, fd, {
        flags: EVENTFD | TRIGGER,
        index: VFIO_PCI_MSIX_IRQ_INDEX,
        count: 1,
        data: [efd(m)],
      }),
    ).toBe(0);
    expect(vdev.pdev.command & PCI_COMMAND_MEMORY).toBe(0);
  });

  it("msi_qmax follows MSI only: one MSI vector allows Multiple Message Enable 0; MSI-X leaves it", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    const flags = vdev.pdev.msiCap + PCI_MSI_FLAGS;
    expect(
      setIrqs(m, fd, {
        flags: EVENTFD | TRIGGER,
        index: VFIO_PCI_MSIX_IRQ_INDEX,
        count: 4,
        data: [efd(m), efd(m), efd(m), efd(m)],
      }),
    ).toBe(0);
    cfgWrite(m, fd, flags, 2, 2 << 4);
    expect(vdev.pdev.readConfig(flags, 2) & PCI_MSI_FLAGS_QSIZE).toBe(0);
    expect(
      setIrqs(m, fd, { flags: NONE | TRIGGER, index: VFIO_PCI_MSIX_IRQ_INDEX, count: 0 }),
    ).toBe(0);
    expect(
      setIrqs(m, fd, {
        flags: EVENTFD | TRIGGER,
        index: VFIO_PCI_MSI_IRQ_INDEX,
        count: 1,
        data: [efd(m)],
      }),
    ).toBe(0);
    expect(vdev.msiQmax).toBe(0);
  });

  it("injected failures of a vector's context and of request_irq undo the whole enable", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    for (const site of ["vfio_irq_ctx_alloc", "request_irq"]) {
      const fds = [efd(m), efd(m)];
      expect(
        failAt(m, site, () =>
          setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: 1, count: 2, data: fds }),
        ),
      ).toBe(-ENOMEM);
      expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
      expect(vdev.irqCtx.size).toBe(0);
      expect(vdev.pdev.hostIrq.msiType).toBe(0);
    }
  });
});

describe("ERR and REQ", () => {
  it("ERR: BOOL loopback, count 0 with BOOL or EVENTFD EINVAL, fd -1 with none set, fd < -1 ignored; AER signals it", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    const ERR = VFIO_PCI_ERR_IRQ_INDEX;
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: ERR, count: 1, data: [-1] })).toBe(0);
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: ERR, count: 1, data: [-2] })).toBe(0);
    expect(vdev.errTrigger).toBeUndefined();
    expect(setIrqs(m, fd, { flags: BOOL | TRIGGER, index: ERR, count: 0 })).toBe(-EINVAL);
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: ERR, count: 0 })).toBe(-EINVAL);
    // An AER report with no ERR eventfd goes nowhere.
    vfioPciAerErrDetected(vdev);
    const e = efd(m);
    expect(setIrqs(m, fd, { flags: EVENTFD | TRIGGER, index: ERR, count: 1, data: [e] })).toBe(0);
    expect(setIrqs(m, fd, { flags: BOOL | TRIGGER, index: ERR, count: 1, data: [0] })).toBe(0);
    expect(drain(m, e)).toBe(0);
    expect(setIrqs(m, fd, { flags: BOOL | TRIGGER, index: ERR, count: 1, data: [1] })).toBe(0);
    expect(drain(m, e)).toBe(1);
    vfioPciAerErrDetected(vdev);
    expect(drain(m, e)).toBe(1);
    // Only TRIGGER has a handler.
    expect(setIrqs(m, fd, { flags: NONE | MASK, index: ERR, count: 1 })).toBe(-ENOTTY);
    expect(setIrqs(m, fd, { flags: NONE | UNMASK, index: VFIO_PCI_REQ_IRQ_INDEX, count: 1 })).toBe(
      -ENOTTY,
    );
  });

  it("REQ: a request reaches the user only with an eventfd; every tenth is traced", () => {
    const m = machine();
    const { vdev, fd } = open(m, NIC);
    expect(vfioPciCoreRequest(vdev, 0)).toBe(false);
    const e = efd(m);
    expect(
      setIrqs(m, fd, {
        flags: EVENTFD | TRIGGER,
        index: VFIO_PCI_REQ_IRQ_INDEX,
        count: 1,
        data: [e],
      }),
    ).toBe(0);
    const { result, records } = m.kernel.trace.record(() =>
      [1, 9, 10, 20].map((n) => vfioPciCoreRequest(vdev, n)),
    );
    expect(result).toEqual([true, true, true, true]);
    expect(drain(m, e)).toBe(4);
    expect(records.filter((r) => r.name === "vfio-pci:request").map((r) => r.data)).toEqual([
      { dev: vdev.name, count: 10 },
      { dev: vdev.name, count: 20 },
    ]);
  });

  it("conventional PCI: no ERR (GET_IRQ_INFO EINVAL, SET_IRQS EINVAL), the other indexes answer", () => {
    const m = machine();
    const { fd } = open(m, CONV);
    const info = (index: number) => {
      const buf = vfio_irq_info.encode({ argsz: 16, index });
      const r = m.libc.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, buf);
      return r < 0 ? -m.libc.errno : vfio_irq_info.decode(buf).count;
    };
    expect(info(INTX)).toBe(1);
    expect(info(VFIO_PCI_REQ_IRQ_INDEX)).toBe(1);
    expect(info(VFIO_PCI_ERR_IRQ_INDEX)).toBe(-EINVAL);
    expect(
      setIrqs(m, fd, {
        flags: EVENTFD | TRIGGER,
        index: VFIO_PCI_ERR_IRQ_INDEX,
        count: 1,
        data: [efd(m)],
      }),
    ).toBe(-EINVAL);
  });

  it("a reopened device has forgotten the user's INTX_DISABLE", () => {
    const m = machine();
    const { vdev, fd } = open(m, CONV);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
    expect(vdev.virqDisabled).toBe(true);
    expect(m.libc.close(fd)).toBe(0);
    expect(vdev.virqDisabled).toBe(false);
  });
});
