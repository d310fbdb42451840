/**
 * The VFIO core of drivers/vfio/vfio_main.c and device_cdev.c reached without an iommufd: the
 * SET_IRQS header checks, the access checks of an unbound cdev fd, the registration reference,
 * the cdev numbering.
 */
import { EINVAL, ENOMEM, KernelWarning, O_RDWR, isKernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_NUM_IRQS,
} from "../src/vfio-uapi.js";
import { vfioDeviceFromFile, vfioSetIrqsValidateAndPrepare } from "../src/vfio-main.js";
import { GPU, gpu, machine } from "./helpers.js";

const U32_MAX = 0xffffffff;
/** offsetofend(struct vfio_irq_set, count) */
const MINSZ = 20;
const TRIGGER = VFIO_IRQ_SET_ACTION_TRIGGER;

function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e, EINVAL)) return EINVAL;
    throw e;
  }
  return 0;
}

describe("vfio_set_irqs_validate_and_prepare", () => {
  const hdr = (
    o: Partial<{ argsz: number; flags: number; index: number; start: number; count: number }>,
  ) => ({
    argsz: MINSZ,
    flags: VFIO_IRQ_SET_DATA_NONE | TRIGGER,
    index: 0,
    start: 0,
    count: 1,
    ...o,
  });
  const check = (h: ReturnType<typeof hdr>, max = 4) =>
    vfioSetIrqsValidateAndPrepare(h, max, VFIO_PCI_NUM_IRQS);

  it("the header: argsz, index, the u32 wrap of start + count, unknown flags", () => {
    expect(check(hdr({}))).toBe(0);
    expect(errnoOf(() => check(hdr({ argsz: MINSZ - 1 })))).toBe(EINVAL);
    expect(check(hdr({ index: VFIO_PCI_NUM_IRQS - 1 }))).toBe(0);
    expect(errnoOf(() => check(hdr({ index: VFIO_PCI_NUM_IRQS })))).toBe(EINVAL);
    // count >= U32_MAX - start is refused by itself, before the range test against the IRQ
    // count (here as large as u32 allows, so only the wrap test can refuse it).
    expect(errnoOf(() => check(hdr({ start: 1, count: U32_MAX - 1 }), U32_MAX))).toBe(EINVAL);
    expect(check(hdr({ start: 1, count: U32_MAX - 2 }), U32_MAX)).toBe(0);
    expect(errnoOf(() => check(hdr({ start: 0, count: U32_MAX }), U32_MAX + 1))).toBe(EINVAL);
    expect(errnoOf(() => check(hdr({ flags: VFIO_IRQ_SET_DATA_NONE | TRIGGER | (1 << 10) })))).toBe(
      EINVAL,
    );
  });

  it("the range: start inside the index's IRQs, start + count not past them", () => {
    expect(errnoOf(() => check(hdr({ start: 4, count: 0 })))).toBe(EINVAL);
    expect(check(hdr({ start: 3, count: 1 }))).toBe(0);
    expect(errnoOf(() => check(hdr({ start: 3, count: 2 })))).toBe(EINVAL);
    expect(errnoOf(() => check(hdr({ start: 0, count: 5 })))).toBe(EINVAL);
  });

  it("exactly one data type; the data array's size, which argsz must cover", () => {
    expect(check(hdr({ flags: VFIO_IRQ_SET_DATA_NONE | TRIGGER, count: 3 }))).toBe(0);
    expect(
      check(hdr({ flags: VFIO_IRQ_SET_DATA_BOOL | TRIGGER, count: 3, argsz: MINSZ + 3 })),
    ).toBe(3);
    expect(
      check(hdr({ flags: VFIO_IRQ_SET_DATA_EVENTFD | TRIGGER, count: 3, argsz: MINSZ + 12 })),
    ).toBe(12);
    expect(
      errnoOf(() =>
        check(hdr({ flags: VFIO_IRQ_SET_DATA_EVENTFD | TRIGGER, count: 3, argsz: MINSZ + 11 })),
      ),
    ).toBe(EINVAL);
    const both = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD | TRIGGER;
    expect(errnoOf(() => check(hdr({ flags: both, argsz: MINSZ + 8 })))).toBe(EINVAL);
  });
});

describe("the cdev before BIND and the registration (vfio_device_fops, vfio_register_group_dev)", () => {
  it("read, write and mmap of a fd that has not bound: EINVAL; closing it leaves the device open", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const other = m.libc.open(vdev.cdevPath!, O_RDWR);
    expect(m.libc.pread(other, new Uint8Array(4), 7n << 40n)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect(m.libc.pwrite(other, new Uint8Array(4), 7n << 40n)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect(m.libc.mmap(0n, 4096n, 3, 1, other, 0)).toBe(-1n);
    expect(m.libc.errno).toBe(EINVAL);
    m.libc.close(other);
    expect(vdev.openCount).toBe(1);
    expect(m.libc.pread(fd, new Uint8Array(4), 7n << 40n)).toBe(4);
  });

  it("VFIO_DEVICE_FEATURE: argsz below the 8-byte header is EINVAL, also for a PROBE (vfio_ioctl_device_feature)", () => {
    const m = machine();
    const { fd } = gpu(m);
    const b = new Uint8Array(8);
    const d = new DataView(b.buffer);
    d.setUint32(
      4,
      VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
      true,
    );
    d.setUint32(0, 8, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b)).toBe(0);
    d.setUint32(0, 7, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
  });

  it("the cdev's ioctl returns -errno, and libc's lastError keeps the reason", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const other = m.libc.open(vdev.cdevPath!, O_RDWR);
    const file = m.libc.process.files.lookup(other);
    expect(file.fops.ioctl?.(file, VFIO_DEVICE_FEATURE, 0n)).toBe(-EINVAL);
    expect(m.kernel.current.returnedError?.message).toBe("EINVAL (22): device not bound");
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(0, 7, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_FEATURE, b)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect(m.libc.lastError?.message).toBe("EINVAL (22): argsz below the header");
  });

  it("vfioDeviceFromFile refuses a file that is not a VFIO device", () => {
    const m = machine();
    const efd = m.libc.eventfd(0, 0);
    expect(errnoOf(() => vfioDeviceFromFile(m.libc.process.files.lookup(efd)))).toBe(EINVAL);
  });

  it("registration: one reference, cdevs numbered from the lowest free, a double register or a put below zero WARNs", () => {
    const m = machine();
    const a = m.mod.probe(m.bus.addDevice(GPU));
    const b = m.mod.probe(m.bus.addDevice(GPU));
    expect([a.cdevPath, b.cdevPath]).toEqual([
      "/dev/vfio/devices/vfio0",
      "/dev/vfio/devices/vfio1",
    ]);
    expect([a.registered, a.registrationRefs]).toEqual([true, 1]);
    expect(() => a.markRegistered()).toThrow(KernelWarning);
    expect(a.devSet.devices).toEqual([a, b]);
    m.mod.remove(b);
    expect(a.devSet.devices).toEqual([a]);
    m.mod.remove(a);
    expect([a.registered, a.registrationRefs, a.devSet.devices]).toEqual([false, 0, []]);
    expect(() => a.putRegistration()).toThrow(KernelWarning);
    expect(a.registrationRefs).toBe(0);
    const c = m.mod.probe(m.bus.addDevice(GPU));
    expect(c.cdevPath).toBe("/dev/vfio/devices/vfio0");
  });

  it("a failed vfio_allocate_device_file is ENOMEM and gives the reference back", () => {
    const m = machine();
    const vdev = m.mod.probe(m.bus.addDevice(GPU));
    const fault = m.libc.task.fault;
    fault.arm(1_000_000);
    m.libc.close(m.libc.open(vdev.cdevPath!, O_RDWR));
    const nth = fault.sitesHit.indexOf("vfio_allocate_device_file") + 1;
    fault.disarm();
    expect(nth).toBeGreaterThan(0);
    fault.arm(nth);
    expect(m.libc.open(vdev.cdevPath!, O_RDWR)).toBe(-1);
    fault.disarm();
    expect(m.libc.errno).toBe(ENOMEM);
    expect(vdev.registrationRefs).toBe(1);
  });
});
