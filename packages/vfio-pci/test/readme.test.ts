// The README example, run as written (imports point at the sources), between the markers.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { intelIommuDriver } from "@x/iommu-pgtable";
import { IommufdClient, iommufdInit } from "@x/iommufd";
import { Kernel, Libc, O_CLOEXEC, O_RDWR } from "@x/kernel";
import { expect, it } from "vitest";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  decodeRegionInfo,
  encodeDmaBufFeature,
  loadVfioPci,
  pciRoot,
  vfioPciDmaWrite,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_region_info,
} from "../src/index.js";

it("README: P2P through the typed structs, and the unmap -> reset -> map protocol", () => {
  // README example begins
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
  const regionInfo = (fd: number, index: number) => {
    const info = vfio_region_info.encode({ argsz: vfio_region_info.size, index });
    libc.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, info);
    return decodeRegionInfo(info);
  };
  function openDevice(path: string) {
    const fd = libc.open(path, O_RDWR);
    const bind = vfio_device_bind_iommufd.encode({ argsz: 24, iommufd: iommufd.fd });
    libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, bind);
    const attach = vfio_device_attach_iommufd_pt.encode({ argsz: 16, pt_id: ioas });
    libc.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach);
    // COMMAND = MEMORY | MASTER, through the config region.
    libc.pwrite(fd, new Uint8Array([0x06, 0x00]), regionInfo(fd, 7).offset + 4n);
    return {
      fd,
      devid: vfio_device_bind_iommufd.decode(bind).out_devid, // the device's id in iommufd
      hwpt: vfio_device_attach_iommufd_pt.decode(attach).pt_id, // the domain made for the IOAS
    };
  }
  const devA = openDevice(a.cdevPath!);
  const devB = openDevice(b.cdevPath!);
  assert.notEqual(devA.hwpt, ioas);

  // 1. Export B's whole BAR0 as a dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF): the fd is the result.
  const dmabuf = libc.ioctl(
    devB.fd,
    VFIO_DEVICE_FEATURE,
    encodeDmaBufFeature({
      regionIndex: 0,
      openFlags: O_RDWR | O_CLOEXEC,
      ranges: [{ offset: 0n, length: 16n << 20n }],
    }),
  );
  // 2. IOMMU_IOAS_MAP_FILE: every domain of the IOAS now translates IOVA 4 GiB to B's BAR.
  const iova = 1n << 32n;
  iommufd.ioasMapFile({ ioasId: ioas, fd: dmabuf, start: 0n, length: 16n << 20n, iova });
  // 3. A DMA-writes through the IOVA; the bytes land in B's BAR (read back through B's region).
  vfioPciDmaWrite(a, iova + 0x40n, new Uint8Array([1, 2, 3]));
  const seen = new Uint8Array(3);
  libc.pread(devB.fd, seen, regionInfo(devB.fd, 0).offset + 0x40n);
  assert.deepEqual([...seen], [1, 2, 3]);

  // 4. Before resetting B, unmap; 5. reset (revoke, then un-revoke: memory stays enabled);
  // 6. map the same, now live, dma-buf again.
  iommufd.ioasUnmap({ ioasId: ioas, iova, length: 16n << 20n });
  libc.ioctl(devB.fd, VFIO_DEVICE_RESET, 0);
  iommufd.ioasMapFile({ ioasId: ioas, fd: dmabuf, start: 0n, length: 16n << 20n, iova });
  vfioPciDmaWrite(a, iova, new Uint8Array([4, 5, 6])); // lands again
  // README example ends
  const peer = new Uint8Array(3);
  kernel.mem.readPhys(b.pdev.resource(0).start, peer);
  expect([...peer]).toEqual([4, 5, 6]);
  expect(a.dmaFaults).toEqual([]);
  expect(devA.devid).toBe(a.binding!.devid);
  expect(devB.hwpt).toBe(b.binding!.hwpt!.id);
});

it("README.md shows the code this test runs", () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const block = /```ts\n([\s\S]*?)```/.exec(readme)![1]!;
  const shown = block.slice(block.indexOf("\n\n") + 2).trimEnd();
  const self = readFileSync(new URL(import.meta.url), "utf8");
  const begin = "// README example begins\n";
  const ran = self
    .slice(self.indexOf(begin) + begin.length, self.indexOf("  // README example ends"))
    .split("\n")
    .map((l) => l.slice(2))
    .join("\n")
    .trimEnd();
  expect(ran).toBe(shown);
});
