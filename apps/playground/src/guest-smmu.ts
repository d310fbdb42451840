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

/** CD word 0: T0SZ 25 (39-bit IOVA), TG0 4K. */
const CD_0_T0SZ = 25n;
/** Stage-1 descriptors: table / page type, AF, AP[2] (read-only). */
const PTE_TABLE = 3n;
const PTE_PAGE = 3n;
const PTE_AF = 1n << 10n;
const PTE_AP_RDONLY = 1n << 7n;
const steCfg = (cfg: number) => BigInt(cfg) << 1n;

/** Guest-physical memory as the guest CPU writes it. */
export interface GuestMemory {
  write(ipa: bigint, bytes: Uint8Array): void;
}

function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

export class GuestSmmuDriver {
  /** IPA of the CD (64-byte aligned) and of the level-1 table. */
  readonly cd: bigint;
  private readonly l1: bigint;
  private next: bigint;
  /** Table pages already allocated, by (level, index path) of the IOVA they cover. */
  private readonly tables = new Map<string, bigint>();

  constructor(
    private readonly mem: GuestMemory,
    /** A zeroed run of guest pages the driver owns for its structures. */
    pool: bigint,
    readonly asid: bigint,
  ) {
    this.cd = pool;
    this.l1 = pool + 0x1000n;
    this.next = pool + 0x2000n;
    mem.write(this.cd, u64(CD_0_T0SZ | CTXDESC_CD_0_V | CTXDESC_CD_0_AA64 | (asid << 48n)));
    mem.write(this.cd + 8n, u64(this.l1));
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
    const l2 = this.table(this.l1, 1, iova);
    const l3 = this.table(l2, 2, iova);
    const pte = ipa | PTE_PAGE | PTE_AF | (writable ? 0n : PTE_AP_RDONLY);
    this.mem.write(l3 + ((iova >> 12n) & 0x1ffn) * 8n, u64(pte));
  }

  /** The next-level table under `table`'s entry for `iova`, made when missing. */
  private table(table: bigint, level: number, iova: bigint): bigint {
    const idx = (iova >> BigInt(12 + 9 * (3 - level))) & 0x1ffn;
    const key = `${table}:${idx}`;
    let next = this.tables.get(key);
    if (next === undefined) {
      next = this.next;
      this.next += 0x1000n;
      this.tables.set(key, next);
      this.mem.write(table + idx * 8n, u64(next | PTE_TABLE));
    }
    return next;
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
