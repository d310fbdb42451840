/**
 * IOMMU_IOAS_COPY of user memory shares the source's iopt_pages: the destination area points
 * at the same pages object, nothing is pinned or charged a second time, and the pins stay until
 * the last area using them goes (drivers/iommu/iommufd/io_pagetable.c iopt_get_pages /
 * iopt_map_pages; the uAPI comment of struct iommu_ioas_copy: "the kernel will pin the user
 * memory only once").
 */
import { iommuIovaToPhys } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_IOAS,
  type IommufdHwptPaging,
  type IommufdIoas,
} from "../src/index.js";
import {
  MOCK_APERTURE,
  PAGE,
  TestIommu,
  type TestSystem,
  anonBuffer,
  attachTestDevice,
  createSystem,
  memfdBuffer,
} from "./ioctl-helpers.js";

const NPAGES = 8n;

function charges(sys: TestSystem) {
  const p = sys.libc.process;
  return {
    pinned: sys.kernel.mem.totalPinned(),
    userLockedVm: p.cred.user.lockedVm,
    mmLockedVm: p.mm.lockedVm,
    mmPinnedVm: p.mm.pinnedVm,
  };
}

function areasOf(sys: TestSystem, ioasId: number) {
  return sys.ctx.withObject(ioasId, IOMMUFD_OBJ_IOAS, (o) => (o as IommufdIoas).iopt.areas());
}

function domainOf(sys: TestSystem, hwptId: number) {
  return sys.ctx.withObject(
    hwptId,
    IOMMUFD_OBJ_HWPT_PAGING,
    (h) => (h as IommufdHwptPaging).domain!,
  );
}

describe("IOAS_COPY shares the source's pages", () => {
  for (const source of ["anonymous", "memfd"] as const) {
    it(`${source} memory: same pages object, pins and locked_vm unchanged, released with the last area`, () => {
      const sys = createSystem();
      const src = sys.fd.ioasAlloc();
      const dst = sys.fd.ioasAlloc();
      const a = attachTestDevice(sys, src);
      const b = attachTestDevice(sys, dst, { iommu: new TestIommu(sys.kernel, "dst") });
      const length = NPAGES * PAGE;
      const iova = MOCK_APERTURE[0];
      if (source === "anonymous") {
        const va = anonBuffer(sys.libc, length);
        sys.fd.ioasMap({ ioasId: src, userVa: va, length, iova });
      } else {
        const { mfd } = memfdBuffer(sys.libc, length);
        sys.fd.ioasMapFile({ ioasId: src, fd: mfd, start: 0n, length, iova });
      }
      const mapped = charges(sys);
      expect(mapped.pinned).toBe(Number(NPAGES));

      const dstIova = sys.fd.ioasCopy({ dstIoasId: dst, srcIoasId: src, srcIova: iova, length });
      expect(charges(sys)).toEqual(mapped);
      const [srcArea] = areasOf(sys, src);
      const [dstArea] = areasOf(sys, dst);
      expect(dstArea!.pages).toBe(srcArea!.pages);
      const from = domainOf(sys, a.hwptId);
      const to = domainOf(sys, b.hwptId);
      for (let off = 0n; off < length; off += PAGE)
        expect(iommuIovaToPhys(to, dstIova + off)).toBe(iommuIovaToPhys(from, iova + off));

      // The source goes; the copy still holds the pins, charged once.
      expect(sys.fd.ioasUnmap({ ioasId: src, iova, length })).toBe(length);
      expect(charges(sys)).toEqual(mapped);
      expect(sys.fd.ioasUnmap({ ioasId: dst, iova: dstIova, length })).toBe(length);
      expect(charges(sys)).toEqual({ pinned: 0, userLockedVm: 0, mmLockedVm: 0, mmPinnedVm: 0 });
    });
  }
});
