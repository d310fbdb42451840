import { EBADF, EBUSY, ENOSPC, EFD_NONBLOCK, EINVAL, ENODEV, ENOTTY, ERANGE } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { IRQ_NOTCONNECTED, pciIntxAssert, pciIntxDeassert, pciMsiRaise } from "../src/pci-irq.js";
import type { PciDevSpec } from "../src/pci.js";
import {
  PCI_CAP_ID_MSI,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_INTERRUPT_PIN,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_ENABLE,
} from "../src/pci-regs.js";
import {
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_PCI_DEVID_NOT_OWNED,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
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
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  decodeHotResetInfo,
  decodeInfoCaps,
  encodeIrqSet,
  vfio_irq_info,
  vfio_pci_hot_reset_info,
  vfio_region_info,
} from "../src/vfio-uapi.js";
import { GPU, MiB, type Machine, cfgRead, cfgWrite, gpu, machine, openGranted } from "./helpers.js";

const NIC: PciDevSpec = {
  vendor: 0x8086,
  device: 0x1572,
  bars: [{ type: "mem64", size: MiB }, undefined, undefined, { type: "mem64", size: 0x8000n }],
  pcie: { flr: true },
  msi: { vectors: 8, is64: true, maskbit: true },
  msix: { vectors: 64, tableBar: 3, tableOffset: 0, pbaBar: 3, pbaOffset: 0x2000 },
};

const TRIGGER_EVENTFD = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
const TRIGGER_NONE = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;

function irqInfo(m: Machine, fd: number, index: number, argsz = 16) {
  const buf = vfio_irq_info.encode({ argsz, index });
  const r = m.libc.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, buf);
  return { r, errno: m.libc.errno, info: vfio_irq_info.decode(buf) };
}

function setIrqs(m: Machine, fd: number, opts: Parameters<typeof encodeIrqSet>[0]) {
  const r = m.libc.ioctl(fd, VFIO_DEVICE_SET_IRQS, encodeIrqSet(opts));
  return r < 0 ? -m.libc.errno : r;
}

function efd(m: Machine): number {
  return m.libc.eventfd(0, EFD_NONBLOCK);
}

/** The eventfd's count, consumed (0 when it was not signalled). */
function drain(m: Machine, fd: number): number {
  const b = new Uint8Array(8);
  if (m.libc.read(fd, b) < 0) return 0;
  return Number(new DataView(b.buffer).getBigUint64(0, true));
}

function nic(m: Machine, spec: PciDevSpec = NIC) {
  const r = gpu(m, spec);
  cfgWrite(m, r.fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  return r;
}

describe("VFIO_DEVICE_GET_IRQ_INFO", () => {
  it("counts and flags per index (INTx maskable + automasked, the rest NORESIZE but dynamic MSI-X)", () => {
    const m = machine();
    const { fd } = nic(m);
    const want = [
      [
        VFIO_PCI_INTX_IRQ_INDEX,
        1,
        VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED,
      ],
      [VFIO_PCI_MSI_IRQ_INDEX, 8, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE],
      [VFIO_PCI_MSIX_IRQ_INDEX, 64, VFIO_IRQ_INFO_EVENTFD],
      [VFIO_PCI_ERR_IRQ_INDEX, 1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE],
      [VFIO_PCI_REQ_IRQ_INDEX, 1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE],
    ] as const;
    for (const [index, count, flags] of want) {
      const { r, info } = irqInfo(m, fd, index);
      expect(r).toBe(0);
      expect(info).toEqual({ argsz: 16, flags, index, count });
    }
  });

  it("MSI-X is NORESIZE without dynamic allocation; counts 0 without the capabilities", () => {
    const m = machine();
    m.bus.root.msixCanAllocDyn = false;
    const { fd } = nic(m);
    expect(irqInfo(m, fd, VFIO_PCI_MSIX_IRQ_INDEX).info.flags).toBe(
      VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
    );
    const plain = gpu(m, { ...GPU, pcie: false, interruptPin: 0 });
    expect(irqInfo(m, plain.fd, VFIO_PCI_INTX_IRQ_INDEX).info.count).toBe(0);
    expect(irqInfo(m, plain.fd, VFIO_PCI_MSI_IRQ_INDEX).info.count).toBe(0);
    expect(irqInfo(m, plain.fd, VFIO_PCI_MSIX_IRQ_INDEX).info.count).toBe(0);
  });

  it.each([
    ["argsz below 16", 15, VFIO_PCI_INTX_IRQ_INDEX, EINVAL],
    ["index past the last", 16, VFIO_PCI_NUM_IRQS, EINVAL],
    ["ERR on conventional PCI", 16, VFIO_PCI_ERR_IRQ_INDEX, EINVAL],
  ])("%s → errno", (_name, argsz, index, errno) => {
    const m = machine();
    const { fd } = gpu(m, { ...GPU, pcie: false });
    const { r, errno: e } = irqInfo(m, fd, index, argsz);
    expect(r).toBe(-1);
    expect(e).toBe(errno);
  });

  it("the INTx pin of a not-connected interrupt reads 0 and counts 0", () => {
    const m = machine();
    const { fd } = gpu(m, { ...GPU, irq: IRQ_NOTCONNECTED });
    expect(cfgRead(m, fd, PCI_INTERRUPT_PIN, 1)).toBe(0);
    expect(irqInfo(m, fd, VFIO_PCI_INTX_IRQ_INDEX).info.count).toBe(0);
  });
});

describe("VFIO_DEVICE_SET_IRQS validation (vfio_set_irqs_validate_and_prepare, then the handler)", () => {
  const rows: ReadonlyArray<readonly [string, Parameters<typeof encodeIrqSet>[0], number]> = [
    ["argsz below the header", { argsz: 19, flags: TRIGGER_NONE, index: 0, count: 1 }, EINVAL],
    ["index past the last", { flags: TRIGGER_NONE, index: 5, count: 1 }, EINVAL],
    [
      "count >= U32_MAX - start",
      { flags: TRIGGER_NONE, index: 2, start: 1, count: 0xfffffffe },
      EINVAL,
    ],
    ["unknown flag bit", { flags: TRIGGER_NONE | 0x40, index: 0, count: 1 }, EINVAL],
    ["start past the count", { flags: TRIGGER_NONE, index: 0, start: 1, count: 0 }, EINVAL],
    ["start + count past the count", { flags: TRIGGER_NONE, index: 1, start: 4, count: 5 }, EINVAL],
    ["no data type", { flags: VFIO_IRQ_SET_ACTION_TRIGGER, index: 0, count: 1 }, EINVAL],
    [
      "two data types",
      { flags: VFIO_IRQ_SET_ACTION_TRIGGER | 3, index: 0, count: 1, data: [1] },
      EINVAL,
    ],
    [
      "argsz without room for the fds",
      { argsz: 23, flags: TRIGGER_EVENTFD, index: 1, count: 1, data: [-1] },
      EINVAL,
    ],
    [
      "two actions match no handler",
      { flags: VFIO_IRQ_SET_DATA_NONE | 0x30, index: 0, count: 1 },
      ENOTTY,
    ],
    [
      "MSI has no mask",
      { flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, index: 1, count: 1 },
      ENOTTY,
    ],
    [
      "MSI-X has no unmask",
      { flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, index: 2, count: 1 },
      ENOTTY,
    ],
    [
      "INTx mask while INTx is off",
      { flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, index: 0, count: 1 },
      EINVAL,
    ],
    ["INTx trigger with count 0 while off", { flags: TRIGGER_NONE, index: 0, count: 0 }, EINVAL],
    ["MSI loopback while MSI is off", { flags: TRIGGER_NONE, index: 1, count: 1 }, EINVAL],
    ["ERR trigger NONE with no eventfd", { flags: TRIGGER_NONE, index: 3, count: 1 }, EINVAL],
    ["REQ eventfd with count 0", { flags: TRIGGER_EVENTFD, index: 4, count: 0 }, EINVAL],
    ["INTx with a closed fd", { flags: TRIGGER_EVENTFD, index: 0, count: 1, data: [99] }, EBADF],
  ];
  it.each(rows)("%s", (_name, opts, errno) => {
    const m = machine();
    const { vdev, fd } = nic(m);
    expect(setIrqs(m, fd, opts)).toBe(-errno);
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
    expect(vdev.irqCtx.size).toBe(0);
    expect(vdev.pdev.hostIrq.intxHandler).toBeUndefined();
    expect(vdev.pdev.hostIrq.msiType).toBe(0);
  });

  it("an fd that is not an eventfd is EINVAL and enables nothing", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, count: 1, data: [fd] })).toBe(
      -EINVAL,
    );
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
    expect(vdev.pdev.hostIrq.msiType).toBe(0);
  });

  it("INTx on a function whose pin has no IRQ is ENODEV", () => {
    const m = machine();
    const { vdev, fd } = nic(m, { ...NIC, irq: 0 });
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 0, count: 1, data: [efd(m)] })).toBe(
      -ENODEV,
    );
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
  });
});

describe("INTx", () => {
  it("delivers to the eventfd and stays masked until UNMASK (automask); still asserted fires again", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const e = efd(m);
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 0, count: 1, data: [e] })).toBe(0);
    expect(vdev.irqType).toBe(VFIO_PCI_INTX_IRQ_INDEX);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    expect(vdev.pdev.command & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    // Masked: a new assertion goes nowhere.
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(0);
    // Unmask while the line is still asserted: stays masked, the trigger fires again.
    expect(
      setIrqs(m, fd, {
        flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
        index: 0,
        count: 1,
      }),
    ).toBe(0);
    expect(drain(m, e)).toBe(1);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    pciIntxDeassert(vdev.pdev);
    expect(
      setIrqs(m, fd, {
        flags: VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_UNMASK,
        index: 0,
        count: 1,
        data: [1],
      }),
    ).toBe(0);
    expect(vdev.irqCtx.get(0)!.masked).toBe(false);
    expect(vdev.pdev.command & PCI_COMMAND_INTX_DISABLE).toBe(0);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
  });

  it("without PCI 2.3 masking the line is masked at the interrupt controller", () => {
    const m = machine();
    const { vdev, fd } = nic(m, { ...NIC, intxMaskBroken: true });
    const e = efd(m);
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 0, count: 1, data: [e] });
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
    expect(vdev.pdev.hostIrq.intxDepth).toBe(1);
    // enable_irq with the line still up: the level interrupt fires and masks again.
    setIrqs(m, fd, {
      flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
      index: 0,
      count: 1,
    });
    expect(drain(m, e)).toBe(1);
    expect(vdev.pdev.hostIrq.intxDepth).toBe(1);
  });

  it("the unmask eventfd (resamplefd) unmasks on signal; a second one is EBUSY; -1 removes it", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const e = efd(m);
    const u = efd(m);
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 0, count: 1, data: [e] });
    const UNMASK_FD = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
    expect(setIrqs(m, fd, { flags: UNMASK_FD, index: 0, count: 1, data: [u] })).toBe(0);
    expect(setIrqs(m, fd, { flags: UNMASK_FD, index: 0, count: 1, data: [u] })).toBe(-EBUSY);
    pciIntxAssert(vdev.pdev);
    pciIntxDeassert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
    expect(vdev.irqCtx.get(0)!.masked).toBe(true);
    const one = new Uint8Array(8);
    one[0] = 1;
    m.libc.write(u, one);
    expect(vdev.irqCtx.get(0)!.masked).toBe(false);
    expect(drain(m, u)).toBe(0);
    expect(setIrqs(m, fd, { flags: UNMASK_FD, index: 0, count: 1, data: [-1] })).toBe(0);
    expect(vdev.irqCtx.get(0)!.unmask).toBeUndefined();
    expect(
      setIrqs(m, fd, {
        flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_MASK,
        index: 0,
        count: 1,
        data: [u],
      }),
    ).toBe(-ENOTTY);
  });

  it("COMMAND.INTX_DISABLE masks (and silences) INTx; clearing it unmasks", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const e = efd(m);
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 0, count: 1, data: [e] });
    cfgWrite(
      m,
      fd,
      PCI_COMMAND,
      2,
      PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE,
    );
    expect(vdev.virqDisabled).toBe(true);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(0);
    pciIntxDeassert(vdev.pdev);
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    expect(vdev.virqDisabled).toBe(false);
    pciIntxAssert(vdev.pdev);
    expect(drain(m, e)).toBe(1);
  });

  it("close quiets the function (COMMAND = INTX_DISABLE) for its reset, then restores the config saved at open", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const atOpen = vdev.pdev.command;
    expect(atOpen & PCI_COMMAND_INTX_DISABLE).toBe(0);
    const writes: number[] = [];
    const orig = vdev.pdev.writeConfig.bind(vdev.pdev);
    vdev.pdev.writeConfig = (off, size, v) => {
      if (off === PCI_COMMAND) writes.push(v);
      orig(off, size, v);
    };
    // The user's DisINTx reaches the hardware while INTx is unused (__vfio_pci_intx_mask).
    cfgWrite(m, fd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE);
    expect(vdev.pdev.command & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    const resets = vdev.pdev.resetCount;
    writes.length = 0;
    expect(m.libc.close(fd)).toBe(0);
    // vfio_pci_core_disable writes the whole word before __pci_reset_function_locked.
    expect(writes).toContain(PCI_COMMAND_INTX_DISABLE);
    expect(vdev.pdev.resetCount).toBe(resets + 1);
    // pci_restore_state of the open-time state, then pci_disable_device: the user's bits gone.
    expect(vdev.pdev.command).toBe(atOpen & ~PCI_COMMAND_MASTER);
  });

  it("MSI while INTx is enabled is EINVAL; disable with count 0 then MSI works", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 0, count: 1, data: [efd(m)] });
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 1, count: 1, data: [efd(m)] })).toBe(
      -EINVAL,
    );
    expect(vdev.irqType).toBe(VFIO_PCI_INTX_IRQ_INDEX);
    expect(setIrqs(m, fd, { flags: TRIGGER_NONE, index: 0, count: 0 })).toBe(0);
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
    expect(vdev.pdev.hostIrq.intxHandler).toBeUndefined();
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 1, count: 1, data: [efd(m)] })).toBe(0);
  });
});

describe("MSI and MSI-X", () => {
  it("MSI: N vectors to N eventfds; MMC reads the device's; ENABLE reflects SET_IRQS only", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const fds = [efd(m), efd(m), efd(m)];
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 1, count: 3, data: fds })).toBe(0);
    const cap = vdev.pdev.msiCap;
    expect(vdev.pdev.readConfig(cap + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_ENABLE).toBeTruthy();
    // 3 vectors → msi_qmax log2(4) = 2, but vfio_msi_config_read stores it in the header word
    // at the capability's start, whose ID byte is not virtualized: Multiple Message Capable
    // still reads the device's log2(8) = 3, and the capability ID is still MSI.
    expect((cfgRead(m, fd, cap + PCI_MSI_FLAGS, 2) >> 1) & 7).toBe(3);
    expect(cfgRead(m, fd, cap, 1)).toBe(PCI_CAP_ID_MSI);
    for (let v = 0; v < 3; v++) {
      expect(pciMsiRaise(vdev.pdev, v)).toBe(true);
      expect(fds.map((f) => drain(m, f))).toEqual([0, 1, 2].map((i) => (i === v ? 1 : 0)));
    }
    // Loopback: DATA_BOOL fires the chosen vectors.
    setIrqs(m, fd, {
      flags: VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
      index: 1,
      count: 3,
      data: [1, 0, 1],
    });
    expect(fds.map((f) => drain(m, f))).toEqual([1, 0, 1]);
    expect(setIrqs(m, fd, { flags: TRIGGER_NONE, index: 1, count: 0 })).toBe(0);
    expect(vdev.pdev.readConfig(cap + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_ENABLE).toBe(0);
    expect(vdev.pdev.hostIrq.msiType).toBe(0);
  });

  it("MSI with fewer host vectors than asked returns the number available, enabling nothing", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    m.bus.root.msiVectorsFree = 2;
    expect(
      setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 1, count: 4, data: [-1, -1, -1, -1] }),
    ).toBe(2);
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
    expect(m.bus.root.msiVectorsFree).toBe(2);
    m.bus.root.msiVectorsFree = 0;
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 1, count: 1, data: [-1] })).toBe(-28);
    m.bus.root.msiVectorsFree = 10;
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, start: 0, count: 0 })).toBe(-ERANGE);
  });

  it("MSI-X: enable with one unsignalled vector, grow per vector, fd -1 deassigns; masked entries set the PBA", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, count: 1, data: [-1] })).toBe(0);
    expect(vdev.irqType).toBe(VFIO_PCI_MSIX_IRQ_INDEX);
    const ctl = vdev.pdev.msixCap + PCI_MSIX_FLAGS;
    expect(vdev.pdev.readConfig(ctl, 2) & PCI_MSIX_FLAGS_ENABLE).toBeTruthy();
    expect(vdev.irqCtx.size).toBe(0);
    const e5 = efd(m);
    expect(
      setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, start: 5, count: 1, data: [e5] }),
    ).toBe(0);
    expect(pciMsiRaise(vdev.pdev, 5)).toBe(true);
    expect(drain(m, e5)).toBe(1);
    // Vector 6 has no handler: its entry stays masked, the message only sets its pending bit.
    expect(pciMsiRaise(vdev.pdev, 6)).toBe(false);
    expect(
      setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, start: 5, count: 1, data: [-1] }),
    ).toBe(0);
    expect(vdev.irqCtx.size).toBe(0);
    expect(pciMsiRaise(vdev.pdev, 5)).toBe(false);
    // A BAR read of the table sees all-ones; the PBA is raw.
    const table = new Uint8Array(16);
    m.libc.pread(fd, table, (3n << 40n) + 5n * 16n);
    expect([...table]).toEqual(new Array(16).fill(0xff));
    const pba = new Uint8Array(8);
    m.libc.pread(fd, pba, (3n << 40n) + 0x2000n);
    expect(pba[0]).toBe((1 << 5) | (1 << 6));
    expect(setIrqs(m, fd, { flags: TRIGGER_NONE, index: 2, count: 0 })).toBe(0);
    expect(vdev.pdev.readConfig(ctl, 2) & PCI_MSIX_FLAGS_ENABLE).toBe(0);
  });

  it("without dynamic MSI-X a vector past the enabled ones is EINVAL and the block is undone", () => {
    const m = machine();
    m.bus.root.msixCanAllocDyn = false;
    const { vdev, fd } = nic(m);
    const a = efd(m);
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, count: 2, data: [a, -1] });
    expect(
      setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, start: 1, count: 2, data: [a, a] }),
    ).toBe(-EINVAL);
    expect([...vdev.irqCtx.keys()]).toEqual([0]);
    expect(vdev.irqType).toBe(VFIO_PCI_MSIX_IRQ_INDEX);
  });

  it("a failing vector on enable disables MSI-X again", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, count: 2, data: [efd(m), 77] })).toBe(
      -EBADF,
    );
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
    expect(vdev.irqCtx.size).toBe(0);
    expect(vdev.pdev.hostIrq.msiType).toBe(0);
    expect(m.bus.root.msiVectorsFree).toBe(200);
  });
});

describe("ERR and REQ, teardown", () => {
  it("ERR / REQ eventfds: loopback, release with fd -1, REQ fired when the driver is unbound", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const err = efd(m);
    const req = efd(m);
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 3, count: 1, data: [err] })).toBe(0);
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 4, count: 1, data: [req] })).toBe(0);
    expect(setIrqs(m, fd, { flags: TRIGGER_NONE, index: 3, count: 1 })).toBe(0);
    expect(drain(m, err)).toBe(1);
    expect(() => m.mod.remove(vdev)).toThrow();
    expect(drain(m, req)).toBe(1);
    expect(setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 4, count: 1, data: [-1] })).toBe(0);
    expect(vdev.reqTrigger).toBeUndefined();
    expect(setIrqs(m, fd, { flags: TRIGGER_NONE, index: 3, count: 0 })).toBe(0);
    expect(vdev.errTrigger).toBeUndefined();
  });

  it("close tears down MSI-X and releases ERR / REQ; the eventfd contexts are put", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const e = efd(m);
    const req = efd(m);
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, count: 2, data: [e, e] });
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 4, count: 1, data: [req] });
    const ctx = vdev.reqTrigger!;
    expect(ctx.refcount).toBe(2);
    m.libc.close(fd);
    expect(vdev.irqType).toBe(VFIO_PCI_NUM_IRQS);
    expect(vdev.irqCtx.size).toBe(0);
    expect(vdev.pdev.hostIrq.msiType).toBe(0);
    expect(vdev.reqTrigger).toBeUndefined();
    expect(ctx.refcount).toBe(1);
    expect(m.bus.root.msiVectorsFree).toBe(200);
    // Reopened: nothing left enabled.
    const fd2 = openGranted(m, vdev);
    expect(setIrqs(m, fd2, { flags: TRIGGER_NONE, index: 2, count: 1 })).toBe(-EINVAL);
  });

  it("VFIO_DEVICE_RESET keeps the IRQ configuration (the MSI-X table is restored)", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const e = efd(m);
    setIrqs(m, fd, { flags: TRIGGER_EVENTFD, index: 2, count: 1, data: [e] });
    expect(m.libc.ioctl(fd, 0x3b6f, new Uint8Array(0))).toBe(0);
    expect(vdev.irqType).toBe(VFIO_PCI_MSIX_IRQ_INDEX);
    expect(pciMsiRaise(vdev.pdev, 0)).toBe(true);
    expect(drain(m, e)).toBe(1);
  });
});

describe("MSI-X BAR region info", () => {
  it("the table BAR reports MSIX_MAPPABLE; too small an argsz gets argsz 40 and cap_offset 0", () => {
    const m = machine();
    const { fd } = nic(m);
    const small = vfio_region_info.encode({ argsz: 32, index: 3 });
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, small)).toBe(0);
    const s = vfio_region_info.decode(small);
    expect(s.argsz).toBe(40);
    expect(s.cap_offset).toBe(0);
    expect(s.flags & VFIO_REGION_INFO_FLAG_CAPS).toBeTruthy();
    const big = new Uint8Array(40);
    vfio_region_info.encode({ argsz: 40, index: 3 }, big);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, big)).toBe(0);
    const b = vfio_region_info.decode(big);
    expect(b.flags & VFIO_REGION_INFO_FLAG_MMAP).toBeTruthy();
    expect(b.cap_offset).toBe(32);
    expect(decodeInfoCaps(big, b.cap_offset)).toEqual([
      { id: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, version: 1, offset: 32 },
    ]);
    // BAR0 has no table: no capabilities.
    const bar0 = vfio_region_info.encode({ argsz: 32, index: 0 });
    m.libc.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, bar0);
    expect(vfio_region_info.decode(bar0).flags & VFIO_REGION_INFO_FLAG_CAPS).toBe(0);
  });

  it("the table page can be mmapped; user writes to the table through the fd are dropped", () => {
    const m = machine();
    const { vdev, fd } = nic(m);
    const addr = m.libc.mmap(0n, 0x8000n, 3, 1, fd, 3n << 40n);
    expect(addr).toBeGreaterThan(0n);
    m.libc.pwrite(fd, new Uint8Array(16), 3n << 40n);
    const raw = new Uint8Array(4);
    m.kernel.mem.readPhys(vdev.pdev.resource(3).start + 12n, raw);
    expect(raw[0]).toBe(1);
  });
});

describe("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO (cdev form)", () => {
  it("ENOSPC with the count, then devids: an unbound opener and an unopened peer are NOT_OWNED", () => {
    const m = machine();
    const { fd } = nic(m);
    m.mod.probe(m.bus.addDevice(GPU));
    const hdr = vfio_pci_hot_reset_info.encode({ argsz: 12 });
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hdr)).toBe(-1);
    expect(m.libc.errno).toBe(ENOSPC);
    expect(vfio_pci_hot_reset_info.decode(hdr)).toEqual({ argsz: 12, flags: 0, count: 2 });
    const full = new Uint8Array(12 + 2 * 8);
    vfio_pci_hot_reset_info.encode({ argsz: full.length }, full);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, full)).toBe(0);
    const info = decodeHotResetInfo(full);
    // Neither function is bound to an iommufd, and each is alone in its iommu group, so
    // vfio_iommufd_get_dev_id answers -ENODEV for both: NOT_OWNED, and DEV_ID_OWNED cleared.
    expect(info.flags).toBe(VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
    expect(info.devices.map((d) => d.devid)).toEqual([
      VFIO_PCI_DEVID_NOT_OWNED,
      VFIO_PCI_DEVID_NOT_OWNED,
    ]);
    expect(info.devices.map((d) => [d.bus, d.devfn])).toEqual([
      [1, 0],
      [1, 8],
    ]);
    expect(
      m.libc.ioctl(
        fd,
        VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
        vfio_pci_hot_reset_info.encode({ argsz: 11 }),
      ),
    ).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    m.bus.busResetPossible = false;
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, full)).toBe(-1);
    expect(m.libc.errno).toBe(ENODEV);
  });
});
