import { EINVAL, ENODEV, ENOENT, ENOTTY } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  U32_MAX,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1_NESTING_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  VFIO_UNMAP_ALL,
  VFIO_UPDATE_VADDR,
  vfio_info_cap_header,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_dma_avail,
  vfio_iova_range,
} from "../src/index.js";
import {
  MOCK_APERTURE,
  PAGE,
  anonBuffer,
  createSystem,
  errnoOf,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";
import { compatIoas, ioctlValue, mapDma, unmapDma } from "./compat-helpers.js";

describe("container queries", () => {
  it("GET_API_VERSION and CHECK_EXTENSION need no IOAS", () => {
    const sys = createSystem();
    expect(ioctlValue(sys, VFIO_GET_API_VERSION, 0).ret).toBe(0);
    for (const [ext, want] of [
      [VFIO_TYPE1_IOMMU, 1],
      [VFIO_TYPE1v2_IOMMU, 1],
      [VFIO_UNMAP_ALL, 1],
      [VFIO_TYPE1_NESTING_IOMMU, 0],
      [VFIO_UPDATE_VADDR, 0],
      [77, 0],
    ])
      expect(ioctlValue(sys, VFIO_CHECK_EXTENSION, ext!).ret).toBe(want);
    expect(ioctlValue(sys, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU).errno).toBe(ENODEV);
    expect(ioctlValue(sys, VFIO_IOMMU_DIRTY_PAGES, 0).errno).toBe(ENOTTY);
  });

  it("type1 dirty logging is absent (vfio_compat.c): DIRTY_PAGES ENOTTY, GET_DIRTY_BITMAP unmap EINVAL, no migration cap", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    const buf = anonBuffer(sys.libc, PAGE);
    expect(mapDma(sys, buf, MOCK_APERTURE[0], PAGE).ret).toBe(0);
    // struct vfio_iommu_type1_dirty_bitmap {argsz, flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START (1)}
    const start = new Uint8Array(8);
    new DataView(start.buffer).setUint32(0, 8, true);
    new DataView(start.buffer).setUint32(4, 1, true);
    expect(rawIoctl(sys, VFIO_IOMMU_DIRTY_PAGES, start).errno).toBe(ENOTTY);
    const unmap = vfio_iommu_type1_dma_unmap.encode({
      argsz: 24,
      flags: VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
      iova: MOCK_APERTURE[0],
      size: PAGE,
    });
    expect(rawIoctl(sys, VFIO_IOMMU_UNMAP_DMA, unmap).errno).toBe(EINVAL);
    const need = 72;
    const full = new Uint8Array(need);
    full.set(vfio_iommu_type1_info.encode({ argsz: need }));
    const r = rawIoctl(sys, VFIO_IOMMU_GET_INFO, full);
    expect(r.ret).toBe(0);
    const ids: number[] = [];
    for (let off = vfio_iommu_type1_info.decode(r.buf).cap_offset; off; ) {
      const hdr = vfio_info_cap_header.decode(r.buf.subarray(off, off + 8));
      ids.push(hdr.id);
      off = hdr.next;
    }
    expect(ids).not.toContain(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION);
    expect(ids).toHaveLength(2);
  });

  it("DMA_CC_IOMMU answers for the domains of the compat IOAS", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    expect(ioctlValue(sys, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU).ret).toBe(0);
  });

  it("SET_IOMMU: bad type EINVAL before ENODEV; TYPE1 turns large pages off, TYPE1v2 keeps them", () => {
    const sys = createSystem();
    expect(ioctlValue(sys, VFIO_SET_IOMMU, 2).errno).toBe(EINVAL);
    expect(ioctlValue(sys, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU).errno).toBe(ENODEV);
    for (const [type, huge] of [
      [VFIO_TYPE1_IOMMU, 0n],
      [VFIO_TYPE1v2_IOMMU, 1n],
    ] as const) {
      const { sys: s, ioas } = compatIoas(type);
      expect(
        s.fd.option({ optionId: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_GET, objectId: ioas }),
      ).toBe(huge);
    }
  });
});

describe("IOMMU_VFIO_IOAS (kselftest iommufd.vfio_ioas)", () => {
  it("GET / SET / CLEAR, and destroy of the compat IOAS clears it", () => {
    const sys = createSystem();
    expect(errnoOf(() => sys.fd.vfioIoasGet())).toBe(ENODEV);
    expect(errnoOf(() => sys.fd.vfioIoasSet(0))).toBe(ENOENT);
    const ioas = sys.fd.ioasAlloc();
    sys.fd.vfioIoasSet(ioas);
    expect(sys.fd.vfioIoasGet()).toBe(ioas);
    sys.fd.vfioIoasClear();
    expect(errnoOf(() => sys.fd.vfioIoasGet())).toBe(ENODEV);
    sys.fd.vfioIoasSet(ioas);
    sys.fd.destroy(ioas);
    expect(errnoOf(() => sys.fd.vfioIoasGet())).toBe(ENODEV);
  });
});

describe("MAP_DMA / UNMAP_DMA", () => {
  it("kselftest iommufd.unmap_cmd and info_cmd", () => {
    const sys = createSystem();
    const small = vfio_iommu_type1_dma_unmap.encode({ argsz: 1 });
    expect(rawIoctl(sys, VFIO_IOMMU_UNMAP_DMA, small).errno).toBe(EINVAL);
    const flag = vfio_iommu_type1_dma_unmap.encode({ argsz: 24, flags: 1 << 31 });
    expect(rawIoctl(sys, VFIO_IOMMU_UNMAP_DMA, flag).errno).toBe(EINVAL);
    expect(unmapDma(sys, 0n, PAGE).errno).toBe(ENODEV);
    expect(
      rawIoctl(sys, VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info.encode({ argsz: 1 })).errno,
    ).toBe(EINVAL);
    expect(
      rawIoctl(sys, VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info.encode({ argsz: 24 })).errno,
    ).toBe(ENODEV);
    const map = vfio_iommu_type1_dma_map.encode({ argsz: 32, flags: 4 });
    expect(rawIoctl(sys, VFIO_IOMMU_MAP_DMA, map).errno).toBe(EINVAL);
    expect(mapDma(sys, 0n, 0n, PAGE).errno).toBe(ENODEV);
  });

  for (const [name, type] of [
    ["Ver1v2", VFIO_TYPE1v2_IOMMU],
    ["Ver1v0", VFIO_TYPE1_IOMMU],
  ] as const) {
    it(`${name}: kselftest vfio_compat_mock_domain.map`, () => {
      const { sys } = compatIoas(type);
      const buf = anonBuffer(sys.libc, 16n * PAGE);
      const base = MOCK_APERTURE[0];
      expect(mapDma(sys, buf, base, 16n * PAGE).ret).toBe(0);
      const u = unmapDma(sys, base, 16n * PAGE);
      expect(u.ret).toBe(0);
      expect(u.size).toBe(16n * PAGE);
      // Unmapping an empty range succeeds with size 0.
      const empty = unmapDma(sys, base, 16n * PAGE);
      expect(empty.ret).toBe(0);
      expect(empty.size).toBe(0n);
      expect(unmapDma(sys, 0n, PAGE, VFIO_DMA_UNMAP_FLAG_ALL).errno).toBe(EINVAL);
      expect(unmapDma(sys, PAGE, 0n, VFIO_DMA_UNMAP_FLAG_ALL).errno).toBe(EINVAL);
      expect(unmapDma(sys, 0n, 0n, VFIO_DMA_UNMAP_FLAG_ALL).ret).toBe(0);
      for (let i = 0n; i < 16n; i++)
        expect(mapDma(sys, buf + i * PAGE, base + i * PAGE, PAGE).ret).toBe(0);
      const order = [5, 12, 0, 15, 3, 9, 1, 14, 7, 2, 10, 4, 13, 8, 11, 6];
      for (const i of order) {
        const r = unmapDma(sys, base + BigInt(i) * PAGE, PAGE);
        expect(r.ret).toBe(0);
        expect(r.size).toBe(PAGE);
      }
      expect(sys.kernel.mem.totalPinned()).toBe(0);
    });
  }

  it("type1 v1 splits a mapping for a partial unmap; v2 refuses with ENOENT", () => {
    const v1 = compatIoas(VFIO_TYPE1_IOMMU).sys;
    const b1 = anonBuffer(v1.libc, 4n * PAGE);
    const base = MOCK_APERTURE[0];
    expect(mapDma(v1, b1, base, 4n * PAGE).ret).toBe(0);
    const mid = unmapDma(v1, base + PAGE, PAGE);
    expect(mid.ret).toBe(0);
    expect(mid.size).toBe(PAGE);
    expect(unmapDma(v1, base, 4n * PAGE).size).toBe(3n * PAGE);
    expect(v1.kernel.mem.totalPinned()).toBe(0);

    const v2 = compatIoas(VFIO_TYPE1v2_IOMMU).sys;
    const b2 = anonBuffer(v2.libc, 4n * PAGE);
    expect(mapDma(v2, b2, base, 4n * PAGE).ret).toBe(0);
    const before = snapshot(v2);
    const refused = unmapDma(v2, base + PAGE, PAGE);
    expect(refused.errno).toBe(ENOENT);
    expect(refused.size).toBe(0n);
    expect(snapshot(v2)).toBe(before);
  });

  it("an unmap error part way still reports the bytes already unmapped", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    const buf = anonBuffer(sys.libc, 4n * PAGE);
    const base = MOCK_APERTURE[0];
    expect(mapDma(sys, buf, base, PAGE).ret).toBe(0);
    expect(mapDma(sys, buf, base + PAGE, 2n * PAGE).ret).toBe(0);
    const r = unmapDma(sys, base, 2n * PAGE);
    expect(r.errno).toBe(ENOENT);
    expect(r.size).toBe(PAGE);
  });
});

describe("VFIO_IOMMU_GET_INFO", () => {
  it("reports page sizes and the capability chain, or the size needed", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    // DMA_AVAIL is 12 bytes padded to 16 (each capability starts 8-byte aligned, vfio_compat.c).
    const need = 24 + 16 + 16 + 16;
    const short = rawIoctl(sys, VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info.encode({ argsz: 24 }));
    expect(short.ret).toBe(0);
    const info = vfio_iommu_type1_info.decode(short.buf);
    expect(info.argsz).toBe(need);
    expect(info.flags).toBe(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
    expect(info.cap_offset).toBe(0);
    expect(info.iova_pgsizes & 0xfffn).toBe(0n);
    expect(info.iova_pgsizes & PAGE).toBe(PAGE);

    const full = new Uint8Array(need);
    full.set(vfio_iommu_type1_info.encode({ argsz: need }));
    const r = rawIoctl(sys, VFIO_IOMMU_GET_INFO, full);
    expect(r.ret).toBe(0);
    expect(vfio_iommu_type1_info.decode(r.buf).cap_offset).toBe(24);
    const avail = vfio_iommu_type1_info_dma_avail.decode(r.buf.subarray(24, 36));
    expect(avail).toEqual({
      id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
      version: 1,
      next: 40,
      avail: U32_MAX,
    });
    const cap = vfio_iommu_type1_info_cap_iova_range.decode(r.buf.subarray(40, 56));
    expect(cap).toEqual({
      id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
      version: 1,
      next: 0,
      nr_iovas: 1,
      reserved: 0,
    });
    expect(vfio_iova_range.decode(r.buf.subarray(56, 72))).toEqual({
      start: MOCK_APERTURE[0],
      end: MOCK_APERTURE[1],
    });
    expect(vfio_info_cap_header.size).toBe(8);
  });

  it("argsz of 16 copies back only 16 bytes", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    const bytes = new Uint8Array(24).fill(0x5a);
    bytes.set(vfio_iommu_type1_info.encode({ argsz: 16 }).subarray(0, 16));
    const r = rawIoctl(sys, VFIO_IOMMU_GET_INFO, bytes);
    expect(r.ret).toBe(0);
    expect([...r.buf.subarray(16)]).toEqual(new Array(8).fill(0x5a));
  });

  it("/dev/vfio/vfio opens a context in mm accounting mode", () => {
    const sys = createSystem();
    const fd = sys.libc.open("/dev/vfio/vfio", 2);
    expect(fd).toBeGreaterThanOrEqual(0);
    const ctx = sys.module.ctxFromFile(sys.libc.process.files.lookup(fd));
    expect(ctx.accountMode).toBe(2);
    expect(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE).toBe(3);
  });
});

describe("iommufdVfioCompatIoasId (vfio group attach without an IOAS)", () => {
  it("creates and publishes a compat IOAS once, then returns it", async () => {
    const { iommufdVfioCompatIoasId } = await import("../src/index.js");
    const sys = createSystem();
    const id = iommufdVfioCompatIoasId(sys.ctx);
    expect(sys.fd.vfioIoasGet()).toBe(id);
    expect(iommufdVfioCompatIoasId(sys.ctx)).toBe(id);
    expect(sys.ctx.objectCount).toBe(1);
    expect(sys.fd.ioasAlloc()).toBe(id + 1);
  });
});

describe("typed layer for the container ioctls", () => {
  it("drives a type1 VMM session end to end", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    const fd = sys.fd;
    expect(fd.vfioGetApiVersion()).toBe(0);
    expect(fd.vfioCheckExtension(VFIO_TYPE1v2_IOMMU)).toBe(1);
    const info = fd.vfioIommuGetInfo();
    expect(info.ranges).toEqual([{ start: MOCK_APERTURE[0], last: MOCK_APERTURE[1] }]);
    expect(info.dmaAvail).toBe(U32_MAX);
    expect(info.iovaPgsizes & PAGE).toBe(PAGE);
    const buf = anonBuffer(sys.libc, 4n * PAGE);
    fd.vfioMapDma({ vaddr: buf, iova: MOCK_APERTURE[0], size: 4n * PAGE });
    expect(errnoOf(() => fd.vfioMapDma({ vaddr: buf, iova: MOCK_APERTURE[0], size: PAGE }))).toBe(
      17,
    );
    expect(fd.vfioUnmapDma({ iova: 0n, size: 0n, all: true })).toBe(4n * PAGE);
  });
});
