// The README example, run as written (imports point at the sources).
import { intelIommuDriver } from "@x/iommu-pgtable";
import { IommufdClient, iommufdInit } from "@x/iommufd";
import { Kernel, Libc, O_CLOEXEC, O_RDWR } from "@x/kernel";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_RESET,
  encodeDmaBufFeature,
  loadVfioPci,
  pciRoot,
  vfioPciDmaWrite,
} from "../src/index.js";
import { expect, it } from "vitest";

it("README: P2P and the unmap -> reset -> map protocol", () => {
  const kernel = new Kernel();
  iommufdInit(kernel);
  const vfio = loadVfioPci(kernel); // exports vfio_pci_dma_buf_iommufd_map for iommufd

  // Two GPUs on one bus, each with a 16 MiB 64-bit prefetchable BAR0 and PCIe FLR.
  const bus = pciRoot(kernel).newBus();
  const gpu = (device: number) =>
    vfio.probe(
      bus.addDevice({
        vendor: 0x10de,
        device,
        pm: true,
        pcie: { flr: true },
        iommu: intelIommuDriver(kernel),
        bars: [{ type: "mem64", size: 16n << 20n, prefetchable: true }],
      }),
    );
  const a = gpu(1); // a.cdevPath === "/dev/vfio/devices/vfio0"
  const b = gpu(2);

  const libc = new Libc(kernel);
  const iommufd = IommufdClient.open(libc);
  const ioas = iommufd.ioasAlloc();
  function openDevice(path: string): number {
    const fd = libc.open(path, O_RDWR);
    const bind = new Uint8Array(24);
    new DataView(bind.buffer).setUint32(0, 24, true);
    new DataView(bind.buffer).setInt32(8, iommufd.fd, true);
    libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, bind);
    const att = new Uint8Array(16);
    new DataView(att.buffer).setUint32(0, 12, true);
    new DataView(att.buffer).setUint32(8, ioas, true);
    libc.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, att);
    libc.pwrite(fd, new Uint8Array([0x06, 0x00]), (7n << 40n) + 4n); // COMMAND = MEMORY | MASTER
    return fd;
  }
  const fdA = openDevice(a.cdevPath!);
  const fdB = openDevice(b.cdevPath!);

  // 1. Export B's whole BAR0 as a dma-buf: the fd is the ioctl's return value.
  const dmabuf = libc.ioctl(
    fdB,
    VFIO_DEVICE_FEATURE,
    encodeDmaBufFeature({
      regionIndex: 0,
      openFlags: O_RDWR | O_CLOEXEC,
      ranges: [{ offset: 0n, length: 16n << 20n }],
    }),
  );
  // 2. Map it into the IOAS: every domain now translates IOVA 4 GiB to B's BAR.
  const iova = 1n << 32n;
  iommufd.ioasMapFile({ ioasId: ioas, fd: dmabuf, start: 0n, length: 16n << 20n, iova });
  vfioPciDmaWrite(a, iova, new Uint8Array([1, 2, 3])); // P2P: lands in B's BAR

  // 3. Before resetting B, unmap; 4. reset (revoke, then un-revoke: memory stays enabled);
  // 5. map the same, now live, dma-buf again.
  iommufd.ioasUnmap({ ioasId: ioas, iova, length: 16n << 20n });
  libc.ioctl(fdB, VFIO_DEVICE_RESET, 0);
  iommufd.ioasMapFile({ ioasId: ioas, fd: dmabuf, start: 0n, length: 16n << 20n, iova });
  vfioPciDmaWrite(a, iova, new Uint8Array([4, 5, 6])); // lands again
  const seen = new Uint8Array(3);
  kernel.mem.readPhys(b.pdev.resource(0).start, seen);
  expect([...seen]).toEqual([4, 5, 6]);
  expect(a.dmaFaults).toEqual([]);
  expect(fdA).toBeGreaterThan(0);
});
