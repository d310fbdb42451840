/**
 * @x/iommu-pgtable/testing: what a guest writes into its own memory for the SMMU's nested
 * translation to read, for tests: an AArch64 stage-1 table (4 KiB granule) and the context
 * descriptor naming it, laid out as a guest's arm-smmu-v3 driver and io-pgtable-arm do; and
 * the IOMMU fault a device access raises.
 * @see drivers/iommu/io-pgtable-arm.c, arm_smmu_write_cd_entry
 */
import { IommuFault } from "./iommu-driver.js";

/** The IommuFault `fn` raises; anything else it throws propagates, and no fault is an error. */
export function faultOf(fn: () => unknown): IommuFault {
  try {
    fn();
  } catch (e) {
    if (e instanceof IommuFault) return e;
    throw e;
  }
  throw new Error("no fault");
}

/** Leaf descriptors: a level-3 page (bits 1:0 = 0b11) and a level-1/2 block (0b01), AF set. */
export const PTE_PAGE = 3n | (1n << 10n);
export const PTE_BLOCK = 1n | (1n << 10n);
/** AP[2]: read-only at EL0/EL1. */
export const PTE_RDONLY = 1n << 7n;
const PTE_TABLE = 3n;

/** Little-endian u64 words. */
export function u64le(...v: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * v.length);
  const dv = new DataView(b.buffer);
  for (const [i, x] of v.entries()) dv.setBigUint64(8 * i, x, true);
  return b;
}

/** One stage-1 table tree from TTB0, allocating its next-level tables as entries need them. */
export class ArmLpaeS1Tables {
  readonly ttb0: bigint;
  /** The level the walk starts at for this input size (T0SZ = 64 - ias). */
  readonly startLevel: number;
  private readonly next = new Map<string, bigint>();

  constructor(
    /** Writes guest-physical memory. */
    private readonly poke: (ipa: bigint, bytes: Uint8Array) => void,
    /** A zeroed, page-aligned guest page for a table. */
    private readonly allocPage: () => bigint,
    ias: number,
  ) {
    this.ttb0 = allocPage();
    this.startLevel = 4 - Math.ceil((ias - 12) / 9);
  }

  /** The two CD words the guest writes: word 0 as given, word 1 with TTB0. */
  cd(cd0: bigint): Uint8Array {
    return u64le(cd0, this.ttb0);
  }

  /** Write `desc` as the entry for `iova` at `level` (3: page, 2: 2M, 1: 1G). */
  map(iova: bigint, desc: bigint, level = 3): void {
    let table = this.ttb0;
    for (let l = this.startLevel; l < level; l++) {
      const slot = table + this.index(iova, l) * 8n;
      const key = slot.toString();
      let child = this.next.get(key);
      if (child === undefined) {
        child = this.allocPage();
        this.next.set(key, child);
        this.poke(slot, u64le(child | PTE_TABLE));
      }
      table = child;
    }
    this.poke(table + this.index(iova, level) * 8n, u64le(desc));
  }

  private index(iova: bigint, level: number): bigint {
    return (iova >> BigInt(12 + 9 * (3 - level))) & 0x1ffn;
  }
}
