/**
 * The SMMUv3 driver's iommufd half beyond nested translation (arm-smmu-v3-iommufd.c): the
 * guest STE checks of arm_smmu_validate_vste, the batching of converted commands, the full-array
 * copy of iommu_copy_struct_from_full_user_array, and attaching streams to paging and to
 * another SMMU's nested domains.
 */
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IommuDevice,
  STRTAB_STE_0_CFG_ABORT,
  STRTAB_STE_0_CFG_BYPASS,
  STRTAB_STE_0_CFG_S1_TRANS,
  STRTAB_STE_0_V,
  STRTAB_STE_1_EATS,
} from "@x/iommu-pgtable";
import { EINVAL, EIO, PAGE_SIZE } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3IommufdDriver,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  armSmmuValidateVste,
  iommu_hwpt_arm_smmuv3,
  iommu_hwpt_invalidate,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceReplace,
} from "../src/index.js";
import { anonBuffer, createSystem, errnoOf, rawIoctl } from "./ioctl-helpers.js";

const cfg = (c: number) => BigInt(c) << 1n;
const eats = (e: bigint) => e << 28n;
/** S1DSS, S1CIR: bits a guest may set in word 1. */
const STE1_OTHER = 0x5n;

describe("arm_smmu_validate_vste", () => {
  it("a non-valid STE installs as abort without ATS, whatever else it holds", () => {
    expect(armSmmuValidateVste(cfg(STRTAB_STE_0_CFG_S1_TRANS), eats(1n))).toEqual({
      ste: [0n, 0n],
      enableAts: false,
    });
  });

  it("EATS is taken out of word 1, the rest kept; ATS only for stage-1 translation with EATS translate", () => {
    const v = STRTAB_STE_0_V;
    const s1 = v | cfg(STRTAB_STE_0_CFG_S1_TRANS);
    expect(armSmmuValidateVste(s1, eats(1n) | STE1_OTHER)).toEqual({
      ste: [s1, STE1_OTHER],
      enableAts: true,
    });
    expect(STRTAB_STE_1_EATS).toBe(eats(3n));
    expect(armSmmuValidateVste(s1, STE1_OTHER).enableAts).toBe(false);
    const bypass = v | cfg(STRTAB_STE_0_CFG_BYPASS);
    expect(armSmmuValidateVste(bypass, eats(1n))).toEqual({ ste: [bypass, 0n], enableAts: false });
    const abort = v | cfg(STRTAB_STE_0_CFG_ABORT);
    expect(armSmmuValidateVste(abort, eats(1n)).enableAts).toBe(false);
  });
});

function setup(opts: ConstructorParameters<typeof ArmSmmuV3IommufdDriver>[1] = {}) {
  const sys = createSystem();
  const smmu = new ArmSmmuV3IommufdDriver(sys.kernel, opts);
  const dev = new IommuDevice("nic", smmu);
  const idev = iommufdDeviceBind(sys.ctx, dev);
  const ioas = sys.fd.ioasAlloc();
  return { sys, smmu, dev, idev, ioas };
}

function withViommu(t: ReturnType<typeof setup>) {
  const s2 = t.sys.fd.hwptAlloc({
    devId: t.idev.id,
    ptId: t.ioas,
    flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
  });
  const viommu = t.sys.fd.viommuAlloc({
    devId: t.idev.id,
    hwptId: s2,
    type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  });
  return { s2, viommu };
}

describe("the SMMU's options and its paging domains", () => {
  it("the granule and the IORT RMRs given reach the SMMU", () => {
    // A 64 KiB granule: its smallest IO page is above PAGE_SIZE, which an IOAS cannot take.
    const big = setup({ granuleLg2: 16 });
    expect(errnoOf(() => iommufdDeviceAttach(big.idev, big.ioas))).toBe(EINVAL);
    const rmr = { start: 0x8000_0000n, length: 0x10000n, devices: ["nic"] };
    const t = setup({ rmrs: [rmr] });
    iommufdDeviceAttach(t.idev, t.ioas);
    const { ranges } = t.sys.fd.ioasIovaRanges(t.ioas);
    const covered = (iova: bigint) => ranges.some((r) => r.start <= iova && iova <= r.last);
    expect(covered(rmr.start)).toBe(false);
    expect(covered(rmr.start + rmr.length - 1n)).toBe(false);
    expect(covered(rmr.start - 1n)).toBe(true);
    expect(covered(rmr.start + rmr.length)).toBe(true);
  });

  it("a stream moves between a paging domain and a nested one; another SMMU's nested domain is EINVAL", () => {
    const t = setup();
    const { viommu } = withViommu(t);
    t.sys.fd.vdeviceAlloc({ viommuId: viommu, devId: t.idev.id, virtId: 1n });
    const nested = t.sys.fd.hwptAlloc({
      devId: t.idev.id,
      ptId: viommu,
      dataType: IOMMU_HWPT_DATA_ARM_SMMUV3,
      data: iommu_hwpt_arm_smmuv3.encode({
        ste0: STRTAB_STE_0_V | cfg(STRTAB_STE_0_CFG_BYPASS),
        ste1: 0n,
      }),
    });
    const master = t.smmu.nest!.master(t.dev);
    iommufdDeviceAttach(t.idev, t.ioas);
    expect(master.vmaster).toBeUndefined();
    iommufdDeviceReplace(t.idev, nested);
    expect(master.vmaster?.vsid).toBe(1n);
    iommufdDeviceReplace(t.idev, t.ioas);
    expect(master.vmaster).toBeUndefined();
    // A device behind another SMMU, bound to the same context.
    const other = iommufdDeviceBind(
      t.sys.ctx,
      new IommuDevice("gpu", new ArmSmmuV3IommufdDriver(t.sys.kernel)),
    );
    expect(errnoOf(() => iommufdDeviceAttach(other, nested))).toBe(EINVAL);
  });
});

describe("guest commands", () => {
  const cmd = (cmd0: bigint) => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, cmd0, true);
    return b;
  };
  /** TLBI_NH_ASID of an ASID nothing uses, TLBI_NH_ALL, and an opcode no guest may send. */
  const NH_ASID = 0x11n | (99n << 48n);
  const NH_ALL = 0x10n;
  const BAD = 0xffn;

  function counting(t: ReturnType<typeof setup>) {
    const nest = t.smmu.nest!;
    const issued: bigint[] = [];
    const issue = nest.issueCmd.bind(nest);
    nest.issueCmd = (cmd0: bigint, cmd1: bigint) => {
      issued.push(cmd0 & 0xffn);
      issue(cmd0, cmd1);
    };
    return issued;
  }

  it("converted commands go out in batches of 63; a failure drops only the unfinished batch", () => {
    const t = setup();
    const { viommu } = withViommu(t);
    const issued = counting(t);
    const entries = [...Array.from({ length: 125 }, () => cmd(NH_ASID)), cmd(NH_ALL), cmd(BAD)];
    expect(
      t.sys.fd.hwptInvalidate({
        hwptId: viommu,
        dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
        entries,
      }),
    ).toEqual({ errno: EIO, entryNum: 126 });
    // Two full batches (the second ends with NH_ALL) were issued.
    expect(issued).toHaveLength(126);
    expect(issued.at(-1)).toBe(NH_ALL);
    issued.length = 0;
    const three = [
      ...Array.from({ length: 126 }, () => cmd(NH_ASID)),
      ...Array.from({ length: 5 }, () => cmd(NH_ALL)),
      cmd(BAD),
    ];
    expect(
      t.sys.fd.hwptInvalidate({
        hwptId: viommu,
        dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
        entries: three,
      }),
    ).toEqual({ errno: EIO, entryNum: 131 });
    expect(issued).toHaveLength(126);
  });

  it("entries shorter than the command are read one by one, zero-extended, up to the array's end", () => {
    const t = setup();
    const { viommu } = withViommu(t);
    const issued = counting(t);
    // Two 8-byte entries ending where the process's memory ends.
    const base = anonBuffer(t.sys.libc, 2n * BigInt(PAGE_SIZE));
    expect(t.sys.libc.munmap(base + BigInt(PAGE_SIZE), PAGE_SIZE)).toBe(0);
    const uptr = base + BigInt(PAGE_SIZE) - 16n;
    t.sys.libc.poke(
      uptr,
      new Uint8Array([...cmd(NH_ALL).subarray(0, 8), ...cmd(NH_ALL).subarray(0, 8)]),
    );
    const r = rawIoctl(
      t.sys,
      IOMMU_HWPT_INVALIDATE,
      iommu_hwpt_invalidate.encode({
        size: iommu_hwpt_invalidate.size,
        hwpt_id: viommu,
        data_uptr: uptr,
        data_type: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
        entry_len: 8,
        entry_num: 2,
      }),
    );
    expect(r.errno).toBe(0);
    expect(iommu_hwpt_invalidate.decode(r.buf).entry_num).toBe(2);
    expect(issued).toEqual([NH_ALL, NH_ALL]);
  });
});
