/**
 * Nested HWPTs on a nest-parent paging HWPT and IOMMU_HWPT_INVALIDATE
 * (drivers/iommu/iommufd/hw_pagetable.c: iommufd_hwpt_nested_alloc, iommufd_hwpt_invalidate),
 * with a driver that nests through domain_alloc_nested and takes cache_invalidate_user, as
 * the selftest's mock and VT-d do: the checks in the kernel's order, the parent's reference,
 * and the count of entries written back.
 */
import { EBUSY, EINVAL, ENOENT, EOPNOTSUPP, fail } from "@x/kernel";
import {
  IOMMU_DOMAIN_NESTED,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IommuDevice,
  IommuDomain,
} from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3IommufdDriver,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  type IommuUserData,
  type IommuUserDataArray,
  type IommufdHwptNested,
  type IommufdViommu,
  type IommufdViommuOps,
  iommu_fault_alloc,
  iommu_hwpt_alloc,
  iommu_hwpt_invalidate,
  iommuCopyStructFromUser,
  iommuCopyStructFromUserArray,
  iommufdDeviceBind,
} from "../src/index.js";
import { IOMMUFD_OBJ_HWPT_NESTED, IOMMUFD_OBJ_VIOMMU } from "../src/main.js";
import {
  TestIommu,
  attachTestDevice,
  createSystem,
  errnoOf,
  rawIoctl,
  snapshot,
} from "./ioctl-helpers.js";

const DATA = 0x77;
const INV = 0x78;
/** Driver data asking for a domain that is not nested (a driver bug the core catches). */
const NOT_NESTED = 0xdead;

const u32 = (v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
};
const word = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getUint32(0, true);

/** A driver that nests: the nested domain keeps its 4-byte configuration word. */
class NestingIommu extends TestIommu {
  readonly nestedCalls: Array<{ parent: IommuDomain; flags: number; data: IommuUserData }> = [];
  readonly invalidated: number[] = [];

  domainAllocNested(
    _dev: IommuDevice,
    parent: IommuDomain,
    flags: number,
    data: IommuUserData,
  ): IommuDomain {
    this.nestedCalls.push({ parent, flags, data });
    const cfg = word(iommuCopyStructFromUser(this.kernel, data, DATA, 4, 4));
    if (cfg === NOT_NESTED) return this.domainAllocPaging(_dev, 0);
    return new IommuDomain({
      type: IOMMU_DOMAIN_NESTED,
      parent,
      geometry: { ...parent.geometry },
      pgsizeBitmap: 0n,
      ops: {},
      priv: this,
    });
  }

  /** Entries of one word each; a 0 word is EINVAL and stops the walk. */
  cacheInvalidateUser(_domain: IommuDomain, array: IommuUserDataArray): void {
    let done = 0;
    try {
      for (; done < array.entryNum; done++) {
        const v = word(iommuCopyStructFromUserArray(this.kernel, array, INV, done, 4, 4));
        if (!v) fail(EINVAL, "entry 0");
        this.invalidated.push(v);
      }
    } finally {
      array.entryNum = done;
    }
  }
}

function setup() {
  const sys = createSystem();
  const iommu = new NestingIommu(sys.kernel);
  const ioas = sys.fd.ioasAlloc();
  const { dev, idev } = attachTestDevice(sys, ioas, { iommu });
  const parent = sys.fd.hwptAlloc({
    devId: idev.id,
    ptId: ioas,
    flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
  });
  const alloc = (a: {
    ptId?: number;
    flags?: number;
    cfg?: number;
    devId?: number;
    noData?: boolean;
  }) =>
    sys.fd.hwptAlloc({
      devId: a.devId ?? idev.id,
      ptId: a.ptId ?? parent,
      flags: a.flags ?? 0,
      ...(a.noData ? {} : { dataType: DATA, data: u32(a.cfg ?? 1) }),
    });
  const nested = (id: number) => {
    const h = sys.ctx.getObject<IommufdHwptNested>(id, IOMMUFD_OBJ_HWPT_NESTED);
    sys.ctx.putObject(h);
    return h;
  };
  /** A 4-byte word in user memory: driver data for a raw HWPT_ALLOC or an invalidation. */
  const userWord = (v: number) => {
    const p = sys.libc.malloc(4);
    sys.libc.poke(p, u32(v));
    return p;
  };
  return { sys, iommu, ioas, dev, idev, parent, alloc, nested, userWord };
}

describe("IOMMU_HWPT_ALLOC on a nest parent", () => {
  it("EOPNOTSUPP for flags other than FAULT_ID_VALID and PASID, for no data, for a driver that does not nest", () => {
    const t = setup();
    const before = snapshot(t.sys);
    expect(errnoOf(() => t.alloc({ flags: IOMMU_HWPT_ALLOC_NEST_PARENT }))).toBe(EOPNOTSUPP);
    expect(errnoOf(() => t.alloc({ flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING }))).toBe(EOPNOTSUPP);
    expect(errnoOf(() => t.alloc({ noData: true }))).toBe(EOPNOTSUPP);
    expect(snapshot(t.sys)).toBe(before);
    // The test IOMMU has no domain_alloc_nested.
    const plain = attachTestDevice(t.sys, t.ioas);
    const s2 = t.sys.fd.hwptAlloc({
      devId: plain.idev.id,
      ptId: t.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const mid = snapshot(t.sys);
    expect(errnoOf(() => t.alloc({ ptId: s2, devId: plain.idev.id }))).toBe(EOPNOTSUPP);
    expect(snapshot(t.sys)).toBe(mid);
    expect(t.iommu.nestedCalls).toHaveLength(0);
  });

  it("EINVAL unless the parent is a user-made nest parent of the device's driver", () => {
    const t = setup();
    const flat = t.sys.fd.hwptAlloc({ devId: t.idev.id, ptId: t.ioas });
    const other = new NestingIommu(t.sys.kernel, "other");
    const od = attachTestDevice(t.sys, t.ioas, { iommu: other });
    const foreign = t.sys.fd.hwptAlloc({
      devId: od.idev.id,
      ptId: t.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const before = snapshot(t.sys);
    expect(errnoOf(() => t.alloc({ ptId: flat }))).toBe(EINVAL);
    expect(errnoOf(() => t.alloc({ ptId: foreign }))).toBe(EINVAL);
    expect(snapshot(t.sys)).toBe(before);
    // The automatic domain the device got at attach.
    const auto = attachTestDevice(t.sys, t.ioas, { iommu: t.iommu });
    const mid = snapshot(t.sys);
    expect(errnoOf(() => t.alloc({ ptId: auto.hwptId }))).toBe(EINVAL);
    expect(snapshot(t.sys)).toBe(mid);
    expect(t.iommu.nestedCalls).toHaveLength(0);
  });

  it("holds the parent; the driver gets the parent domain, flags without FAULT_ID_VALID, the data", () => {
    const t = setup();
    const id = t.alloc({ flags: IOMMU_HWPT_ALLOC_PASID, cfg: 5 });
    const h = t.nested(id);
    expect(h.parent.id).toBe(t.parent);
    expect(h.viommu).toBeUndefined();
    expect(h.pasidCompat).toBe(true);
    expect(h.domain?.type).toBe(IOMMU_DOMAIN_NESTED);
    expect(h.domain?.owner).toBe(t.iommu);
    const call = t.iommu.nestedCalls[0]!;
    expect(call.parent).toBe(h.parent.domain);
    expect(call.flags).toBe(IOMMU_HWPT_ALLOC_PASID);
    expect([call.data.type, call.data.len]).toEqual([DATA, 4]);
    expect(t.nested(t.alloc({})).pasidCompat).toBe(false);
    expect(errnoOf(() => t.sys.fd.destroy(t.parent))).toBe(EBUSY);
    const domain = h.domain!;
    t.sys.fd.destroy(id);
    // iommufd_hwpt_nested_destroy frees the driver's domain.
    expect(domain.freed).toBe(true);
  });

  it("with FAULT_ID_VALID the HWPT holds the FAULT object until it is destroyed", () => {
    const t = setup();
    const f = iommu_fault_alloc.decode(
      rawIoctl(t.sys, IOMMU_FAULT_QUEUE_ALLOC, iommu_fault_alloc.encode({ size: 16 })).buf,
    );
    expect(t.sys.libc.close(f.out_fault_fd)).toBe(0);
    const id = t.sys.fd.call(IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, {
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      dev_id: t.idev.id,
      pt_id: t.parent,
      data_type: DATA,
      data_len: 4,
      data_uptr: t.userWord(1),
      fault_id: f.out_fault_id,
    }).out.out_hwpt_id;
    expect(t.nested(id).fault?.id).toBe(f.out_fault_id);
    expect(errnoOf(() => t.sys.fd.destroy(f.out_fault_id))).toBe(EBUSY);
    t.sys.fd.destroy(id);
    t.sys.fd.destroy(f.out_fault_id);
    t.sys.fd.destroy(t.parent);
  });

  it("FAULT_ID_VALID is not passed to the driver; the FAULT object is looked up after (ENOENT)", () => {
    const t = setup();
    const before = snapshot(t.sys);
    const r = rawIoctl(
      t.sys,
      IOMMU_HWPT_ALLOC,
      iommu_hwpt_alloc.encode({
        size: iommu_hwpt_alloc.size,
        flags: IOMMU_HWPT_FAULT_ID_VALID,
        dev_id: t.idev.id,
        pt_id: t.parent,
        data_type: DATA,
        data_len: 4,
        data_uptr: t.userWord(1),
        fault_id: 1 << 30,
      }),
    );
    expect(r.errno).toBe(ENOENT);
    expect(t.iommu.nestedCalls.map((c) => c.flags)).toEqual([0]);
    expect(snapshot(t.sys)).toBe(before);
    t.sys.fd.destroy(t.parent);
  });

  it("a domain that is not nested is EOPNOTSUPP: freed, no object, the parent free", () => {
    const t = setup();
    const before = snapshot(t.sys);
    const domains = t.iommu.domains.length;
    expect(errnoOf(() => t.alloc({ cfg: NOT_NESTED }))).toBe(EOPNOTSUPP);
    expect(t.iommu.domains).toHaveLength(domains + 1);
    expect(t.iommu.domains.at(-1)!.freed).toBe(true);
    expect(snapshot(t.sys)).toBe(before);
    t.sys.fd.destroy(t.parent);
  });
});

describe("IOMMU_HWPT_INVALIDATE", () => {
  function invalidate(
    t: ReturnType<typeof setup>,
    a: Partial<{
      hwpt_id: number;
      data_uptr: bigint;
      entry_len: number;
      entry_num: number;
      __reserved: number;
    }>,
  ) {
    const r = rawIoctl(
      t.sys,
      IOMMU_HWPT_INVALIDATE,
      iommu_hwpt_invalidate.encode({
        size: iommu_hwpt_invalidate.size,
        data_type: INV,
        entry_len: 4,
        ...a,
      }),
    );
    return { errno: r.errno, entryNum: iommu_hwpt_invalidate.decode(r.buf).entry_num };
  }

  it("__reserved, then entry_num's bound, then entries without data; entry_num 0 written back", () => {
    const t = setup();
    const id = t.alloc({});
    // Two entries: 1 (handled), then 0 (EINVAL from the driver).
    const uptr = t.sys.libc.malloc(8);
    t.sys.libc.poke(uptr, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]));
    expect(invalidate(t, { hwpt_id: id, data_uptr: uptr, entry_num: 1, __reserved: 1 })).toEqual({
      errno: EOPNOTSUPP,
      entryNum: 0,
    });
    expect(
      invalidate(t, {
        hwpt_id: id,
        data_uptr: uptr,
        entry_num: IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX + 1,
      }),
    ).toEqual({ errno: EINVAL, entryNum: 0 });
    expect(IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX).toBe(1 << 19);
    // At the bound the driver is reached: it handles the first entry, fails the second.
    expect(
      invalidate(t, {
        hwpt_id: id,
        data_uptr: uptr,
        entry_num: IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX,
      }),
    ).toEqual({ errno: EINVAL, entryNum: 1 });
    expect(invalidate(t, { hwpt_id: id, data_uptr: 0n, entry_num: 1 })).toEqual({
      errno: EINVAL,
      entryNum: 0,
    });
    expect(invalidate(t, { hwpt_id: id, data_uptr: uptr, entry_len: 0, entry_num: 1 })).toEqual({
      errno: EINVAL,
      entryNum: 0,
    });
    // No entries and no data: the driver is called and handles none.
    expect(invalidate(t, { hwpt_id: id, data_uptr: 0n, entry_len: 0, entry_num: 0 })).toEqual({
      errno: 0,
      entryNum: 0,
    });
    expect(t.iommu.invalidated).toEqual([1]);
  });

  it("EINVAL for an IOAS or paging HWPT, ENOENT for no object", () => {
    const t = setup();
    const uptr = t.userWord(1);
    for (const id of [t.ioas, t.parent])
      expect(invalidate(t, { hwpt_id: id, data_uptr: uptr, entry_num: 1 })).toEqual({
        errno: EINVAL,
        entryNum: 0,
      });
    expect(invalidate(t, { hwpt_id: 1 << 30, data_uptr: uptr, entry_num: 1 }).errno).toBe(ENOENT);
    expect(t.iommu.invalidated).toEqual([]);
  });

  it("the driver's count is written back, also when an entry fails", () => {
    const t = setup();
    const id = t.alloc({});
    const uptr = t.sys.libc.malloc(16);
    for (const [i, v] of [3, 4, 0, 6].entries()) t.sys.libc.poke(uptr + BigInt(4 * i), u32(v));
    expect(invalidate(t, { hwpt_id: id, data_uptr: uptr, entry_num: 2 })).toEqual({
      errno: 0,
      entryNum: 2,
    });
    expect(invalidate(t, { hwpt_id: id, data_uptr: uptr, entry_num: 4 })).toEqual({
      errno: EINVAL,
      entryNum: 2,
    });
    expect(t.iommu.invalidated).toEqual([3, 4, 3, 4]);
  });

  it("a nested domain whose driver has no cache_invalidate_user is EOPNOTSUPP", () => {
    class NoInvalidate extends NestingIommu {
      override cacheInvalidateUser = undefined as unknown as NestingIommu["cacheInvalidateUser"];
    }
    const sys = createSystem();
    const iommu = new NoInvalidate(sys.kernel);
    const ioas = sys.fd.ioasAlloc();
    const { idev } = attachTestDevice(sys, ioas, { iommu });
    const parent = sys.fd.hwptAlloc({
      devId: idev.id,
      ptId: ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const id = sys.fd.hwptAlloc({ devId: idev.id, ptId: parent, dataType: DATA, data: u32(1) });
    expect(sys.fd.hwptInvalidate({ hwptId: id, dataType: INV, entries: [u32(1)] })).toEqual({
      errno: EOPNOTSUPP,
      entryNum: 0,
    });
  });
});

describe("nested HWPTs and invalidation through a vIOMMU", () => {
  /** An SMMUv3 whose vIOMMUs get the ops the test gives (the SMMU's own, by default). */
  function setupViommu(ops: (own: IommufdViommuOps, viommu: IommufdViommu) => IommufdViommuOps) {
    class Smmu extends ArmSmmuV3IommufdDriver {
      override viommuInit(v: IommufdViommu, parent: IommuDomain, data: IommuUserData | undefined) {
        super.viommuInit(v, parent, data);
        v.ops = ops(v.ops!, v);
      }
    }
    const sys = createSystem();
    const smmu = new Smmu(sys.kernel);
    const dev = new IommuDevice("nic", smmu);
    const idev = iommufdDeviceBind(sys.ctx, dev);
    const ioas = sys.fd.ioasAlloc();
    const s2 = sys.fd.hwptAlloc({
      devId: idev.id,
      ptId: ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const viommuId = sys.fd.viommuAlloc({
      devId: idev.id,
      hwptId: s2,
      type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
    });
    const viommu = sys.ctx.getObject<IommufdViommu>(viommuId, IOMMUFD_OBJ_VIOMMU);
    sys.ctx.putObject(viommu);
    const alloc = (flags: number, data?: Uint8Array) => () =>
      sys.fd.hwptAlloc({
        devId: idev.id,
        ptId: viommuId,
        flags,
        ...(data ? { dataType: DATA, data } : {}),
      });
    return { sys, smmu, idev, s2, viommuId, viommu, alloc };
  }

  /** alloc_domain_nested of a vIOMMU that records its calls and takes any flags. */
  function recordingOps() {
    const calls: number[] = [];
    const make = (own: IommufdViommuOps, v: IommufdViommu): IommufdViommuOps => ({
      ...own,
      allocDomainNested: (flags) => {
        calls.push(flags);
        return new IommuDomain({
          type: IOMMU_DOMAIN_NESTED,
          parent: v.hwpt.domain!,
          geometry: { ...v.hwpt.domain!.geometry },
          pgsizeBitmap: 0n,
          ops: {},
        });
      },
    });
    return { calls, make };
  }

  it("flags other than FAULT_ID_VALID and PASID, or no data, are EOPNOTSUPP before the driver", () => {
    const rec = recordingOps();
    const t = setupViommu(rec.make);
    const before = snapshot(t.sys);
    expect(errnoOf(t.alloc(IOMMU_HWPT_ALLOC_NEST_PARENT, u32(1)))).toBe(EOPNOTSUPP);
    expect(errnoOf(t.alloc(0))).toBe(EOPNOTSUPP);
    expect(rec.calls).toEqual([]);
    expect(snapshot(t.sys)).toBe(before);
  });

  it("the HWPT takes PASID compatibility from its flags, holds the vIOMMU, not the parent", () => {
    const rec = recordingOps();
    const t = setupViommu(rec.make);
    const nested = (id: number) => {
      const h = t.sys.ctx.getObject<IommufdHwptNested>(id, IOMMUFD_OBJ_HWPT_NESTED);
      t.sys.ctx.putObject(h);
      return h;
    };
    const a = t.alloc(IOMMU_HWPT_ALLOC_PASID, u32(1))();
    const b = t.alloc(0, u32(1))();
    expect(rec.calls).toEqual([IOMMU_HWPT_ALLOC_PASID, 0]);
    expect([nested(a).pasidCompat, nested(b).pasidCompat]).toEqual([true, false]);
    expect(nested(a).viommu).toBe(t.viommu);
    expect(nested(a).parent.id).toBe(t.s2);
    expect(nested(a).domain?.owner).toBe(t.smmu);
    const domain = nested(a).domain!;
    expect(errnoOf(() => t.sys.fd.destroy(t.viommuId))).toBe(EBUSY);
    t.sys.fd.destroy(a);
    t.sys.fd.destroy(b);
    expect(domain.freed).toBe(true);
    // Destroying them gave back the vIOMMU's references; the vIOMMU then gives back the parent's.
    t.sys.fd.destroy(t.viommuId);
    t.sys.fd.destroy(t.s2);
  });

  it("a vIOMMU without alloc_domain_nested or cache_invalidate is EOPNOTSUPP", () => {
    const t = setupViommu(() => ({}));
    const before = snapshot(t.sys);
    expect(errnoOf(t.alloc(0, u32(1)))).toBe(EOPNOTSUPP);
    expect(snapshot(t.sys)).toBe(before);
    expect(
      t.sys.fd.hwptInvalidate({ hwptId: t.viommuId, dataType: INV, entries: [u32(1)] }),
    ).toEqual({
      errno: EOPNOTSUPP,
      entryNum: 0,
    });
  });
});
