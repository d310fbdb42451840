/**
 * IOMMU_IOAS_MAP_FILE with a dma-buf fd through the byte layer (P7/P8 dispatch): length and
 * overflow checks first, then the fd as a dma-buf, else as a file. The dma-buf internals
 * (tracker, revoke) are tested by the dmabuf-* suites; this checks what user space sees.
 */
import { iommuIovaToPhys } from "@x/iommu-pgtable";
import { EBADF, EINVAL, ENODEV, EOPNOTSUPP, EOVERFLOW, O_CLOEXEC } from "@x/kernel";
import { dmaBufExport, dmaBufFd } from "@x/dmabuf";
import { describe, expect, it } from "vitest";
import {
  IOMMU_IOAS_MAP_FILE,
  IOMMUFD_OBJ_HWPT_PAGING,
  type IommufdHwptPaging,
  U64_MAX,
  iommu_ioas_map_file,
} from "../src/index.js";
import {
  MOCK_APERTURE,
  PAGE,
  attachTestDevice,
  createSystem,
  errnoOf,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";
import { TestExporter } from "./pages-helpers.js";

function setup(withDomain: boolean) {
  const sys = createSystem();
  const ioas = sys.fd.ioasAlloc();
  const hwptId = withDomain ? attachTestDevice(sys, ioas).hwptId : 0;
  const exp = new TestExporter(sys.kernel, 4n * PAGE);
  const dfd = sys.kernel.runAs(sys.libc.task, () => exp.fd());
  return { sys, ioas, hwptId, exp, dfd };
}

function mapFile(sys: ReturnType<typeof createSystem>, v: Record<string, number | bigint>) {
  return rawIoctl(
    sys,
    IOMMU_IOAS_MAP_FILE,
    iommu_ioas_map_file.encode({ size: 40, flags: 6, ...v }),
  );
}

describe("MAP_FILE of a dma-buf (kselftest dmabuf_simple)", () => {
  for (const withDomain of [false, true]) {
    it(`${withDomain ? "mock_domain" : "no_domain"}`, () => {
      const { sys, ioas, hwptId, exp, dfd } = setup(withDomain);
      const before = snapshot(sys);
      const bad = (start: bigint, length: bigint) =>
        mapFile(sys, { ioas_id: ioas, fd: dfd, start, length }).errno;
      expect(bad(0n, 0n)).toBe(EINVAL);
      expect(bad(4n * PAGE, 4n * PAGE)).toBe(EINVAL);
      expect(bad(0n, 4n * PAGE + 1n)).toBe(EINVAL);
      expect(snapshot(sys)).toBe(before);
      const iova = sys.fd.ioasMapFile({ ioasId: ioas, fd: dfd, start: 0n, length: 4n * PAGE });
      sys.libc.close(dfd);
      if (withDomain) {
        const hwpt = sys.ctx.withObject(
          hwptId,
          IOMMUFD_OBJ_HWPT_PAGING,
          (h) => h as IommufdHwptPaging,
        );
        expect(iommuIovaToPhys(hwpt.domain!, iova + PAGE)).toBe(exp.base + PAGE);
      }
      expect(sys.fd.ioasUnmap({ ioasId: ioas, iova, length: 4n * PAGE })).toBe(4n * PAGE);
    });
  }
});

describe("MAP_FILE dispatch order", () => {
  it("length 0 and overflow come before the fd is looked at, revoked or not", () => {
    const { sys, ioas, exp, dfd } = setup(true);
    exp.setRevoked(true);
    expect(mapFile(sys, { ioas_id: ioas, fd: dfd, start: 0n, length: 0n }).errno).toBe(EINVAL);
    expect(mapFile(sys, { ioas_id: ioas, fd: dfd, start: U64_MAX, length: 2n }).errno).toBe(
      EOVERFLOW,
    );
    expect(mapFile(sys, { ioas_id: ioas, fd: -1, start: U64_MAX, length: 2n }).errno).toBe(
      EOVERFLOW,
    );
    const before = snapshot(sys);
    expect(mapFile(sys, { ioas_id: ioas, fd: dfd, start: 0n, length: PAGE }).errno).toBe(ENODEV);
    expect(mapFile(sys, { ioas_id: ioas, fd: -1, start: 0n, length: PAGE }).errno).toBe(EBADF);
    expect(snapshot(sys)).toBe(before);
  });

  it("a dma-buf of an unknown exporter is EOPNOTSUPP (no VFIO loaded either)", () => {
    const { sys, ioas } = setup(false);
    const foreign = dmaBufExport(sys.kernel, {
      expName: "foreign",
      size: PAGE,
      ops: { mapDmaBuf: () => ({}) as never, unmapDmaBuf: () => {}, release: () => {} },
      priv: {},
    });
    const fd = sys.kernel.runAs(sys.libc.task, () => dmaBufFd(sys.kernel, foreign, O_CLOEXEC));
    const before = snapshot(sys);
    expect(errnoOf(() => sys.fd.ioasMapFile({ ioasId: ioas, fd, start: 0n, length: PAGE }))).toBe(
      EOPNOTSUPP,
    );
    expect(snapshot(sys)).toBe(before);
  });

  it("a sub-page start is kept as the offset of the first IOVA; auto IOVAs follow the offset", () => {
    const { sys, ioas, exp, dfd } = setup(true);
    const iova = sys.fd.ioasMapFile({ ioasId: ioas, fd: dfd, start: 2n * PAGE, length: 2n * PAGE });
    expect(iova % (2n * PAGE)).toBe(0n);
    expect(iova >= MOCK_APERTURE[0]).toBe(true);
    const sub = sys.fd.ioasMapFile({ ioasId: ioas, fd: dfd, start: 0x800n, length: 0x800n });
    expect(sub % PAGE).toBe(0x800n);
    expect(exp.size).toBe(4n * PAGE);
  });
});
