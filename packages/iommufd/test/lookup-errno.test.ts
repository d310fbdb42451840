/**
 * A handler whose object lookup fails returns -ENOENT, as the kernel's handlers return the errno
 * of iommufd_get_object's ERR_PTR (`withObjectOrErrno`): the caller sees errno ENOENT with the
 * lookup's reason as `lastError`, nothing changes, and nothing is written back where the kernel
 * writes nothing.
 */
import { ENOENT, KernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  type IommufdIoas,
  iommu_hw_info,
  iommu_hw_queue_alloc,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_option,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_viommu_alloc,
} from "../src/index.js";
import {
  PAGE,
  type TestSystem,
  anonBuffer,
  attachTestDevice,
  createSystem,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";

const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/** An ioctl and its struct, with `id` (an IOAS's id) put where its handler looks an object up. */
interface LookupCase {
  readonly name: string;
  readonly request: number;
  readonly bytes: (id: number) => Uint8Array;
}

const CASES: readonly LookupCase[] = [
  {
    name: "IOAS_IOVA_RANGES",
    request: IOMMU_IOAS_IOVA_RANGES,
    bytes: (id) =>
      iommu_ioas_iova_ranges.encode({ size: iommu_ioas_iova_ranges.size, ioas_id: id }),
  },
  {
    name: "IOAS_ALLOW_IOVAS",
    request: IOMMU_IOAS_ALLOW_IOVAS,
    bytes: (id) =>
      iommu_ioas_allow_iovas.encode({ size: iommu_ioas_allow_iovas.size, ioas_id: id }),
  },
  {
    name: "IOAS_MAP",
    request: IOMMU_IOAS_MAP,
    bytes: (id) =>
      iommu_ioas_map.encode({
        size: iommu_ioas_map.size,
        flags: RW,
        ioas_id: id,
        user_va: 0x10000n,
        length: PAGE,
      }),
  },
  {
    name: "IOAS_MAP_FILE",
    request: IOMMU_IOAS_MAP_FILE,
    bytes: (id) =>
      iommu_ioas_map_file.encode({
        size: iommu_ioas_map_file.size,
        flags: RW,
        ioas_id: id,
        fd: 0,
        length: PAGE,
      }),
  },
  {
    name: "IOAS_COPY (source)",
    request: IOMMU_IOAS_COPY,
    bytes: (id) =>
      iommu_ioas_copy.encode({
        size: iommu_ioas_copy.size,
        flags: RW,
        dst_ioas_id: id,
        src_ioas_id: id,
        length: PAGE,
      }),
  },
  {
    name: "IOAS_UNMAP",
    request: IOMMU_IOAS_UNMAP,
    bytes: (id) =>
      iommu_ioas_unmap.encode({ size: iommu_ioas_unmap.size, ioas_id: id, length: PAGE }),
  },
  {
    name: "HWPT_ALLOC (device)",
    request: IOMMU_HWPT_ALLOC,
    bytes: (id) => iommu_hwpt_alloc.encode({ size: iommu_hwpt_alloc.size, dev_id: id, pt_id: id }),
  },
  {
    name: "GET_HW_INFO",
    request: IOMMU_GET_HW_INFO,
    bytes: (id) => iommu_hw_info.encode({ size: iommu_hw_info.size, dev_id: id }),
  },
  {
    name: "HWPT_SET_DIRTY_TRACKING",
    request: IOMMU_HWPT_SET_DIRTY_TRACKING,
    bytes: (id) =>
      iommu_hwpt_set_dirty_tracking.encode({
        size: iommu_hwpt_set_dirty_tracking.size,
        hwpt_id: id,
      }),
  },
  {
    name: "HWPT_GET_DIRTY_BITMAP",
    request: IOMMU_HWPT_GET_DIRTY_BITMAP,
    bytes: (id) =>
      iommu_hwpt_get_dirty_bitmap.encode({ size: iommu_hwpt_get_dirty_bitmap.size, hwpt_id: id }),
  },
  {
    name: "VIOMMU_ALLOC (device)",
    request: IOMMU_VIOMMU_ALLOC,
    bytes: (id) =>
      iommu_viommu_alloc.encode({
        size: iommu_viommu_alloc.size,
        type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
        dev_id: id,
        hwpt_id: id,
      }),
  },
  {
    name: "VDEVICE_ALLOC",
    request: IOMMU_VDEVICE_ALLOC,
    bytes: (id) =>
      iommu_vdevice_alloc.encode({ size: iommu_vdevice_alloc.size, viommu_id: id, dev_id: id }),
  },
  {
    name: "VEVENTQ_ALLOC",
    request: IOMMU_VEVENTQ_ALLOC,
    bytes: (id) =>
      iommu_veventq_alloc.encode({
        size: iommu_veventq_alloc.size,
        viommu_id: id,
        type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
        veventq_depth: 2,
      }),
  },
  {
    name: "HW_QUEUE_ALLOC",
    request: IOMMU_HW_QUEUE_ALLOC,
    bytes: (id) =>
      iommu_hw_queue_alloc.encode({
        size: iommu_hw_queue_alloc.size,
        viommu_id: id,
        type: 1,
        length: PAGE,
      }),
  },
];

/** The raw call's answer after checking it failed with the lookup's ENOENT and changed nothing. */
function expectLookupEnoent(sys: TestSystem, request: number, bytes: Uint8Array, id: number) {
  const before = snapshot(sys);
  const r = rawIoctl(sys, request, bytes);
  expect(r.ret).toBe(-1);
  expect(r.errno).toBe(ENOENT);
  const e = sys.libc.lastError;
  expect(e).toBeInstanceOf(KernelError);
  expect(e?.errno).toBe(ENOENT);
  expect(e?.context).toBe(`object ${id}`);
  expect(snapshot(sys)).toBe(before);
  return r;
}

describe("a handler's failed object lookup is its -ENOENT", () => {
  it.each(CASES)("$name: an id that names nothing", ({ request, bytes }) => {
    const sys = createSystem();
    const ioasId = sys.fd.ioasAlloc();
    const missing = ioasId + 100;
    const r = expectLookupEnoent(sys, request, bytes(missing), missing);
    // Every one of these fails before the struct is written back.
    expect(r.buf).toEqual(bytes(missing));
  });

  it.each(CASES.filter((c) => !c.name.startsWith("IOAS")))(
    "$name: an IOAS's id where another type is looked up",
    ({ request, bytes }) => {
      const sys = createSystem();
      const ioasId = sys.fd.ioasAlloc();
      expectLookupEnoent(sys, request, bytes(ioasId), ioasId);
    },
  );

  it("IOAS_COPY to a missing IOAS gives back the source's pages and drops no reference", () => {
    const sys = createSystem();
    const src = sys.fd.ioasAlloc();
    attachTestDevice(sys, src);
    const va = anonBuffer(sys.libc, 4n * PAGE);
    const iova = sys.fd.ioasMap({ ioasId: src, userVa: va, length: 4n * PAGE });
    const missing = src + 100;
    const bytes = iommu_ioas_copy.encode({
      size: iommu_ioas_copy.size,
      flags: RW,
      dst_ioas_id: missing,
      src_ioas_id: src,
      length: 4n * PAGE,
      src_iova: iova,
    });
    const ioas = sys.ctx.objectsInOrder().find((o) => o.id === src) as IommufdIoas;
    const pages = ioas.iopt.areas()[0]!.pages!;
    const refs = pages.refs;
    expectLookupEnoent(sys, IOMMU_IOAS_COPY, bytes, missing);
    // The copy's hold on the source's pages was given back (iopt_free_pages_list).
    expect(pages.refs).toBe(refs);
  });

  it("OPTION HUGE_PAGES on a missing IOAS leaves val64 unwritten", () => {
    const sys = createSystem();
    const missing = sys.fd.ioasAlloc() + 100;
    const bytes = iommu_option.encode({
      size: iommu_option.size,
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_GET,
      object_id: missing,
      val64: 7n,
    });
    const r = expectLookupEnoent(sys, IOMMU_OPTION, bytes, missing);
    expect(iommu_option.get(r.buf, "val64")).toBe(7n);
  });

  it("HWPT_INVALIDATE writes entry_num back as 0 with the ENOENT", () => {
    const sys = createSystem();
    const missing = sys.fd.ioasAlloc() + 100;
    const bytes = iommu_hwpt_invalidate.encode({
      size: iommu_hwpt_invalidate.size,
      hwpt_id: missing,
      data_uptr: 0x1000n,
      entry_len: 8,
      entry_num: 3,
    });
    const before = snapshot(sys);
    const r = rawIoctl(sys, IOMMU_HWPT_INVALIDATE, bytes);
    expect([r.ret, r.errno, sys.libc.lastError?.context]).toEqual([
      -1,
      ENOENT,
      `object ${missing}`,
    ]);
    expect(iommu_hwpt_invalidate.get(r.buf, "entry_num")).toBe(0);
    expect(snapshot(sys)).toBe(before);
  });
});
