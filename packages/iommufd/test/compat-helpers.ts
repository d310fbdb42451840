/**
 * The VFIO type1 container calls of drivers/iommu/iommufd/vfio_compat.c, made on a test
 * system's /dev/iommu descriptor.
 */
import { expect } from "vitest";
import {
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
} from "../src/index.js";
import { type TestSystem, attachTestDevice, createSystem, rawIoctl } from "./ioctl-helpers.js";

/** An ioctl whose argument is a value, not a pointer (SET_IOMMU, CHECK_EXTENSION). */
export function ioctlValue(
  sys: TestSystem,
  cmd: number,
  value: number,
): { ret: number; errno: number } {
  sys.libc.errno = 0;
  const ret = sys.libc.ioctl(sys.fd.fd, cmd, value);
  return { ret, errno: ret < 0 ? sys.libc.errno : 0 };
}

/**
 * vfio_compat_mock_domain: an IOAS (with a device unless `withDevice` is false) made the compat
 * IOAS, then SET_IOMMU(type).
 */
export function compatIoas(type: number, withDevice = true) {
  const sys = createSystem();
  const ioas = sys.fd.ioasAlloc();
  const dev = withDevice ? attachTestDevice(sys, ioas).dev : undefined;
  sys.fd.vfioIoasSet(ioas);
  expect(ioctlValue(sys, VFIO_SET_IOMMU, type).ret).toBe(0);
  return { sys, ioas, dev };
}

/** VFIO_IOMMU_MAP_DMA, READ | WRITE unless told. */
export function mapDma(
  sys: TestSystem,
  vaddr: bigint,
  iova: bigint,
  size: bigint,
  flags = 3,
  argsz = 32,
) {
  return rawIoctl(
    sys,
    VFIO_IOMMU_MAP_DMA,
    vfio_iommu_type1_dma_map.encode({ argsz, flags, vaddr, iova, size }),
  );
}

/** VFIO_IOMMU_UNMAP_DMA, with the size the kernel writes back. */
export function unmapDma(sys: TestSystem, iova: bigint, size: bigint, flags = 0) {
  const r = rawIoctl(
    sys,
    VFIO_IOMMU_UNMAP_DMA,
    vfio_iommu_type1_dma_unmap.encode({ argsz: 24, flags, iova, size }),
  );
  return { ...r, size: vfio_iommu_type1_dma_unmap.decode(r.buf).size };
}
