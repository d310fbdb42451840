/**
 * The edges of the VFIO type1 container emulation (drivers/iommu/iommufd/vfio_compat.c) that
 * compat-type1.test.ts's kselftest ports do not reach: IOMMU_VFIO_IOAS's refusals, MAP_DMA's
 * argsz / flags check and its READ / WRITE translation, TYPE1's cut at IOVA 0, DMA_CC_IOMMU
 * with no, enforcing and mixed domains, iommufd_get_pagesizes and the exact boundaries of
 * VFIO_IOMMU_GET_INFO's capability chain.
 */
import {
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  type IommuDevice,
  type IommuDomain,
  IommuFault,
  iommuDeviceDma,
} from "@x/iommu-pgtable";
import { EINVAL, EOPNOTSUPP, type Kernel } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_READ,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_SET,
  IOMMU_WRITE,
  U32_MAX,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  iommu_vfio_ioas,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_dma_avail,
  vfio_iova_range,
} from "../src/index.js";
import {
  MOCK_APERTURE,
  PAGE,
  type TestSystem,
  TestIommu,
  anonBuffer,
  attachTestDevice,
  createSystem,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";
import { compatIoas, ioctlValue, mapDma } from "./compat-helpers.js";

/** A test IOMMU whose paging domains advertise `bitmap` as their page sizes. */
class SizedIommu extends TestIommu {
  constructor(
    kernel: Kernel,
    readonly bitmap: bigint,
  ) {
    super(kernel, `sized-${bitmap}`);
  }

  override domainAllocPaging(dev: IommuDevice, flags: number): IommuDomain {
    const d = super.domainAllocPaging(dev, flags);
    (d as { pgsizeBitmap: bigint }).pgsizeBitmap = this.bitmap;
    return d;
  }
}

/** A test IOMMU that also reports IOMMU_CAP_ENFORCE_CACHE_COHERENCY for its devices. */
class CoherentIommu extends TestIommu {
  override capable(dev: IommuDevice, cap: number): boolean {
    return cap === IOMMU_CAP_ENFORCE_CACHE_COHERENCY || super.capable(dev, cap);
  }
}

/** GET_INFO on a 128-byte user buffer filled with 0x5a past the 24-byte header. */
function getInfo(sys: TestSystem, argsz: number): { ret: number; buf: Uint8Array } {
  const bytes = new Uint8Array(128).fill(0x5a);
  bytes.set(vfio_iommu_type1_info.encode({ argsz }));
  const r = rawIoctl(sys, VFIO_IOMMU_GET_INFO, bytes);
  return { ret: r.ret, buf: r.buf };
}

const untouched = (buf: Uint8Array, from: number, to = buf.length) =>
  buf.subarray(from, to).every((b) => b === 0x5a);

describe("IOMMU_VFIO_IOAS refusals (iommufd_vfio_ioas)", () => {
  it("a non-zero __reserved and an unknown op are EOPNOTSUPP and leave the compat IOAS", () => {
    const sys = createSystem();
    const a = sys.fd.ioasAlloc();
    const b = sys.fd.ioasAlloc();
    sys.fd.vfioIoasSet(a);
    const reserved = iommu_vfio_ioas.encode({
      size: 12,
      ioas_id: b,
      op: IOMMU_VFIO_IOAS_SET,
      __reserved: 1,
    });
    expect(rawIoctl(sys, IOMMU_VFIO_IOAS, reserved).errno).toBe(EOPNOTSUPP);
    expect(sys.fd.vfioIoasGet()).toBe(a);
    const op = iommu_vfio_ioas.encode({ size: 12, ioas_id: b, op: 3 });
    expect(rawIoctl(sys, IOMMU_VFIO_IOAS, op).errno).toBe(EOPNOTSUPP);
    expect(sys.fd.vfioIoasGet()).toBe(a);
  });
});

describe("VFIO_IOMMU_MAP_DMA (iommufd_vfio_map_dma)", () => {
  it("argsz below offsetofend(size) and an unknown flag are EINVAL with a compat IOAS present", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    const buf = anonBuffer(sys.libc, PAGE);
    const before = snapshot(sys);
    const rw = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    expect(mapDma(sys, buf, MOCK_APERTURE[0], PAGE, rw, 31).errno).toBe(EINVAL);
    // VFIO_DMA_MAP_FLAG_VADDR (1 << 2) is not emulated.
    expect(mapDma(sys, buf, MOCK_APERTURE[0], PAGE, rw | 4).errno).toBe(EINVAL);
    expect(snapshot(sys)).toBe(before);
    expect(mapDma(sys, buf, MOCK_APERTURE[0], PAGE, rw).ret).toBe(0);
  });

  it("READ maps IOMMU_READ only and WRITE IOMMU_WRITE only, as device DMA sees them", () => {
    const { sys, dev } = compatIoas(VFIO_TYPE1v2_IOMMU);
    const buf = anonBuffer(sys.libc, 3n * PAGE);
    const ro = MOCK_APERTURE[0];
    const wo = ro + PAGE;
    const rw = ro + 2n * PAGE;
    expect(mapDma(sys, buf, ro, PAGE, VFIO_DMA_MAP_FLAG_READ).ret).toBe(0);
    expect(mapDma(sys, buf + PAGE, wo, PAGE, VFIO_DMA_MAP_FLAG_WRITE).ret).toBe(0);
    const both = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    expect(mapDma(sys, buf + 2n * PAGE, rw, PAGE, both).ret).toBe(0);
    const d = dev!;
    expect(iommuDeviceDma(d, ro, PAGE, IOMMU_READ)).toHaveLength(1);
    expect(() => iommuDeviceDma(d, ro, PAGE, IOMMU_WRITE)).toThrow(IommuFault);
    expect(iommuDeviceDma(d, wo, PAGE, IOMMU_WRITE)).toHaveLength(1);
    expect(() => iommuDeviceDma(d, wo, PAGE, IOMMU_READ)).toThrow(IommuFault);
    expect(iommuDeviceDma(d, rw, PAGE, IOMMU_READ)).toHaveLength(1);
    expect(iommuDeviceDma(d, rw, PAGE, IOMMU_WRITE)).toHaveLength(1);
  });
});

describe("VFIO_IOMMU_UNMAP_DMA on TYPE1 (iommufd_vfio_unmap_dma)", () => {
  it("a sub-range starting at IOVA 0 is cut only at its end", () => {
    // No device: the IOAS has no aperture, so IOVA 0 can be mapped.
    const { sys } = compatIoas(VFIO_TYPE1_IOMMU, false);
    const buf = anonBuffer(sys.libc, 4n * PAGE);
    expect(mapDma(sys, buf, 0n, 4n * PAGE, 3).ret).toBe(0);
    const unmap = (iova: bigint, size: bigint) => {
      const r = rawIoctl(
        sys,
        VFIO_IOMMU_UNMAP_DMA,
        vfio_iommu_type1_dma_unmap.encode({ argsz: 24, iova, size }),
      );
      return [r.ret, vfio_iommu_type1_dma_unmap.decode(r.buf).size];
    };
    expect(unmap(0n, PAGE)).toEqual([0, PAGE]);
    expect(unmap(0n, 4n * PAGE)).toEqual([0, 3n * PAGE]);
    expect(sys.kernel.mem.totalPinned()).toBe(0);
  });
});

describe("VFIO_CHECK_EXTENSION(VFIO_DMA_CC_IOMMU) (iommufd_vfio_cc_iommu)", () => {
  it("is 1 for a compat IOAS without domains: no domain fails to enforce coherency", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU, false);
    expect(ioctlValue(sys, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU).ret).toBe(1);
  });

  it("is 1 while every domain enforces coherency, 0 once one does not", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    attachTestDevice(sys, ioas, { iommu: new CoherentIommu(sys.kernel, "coherent") });
    sys.fd.vfioIoasSet(ioas);
    expect(ioctlValue(sys, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU).ret).toBe(1);
    // A device of an IOMMU without the capability gets a second, non-enforcing domain.
    attachTestDevice(sys, ioas);
    expect(ioctlValue(sys, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU).ret).toBe(0);
  });
});

describe("GET_INFO iova_pgsizes (iommufd_get_pagesizes)", () => {
  /** iova_pgsizes of a compat IOAS with one device on each IOMMU of `bitmaps`. */
  function pgsizes(bitmaps: readonly bigint[]): bigint {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    for (const b of bitmaps) attachTestDevice(sys, ioas, { iommu: new SizedIommu(sys.kernel, b) });
    sys.fd.vfioIoasSet(ioas);
    const r = getInfo(sys, 24);
    expect(r.ret).toBe(0);
    return vfio_iommu_type1_info.decode(r.buf).iova_pgsizes;
  }
  const K = 1024n;

  it("is the mock domain's bitmap with its 2 KiB page folded into PAGE_SIZE", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    const own = sys.iommu.domains[0]!.pgsizeBitmap;
    expect(own & (PAGE - 1n)).toBe(2048n);
    expect(vfio_iommu_type1_info.decode(getInfo(sys, 24).buf).iova_pgsizes).toBe(
      (own & ~(PAGE - 1n)) | PAGE,
    );
  });

  it("intersects the domains' bitmaps", () => {
    expect(pgsizes([(4n * K) | (2048n * K) | (1n << 30n), (4n * K) | (2048n * K)])).toBe(
      (4n * K) | (2048n * K),
    );
  });

  it("folds sizes below PAGE_SIZE into PAGE_SIZE, and only then", () => {
    expect(pgsizes([2n * K])).toBe(4n * K);
    expect(pgsizes([(2n * K) | (2048n * K)])).toBe((4n * K) | (2048n * K));
    // 2 KiB | 8 KiB and 4 KiB | 8 KiB share only 8 KiB: no sub-page size, nothing added.
    expect(pgsizes([(2n * K) | (8n * K), (4n * K) | (8n * K)])).toBe(8n * K);
  });

  it("is never below the IOAS alignment", () => {
    // The bitmaps share nothing; iova_alignment is 4 KiB (the larger minimum page size).
    expect(pgsizes([2n * K, 4n * K])).toBe(4n * K);
  });
});

describe("GET_INFO capability chain boundaries (iommufd_vfio_iommu_get_info)", () => {
  const INFO = vfio_iommu_type1_info.size; // 24
  const AVAIL = vfio_iommu_type1_info_dma_avail.size; // 12, padded to 16
  const HEAD = vfio_iommu_type1_info_cap_iova_range.size; // 16
  const ELM = vfio_iova_range.size; // 16
  const IOVA_CAP = INFO + 16;

  /** A compat IOAS whose aperture is split in two holes by a reserved page. */
  function twoHoles() {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const resvAt = 0x2000000n;
    attachTestDevice(sys, ioas, { resv: [{ start: resvAt, length: PAGE, type: 2 }] });
    sys.fd.vfioIoasSet(ioas);
    const holes = [
      { start: MOCK_APERTURE[0], end: resvAt - 1n },
      { start: resvAt + PAGE, end: MOCK_APERTURE[1] },
    ];
    return { sys, holes };
  }

  it("DMA_AVAIL is written when exactly its 12 bytes fit, its next link only at 40", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    for (const argsz of [INFO + AVAIL, IOVA_CAP]) {
      const r = getInfo(sys, argsz);
      expect(r.ret).toBe(0);
      expect(vfio_iommu_type1_info_dma_avail.decode(r.buf.subarray(INFO, INFO + AVAIL))).toEqual({
        id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
        version: 1,
        next: argsz === IOVA_CAP ? IOVA_CAP : 0,
        avail: U32_MAX,
      });
      const info = vfio_iommu_type1_info.decode(r.buf);
      expect(info.cap_offset).toBe(0);
      expect(info.argsz).toBe(IOVA_CAP + HEAD + ELM);
      expect(untouched(r.buf, IOVA_CAP)).toBe(true);
    }
  });

  it("below 12 bytes of room nothing past the info struct is written", () => {
    const { sys } = compatIoas(VFIO_TYPE1v2_IOMMU);
    for (const argsz of [INFO, INFO + 8, INFO + AVAIL - 1]) {
      const r = getInfo(sys, argsz);
      expect(r.ret).toBe(0);
      expect(untouched(r.buf, INFO)).toBe(true);
    }
  });

  it("each vfio_iova_range lands at 16 + 16 × i; the header only when all of them fit", () => {
    const { sys, holes } = twoHoles();
    const need = IOVA_CAP + HEAD + 2 * ELM;
    const full = getInfo(sys, need);
    expect(full.ret).toBe(0);
    const info = vfio_iommu_type1_info.decode(full.buf);
    expect(info.argsz).toBe(need);
    expect(info.cap_offset).toBe(INFO);
    expect(
      vfio_iommu_type1_info_cap_iova_range.decode(full.buf.subarray(IOVA_CAP, IOVA_CAP + HEAD)),
    ).toEqual({
      id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
      version: 1,
      next: 0,
      nr_iovas: 2,
      reserved: 0,
    });
    for (let i = 0; i < 2; i++) {
      const at = IOVA_CAP + HEAD + ELM * i;
      expect(vfio_iova_range.decode(full.buf.subarray(at, at + ELM))).toEqual(holes[i]);
    }
    expect(untouched(full.buf, need)).toBe(true);

    // Room for the header and one range: the first range is written, neither the second nor
    // the header (nr_iovas would not match what was copied).
    const one = getInfo(sys, IOVA_CAP + HEAD + ELM);
    expect(one.ret).toBe(0);
    expect(vfio_iommu_type1_info.decode(one.buf).argsz).toBe(need);
    expect(vfio_iommu_type1_info.decode(one.buf).cap_offset).toBe(0);
    expect(untouched(one.buf, IOVA_CAP, IOVA_CAP + HEAD)).toBe(true);
    expect(vfio_iova_range.decode(one.buf.subarray(IOVA_CAP + HEAD))).toEqual(holes[0]);
    expect(untouched(one.buf, IOVA_CAP + HEAD + ELM)).toBe(true);

    // Room for the header and half a range: nothing of the capability.
    const half = getInfo(sys, IOVA_CAP + HEAD + ELM / 2);
    expect(untouched(half.buf, IOVA_CAP)).toBe(true);
  });
});
