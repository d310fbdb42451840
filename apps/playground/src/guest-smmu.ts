/**
 * The guest's SMMUv3 driver, as far as nesting shows it: one context descriptor and a stage-1
 * ARM LPAE table (4 KiB granule, 39-bit input, levels 1 to 3) that it builds in its own RAM,
 * the STE words naming that CD, and the commands it queues after changing them. Everything it
 * writes is in guest-physical (IPA) terms; the host SMMU reads it through stage 2.
 *
 * @see drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c (arm_smmu_make_cdtable_ste,
 *   arm_smmu_make_s1_cd), drivers/iommu/io-pgtable-arm.c
 */
import {
  CMDQ_OP_CFGI_CD,
  CMDQ_OP_TLBI_NH_VA,
  CTXDESC_CD_0_AA64,
  CTXDESC_CD_0_V,
  STRTAB_STE_0_CFG_BYPASS,
  STRTAB_STE_0_CFG_S1_TRANS,
  STRTAB_STE_0_V,
} from "@x/iommu-pgtable";
import { ArmLpaeS1Tables, PTE_PAGE, PTE_RDONLY } from "@x/iommu-pgtable/testing";

/** CD word 0: T0SZ 25 (39-bit IOVA), TG0 4K. */
const CD_0_T0SZ = 25n;
const steCfg = (cfg: number) => BigInt(cfg) << 1n;

/** Guest-physical memory as the guest CPU writes it. */
export interface GuestMemory {
  write(ipa: bigint, bytes: Uint8Array): void;
}

export class GuestSmmuDriver {
  /** IPA of the CD (64-byte aligned); the stage-1 tables follow it in the pool. */
  readonly cd: bigint;
  private readonly tables: ArmLpaeS1Tables;

  constructor(
    mem: GuestMemory,
    /** A zeroed run of guest pages the driver owns for its structures. */
    pool: bigint,
    readonly asid: bigint,
  ) {
    this.cd = pool;
    let next = pool + 0x1000n;
    const allocPage = (): bigint => {
      const page = next;
      next += 0x1000n;
      return page;
    };
    this.tables = new ArmLpaeS1Tables((ipa, bytes) => mem.write(ipa, bytes), allocPage, 64 - 25);
    mem.write(
      this.cd,
      this.tables.cd(CD_0_T0SZ | CTXDESC_CD_0_V | CTXDESC_CD_0_AA64 | (asid << 48n)),
    );
  }

  /** The STE words for a stream translated by this CD. */
  steS1(): readonly [bigint, bigint] {
    return [STRTAB_STE_0_V | steCfg(STRTAB_STE_0_CFG_S1_TRANS) | this.cd, 0n];
  }

  /** The STE words for a stream in bypass (stage 2 only). */
  steBypass(): readonly [bigint, bigint] {
    return [STRTAB_STE_0_V | steCfg(STRTAB_STE_0_CFG_BYPASS), 0n];
  }

  /** Map one 4 KiB page IOVA -> IPA (over whatever was there). */
  map(iova: bigint, ipa: bigint, writable = true): void {
    this.tables.map(iova, ipa | PTE_PAGE | (writable ? 0n : PTE_RDONLY));
  }

  /** CMD_TLBI_NH_VA for one page of this ASID. */
  tlbiVa(iova: bigint): readonly [bigint, bigint] {
    return [CMDQ_OP_TLBI_NH_VA | (this.asid << 48n), iova & ~0xfffn];
  }

  /** CMD_CFGI_CD for the stream the guest knows as `vsid`. */
  cfgiCd(vsid: bigint): readonly [bigint, bigint] {
    return [CMDQ_OP_CFGI_CD | (vsid << 32n), 1n];
  }
}
