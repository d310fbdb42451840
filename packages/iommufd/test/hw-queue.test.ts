/**
 * IOMMU_HW_QUEUE_ALLOC (drivers/iommu/iommufd/viommu.c, iommufd_hw_queue_alloc_ioctl and
 * iommufd_hw_queue_alloc_phys) on an SMMUv3 whose vIOMMU offers a HW queue type, as
 * tegra241-cmdqv's does: the checks in the kernel's order, the pinned, physically contiguous
 * range under the queue, and the references a queue holds.
 */
import {
  EBUSY,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
  type Libc,
  MFD_HUGETLB,
  MFD_HUGE_2MB,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  U64_MAX,
} from "@x/kernel";
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IommuDevice,
  type IommuDomain,
  iommuIovaToPhys,
} from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3IommufdDriver,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  type IommuUserData,
  type IommufdHwQueue,
  type IommufdViommu,
  iommu_hw_queue_alloc,
  iommufdDeviceBind,
  iommufdHwQueueDepend,
  iommufdHwQueueUndepend,
} from "../src/index.js";
import { PAGE, anonBuffer, createSystem, errnoOf, snapshot } from "./ioctl-helpers.js";

const QUEUE_TYPE = 1;
const IPA = 0x4000_0000n;
const HUGE = 2n << 20n;

/** The vIOMMU's queues by index: index n depends on n - 1 (as the selftest's mock does). */
class QueueSmmu extends ArmSmmuV3IommufdDriver {
  readonly queues: Array<{ queue: IommufdHwQueue; basePa: bigint } | undefined> = [];

  override viommuInit(
    viommu: IommufdViommu,
    parent: IommuDomain,
    data: IommuUserData | undefined,
  ): void {
    super.viommuInit(viommu, parent, data);
    viommu.ops = {
      ...viommu.ops,
      getHwQueueSize: (type) => (type === QUEUE_TYPE ? 1 : 0),
      hwQueueInitPhys: (queue, index, basePa) => {
        const prev = index > 0 ? this.queues[index - 1]?.queue : undefined;
        if (prev) iommufdHwQueueDepend(queue, prev);
        this.queues[index] = { queue, basePa };
        queue.driverDestroy = () => {
          this.queues[index] = undefined;
          if (prev) iommufdHwQueueUndepend(prev);
        };
      },
    };
  }
}

/** A 2 MiB hugetlb buffer: physically contiguous. */
function hugeBuffer(libc: Libc): bigint {
  const mfd = libc.memfdCreate("queue", MFD_HUGETLB | MFD_HUGE_2MB);
  expect(libc.ftruncate(mfd, HUGE)).toBe(0);
  const va = libc.mmap(0n, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  expect(va >= 0n).toBe(true);
  return va;
}

function setup(Smmu: typeof ArmSmmuV3IommufdDriver = QueueSmmu) {
  const sys = createSystem();
  const smmu = new Smmu(sys.kernel);
  const dev = new IommuDevice("nic", smmu);
  const idev = iommufdDeviceBind(sys.ctx, dev);
  const ioas = sys.fd.ioasAlloc();
  // The first four pages as areas of their own (an unmap takes whole areas), then the rest.
  const va = hugeBuffer(sys.libc);
  for (let i = 0n; i < 4n; i++)
    sys.fd.ioasMap({ ioasId: ioas, userVa: va + i * PAGE, length: PAGE, iova: IPA + i * PAGE });
  sys.fd.ioasMap({
    ioasId: ioas,
    userVa: va + 4n * PAGE,
    length: HUGE - 4n * PAGE,
    iova: IPA + 4n * PAGE,
  });
  const s2 = sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const viommu = sys.fd.viommuAlloc({
    devId: idev.id,
    hwptId: s2,
    type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  });
  const alloc = (a: {
    iova: bigint;
    length: bigint;
    index?: number;
    type?: number;
    flags?: number;
    viommuId?: number;
  }) =>
    sys.fd.call(IOMMU_HW_QUEUE_ALLOC, iommu_hw_queue_alloc, {
      flags: a.flags ?? 0,
      viommu_id: a.viommuId ?? viommu,
      type: a.type ?? QUEUE_TYPE,
      index: a.index ?? 0,
      nesting_parent_iova: a.iova,
      length: a.length,
    }).out.out_hw_queue_id;
  return { sys, smmu: smmu as QueueSmmu, ioas, s2, viommu, alloc };
}

describe("IOMMU_HW_QUEUE_ALLOC", () => {
  it("flags and type, then length, then the IOVA overflow, before the vIOMMU lookup", () => {
    const t = setup();
    const none = 1 << 30;
    expect(errnoOf(() => t.alloc({ iova: IPA, length: 0n, flags: 1, viommuId: none }))).toBe(
      EOPNOTSUPP,
    );
    expect(
      errnoOf(() =>
        t.alloc({ iova: IPA, length: 0n, type: IOMMU_HW_QUEUE_TYPE_DEFAULT, viommuId: none }),
      ),
    ).toBe(EOPNOTSUPP);
    expect(errnoOf(() => t.alloc({ iova: U64_MAX, length: 0n, viommuId: none }))).toBe(EINVAL);
    expect(errnoOf(() => t.alloc({ iova: U64_MAX, length: 2n, viommuId: none }))).toBe(EOVERFLOW);
    // The last byte at U64_MAX does not overflow: the lookup comes next.
    expect(errnoOf(() => t.alloc({ iova: U64_MAX, length: 1n, viommuId: none }))).toBe(ENOENT);
    expect(errnoOf(() => t.alloc({ iova: IPA, length: 1n, viommuId: t.s2 }))).toBe(ENOENT);
  });

  it("EOPNOTSUPP for a vIOMMU without get_hw_queue_size or without hw_queue_init_phys", () => {
    class SizeOnly extends ArmSmmuV3IommufdDriver {
      override viommuInit(
        viommu: IommufdViommu,
        parent: IommuDomain,
        data: IommuUserData | undefined,
      ): void {
        super.viommuInit(viommu, parent, data);
        viommu.ops = { ...viommu.ops, getHwQueueSize: () => 1 };
      }
    }
    const t = setup(SizeOnly);
    expect(errnoOf(() => t.alloc({ iova: IPA, length: 4096n }))).toBe(EOPNOTSUPP);
    t.sys.fd.destroy(t.viommu);
  });

  it("EOPNOTSUPP for a vIOMMU without HW queues or a type its driver does not offer", () => {
    const plain = setup(ArmSmmuV3IommufdDriver);
    expect(errnoOf(() => plain.alloc({ iova: IPA, length: 4096n }))).toBe(EOPNOTSUPP);
    const t = setup();
    expect(errnoOf(() => t.alloc({ iova: IPA, length: 4096n, type: QUEUE_TYPE + 1 }))).toBe(
      EOPNOTSUPP,
    );
    // Nothing was left behind: the vIOMMU can go.
    t.sys.fd.destroy(t.viommu);
  });

  it("pins the pages under the queue: the driver gets the physical address of the base", () => {
    const t = setup();
    const base = IPA + 0x1800n;
    const id = t.alloc({ iova: base, length: 0x1000n });
    const got = t.smmu.queues[0]!;
    expect(got.queue.id).toBe(id);
    expect(got.basePa).toBe(iommuIovaToPhys(got.queue.viommu.hwpt.domain!, base));
    expect(got.basePa & 0xfffn).toBe(0x800n);
    expect(got.queue.baseAddr).toBe(base);
    expect(got.queue.length).toBe(0x1000n);
    // Base 0x1800 + 0x1000 bytes covers the pages at 0x1000 and 0x2000, and only those: their
    // areas are locked (EBUSY), the areas beside them unmap.
    const unmap = (iova: bigint) => () =>
      t.sys.fd.ioasUnmap({ ioasId: t.ioas, iova, length: PAGE });
    expect(errnoOf(unmap(IPA + 0x1000n))).toBe(EBUSY);
    expect(errnoOf(unmap(IPA + 0x2000n))).toBe(EBUSY);
    expect(unmap(IPA)()).toBe(PAGE);
    expect(unmap(IPA + 0x3000n)()).toBe(PAGE);
    // The queue holds its vIOMMU.
    expect(errnoOf(() => t.sys.fd.destroy(t.viommu))).toBe(EBUSY);
    t.sys.fd.destroy(id);
    expect(t.smmu.queues[0]).toBeUndefined();
    expect(unmap(IPA + 0x1000n)()).toBe(PAGE);
    expect(unmap(IPA + 0x2000n)()).toBe(PAGE);
    t.sys.fd.destroy(t.viommu);
  });

  it("a queue ending at a page boundary pins no page past it", () => {
    const t = setup();
    const id = t.alloc({ iova: IPA + 0x1000n, length: 0x1000n });
    const unmap = (iova: bigint) => () =>
      t.sys.fd.ioasUnmap({ ioasId: t.ioas, iova, length: PAGE });
    expect(unmap(IPA + 0x2000n)()).toBe(PAGE);
    expect(unmap(IPA)()).toBe(PAGE);
    expect(errnoOf(unmap(IPA + 0x1000n))).toBe(EBUSY);
    t.sys.fd.destroy(id);
    expect(unmap(IPA + 0x1000n)()).toBe(PAGE);
  });

  it("EFAULT for pages that are not physically contiguous; ENOENT for an unmapped range; nothing left", () => {
    const t = setup();
    // The same anonymous page twice, one after the other in IOVA.
    const page = anonBuffer(t.sys.libc, 4096n);
    const at = IPA + HUGE;
    t.sys.fd.ioasMap({ ioasId: t.ioas, userVa: page, length: 4096n, iova: at });
    t.sys.fd.ioasMap({ ioasId: t.ioas, userVa: page, length: 4096n, iova: at + 4096n });
    expect(errnoOf(() => t.alloc({ iova: at, length: 0x2000n }))).toBe(EFAULT);
    expect(errnoOf(() => t.alloc({ iova: at + 2n * HUGE, length: 0x1000n }))).toBe(ENOENT);
    expect(t.smmu.queues).toEqual([]);
    // No pin, no reference, no object left by either.
    expect(t.sys.fd.ioasUnmap({ ioasId: t.ioas, iova: at, length: 0x2000n })).toBe(0x2000n);
    expect(t.sys.fd.ioasUnmap({ ioasId: t.ioas, iova: IPA, length: HUGE })).toBe(HUGE);
    t.sys.fd.destroy(t.viommu);
  });

  it("a queue another depends on cannot be destroyed first (EBUSY)", () => {
    const t = setup();
    const q0 = t.alloc({ iova: IPA, length: 0x1000n, index: 0 });
    const q1 = t.alloc({ iova: IPA + 0x1000n, length: 0x1000n, index: 1 });
    expect(errnoOf(() => t.sys.fd.destroy(q0))).toBe(EBUSY);
    t.sys.fd.destroy(q1);
    t.sys.fd.destroy(q0);
    t.sys.fd.destroy(t.viommu);
  });

  it("a queue cannot depend on one of another context", () => {
    const a = setup();
    const b = setup();
    const qa = a.alloc({ iova: IPA, length: 0x1000n });
    const qb = b.alloc({ iova: IPA, length: 0x1000n });
    expect(
      errnoOf(() => iommufdHwQueueDepend(a.smmu.queues[0]!.queue, b.smmu.queues[0]!.queue)),
    ).toBe(EINVAL);
    a.sys.fd.destroy(qa);
    b.sys.fd.destroy(qb);
  });

  it("every allocation that fails is ENOMEM and leaves no object, pin, lock or reference", () => {
    const t = setup();
    const fault = t.sys.libc.task.fault;
    const before = snapshot(t.sys);
    const sites = new Set<string>();
    for (let nth = 1; ; nth++) {
      fault.arm(nth);
      let errno = 0;
      try {
        t.alloc({ iova: IPA + 0x1800n, length: 0x1000n });
      } catch (e) {
        errno = errnoOf(() => {
          throw e;
        });
      }
      const failed = fault.failedSite;
      fault.disarm();
      if (failed === undefined) break;
      sites.add(failed);
      expect([failed, errno]).toEqual([failed, ENOMEM]);
      expect(t.smmu.queues.filter(Boolean)).toEqual([]);
      expect(snapshot(t.sys)).toBe(before);
    }
    // The object, the internal access and its slot in the IOAS were each made to fail.
    expect(sites.has("iommufd_object_alloc")).toBe(true);
    expect(sites.has("iommufd:access_list")).toBe(true);
    t.sys.fd.destroy(t.smmu.queues[0]!.queue.id);
    expect(t.sys.fd.ioasUnmap({ ioasId: t.ioas, iova: IPA, length: HUGE })).toBe(HUGE);
  });
});
