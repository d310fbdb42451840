/** The README example, kept runnable. */
import { IommuDevice, amdIommuDriver, iommuIovaToPhys } from "@x/iommu-pgtable";
import { Kernel, Libc, MAP_SHARED, PROT_READ, PROT_WRITE } from "@x/kernel";
import { expect, it } from "vitest";
import {
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommufdClient,
  iommu_ioas_map,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdInit,
} from "../src/index.js";

it("README example", () => {
  const kernel = new Kernel();
  const iommufd = iommufdInit(kernel);
  const libc = new Libc(kernel);

  const fd = IommufdClient.open(libc);
  const ioasId = fd.ioasAlloc();
  const mfd = libc.memfdCreate("guest-ram", 0);
  libc.ftruncate(mfd, 1 << 21);
  const iova = fd.ioasMapFile({ ioasId, fd: mfd, start: 0n, length: 1n << 21n });

  const va = libc.mmap(0n, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  const buf = iommu_ioas_map.encode({
    size: iommu_ioas_map.size,
    flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: ioasId,
    user_va: va,
    length: 4096n,
  });
  if (libc.ioctl(fd.fd, IOMMU_IOAS_MAP, buf) < 0) throw new Error(`errno ${libc.errno}`);
  const mappedAt = iommu_ioas_map.decode(buf).iova;
  expect(mappedAt).not.toBe(iova);

  const ctx = iommufd.ctxFromFile(libc.process.files.lookup(fd.fd));
  const idev = iommufdDeviceBind(ctx, new IommuDevice("nic", amdIommuDriver(kernel)));
  iommufdDeviceAttach(idev, ioasId);
  expect(iommuIovaToPhys(idev.hwpt!.domain!, iova)).not.toBe(0n);
  // 512 pins by the FILE pages plus one by the USER pages: two iopt_pages objects pin the
  // first memfd page independently.
  expect(kernel.mem.totalPinned()).toBe(513);
});
