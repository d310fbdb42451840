import {
  EAGAIN,
  EFAULT,
  EFD_NONBLOCK,
  EINVAL,
  EIO,
  ENOMEM,
  ENOSPC,
  ENOTTY,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  eventfdCtxFdget,
  isKernelError,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import type { PciDevSpec } from "../src/pci.js";
import {
  PCI_BASE_ADDRESS_0,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_D0,
  PCI_D3hot,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
} from "../src/pci-regs.js";
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
  VFIO_DEVICE_FEATURE_LOW_POWER_EXIT,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_PCI_DEVID_NOT_OWNED,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  decodeHotResetInfo,
  vfio_irq_info,
  vfio_pci_hot_reset_info,
} from "../src/vfio-uapi.js";
import { vfioDeviceFromFile } from "../src/vfio-main.js";
import {
  GPU,
  type Machine,
  MiB,
  PAGE,
  TestImporter,
  catchErr,
  cfgRead,
  cfgWrite,
  createDmaBuf,
  getBuf,
  gpu,
  machine,
  openGranted,
} from "./helpers.js";

// drivers/vfio/pci/vfio_pci_core.c and vfio_pci_rdwr.c, beyond the revoke and uapi tests.

const BAR = (i: number) => BigInt(i) << 40n;

/** Two functions with no reset method of their own (no PM, no FLR, not alone on the bus). */
const NO_RESET: PciDevSpec = {
  vendor: 0x1af4,
  device: 0x1000,
  bars: [{ type: "mem32", size: MiB }],
};

/** The table of 4 MSI-X vectors at 0x2000 of BAR2 (64 bytes), the PBA right after it. */
const MSIX: PciDevSpec = { ...GPU, msix: { vectors: 4, tableBar: 2, tableOffset: 0x2000 } };

function feature(
  m: Machine,
  fd: number,
  flags: number,
  payload: Uint8Array = new Uint8Array(0),
): number {
  const b = new Uint8Array(8 + payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, b.length, true);
  v.setUint32(4, flags, true);
  b.set(payload, 8);
  return m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b);
}

function wakeEntry(fd: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setInt32(0, fd, true);
  return b;
}

function regionInfo(m: Machine, fd: number, index: number) {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setUint32(0, 32, true);
  v.setUint32(8, index, true);
  const ret = m.libc.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, b);
  return { ret, flags: v.getUint32(4, true), size: v.getBigUint64(16, true) };
}

/** The names (and reset methods) of the pci:* records `fn` emits. */
function pciEvents(m: Machine, fn: () => unknown): string[] {
  const { records } = m.kernel.trace.record(fn);
  return records
    .filter((r) => r.name.startsWith("pci:"))
    .map((r) =>
      r.name === "pci:reset"
        ? `reset ${(r.data as { method: string }).method}`
        : `power ${(r.data as { from: number }).from}->${(r.data as { to: number }).to}`,
    );
}

/** Bus resets (pci_reset_bus) while `fn` runs. */
function busResets(m: Machine, fn: () => unknown): number {
  return pciEvents(m, fn).filter((e) => e === "reset bus").length;
}

function phys(m: Machine, addr: bigint, len: number): Uint8Array {
  const b = new Uint8Array(len);
  m.kernel.mem.readPhys(addr, b);
  return b;
}

describe("vfio_pci_bar_rw: the MSI-X table is not reachable through the device fd", () => {
  it("a write over the table writes the bytes around it and drops the table's; a read sees 0xff there", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSIX);
    const base = vdev.pdev.resource(2).start;
    const X = 0x2000n;
    const table = phys(m, base + X, 0x40);
    const pat = Uint8Array.from({ length: 0x100 }, (_, i) => (i * 7 + 1) & 0xff);
    expect(m.libc.pwrite(fd, pat, BAR(2) + X - 0x80n)).toBe(0x100);
    expect(phys(m, base + X - 0x80n, 0x80)).toEqual(pat.subarray(0, 0x80));
    expect(phys(m, base + X, 0x40)).toEqual(table);
    expect(phys(m, base + X + 0x40n, 0x40)).toEqual(pat.subarray(0xc0));
    const back = new Uint8Array(0x100);
    expect(m.libc.pread(fd, back, BAR(2) + X - 0x80n)).toBe(0x100);
    expect(back.subarray(0, 0x80)).toEqual(pat.subarray(0, 0x80));
    expect(back.subarray(0x80, 0xc0).every((b) => b === 0xff)).toBe(true);
    expect(back.subarray(0xc0)).toEqual(pat.subarray(0xc0));
  });

  it("accesses before, inside, from inside past, and after the table", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSIX);
    const base = vdev.pdev.resource(2).start;
    const X = 0x2000n;
    const table = phys(m, base + X, 0x40);
    const rd = (off: bigint, n: number) => {
      const b = new Uint8Array(n);
      expect(m.libc.pread(fd, b, BAR(2) + off)).toBe(n);
      return b;
    };
    // Ends right at the table: all written, all read back.
    const head = new Uint8Array(16).fill(0x11);
    expect(m.libc.pwrite(fd, head, BAR(2) + X - 16n)).toBe(16);
    expect(phys(m, base + X - 16n, 16)).toEqual(head);
    expect(rd(X - 16n, 16)).toEqual(head);
    // Wholly inside: the write is dropped (and counted as done), the read is all ones.
    expect(m.libc.pwrite(fd, new Uint8Array(16).fill(0x22), BAR(2) + X + 8n)).toBe(16);
    expect(phys(m, base + X, 0x40)).toEqual(table);
    expect(rd(X + 8n, 16).every((b) => b === 0xff)).toBe(true);
    // From inside the table past its end: only the part after it is written and read.
    const tail = new Uint8Array(0x30).fill(0x33);
    expect(m.libc.pwrite(fd, tail, BAR(2) + X + 0x20n)).toBe(0x30);
    expect(phys(m, base + X, 0x40)).toEqual(table);
    expect(phys(m, base + X + 0x40n, 0x10)).toEqual(new Uint8Array(0x10).fill(0x33));
    const got = rd(X + 0x20n, 0x30);
    expect(got.subarray(0, 0x20).every((b) => b === 0xff)).toBe(true);
    expect(got.subarray(0x20)).toEqual(new Uint8Array(0x10).fill(0x33));
    // After the table.
    const after = new Uint8Array(8).fill(0x44);
    expect(m.libc.pwrite(fd, after, BAR(2) + X + 0x100n)).toBe(8);
    expect(rd(X + 0x100n, 8)).toEqual(after);
  });

  it("other BARs pass every byte, the table's offset and the first bytes included", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, MSIX);
    const base = vdev.pdev.resource(0).start;
    for (const off of [0n, 4n, 0x1ff0n]) {
      const pat = Uint8Array.from({ length: 0x80 }, (_, i) => (i + Number(off)) & 0xff);
      expect(m.libc.pwrite(fd, pat, BAR(0) + off)).toBe(0x80);
      expect(phys(m, base + off, 0x80)).toEqual(pat);
      const back = new Uint8Array(0x80);
      expect(m.libc.pread(fd, back, BAR(0) + off)).toBe(0x80);
      expect(back).toEqual(pat);
    }
  });

  it("the read handler returns count bytes (the end of the BAR cuts it); I/O BAR bytes are stored", () => {
    const m = machine();
    const { fd } = gpu(m);
    const file = m.libc.process.files.lookup(fd);
    const read = (pos: bigint, n: number) =>
      m.kernel.runAs(m.libc.task, () => vfioDeviceFromFile(file).device.read(pos, n));
    expect(read(BAR(0) + 0x100n, 4).length).toBe(4);
    expect(read(BAR(0) + 16n * MiB - 2n, 4).length).toBe(2);
    const io = new Uint8Array([9, 8, 7, 6]);
    expect(m.libc.pwrite(fd, io, BAR(3) + 4n)).toBe(4);
    expect(read(BAR(3) + 4n, 4)).toEqual(io);
    expect(read(BAR(3) + 60n, 8).length).toBe(4);
  });
});

describe("vfio_pci_core_read / _write: a zero count is 0 before any check", () => {
  it("past config space, past the last region, with memory disabled: 0 bytes, no error", () => {
    const m = machine();
    const { fd } = gpu(m);
    const none = new Uint8Array(0);
    expect(m.libc.pread(fd, none, BAR(7) + 4096n)).toBe(0);
    expect(m.libc.pread(fd, none, BAR(9))).toBe(0);
    expect(m.libc.pwrite(fd, none, BAR(7) + 4096n)).toBe(0);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(m.libc.pread(fd, none, BAR(0))).toBe(0);
    expect(m.libc.pwrite(fd, none, BAR(0))).toBe(0);
    // One byte is checked: EFAULT past config space (vfio_pci_config_rw), EIO with memory off.
    expect(m.libc.pread(fd, new Uint8Array(1), BAR(7) + 4096n)).toBe(-1);
    expect(m.libc.errno).toBe(EFAULT);
    expect(m.libc.pwrite(fd, new Uint8Array(1), BAR(0))).toBe(-1);
    expect(m.libc.errno).toBe(EIO);
  });
});

describe("vfio_pci_rw: index checks before the runtime resume", () => {
  it("a region past the last is EINVAL without waking a suspended function", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const efd = m.libc.eventfd(0, EFD_NONBLOCK);
    const flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP;
    expect(feature(m, fd, flags, wakeEntry(efd))).toBe(0);
    expect(vdev.pdev.powerState).toBe(PCI_D3hot);
    for (const index of [9, 10]) {
      expect(m.libc.pread(fd, new Uint8Array(4), BAR(index))).toBe(-1);
      expect(m.libc.errno).toBe(EINVAL);
    }
    expect(m.libc.read(efd, new Uint8Array(8))).toBe(-1);
    expect([vdev.pmRuntimeEngaged, vdev.pdev.powerState]).toEqual([true, PCI_D3hot]);
  });
});

describe("vfio_pci_set_power_state: pm_save around D3hot for a NoSoftRst- function", () => {
  it("a second D3hot write saves nothing and stays in D3hot; D0 restores the first save", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const p = vdev.pdev;
    const pm = p.pmCap + PCI_PM_CTRL;
    const cmd0 = p.command;
    const bar0 = p.readConfig(PCI_BASE_ADDRESS_0, 4);
    expect(cmd0 & PCI_COMMAND_MEMORY).toBeTruthy();
    cfgWrite(m, fd, pm, 2, PCI_D3hot);
    cfgWrite(m, fd, PCI_COMMAND, 2, cmd0 | PCI_COMMAND_MASTER);
    expect(p.command).toBe(cmd0 | PCI_COMMAND_MASTER);
    cfgWrite(m, fd, pm, 2, PCI_D3hot);
    expect(p.powerState).toBe(PCI_D3hot);
    expect(pciEvents(m, () => cfgWrite(m, fd, pm, 2, PCI_D0))).toEqual(["power 3->0"]);
    expect(p.command).toBe(cmd0);
    expect(p.readConfig(PCI_BASE_ADDRESS_0, 4)).toBe(bar0);
  });

  it("a config FLR in D3hot leaves the power state to the reset; a D0 write in D0 restores nothing", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const p = vdev.pdev;
    const pm = p.pmCap + PCI_PM_CTRL;
    cfgWrite(m, fd, pm, 2, PCI_D3hot);
    // vfio_exp_config_write: pci_try_reset_function without vfio_pci_set_power_state.
    expect(
      pciEvents(m, () => cfgWrite(m, fd, p.pcieCap + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR)),
    ).toEqual(["reset flr"]);
    expect(p.powerState).toBe(PCI_D0);
    cfgWrite(m, fd, PCI_COMMAND, 2, p.command | PCI_COMMAND_MASTER);
    cfgWrite(m, fd, pm, 2, PCI_D0);
    expect(p.busMaster).toBe(true);
  });

  it("VFIO_DEVICE_RESET in D3hot sets D0 through vfio first (vfio_pci_ioctl_reset)", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    cfgWrite(m, fd, vdev.pdev.pmCap + PCI_PM_CTRL, 2, PCI_D3hot);
    expect(pciEvents(m, () => m.libc.ioctl(fd, VFIO_DEVICE_RESET, 0))).toEqual([
      "power 3->0",
      "reset flr",
    ]);
  });

  it("a PMCSR write of D0 in D0 zaps and revokes nothing (vfio_lock_and_set_power_state)", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const imp = new TestImporter(
      m.kernel,
      getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }])),
    );
    const zaps = vdev.zapCount;
    cfgWrite(m, fd, vdev.pdev.pmCap + PCI_PM_CTRL, 2, PCI_D0);
    expect([vdev.zapCount, imp.notifications]).toEqual([zaps, 0]);
  });

  it("a PMCSR write the PCI core refuses leaves the state and the revoke as they were", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const pm = vdev.pdev.pmCap + PCI_PM_CTRL;
    const imp = new TestImporter(
      m.kernel,
      getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }])),
    );
    // The function offers no D1 (pci_set_low_power_state: EIO); vfio ignores the error.
    expect(pciEvents(m, () => cfgWrite(m, fd, pm, 2, 1))).toEqual([]);
    expect(cfgRead(m, fd, pm, 2) & PCI_PM_CTRL_STATE_MASK).toBe(PCI_D0);
    cfgWrite(m, fd, pm, 2, PCI_D3hot);
    expect(imp.notifications).toBe(1);
    // D3hot -> D1 is EINVAL: still D3hot, memory still off, so the dma-buf stays revoked.
    expect(pciEvents(m, () => cfgWrite(m, fd, pm, 2, 1))).toEqual([]);
    expect(cfgRead(m, fd, pm, 2) & PCI_PM_CTRL_STATE_MASK).toBe(PCI_D3hot);
    expect(imp.notifications).toBe(1);
    expect(pciEvents(m, () => cfgWrite(m, fd, pm, 2, PCI_D0))).toEqual(["power 3->0"]);
    expect(imp.notifications).toBe(2);
  });

  it("VFIO_DEVICE_RESET returns pci_try_reset_function's EAGAIN and un-revokes", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const imp = new TestImporter(
      m.kernel,
      getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }])),
    );
    const other = m.kernel.newTask(m.libc.process);
    m.kernel.runAs(other, () => vdev.pdev.deviceLock.lock());
    expect(m.libc.ioctl(fd, VFIO_DEVICE_RESET, 0)).toBe(-1);
    expect(m.libc.errno).toBe(EAGAIN);
    expect(imp.notifications).toBe(2);
    m.kernel.runAs(other, () => vdev.pdev.deviceLock.unlock());
  });
});

describe("runtime PM (vfio_pci_core_runtime_resume, vfio_pci_core_pm_entry*)", () => {
  it("a runtime resume of a NoSoftRst- function restores its config; the wake is traced", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const p = vdev.pdev;
    const cmd0 = p.command;
    const bar0 = p.readConfig(PCI_BASE_ADDRESS_0, 4);
    const set = VFIO_DEVICE_FEATURE_SET;
    expect(feature(m, fd, set | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(0);
    expect(p.powerState).toBe(PCI_D3hot);
    expect(feature(m, fd, set | VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)).toBe(0);
    expect([p.powerState, p.command, p.readConfig(PCI_BASE_ADDRESS_0, 4)]).toEqual([
      PCI_D0,
      cmd0,
      bar0,
    ]);
    const efd = m.libc.eventfd(0, EFD_NONBLOCK);
    const flags = set | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP;
    expect(feature(m, fd, flags, wakeEntry(efd))).toBe(0);
    const { records } = m.kernel.trace.record(() => vdev.pmWake());
    expect(records.filter((r) => r.name === "vfio-pci:wake").map((r) => r.data)).toEqual([
      { dev: p.name },
    ]);
  });

  it("PROBE of the low-power features enters and exits nothing", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const probe = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET;
    const efd = m.libc.eventfd(0, EFD_NONBLOCK);
    expect(feature(m, fd, probe | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(0);
    expect(
      feature(m, fd, probe | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, wakeEntry(efd)),
    ).toBe(0);
    expect([vdev.pmRuntimeEngaged, vdev.pmWakeEventfdCtx, vdev.pdev.powerState]).toEqual([
      false,
      undefined,
      PCI_D0,
    ]);
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(0);
    expect(feature(m, fd, probe | VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)).toBe(0);
    expect([vdev.pmRuntimeEngaged, vdev.pdev.powerState]).toEqual([true, PCI_D3hot]);
  });

  it("an entry refused because low power is engaged gives the eventfd reference back", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const efd = m.libc.eventfd(0, EFD_NONBLOCK);
    const ctx = m.kernel.runAs(m.libc.task, () => eventfdCtxFdget(m.libc.process.files, efd));
    const refs = ctx.refcount;
    expect(feature(m, fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)).toBe(0);
    const flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP;
    expect(feature(m, fd, flags, wakeEntry(efd))).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect([ctx.refcount, vdev.pmWakeEventfdCtx]).toEqual([refs, undefined]);
    ctx.put();
  });

  it("descriptor 0 is a valid wake-up eventfd (only a negative one is EINVAL)", () => {
    const m = machine();
    const efd = m.libc.eventfd(0, EFD_NONBLOCK);
    expect(efd).toBe(0);
    const { vdev, fd } = gpu(m);
    const flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP;
    expect(feature(m, fd, flags, wakeEntry(0))).toBe(0);
    expect(vdev.pmRuntimeEngaged).toBe(true);
  });
});

describe("vfio_pci_core_enable / vfio_pci_core_disable", () => {
  it("open with the device lock contended is EAGAIN and disables the function again", () => {
    const m = machine();
    const vdev = m.mod.probe(m.bus.addDevice(GPU));
    const other = m.kernel.newTask(m.libc.process);
    m.kernel.runAs(other, () => vdev.pdev.deviceLock.lock());
    const err = catchErr(() => m.kernel.runAs(m.libc.task, () => vdev.openDevice()));
    expect(isKernelError(err, EAGAIN)).toBe(true);
    expect(vdev.pdev.enableCount).toBe(0);
    m.kernel.runAs(other, () => vdev.pdev.deviceLock.unlock());
  });

  it("with INTx masking, DisINTx left set by a previous user is cleared at open", () => {
    const m = machine();
    const vdev = m.mod.probe(m.bus.addDevice(GPU));
    vdev.pdev.writeConfig(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    openGranted(m, vdev);
    expect(vdev.pdev.command).toBe(PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
  });

  it("has_dyn_msix is false without MSI-X: its index is NORESIZE", () => {
    const m = machine();
    const { fd } = gpu(m);
    const buf = vfio_irq_info.encode({ argsz: 16, index: VFIO_PCI_MSIX_IRQ_INDEX });
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, buf)).toBe(0);
    expect(vfio_irq_info.decode(buf)).toMatchObject({
      flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
      count: 0,
    });
  });

  it("the default close order disables and resets before the dma-bufs become zombies", () => {
    const m = machine();
    const { fd } = gpu(m);
    const buf = getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }]));
    new TestImporter(m.kernel, buf);
    const { records } = m.kernel.trace.record(() => m.libc.close(fd));
    const seen = records
      .filter((r) => r.name === "pci:reset" || r.name === "vfio-pci:dmabuf")
      .map((r) => r.name);
    expect(seen).toEqual(["pci:reset", "vfio-pci:dmabuf"]);
  });

  it("a function reset refused at close (no method left) leaves needs_reset for the bus reset", () => {
    const m = machine();
    // Alone on its bus at open: the bus reset is its function reset, so reset_works.
    const a = m.mod.probe(m.bus.addDevice(NO_RESET));
    const fa = openGranted(m, a);
    expect(a.resetWorks).toBe(true);
    const b = m.mod.probe(m.bus.addDevice(NO_RESET));
    expect(pciEvents(m, () => m.libc.close(fa))).toEqual(["reset bus"]);
    expect([a.needsReset, b.needsReset]).toEqual([false, false]);
  });

  it("close with the device lock contended: no function reset, the bus reset fails, needs_reset stays", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const other = m.kernel.newTask(m.libc.process);
    m.kernel.runAs(other, () => vdev.pdev.deviceLock.lock());
    const resets = vdev.pdev.resetCount;
    expect(pciEvents(m, () => expect(m.libc.close(fd)).toBe(0))).toEqual([]);
    expect([vdev.pdev.resetCount, vdev.needsReset]).toEqual([resets, true]);
    m.kernel.runAs(other, () => vdev.pdev.deviceLock.unlock());
  });
});

describe("vfio_pci_dev_set_try_reset", () => {
  it("the bus is reset once no device of the set is open and one needs it", () => {
    const m = machine();
    const a = m.mod.probe(m.bus.addDevice(NO_RESET));
    const b = m.mod.probe(m.bus.addDevice(NO_RESET));
    const fa = openGranted(m, a);
    const fb = openGranted(m, b);
    expect([a.resetWorks, b.resetWorks]).toEqual([false, false]);
    expect(busResets(m, () => m.libc.close(fa))).toBe(0);
    expect([a.needsReset, b.needsReset]).toEqual([true, false]);
    expect(busResets(m, () => m.libc.close(fb))).toBe(1);
    expect([a.needsReset, b.needsReset]).toEqual([false, false]);
  });

  it("one device that needs it is enough; a device never opened does not", () => {
    const m = machine();
    const a = m.mod.probe(m.bus.addDevice(NO_RESET));
    m.mod.probe(m.bus.addDevice(NO_RESET));
    expect(busResets(m, () => m.libc.close(openGranted(m, a)))).toBe(1);
    const g = machine();
    const x = g.mod.probe(g.bus.addDevice(GPU));
    g.mod.probe(g.bus.addDevice(GPU));
    const fx = openGranted(g, x);
    // x resets by FLR at close: nothing needs the bus reset.
    expect(pciEvents(g, () => g.libc.close(fx))).toEqual(["reset flr"]);
  });

  it("no bus reset where none is possible; needs_reset stays", () => {
    const m = machine();
    const a = m.mod.probe(m.bus.addDevice(NO_RESET));
    m.mod.probe(m.bus.addDevice(NO_RESET));
    m.bus.busResetPossible = false;
    expect(busResets(m, () => m.libc.close(openGranted(m, a)))).toBe(0);
    expect(a.needsReset).toBe(true);
  });
});

describe("ioctls", () => {
  it("an unknown ioctl is ENOTTY", () => {
    const m = machine();
    const { fd } = gpu(m);
    expect(m.libc.ioctl(fd, (0x3b << 8) | 200, 0)).toBe(-1);
    expect(m.libc.errno).toBe(ENOTTY);
  });

  it("a memory BAR of exactly one page can be mapped", () => {
    const m = machine();
    const { vdev, fd } = gpu(m, { vendor: 1, device: 2, bars: [{ type: "mem32", size: PAGE }] });
    expect(regionInfo(m, fd, 0)).toEqual({
      ret: 0,
      flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP,
      size: PAGE,
    });
    expect(m.libc.mmap(0n, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n)).toBeGreaterThan(0n);
    expect(vdev.barVmas.size).toBe(1);
  });

  it("GET_REGION_INFO of the MSI-X BAR: a failed vfio_info_cap_add is ENOMEM", () => {
    const m = machine();
    const { fd } = gpu(m, MSIX);
    expect(regionInfo(m, fd, 2).ret).toBe(0);
    const fault = m.libc.task.fault;
    fault.arm(1_000_000);
    expect(regionInfo(m, fd, 2).ret).toBe(0);
    const nth = fault.sitesHit.indexOf("vfio_info_cap_add") + 1;
    fault.disarm();
    expect(nth).toBeGreaterThan(0);
    fault.arm(nth);
    const r = regionInfo(m, fd, 2);
    fault.disarm();
    expect([r.ret, m.libc.errno]).toEqual([-1, ENOMEM]);
  });

  it("GET_PCI_HOT_RESET_INFO: room for every device or ENOSPC; a function vfio does not drive is NOT_OWNED", () => {
    const m = machine();
    const { fd } = gpu(m);
    m.bus.addDevice({ vendor: 1, device: 9 });
    const info = new Uint8Array(12 + 8);
    vfio_pci_hot_reset_info.encode({ argsz: info.length }, info);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, info)).toBe(-1);
    expect(m.libc.errno).toBe(ENOSPC);
    expect(decodeHotResetInfo(info).count).toBe(2);
    const full = new Uint8Array(12 + 16);
    vfio_pci_hot_reset_info.encode({ argsz: full.length }, full);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, full)).toBe(0);
    const got = decodeHotResetInfo(full);
    expect(got.flags).toBe(VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
    expect(got.devices.map((d) => d.devid)).toEqual([
      VFIO_PCI_DEVID_NOT_OWNED,
      VFIO_PCI_DEVID_NOT_OWNED,
    ]);
    // kcalloc of the device array fails: ENOMEM.
    const fault = m.libc.task.fault;
    fault.arm(1_000_000);
    m.libc.ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, full);
    const nth = fault.sitesHit.indexOf("hot_reset_info devices") + 1;
    fault.disarm();
    expect(nth).toBeGreaterThan(0);
    fault.arm(nth);
    const ret = m.libc.ioctl(fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, full);
    fault.disarm();
    expect([ret, m.libc.errno]).toEqual([-1, ENOMEM]);
  });

  it("PCI_HOT_RESET: argsz below 12 is EINVAL; the undo walks back in reverse", () => {
    const m = machine();
    const a = gpu(m);
    const b = gpu(m);
    for (const d of [a, b])
      new TestImporter(
        m.kernel,
        getBuf(m, createDmaBuf(m, d.fd, 0, [{ offset: 0n, length: MiB }])),
      );
    const hr = new Uint8Array(12);
    new DataView(hr.buffer).setUint32(0, 11, true);
    expect(m.libc.ioctl(a.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    new DataView(hr.buffer).setUint32(0, 12, true);
    const { records } = m.kernel.trace.record(() =>
      expect(m.libc.ioctl(a.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(0),
    );
    const moves = records
      .filter((r) => r.name === "vfio-pci:dmabuf")
      .map((r) => {
        const d = r.data as { dev: string; state: string };
        return `${d.dev === a.vdev.name ? "a" : "b"} ${d.state}`;
      });
    expect(moves).toEqual(["a revoked", "b revoked", "b live", "a live"]);
  });

  it("a zap reaches every BAR mapping, both halves of a split one included", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const va = m.libc.mmap(0n, 3n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n);
    expect(m.libc.munmap(va + PAGE, PAGE)).toBe(0);
    expect(vdev.barVmas.size).toBe(2);
    const { records } = m.kernel.trace.record(() => cfgWrite(m, fd, PCI_COMMAND, 2, 0));
    expect(records.filter((r) => r.name === "vfio-pci:zap").map((r) => r.data)).toEqual([
      { dev: vdev.name, vmas: 2 },
    ]);
  });
});
