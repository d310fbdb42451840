/**
 * ARM SMMUv3 nesting through /dev/iommu: the vIOMMU, nested HWPTs from a guest STE, forwarded
 * invalidation commands and vEVENTQ records, with device DMA walking the guest's CD and
 * stage-1 table in guest memory through the stage-2 parent.
 * @see drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c
 */
import {
  ArmSmmuV3Driver,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_READ,
  IOMMU_WRITE,
  IommuDevice,
  iommuDeviceDma,
} from "@x/iommu-pgtable";
import { ArmLpaeS1Tables, PTE_PAGE, PTE_RDONLY, faultOf, u64le } from "@x/iommu-pgtable/testing";
import { E2BIG, EFAULT, EINVAL, EIO, ENOENT, ENOMEM, EOPNOTSUPP } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3IommufdDriver,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  iommu_hw_info_arm_smmuv3,
  iommu_hwpt_alloc,
  iommu_hwpt_arm_smmuv3,
  iommu_hwpt_invalidate,
  iommu_vevent_arm_smmuv3,
  iommu_viommu_arm_smmuv3_invalidate,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceReplace,
} from "../src/index.js";
import { anonBuffer, createSystem, errnoOf } from "./ioctl-helpers.js";

const GUEST_RAM_IPA = 0x4000_0000n;
const GUEST_RAM_SIZE = 1n << 21n;
const CD_IPA = GUEST_RAM_IPA;
/** The guest's stage-1 tables follow the CD page. */
const TABLES_IPA = GUEST_RAM_IPA + 0x1000n;
const DATA_A = GUEST_RAM_IPA + 0x10000n;
const DATA_B = GUEST_RAM_IPA + 0x11000n;
const IOVA = 0x1000_0000n;
const ASID = 7n;
const VSID = 0x21n;

const STE_0_V = 1n;
const STE_0_CFG = (cfg: bigint) => cfg << 1n;
const STE_1_EATS = (eats: bigint) => eats << 28n;
/** An AArch64 CD: T0SZ 25 (39-bit IOVA, walk from level 1), TG0 4K, ASID 7, TTB0. */
const CD_0 = 25n | (1n << 31n) | (1n << 41n) | (ASID << 48n);
const cmd = (cmd0: bigint, cmd1 = 0n) => iommu_viommu_arm_smmuv3_invalidate.encode({ cmd0, cmd1 });

function setup(opts: { vdevice?: boolean } = {}) {
  const sys = createSystem();
  const smmu = new ArmSmmuV3IommufdDriver(sys.kernel);
  const dev = new IommuDevice("nic", smmu);
  const idev = iommufdDeviceBind(sys.ctx, dev);
  const ioas = sys.fd.ioasAlloc();
  const ram = anonBuffer(sys.libc, GUEST_RAM_SIZE);
  sys.fd.ioasMap({ ioasId: ioas, userVa: ram, length: GUEST_RAM_SIZE, iova: GUEST_RAM_IPA });
  const s2 = sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const viommu = sys.fd.viommuAlloc({
    devId: idev.id,
    hwptId: s2,
    type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  });
  if (opts.vdevice !== false)
    sys.fd.vdeviceAlloc({ viommuId: viommu, devId: idev.id, virtId: VSID });
  /** The guest writes guest-physical memory. */
  const poke = (ipa: bigint, bytes: Uint8Array) =>
    sys.libc.poke(ram + (ipa - GUEST_RAM_IPA), bytes);
  const peek = (ipa: bigint, n: number) => sys.libc.peek(ram + (ipa - GUEST_RAM_IPA), n);
  // The guest driver's CD and stage-1 table: IOVA -> DATA_A, IOVA + 4K -> DATA_B read-only.
  let nextTable = TABLES_IPA;
  const tables = new ArmLpaeS1Tables(
    poke,
    () => {
      nextTable += 0x1000n;
      return nextTable - 0x1000n;
    },
    39,
  );
  poke(CD_IPA, tables.cd(CD_0));
  const pte = (iova: bigint, v: bigint) => tables.map(iova, v);
  pte(IOVA, DATA_A | PTE_PAGE);
  pte(IOVA + 0x1000n, DATA_B | PTE_PAGE | PTE_RDONLY);
  const nested = (ste0: bigint, ste1 = 0n) =>
    sys.fd.hwptAlloc({
      devId: idev.id,
      ptId: viommu,
      dataType: IOMMU_HWPT_DATA_ARM_SMMUV3,
      data: iommu_hwpt_arm_smmuv3.encode({ ste0, ste1 }),
    });
  const s1Ste = STE_0_V | STE_0_CFG(5n) | CD_IPA;
  /** The device writes `bytes` at `iova` through its domain. */
  const dmaWrite = (iova: bigint, bytes: Uint8Array) => {
    let pos = 0;
    for (const r of iommuDeviceDma(dev, iova, BigInt(bytes.length), IOMMU_WRITE)) {
      const n = Number(r.length);
      sys.kernel.mem.writePhys(r.paddr, bytes.subarray(pos, pos + n));
      pos += n;
    }
  };
  const invalidate = (...entries: Uint8Array[]) =>
    sys.fd.hwptInvalidate({
      hwptId: viommu,
      dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
      entries,
    });
  return {
    sys,
    smmu,
    dev,
    idev,
    ioas,
    s2,
    viommu,
    poke,
    peek,
    pte,
    nested,
    s1Ste,
    dmaWrite,
    invalidate,
  };
}

/** The errno of a failed call, 0 when it succeeds. */
function errnoOr0(fn: () => unknown): number {
  try {
    fn();
    return 0;
  } catch (e) {
    return errnoOf(() => {
      throw e;
    });
  }
}

describe("SMMUv3 nested translation", () => {
  it("device DMA goes IOVA -> IPA through the guest's table, then IPA -> PA through stage 2", () => {
    const t = setup();
    iommufdDeviceAttach(t.idev, t.nested(t.s1Ste));
    t.dmaWrite(IOVA + 0x10n, new Uint8Array([1, 2, 3, 4]));
    expect([...t.peek(DATA_A + 0x10n, 4)]).toEqual([1, 2, 3, 4]);
    // A read across the two stage-1 pages lands in both guest pages.
    const runs = iommuDeviceDma(t.dev, IOVA + 0xffen, 4n, IOMMU_READ);
    expect(runs.map((r) => [r.iova, r.length])).toEqual([
      [IOVA + 0xffen, 2n],
      [IOVA + 0x1000n, 2n],
    ]);
  });

  it("bypass STE: IOVA is the IPA; abort and non-valid STEs block without an event", () => {
    const t = setup();
    iommufdDeviceAttach(t.idev, t.nested(STE_0_V | STE_0_CFG(4n)));
    t.dmaWrite(DATA_B + 8n, new Uint8Array([5]));
    expect(t.peek(DATA_B + 8n, 1)[0]).toBe(5);
    for (const ste0 of [STE_0_V | STE_0_CFG(0n), STE_0_CFG(5n) | 0xdead0000n]) {
      iommufdDeviceReplace(t.idev, t.nested(ste0));
      const f = faultOf(() => t.dmaWrite(DATA_B, new Uint8Array([1])));
      expect(f.reason).toBe("blocked");
    }
    expect(t.smmu.nest!.unhandledEvents).toEqual([]);
  });

  it("the stage-1 TLB keeps a stale translation until the guest's TLBI reaches the SMMU", () => {
    const t = setup();
    iommufdDeviceAttach(t.idev, t.nested(t.s1Ste));
    t.dmaWrite(IOVA, new Uint8Array([0xa1]));
    expect(t.peek(DATA_A, 1)[0]).toBe(0xa1);
    // The guest points IOVA at DATA_B without invalidating: the SMMU still uses DATA_A.
    t.pte(IOVA, DATA_B | PTE_PAGE);
    t.dmaWrite(IOVA, new Uint8Array([0xa2]));
    expect(t.peek(DATA_A, 1)[0]).toBe(0xa2);
    expect(t.peek(DATA_B, 1)[0]).toBe(0);
    // TLBI for another ASID leaves it; TLBI_NH_VA for (ASID, IOVA) drops it.
    expect(t.invalidate(cmd(0x12n | ((ASID + 1n) << 48n), IOVA))).toEqual({
      errno: 0,
      entryNum: 1,
    });
    t.dmaWrite(IOVA, new Uint8Array([0xa3]));
    expect(t.peek(DATA_A, 1)[0]).toBe(0xa3);
    expect(t.invalidate(cmd(0x12n | (ASID << 48n), IOVA))).toEqual({ errno: 0, entryNum: 1 });
    t.dmaWrite(IOVA, new Uint8Array([0xa4]));
    expect(t.peek(DATA_B, 1)[0]).toBe(0xa4);
    // NH_ASID, NH_ALL, NSNH_ALL each drop it too.
    for (const c of [0x11n | (ASID << 48n), 0x10n, 0x30n]) {
      t.pte(IOVA, DATA_A | PTE_PAGE);
      t.dmaWrite(IOVA, new Uint8Array([0xb0]));
      expect(t.invalidate(cmd(c)).errno).toBe(0);
      t.pte(IOVA, DATA_B | PTE_PAGE);
      t.dmaWrite(IOVA, new Uint8Array([0xb1]));
      expect(t.peek(DATA_B, 1)[0]).toBe(0xb1);
      t.invalidate(cmd(0x10n));
    }
  });

  it("the cached CD stays until CFGI_CD names the guest's StreamID", () => {
    const t = setup();
    iommufdDeviceAttach(t.idev, t.nested(t.s1Ste));
    t.dmaWrite(IOVA, new Uint8Array([1]));
    // The guest makes its CD non-valid and flushes the TLB, but not the CD.
    t.poke(CD_IPA, u64le(0n));
    t.invalidate(cmd(0x10n));
    t.dmaWrite(IOVA, new Uint8Array([2]));
    expect(t.invalidate(cmd(0x5n | (VSID << 32n)))).toEqual({ errno: 0, entryNum: 1 });
    const f = faultOf(() => t.dmaWrite(IOVA, new Uint8Array([3])));
    expect([f.reason, f.stage]).toEqual(["config", 1]);
  });

  it("stage-1 faults go to the vEVENTQ with the vSID; stage-2 faults stay with the host", () => {
    const t = setup();
    const q = t.sys.fd.veventqAlloc({
      viommuId: t.viommu,
      type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
      depth: 8,
    });
    iommufdDeviceAttach(t.idev, t.nested(t.s1Ste));
    const unmapped = faultOf(() => t.dmaWrite(IOVA + 0x5000n, new Uint8Array([1])));
    expect([unmapped.reason, unmapped.stage]).toEqual(["not-present", 1]);
    const ro = faultOf(() => t.dmaWrite(IOVA + 0x1000n, new Uint8Array([1])));
    expect([ro.reason, ro.stage]).toEqual(["permission", 1]);
    // A stage-1 mapping to an IPA the VMM never mapped: stage 2 faults.
    t.pte(IOVA + 0x2000n, (GUEST_RAM_IPA + GUEST_RAM_SIZE) | PTE_PAGE);
    const s2 = faultOf(() => t.dmaWrite(IOVA + 0x2000n, new Uint8Array([1])));
    expect([s2.reason, s2.stage]).toEqual(["not-present", 2]);
    const buf = new Uint8Array(200);
    const n = t.sys.libc.read(q.fd, buf);
    expect(n).toBe(2 * (8 + 32));
    const events = [0, 40].map((off) => ({
      sequence: new DataView(buf.buffer).getUint32(off + 4, true),
      ...iommu_vevent_arm_smmuv3.decode(buf.subarray(off + 8, off + 40)),
    }));
    expect(events[0]).toMatchObject({
      sequence: 0,
      evt0: 0x10n | (VSID << 32n),
      evt2: IOVA + 0x5000n,
    });
    expect(events[1]).toMatchObject({
      sequence: 1,
      evt0: 0x13n | (VSID << 32n),
      evt2: IOVA + 0x1000n,
    });
    expect(events[0]!.evt1 & (1n << 39n)).toBe(0n);
    // The stage-2 event was the host's: S2 set, the IPA recorded, the physical StreamID.
    const host = t.smmu.nest!.unhandledEvents;
    expect(host).toHaveLength(1);
    expect(host[0]![1]! & (1n << 39n)).not.toBe(0n);
    expect(host[0]![3]).toBe(GUEST_RAM_IPA + GUEST_RAM_SIZE);
    expect(host[0]![0]! >> 32n).toBe(BigInt(t.smmu.nest!.master(t.dev).sid));
  });
});

describe("SMMUv3 nesting errnos, in the kernel's order", () => {
  it("IOMMU_HWPT_ALLOC on the vIOMMU: flags, data copy, then the STE checks (EIO)", () => {
    const t = setup();
    const alloc = (a: { flags?: number; dataType?: number; data?: Uint8Array }) =>
      errnoOr0(() =>
        t.sys.fd.hwptAlloc({
          devId: t.idev.id,
          ptId: t.viommu,
          dataType: a.dataType ?? IOMMU_HWPT_DATA_ARM_SMMUV3,
          data: a.data ?? iommu_hwpt_arm_smmuv3.encode({ ste0: t.s1Ste }),
          ...(a.flags === undefined ? {} : { flags: a.flags }),
        }),
      );
    const ste = (ste0: bigint, ste1 = 0n) => iommu_hwpt_arm_smmuv3.encode({ ste0, ste1 });
    const table: [string, Parameters<typeof alloc>[0], number][] = [
      ["PASID flag: the driver takes no flags", { flags: IOMMU_HWPT_ALLOC_PASID }, EOPNOTSUPP],
      [
        "another data type (before the STE is read)",
        { dataType: IOMMU_HWPT_DATA_SELFTEST, data: ste(~0n) },
        EINVAL,
      ],
      ["8 of 16 bytes", { data: new Uint8Array(8) }, EINVAL],
      ["24 bytes", { data: new Uint8Array(24) }, EINVAL],
      ["a word-0 bit outside NESTING_ALLOWED", { data: ste(t.s1Ste | (1n << 52n)) }, EIO],
      ["a word-1 bit outside NESTING_ALLOWED", { data: ste(t.s1Ste, 1n << 8n) }, EIO],
      ["Config stage-2 translate", { data: ste(STE_0_V | STE_0_CFG(6n)) }, EIO],
      ["Config nested", { data: ste(STE_0_V | STE_0_CFG(7n)) }, EIO],
      ["EATS S1CHK", { data: ste(t.s1Ste, STE_1_EATS(2n)) }, EIO],
      ["a non-valid STE with garbage", { data: ste(~1n, ~0n) }, 0],
      ["EATS translate", { data: ste(t.s1Ste, STE_1_EATS(1n)) }, 0],
      ["bypass", { data: ste(STE_0_V | STE_0_CFG(4n)) }, 0],
    ];
    for (const [what, args, errno] of table) expect([what, alloc(args)]).toEqual([what, errno]);
  });

  it("EFAULT for unreadable STE data; EOPNOTSUPP for a nested HWPT on the parent itself", () => {
    const t = setup();
    const raw = (ptId: number, uptr: bigint) =>
      errnoOf(() =>
        t.sys.fd.call(IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, {
          dev_id: t.idev.id,
          pt_id: ptId,
          data_type: IOMMU_HWPT_DATA_ARM_SMMUV3,
          data_len: 16,
          data_uptr: uptr,
        }),
      );
    expect(raw(t.viommu, 0n)).toBe(EFAULT);
    expect(raw(t.s2, t.sys.libc.malloc(16))).toBe(EOPNOTSUPP);
  });

  it("IOMMU_VIOMMU_ALLOC: type, nest parent, the parent's SMMU; NEST_PARENT without nesting", () => {
    const t = setup();
    const plain = t.sys.fd.hwptAlloc({ devId: t.idev.id, ptId: t.ioas });
    const va = (type: number, hwptId: number) =>
      errnoOf(() => t.sys.fd.viommuAlloc({ devId: t.idev.id, hwptId, type }));
    expect(va(2, t.s2)).toBe(EOPNOTSUPP);
    expect(va(IOMMU_VIOMMU_TYPE_ARM_SMMUV3, plain)).toBe(EINVAL);
    // A nest parent made for a device of another SMMU.
    const other = iommufdDeviceBind(
      t.sys.ctx,
      new IommuDevice("gpu", new ArmSmmuV3IommufdDriver(t.sys.kernel)),
    );
    const s2b = t.sys.fd.hwptAlloc({
      devId: other.id,
      ptId: t.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    expect(va(IOMMU_VIOMMU_TYPE_ARM_SMMUV3, s2b)).toBe(EINVAL);
    const flat = iommufdDeviceBind(
      t.sys.ctx,
      new IommuDevice("flat", new ArmSmmuV3IommufdDriver(t.sys.kernel, { nesting: false })),
    );
    expect(
      errnoOf(() =>
        t.sys.fd.hwptAlloc({ devId: flat.id, ptId: t.ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT }),
      ),
    ).toBe(EOPNOTSUPP);
    expect(new ArmSmmuV3Driver().nest).toBeDefined();
  });

  it("attach: a translating STE needs the vDEVICE (ENOENT); abort and bypass do not", () => {
    const t = setup({ vdevice: false });
    expect(errnoOf(() => iommufdDeviceAttach(t.idev, t.nested(t.s1Ste)))).toBe(ENOENT);
    iommufdDeviceAttach(t.idev, t.nested(STE_0_V | STE_0_CFG(4n)));
    iommufdDeviceReplace(t.idev, t.nested(STE_0_V));
  });

  it("IOMMU_HWPT_INVALIDATE on the vIOMMU: type, count, copy, then command by command", () => {
    const t = setup();
    const inv = (dataType: number, entries: Uint8Array[], entryLen?: number) =>
      t.sys.fd.hwptInvalidate({
        hwptId: t.viommu,
        dataType,
        entries,
        ...(entryLen ? { entryLen } : {}),
      });
    const T = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;
    const long = (c: Uint8Array, tail: number) => {
      const b = new Uint8Array(24);
      b.set(c);
      b[20] = tail;
      return b;
    };
    const table: [string, ReturnType<typeof inv>, { errno: number; entryNum: number }][] = [
      ["another type", inv(IOMMU_HWPT_DATA_SELFTEST, [cmd(0x10n)]), { errno: EINVAL, entryNum: 0 }],
      ["no entries", inv(T, []), { errno: EINVAL, entryNum: 0 }],
      [
        "a 24-byte entry with a non-zero tail",
        inv(T, [long(cmd(0x10n), 1)]),
        { errno: E2BIG, entryNum: 0 },
      ],
      [
        "a 24-byte entry with a zero tail",
        inv(T, [long(cmd(0x10n), 0)]),
        { errno: 0, entryNum: 1 },
      ],
      [
        "an 8-byte entry (zero-extended)",
        inv(T, [cmd(0x10n).subarray(0, 8)]),
        { errno: 0, entryNum: 1 },
      ],
      ["CFGI_STE is not for a guest", inv(T, [cmd(0x10n), cmd(0x3n)]), { errno: EIO, entryNum: 1 }],
      ["TLBI_S12_VMALL is not for a guest", inv(T, [cmd(0x28n)]), { errno: EIO, entryNum: 0 }],
      [
        "CFGI_CD of an unknown vSID",
        inv(T, [cmd(0x11n), cmd(0x5n | (VSID << 32n)), cmd(0x5n | (0x99n << 32n))]),
        { errno: EIO, entryNum: 2 },
      ],
      ["ATC_INV of the vSID", inv(T, [cmd(0x40n | (VSID << 32n))]), { errno: 0, entryNum: 1 }],
      ["CFGI_CD_ALL of the vSID", inv(T, [cmd(0x6n | (VSID << 32n))]), { errno: 0, entryNum: 1 }],
    ];
    for (const [what, got, want] of table) expect([what, got]).toEqual([what, want]);
    // The nested HWPT itself takes no invalidations (no cache_invalidate_user).
    const nested = t.nested(t.s1Ste);
    expect(t.sys.fd.hwptInvalidate({ hwptId: nested, dataType: T, entries: [cmd(0x10n)] })).toEqual(
      {
        errno: EOPNOTSUPP,
        entryNum: 0,
      },
    );
  });

  it("a failed conversion drops the commands converted since the last batch", () => {
    const t = setup();
    iommufdDeviceAttach(t.idev, t.nested(t.s1Ste));
    t.dmaWrite(IOVA, new Uint8Array([1]));
    t.pte(IOVA, DATA_B | PTE_PAGE);
    // NH_ALL is converted, then the bad opcode stops the walk before the batch is issued.
    expect(t.invalidate(cmd(0x10n), cmd(0xffn))).toEqual({ errno: EIO, entryNum: 1 });
    t.dmaWrite(IOVA, new Uint8Array([2]));
    expect(t.peek(DATA_A, 1)[0]).toBe(2);
    // 63 commands make a batch: a bad 64th leaves the first 63 issued.
    const many = [
      ...Array.from({ length: 62 }, () => cmd(0x11n | (99n << 48n))),
      cmd(0x10n),
      cmd(0xffn),
    ];
    expect(t.invalidate(...many)).toEqual({ errno: EIO, entryNum: 63 });
    t.dmaWrite(IOVA, new Uint8Array([3]));
    expect(t.peek(DATA_B, 1)[0]).toBe(3);
  });
});

describe("SMMUv3 uAPI layouts (include/uapi/linux/iommufd.h)", () => {
  it("pins sizeof and every member's offset, and the type values", () => {
    const offsets = (s: {
      size: number;
      fieldNames: readonly string[];
      offsetOf(f: never): number;
    }) => [s.size, Object.fromEntries(s.fieldNames.map((f) => [f, s.offsetOf(f as never)]))];
    expect(offsets(iommu_hwpt_arm_smmuv3)).toEqual([16, { ste0: 0, ste1: 8 }]);
    expect(offsets(iommu_viommu_arm_smmuv3_invalidate)).toEqual([16, { cmd0: 0, cmd1: 8 }]);
    expect(offsets(iommu_vevent_arm_smmuv3)).toEqual([
      32,
      { evt0: 0, evt1: 8, evt2: 16, evt3: 24 },
    ]);
    expect(offsets(iommu_hw_info_arm_smmuv3)).toEqual([
      40,
      {
        flags: 0,
        __reserved: 4,
        idr0: 8,
        idr1: 12,
        idr2: 16,
        idr3: 20,
        idr4: 24,
        idr5: 28,
        iidr: 32,
        aidr: 36,
      },
    ]);
    expect([
      IOMMU_HWPT_DATA_ARM_SMMUV3,
      IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
      IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
      IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
      IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
    ]).toEqual([2, 1, 1, 1, 2]);
  });

  it("GET_HW_INFO returns the SMMU's ID registers as struct iommu_hw_info_arm_smmuv3", () => {
    const t = setup();
    const { info, data } = t.sys.fd.getHwInfo({ devId: t.idev.id, dataLen: 64 });
    expect([info.data_type, info.data_len]).toEqual([IOMMU_HW_INFO_TYPE_ARM_SMMUV3, 40]);
    const regs = iommu_hw_info_arm_smmuv3.decode(data.subarray(0, 40));
    // IDR0: S1P and S2P (what nesting needs), AArch64 tables; IDR5: 48-bit OAS, 4K granule.
    expect(regs.idr0 & 3).toBe(3);
    expect((regs.idr0 >> 2) & 3).toBe(2);
    expect(regs.idr5 & 7).toBe(5);
    expect(regs.idr5 & (1 << 4)).not.toBe(0);
  });
});

describe("SMMUv3 nesting under fault injection", () => {
  /**
   * Arm fail-nth points 1, 2, … around one ioctl (its user memory already in place) until
   * `site` fails: the errno and the struct as the kernel wrote it back.
   */
  function failAt(t: ReturnType<typeof setup>, site: string, request: number, arg: Uint8Array) {
    const fault = t.sys.libc.task.fault;
    for (let nth = 1; nth < 50; nth++) {
      const buf = arg.slice();
      fault.arm(nth);
      const ret = t.sys.libc.ioctl(t.sys.fd.fd, request, buf);
      fault.disarm();
      if (fault.failedSite === site) return { errno: ret < 0 ? t.sys.libc.errno : 0, buf };
    }
    throw new Error(`${site} never failed`);
  }

  /** `bytes` in the process's memory, touched so that no later access faults. */
  function user(t: ReturnType<typeof setup>, bytes: Uint8Array): bigint {
    const uptr = t.sys.libc.malloc(bytes.length);
    t.sys.libc.poke(uptr, bytes);
    return uptr;
  }

  it("the command buffer's allocation fails first: ENOMEM, nothing handled", () => {
    const t = setup();
    const arg = iommu_hwpt_invalidate.encode({
      size: iommu_hwpt_invalidate.size,
      hwpt_id: t.viommu,
      data_uptr: user(t, cmd(0x10n)),
      data_type: IOMMU_HWPT_DATA_SELFTEST,
      entry_len: 16,
      entry_num: 1,
    });
    const { errno, buf } = failAt(t, "arm_vsmmu_cache_invalidate", IOMMU_HWPT_INVALIDATE, arg);
    expect([errno, iommu_hwpt_invalidate.get(buf, "entry_num")]).toEqual([ENOMEM, 0]);
  });

  it("the nested domain's allocation fails after the STE checks: ENOMEM, no HWPT left", () => {
    const t = setup();
    const data = iommu_hwpt_arm_smmuv3.encode({ ste0: t.s1Ste, ste1: 0n });
    const arg = iommu_hwpt_alloc.encode({
      size: iommu_hwpt_alloc.size,
      dev_id: t.idev.id,
      pt_id: t.viommu,
      data_type: IOMMU_HWPT_DATA_ARM_SMMUV3,
      data_len: 16,
      data_uptr: user(t, data),
    });
    const before = [...t.sys.ctx.objectsInOrder()].length;
    const { errno } = failAt(t, "arm_vsmmu_alloc_domain_nested", IOMMU_HWPT_ALLOC, arg);
    expect(errno).toBe(ENOMEM);
    expect([...t.sys.ctx.objectsInOrder()].length).toBe(before);
  });
});
