/**
 * The VMM bring-up ops of a fuzzed program: eventfds (create, read, write, close), a sealable
 * memfd with the calls its seals govern (F_ADD_SEALS, ftruncate, write, shared mmap), the
 * device's interrupts (VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_SET_IRQS on INTx / MSI / MSI-X /
 * ERR / REQ with eventfds, masks, unmasks and disables), interrupts raised by the device
 * (pciIntxAssert, pciMsiRaise), and VFIO_DEVICE_GET_PCI_HOT_RESET_INFO / PCI_HOT_RESET.
 *
 * Eventfd counts are checked: a write adds its value (unless a virqfd waiting on the eventfd
 * consumed it), a read returns the whole count (1 for EFD_SEMAPHORE) and EAGAIN only at 0, and
 * a raised interrupt signals at most one eventfd, once: the trigger of the vector raised.
 * After teardown no eventfd context may be referenced (`checkReleased`).
 */
import fc from "fast-check";
import {
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  type EventfdCtx,
  F_ADD_SEALS,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import {
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_INTX_IRQ_INDEX,
  type VfioPciCoreDevice,
  encodeIrqSet,
  encodePciHotReset,
  pciIntxAssert,
  pciIntxDeassert,
  pciMsiRaise,
  vfio_irq_info,
  vfio_pci_hot_reset_info,
} from "@x/vfio-pci";
import type { SyscallName } from "./errnos.js";
import { type Machine, NUM_DEVICES, PAGE } from "./machine.js";
import { plainRecord } from "./plain-record.js";

export type VmmOp =
  | { readonly k: "eventfdCreate"; readonly semaphore: boolean }
  | { readonly k: "eventfdWrite"; readonly efd: number; readonly value: bigint }
  | { readonly k: "eventfdRead"; readonly efd: number }
  | { readonly k: "eventfdClose"; readonly efd: number }
  | { readonly k: "sealedCreate" }
  | { readonly k: "addSeals"; readonly mfd: number; readonly seals: number }
  | { readonly k: "sealedTruncate"; readonly mfd: number; readonly pages: number }
  | { readonly k: "sealedWrite"; readonly mfd: number; readonly page: number }
  | { readonly k: "sealedMmap"; readonly mfd: number; readonly writable: boolean }
  | { readonly k: "irqInfo"; readonly dev: number; readonly index: number }
  | {
      readonly k: "setIrqs";
      readonly dev: number;
      readonly index: number;
      readonly action: "trigger" | "mask" | "unmask" | "disable" | "unmaskFd";
      readonly start: number;
      readonly count: number;
      /** Eventfd per vector (index into the program's eventfds), or -1 to de-assign. */
      readonly efds: readonly number[];
    }
  | { readonly k: "raise"; readonly dev: number; readonly vector: number | null }
  | { readonly k: "hotResetInfo"; readonly dev: number; readonly room: number }
  | { readonly k: "hotReset"; readonly dev: number; readonly count: number };

/** Pages of a sealable memfd when created. */
const SEALED_PAGES = 4;
const IRQ_INDEXES = 6; // VFIO_PCI_NUM_IRQS and one past it

const dev = fc.nat({ max: NUM_DEVICES - 1 });
const idx = fc.nat({ max: 7 });
const sealBits = [F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE];

/** The VMM bring-up ops, weighted for `opArb`. */
export const vmmOpArbs: ReadonlyArray<fc.WeightedArbitrary<VmmOp>> = [
  {
    weight: 2,
    arbitrary: plainRecord({ k: fc.constant("eventfdCreate" as const), semaphore: fc.boolean() }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("eventfdWrite" as const),
      efd: idx,
      value: fc.constantFrom(1n, 3n, 0xffff_ffff_ffff_fffen, 0xffff_ffff_ffff_ffffn),
    }),
  },
  { weight: 2, arbitrary: plainRecord({ k: fc.constant("eventfdRead" as const), efd: idx }) },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("eventfdClose" as const), efd: idx }) },
  { weight: 1, arbitrary: fc.constant({ k: "sealedCreate" } as const) },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("addSeals" as const),
      mfd: idx,
      seals: fc.subarray(sealBits, { minLength: 1 }).map((bits) => bits.reduce((a, b) => a | b, 0)),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("sealedTruncate" as const),
      mfd: idx,
      pages: fc.nat({ max: 2 * SEALED_PAGES }),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("sealedWrite" as const),
      mfd: idx,
      page: fc.nat({ max: 2 * SEALED_PAGES }),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("sealedMmap" as const),
      mfd: idx,
      writable: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("irqInfo" as const),
      dev,
      index: fc.nat({ max: IRQ_INDEXES - 1 }),
    }),
  },
  {
    weight: 4,
    arbitrary: plainRecord({
      k: fc.constant("setIrqs" as const),
      dev,
      index: fc.nat({ max: IRQ_INDEXES - 1 }),
      action: fc.constantFrom("trigger", "trigger", "mask", "unmask", "disable", "unmaskFd"),
      start: fc.nat({ max: 3 }),
      count: fc.nat({ max: 3 }),
      efds: fc.array(fc.integer({ min: -1, max: 7 }), { minLength: 3, maxLength: 3 }),
    }),
  },
  {
    weight: 3,
    arbitrary: plainRecord({
      k: fc.constant("raise" as const),
      dev,
      vector: fc.option(fc.nat({ max: 4 }), { nil: null }),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("hotResetInfo" as const),
      dev,
      room: fc.nat({ max: NUM_DEVICES }),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({ k: fc.constant("hotReset" as const), dev, count: fc.nat({ max: 1 }) }),
  },
];

/** What a VMM op needs from the runner: the machine, device fds and errno checking. */
export interface VmmOpHost {
  readonly machine: Machine;
  deviceFd(i: number): number;
  /** A libc result checked against `call`'s row: 0, the errno, or SKIPPED. */
  sys(call: SyscallName, op: VmmOp, ret: number): number;
}

interface Eventfd {
  readonly fd: number;
  readonly ctx: EventfdCtx;
  readonly semaphore: boolean;
}

const SKIP = -1;
const EFD_MAX = 0xffff_ffff_ffff_fffen;

function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

/** A program's eventfds, sealable memfds and their mappings, and the ops over them. */
export class VmmOps {
  private readonly efds: Eventfd[] = [];
  /** Every eventfd context the program created, for the release check. */
  private readonly created: EventfdCtx[] = [];
  private readonly memfds: number[] = [];
  private readonly maps: Array<{ va: bigint; len: bigint }> = [];

  constructor(private readonly host: VmmOpHost) {}

  /** Sealable memfd `i` of the program, or -1. */
  memfd(i: number): number {
    return this.memfds.length ? this.memfds[i % this.memfds.length]! : -1;
  }

  step(op: VmmOp): number {
    const machine = this.host.machine;
    const libc = machine.libc;
    switch (op.k) {
      case "eventfdCreate": {
        const fd = libc.eventfd(0, EFD_NONBLOCK | (op.semaphore ? EFD_SEMAPHORE : 0));
        if (fd >= 0) {
          const ctx = libc.process.files.lookup(fd).priv as EventfdCtx;
          this.efds.push({ fd, ctx, semaphore: op.semaphore });
          this.created.push(ctx);
        }
        return this.host.sys("EVENTFD", op, fd);
      }
      case "eventfdWrite": {
        const e = this.efd(op.efd);
        if (!e) return SKIP;
        const before = e.ctx.count;
        const ret = libc.write(e.fd, u64(op.value));
        const added = e.ctx.count - before;
        // ULLONG_MAX is EINVAL; a sum past the maximum would block (EAGAIN, non-blocking).
        const fits = op.value !== 0xffff_ffff_ffff_ffffn && before + op.value <= EFD_MAX;
        if (ret >= 0 !== fits || (ret < 0 && added !== 0n))
          throw new Error(`eventfd write of ${op.value} onto ${before}: ${ret}`);
        if (ret >= 0 && added !== op.value && !e.ctx.waiters.size)
          throw new Error(`eventfd write of ${op.value} added ${added}`);
        return this.host.sys("EVENTFD_WRITE", op, ret);
      }
      case "eventfdRead": {
        const e = this.efd(op.efd);
        if (!e) return SKIP;
        const count = e.ctx.count;
        const buf = new Uint8Array(8);
        const ret = libc.read(e.fd, buf);
        const got = ret >= 0 ? new DataView(buf.buffer).getBigUint64(0, true) : 0n;
        const want = e.semaphore && count ? 1n : count;
        if (got !== want || e.ctx.count !== count - got)
          throw new Error(`eventfd read ${got} of a count of ${count}`);
        return this.host.sys("EVENTFD_READ", op, ret);
      }
      case "eventfdClose": {
        if (!this.efds.length) return SKIP;
        const [e] = this.efds.splice(op.efd % this.efds.length, 1);
        return this.host.sys("CLOSE", op, libc.close(e!.fd));
      }
      case "sealedCreate": {
        const fd = libc.memfdCreate("sealed", MFD_ALLOW_SEALING);
        if (fd < 0) return this.host.sys("MEMFD_CREATE", op, fd);
        this.memfds.push(fd);
        return this.host.sys("FTRUNCATE", op, libc.ftruncate(fd, BigInt(SEALED_PAGES) * PAGE));
      }
      case "addSeals": {
        const fd = this.memfd(op.mfd);
        if (fd < 0) return SKIP;
        return this.host.sys("FCNTL_SEALS", op, libc.fcntl(fd, F_ADD_SEALS, op.seals));
      }
      case "sealedTruncate": {
        const fd = this.memfd(op.mfd);
        if (fd < 0) return SKIP;
        return this.host.sys("FTRUNCATE", op, libc.ftruncate(fd, BigInt(op.pages) * PAGE));
      }
      case "sealedWrite": {
        const fd = this.memfd(op.mfd);
        if (fd < 0) return SKIP;
        const ret = libc.pwrite(fd, new Uint8Array(64).fill(0x5a), BigInt(op.page) * PAGE);
        return this.host.sys("WRITE", op, ret);
      }
      case "sealedMmap": {
        const fd = this.memfd(op.mfd);
        if (fd < 0) return SKIP;
        const len = BigInt(SEALED_PAGES) * PAGE;
        const prot = PROT_READ | (op.writable ? PROT_WRITE : 0);
        const va = libc.mmap(0n, len, prot, MAP_SHARED, fd, 0);
        if (va >= 0n) this.maps.push({ va, len });
        return this.host.sys("MMAP", op, va >= 0n ? 0 : -1);
      }
      case "irqInfo": {
        const arg = vfio_irq_info.encode({ argsz: vfio_irq_info.size, index: op.index });
        return this.ioctl(
          "VFIO_DEVICE_GET_IRQ_INFO",
          op,
          this.host.deviceFd(op.dev),
          VFIO_DEVICE_GET_IRQ_INFO,
          arg,
        );
      }
      case "setIrqs":
        if (op.action === "unmaskFd" && this.aliasesTrigger(machine.devices[op.dev]!, op))
          return SKIP;
        return this.ioctl(
          "VFIO_DEVICE_SET_IRQS",
          op,
          this.host.deviceFd(op.dev),
          VFIO_DEVICE_SET_IRQS,
          this.irqSet(op),
        );
      case "raise":
        return this.raise(machine.devices[op.dev]!, op.vector);
      case "hotResetInfo": {
        const arg = new Uint8Array(vfio_pci_hot_reset_info.size + 8 * op.room);
        vfio_pci_hot_reset_info.encode({ argsz: arg.length }, arg);
        return this.ioctl(
          "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
          op,
          this.host.deviceFd(op.dev),
          VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
          arg,
        );
      }
      case "hotReset": {
        // The cdev form passes no group fds; a count is refused (EINVAL).
        const { memfd } = this.host.machine;
        const fds = Array.from({ length: op.count }, (_, i) => (i === 0 ? memfd : 0));
        const arg = encodePciHotReset({ fds });
        return this.ioctl(
          "VFIO_DEVICE_PCI_HOT_RESET",
          op,
          this.host.deviceFd(op.dev),
          VFIO_DEVICE_PCI_HOT_RESET,
          arg,
        );
      }
    }
  }

  /** Close the eventfds and memfds, unmap the memfd mappings. */
  teardown(): void {
    const libc = this.host.machine.libc;
    for (const m of this.maps.splice(0)) libc.munmap(m.va, m.len);
    for (const e of this.efds.splice(0)) libc.close(e.fd);
    for (const fd of this.memfds.splice(0)) libc.close(fd);
  }

  /** The process died: its exit closed and unmapped all of these already. */
  forget(): void {
    this.maps.length = 0;
    this.efds.length = 0;
    this.memfds.length = 0;
  }

  /** After every descriptor is closed: no eventfd context may still be referenced. */
  checkReleased(): void {
    const held = this.created.filter((c) => c.refcount !== 0).length;
    if (held) throw new Error(`[leak] ${held} eventfd contexts referenced after teardown`);
  }

  /**
   * Decision: the INTx unmask (resample) eventfd is never the trigger eventfd itself. The model
   * runs the virqfd's thread (vfio_send_intx_eventfd) inside the eventfd wake-up, where the
   * kernel schedules it as work; with one eventfd for both, an asserted line would recurse
   * without end in the model. QEMU always passes two eventfds.
   */
  private aliasesTrigger(vdev: VfioPciCoreDevice, op: VmmOp & { k: "setIrqs" }): boolean {
    const trigger = vdev.irqCtx.get(VFIO_PCI_INTX_IRQ_INDEX)?.trigger;
    return op.efds.slice(0, op.count).some((i) => i >= 0 && this.efd(i)?.ctx === trigger);
  }

  private efd(i: number): Eventfd | undefined {
    return this.efds.length ? this.efds[i % this.efds.length] : undefined;
  }

  private ioctl(call: SyscallName, op: VmmOp, fd: number, cmd: number, arg: Uint8Array): number {
    if (fd < 0) return SKIP;
    return this.host.sys(call, op, this.host.machine.libc.ioctl(fd, cmd, arg));
  }

  private irqSet(op: VmmOp & { k: "setIrqs" }): Uint8Array {
    const fds = op.efds.slice(0, op.count).map((i) => (i < 0 ? -1 : (this.efd(i)?.fd ?? -1)));
    switch (op.action) {
      case "disable":
        return encodeIrqSet({
          flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
          index: op.index,
          start: op.start,
          count: op.count,
        });
      case "trigger":
        return encodeIrqSet({
          flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
          index: op.index,
          start: op.start,
          count: op.count,
          data: fds,
        });
      case "unmaskFd":
        return encodeIrqSet({
          flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK,
          index: op.index,
          start: op.start,
          count: op.count,
          data: fds,
        });
      default:
        return encodeIrqSet({
          flags:
            (op.count ? VFIO_IRQ_SET_DATA_BOOL : VFIO_IRQ_SET_DATA_NONE) |
            (op.action === "mask" ? VFIO_IRQ_SET_ACTION_MASK : VFIO_IRQ_SET_ACTION_UNMASK),
          index: op.index,
          start: op.start,
          count: op.count,
          data: op.efds.slice(0, op.count).map((i) => (i >= 0 ? 1 : 0)),
        });
    }
  }

  /**
   * The device raises INTx (asserted, then deasserted) or MSI / MSI-X vector `vector`; the
   * signals it produced are credited to the program's eventfds, and must be at most one, on
   * the trigger of the raised vector.
   */
  private raise(vdev: VfioPciCoreDevice, vector: number | null): number {
    const before = this.efds.map((e) => e.ctx.count);
    const trigger = vdev.irqCtx.get(vector ?? VFIO_PCI_INTX_IRQ_INDEX)?.trigger;
    if (vector === null) {
      pciIntxAssert(vdev.pdev);
      pciIntxDeassert(vdev.pdev);
    } else pciMsiRaise(vdev.pdev, vector);
    let signals = 0;
    this.efds.forEach((e, i) => {
      const delta = e.ctx.count - before[i]!;
      if (delta === 0n) return;
      if (e.ctx !== trigger || delta !== 1n)
        throw new Error(
          `interrupt ${vector ?? "INTx"} of ${vdev.name} signalled fd ${e.fd} by ${delta}`,
        );
      signals++;
    });
    if (signals > 1) throw new Error(`one interrupt signalled ${signals} eventfds`);
    return 0;
  }
}
