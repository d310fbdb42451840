import {
  type DmaBuf,
  type DmaBufAttachment,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufGet,
} from "@x/dmabuf";
import { Kernel, Libc, O_RDWR } from "@x/kernel";
import { type PciBus, type PciDevSpec, pciRoot } from "../src/pci.js";
import { VFIO_DEVICE_FEATURE, encodeDmaBufFeature } from "../src/vfio-uapi.js";
import { type VfioPciModule, loadVfioPci } from "../src/vfio-pci.js";
import type { VfioPciCoreDevice } from "../src/vfio-pci-core.js";
import { vfioDeviceFromFile } from "../src/vfio-main.js";

export const MiB = 1n << 20n;
export const PAGE = 4096n;

export const GPU: PciDevSpec = {
  vendor: 0x10de,
  device: 0x2330,
  bars: [
    { type: "mem64", size: 16n * MiB, prefetchable: true },
    undefined,
    { type: "mem32", size: MiB },
    { type: "io", size: 64 },
    { type: "mem32", size: 16n },
  ],
  romSize: 0x10000n,
  pm: true,
  pcie: { flr: true },
};

export interface Machine {
  kernel: Kernel;
  libc: Libc;
  mod: VfioPciModule;
  bus: PciBus;
}

export function machine(): Machine {
  const kernel = new Kernel();
  const libc = new Libc(kernel);
  const mod = loadVfioPci(kernel);
  const bus = pciRoot(kernel).newBus();
  return { kernel, libc, mod, bus };
}

/**
 * Open the cdev and grant access the way a successful BIND does, without an iommufd: the
 * device is opened (vfio_pci_core_enable) and the fd can issue every other ioctl.
 */
export function openGranted(m: Machine, vdev: VfioPciCoreDevice): number {
  const fd = m.libc.open(vdev.cdevPath!, O_RDWR);
  if (fd < 0) throw new Error(`open: errno ${m.libc.errno}`);
  const df = vfioDeviceFromFile(m.libc.process.files.lookup(fd));
  m.kernel.runAs(m.libc.task, () => {
    vdev.openCount++;
    vdev.openDevice();
  });
  df.accessGranted = true;
  return fd;
}

export function gpu(m: Machine, spec: PciDevSpec = GPU): { vdev: VfioPciCoreDevice; fd: number } {
  const vdev = m.mod.probe(m.bus.addDevice(spec));
  return { vdev, fd: openGranted(m, vdev) };
}

/** VFIO_DEVICE_FEATURE(GET|DMA_BUF); the new fd or -1 with libc.errno. */
export function createDmaBuf(
  m: Machine,
  fd: number,
  bar: number,
  ranges: ReadonlyArray<{ offset: bigint; length: bigint }>,
  openFlags = O_RDWR,
): number {
  return m.libc.ioctl(
    fd,
    VFIO_DEVICE_FEATURE,
    encodeDmaBufFeature({ regionIndex: bar, openFlags, ranges }),
  );
}

/** A dynamic, P2P-capable test importer that counts notifications. */
export class TestImporter {
  notifications = 0;
  readonly attach: DmaBufAttachment;
  constructor(
    readonly kernel: Kernel,
    readonly dmabuf: DmaBuf,
    dev: object = {},
    allowPeer2peer = true,
  ) {
    this.attach = dmaBufDynamicAttach(kernel, dmabuf, dev, {
      allowPeer2peer,
      moveNotify: () => {
        this.notifications++;
      },
    });
  }
  detach(): void {
    dmaBufDetach(this.dmabuf, this.attach);
  }
}

/** The dma-buf behind `fd` with a reference the caller drops with dmaBufPut. */
export function getBuf(m: Machine, fd: number): DmaBuf {
  return m.kernel.runAs(m.libc.task, () => dmaBufGet(m.kernel, fd));
}

/** Config-space write through the device fd (region 7). */
export function cfgWrite(
  m: Machine,
  fd: number,
  off: number,
  size: 1 | 2 | 4,
  value: number,
): number {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (value >>> (8 * i)) & 0xff;
  return m.libc.pwrite(fd, b, (7n << 40n) + BigInt(off));
}

export function cfgRead(m: Machine, fd: number, off: number, size: 1 | 2 | 4): number {
  const b = new Uint8Array(size);
  if (m.libc.pread(fd, b, (7n << 40n) + BigInt(off)) < 0)
    throw new Error(`pread errno ${m.libc.errno}`);
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + b[i]!;
  return v;
}

/** What `fn` throws, or undefined when it returns. */
export function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}
