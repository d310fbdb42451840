/**
 * ARM SMMUv3 nested translation as the hardware does it: a stream table entry (STE) made from
 * a guest's STE words, the guest's context descriptor (CD) and stage-1 ARM LPAE table read from
 * guest memory (intermediate physical addresses, IPA) through the stage-2 parent, a stage-1
 * TLB tagged by VMID and ASID that only commands empty, and event records for faults.
 *
 * What is modelled: STE Config abort / bypass / stage-1 translate (S1Fmt linear, S1CDMax 0:
 * one CD, substream 0), AArch64 CDs with a 4 KiB TG0 granule and T0SZ, the table walk with
 * 4K pages and 2M / 1G blocks, AP[2] read-only and AF, TLBI_NH_ALL / ASID / VA / VAA (with
 * range), CFGI_CD / CFGI_CD_ALL (the cached CD of a stream), and the event queue. Not
 * modelled: substreams (PASIDs) in the guest's CD table, 16K / 64K stage-1 granules, ATS (an
 * ATC_INV has nothing to invalidate), stall mode (events are never stalled).
 *
 * Decision: the TLB caches stage-1 results only (IOVA -> IPA); stage 2 is looked up on every
 * access. The host's own stage-2 invalidations (on unmap) are thus always complete, as they
 * are when the kernel issues TLBI_S2_IPA / TLBI_S12_VMALL, and a guest that skips a TLBI sees
 * exactly its own stale stage-1 entries.
 *
 * @see drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h, arm-smmu-v3.c (arm_smmu_handle_event)
 */
import { KernelWarning } from "@x/kernel";
import type { IommuDomain, IommuPhysRun } from "./iommu.js";
import { IommuDomain as Domain } from "./iommu.js";
import { type IommuDevice, IommuFault, iommuPagingDma, iommuTranslate } from "./iommu-driver.js";
import { type DmaAccess, IOMMU_DOMAIN_NESTED, IOMMU_READ, IOMMU_WRITE } from "./iommu-types.js";

const field = (v: bigint, hi: number, lo: number): bigint =>
  (v >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n);
const mask = (hi: number, lo: number): bigint => ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);

/** STE word 0 / 1 fields. */
export const STRTAB_STE_0_V = 1n;
export const STRTAB_STE_0_CFG_ABORT = 0;
export const STRTAB_STE_0_CFG_BYPASS = 4;
export const STRTAB_STE_0_CFG_S1_TRANS = 5;
export const STRTAB_STE_0_CFG = mask(3, 1);
const STRTAB_STE_0_S1FMT = mask(5, 4);
const STRTAB_STE_0_S1CTXPTR_MASK = mask(51, 6);
const STRTAB_STE_0_S1CDMAX = mask(63, 59);
const STRTAB_STE_1_S1DSS = mask(1, 0);
const STRTAB_STE_1_S1CIR = mask(3, 2);
const STRTAB_STE_1_S1COR = mask(5, 4);
const STRTAB_STE_1_S1CSH = mask(7, 6);
const STRTAB_STE_1_S1STALLD = 1n << 27n;
export const STRTAB_STE_1_EATS = mask(29, 28);
export const STRTAB_STE_1_EATS_ABT = 0;
export const STRTAB_STE_1_EATS_TRANS = 1;
/** The STE bits a guest may set in a nested STE (STRTAB_STE_{0,1}_NESTING_ALLOWED). */
export const STRTAB_STE_0_NESTING_ALLOWED =
  STRTAB_STE_0_V |
  STRTAB_STE_0_CFG |
  STRTAB_STE_0_S1FMT |
  STRTAB_STE_0_S1CTXPTR_MASK |
  STRTAB_STE_0_S1CDMAX;
export const STRTAB_STE_1_NESTING_ALLOWED =
  STRTAB_STE_1_S1DSS |
  STRTAB_STE_1_S1CIR |
  STRTAB_STE_1_S1COR |
  STRTAB_STE_1_S1CSH |
  STRTAB_STE_1_S1STALLD |
  STRTAB_STE_1_EATS;

/** Context descriptor fields (words 0 and 1). */
const CTXDESC_CD_0_TCR_T0SZ = [5, 0] as const;
const CTXDESC_CD_0_TCR_TG0 = [7, 6] as const;
const CTXDESC_CD_0_TCR_EPD0 = 1n << 14n;
export const CTXDESC_CD_0_V = 1n << 31n;
export const CTXDESC_CD_0_AA64 = 1n << 41n;
const CTXDESC_CD_0_ASID = [63, 48] as const;
const CTXDESC_CD_1_TTB0_MASK = mask(51, 4);

/** Command opcodes (CMDQ_0_OP) and fields. */
export const CMDQ_0_OP = 0xffn;
export const CMDQ_OP_CFGI_CD = 0x5n;
export const CMDQ_OP_CFGI_CD_ALL = 0x6n;
export const CMDQ_OP_TLBI_NH_ALL = 0x10n;
export const CMDQ_OP_TLBI_NH_ASID = 0x11n;
export const CMDQ_OP_TLBI_NH_VA = 0x12n;
export const CMDQ_OP_TLBI_NH_VAA = 0x13n;
export const CMDQ_OP_TLBI_NSNH_ALL = 0x30n;
export const CMDQ_OP_ATC_INV = 0x40n;
export const CMDQ_TLBI_0_VMID = mask(47, 32);
export const CMDQ_TLBI_0_ASID = mask(63, 48);
export const CMDQ_CFGI_0_SID = mask(63, 32);
const CMDQ_TLBI_0_NUM = [16, 12] as const;
const CMDQ_TLBI_0_SCALE = [24, 20] as const;
const CMDQ_TLBI_1_TG = [11, 10] as const;
const CMDQ_TLBI_1_VA_MASK = mask(63, 12);
/** Commands the host issues in one go. @see CMDQ_BATCH_ENTRIES (BITS_PER_LONG) */
export const CMDQ_BATCH_ENTRIES = 64;

/** Event record fields (EVTQ_*) and the event ids a nested stream can raise. */
export const EVTQ_0_ID = mask(7, 0);
export const EVTQ_0_SID = mask(63, 32);
const EVTQ_1_RnW = 1n << 35n;
export const EVTQ_1_S2 = 1n << 39n;
const EVTQ_1_CLASS_SHIFT = 40n;
const EVTQ_3_IPA = mask(51, 12);
const EVT_ID_BAD_STE_CONFIG = 0x04;
const EVT_ID_STREAM_DISABLED_FAULT = 0x06;
const EVT_ID_BAD_SUBSTREAMID_CONFIG = 0x08;
export const EVT_ID_BAD_CD_CONFIG = 0x0a;
export const EVT_ID_TRANSLATION_FAULT = 0x10;
const EVT_ID_ADDR_SIZE_FAULT = 0x11;
export const EVT_ID_ACCESS_FAULT = 0x12;
export const EVT_ID_PERMISSION_FAULT = 0x13;
/** EVTQ_1_CLASS: what the faulting access was for. */
const EVT_CLASS_CD = 0n;
const EVT_CLASS_TT = 1n;
const EVT_CLASS_IN = 2n;

/** The descriptor bits of the stage-1 walk (VMSAv8-64, 4 KiB granule). */
const LPAE_VALID = 1n;
const LPAE_TABLE = 2n;
const LPAE_AP_RDONLY = 1n << 7n;
const LPAE_AF = 1n << 10n;
const LPAE_ADDR = mask(47, 12);

/** Stage-1 TLB entries kept per SMMU before the oldest is evicted. */
const TLB_MAX = 1024;
/** Unhandled events kept (the host's rate-limited dump). */
const EVTQ_LOG_MAX = 64;

/** Physical memory as the SMMU's table walker reads it. */
export interface SmmuPhysMem {
  readPhys(paddr: bigint, out: Uint8Array): void;
}

/** The guest's side of a stream: its vSID and where its events go (struct arm_smmu_vmaster). */
export interface ArmSmmuVmaster {
  readonly vsid: bigint;
  /** Queue the event on the vIOMMU; throws an errno when it cannot. */
  report(evt: readonly bigint[]): void;
}

/** A stream of the SMMU (struct arm_smmu_master, one StreamID). */
export interface ArmSmmuMaster {
  readonly dev: IommuDevice;
  readonly sid: number;
  vmaster: ArmSmmuVmaster | undefined;
}

/** A decoded context descriptor. */
interface ArmSmmuCd {
  readonly asid: bigint;
  readonly ttb0: bigint;
  /** Input address bits (64 - T0SZ). */
  readonly ias: number;
}

interface TlbEntry {
  readonly vmid: number;
  readonly asid: bigint;
  readonly base: bigint;
  readonly size: bigint;
  readonly oa: bigint;
  readonly writable: boolean;
}

/** The walk's verdict on one access. */
class WalkFault {
  constructor(
    readonly id: number,
    readonly s2: boolean,
    readonly cls: bigint,
    readonly ipa: bigint,
    readonly reason: "not-present" | "permission" | "config",
  ) {}
}

/** struct arm_smmu_nested_domain: the guest's two STE words over a stage-2 parent. */
export class ArmSmmuNestedDomain {
  readonly domain: IommuDomain;

  constructor(
    readonly smmu: ArmSmmuV3Nesting,
    readonly s2: IommuDomain,
    readonly vmid: number,
    readonly ste: readonly [bigint, bigint],
    /** STE.EATS was "translate": the guest runs ATS and sends ATC invalidations. */
    readonly enableAts: boolean,
    /** The driver's data (the vIOMMU it was made on). */
    readonly owner: unknown,
  ) {
    this.domain = new Domain({
      type: IOMMU_DOMAIN_NESTED,
      parent: s2,
      geometry: { ...s2.geometry },
      pgsizeBitmap: 0n,
      ops: {
        nestedDma: (_d, dev, iova, length, access) => smmu.dma(this, dev, iova, length, access),
      },
      priv: this,
    });
  }

  /** The STE Config the hardware gets: a non-valid STE is installed as abort. */
  get cfg(): number {
    if (!(this.ste[0] & STRTAB_STE_0_V)) return STRTAB_STE_0_CFG_ABORT;
    return Number(field(this.ste[0], 3, 1));
  }

  static of(domain: IommuDomain): ArmSmmuNestedDomain | undefined {
    return domain.priv instanceof ArmSmmuNestedDomain ? domain.priv : undefined;
  }
}

/**
 * The nesting half of one SMMU: streams, VMIDs of stage-2 domains, cached CDs, the stage-1
 * TLB, command execution and the event queue.
 */
export class ArmSmmuV3Nesting {
  private readonly masters = new Map<IommuDevice, ArmSmmuMaster>();
  private readonly bySid = new Map<number, ArmSmmuMaster>();
  private readonly vmids = new Map<IommuDomain, number>();
  /** VMIDs in use (smmu->vmid_map); VMID 0 is kept for bypass STEs. */
  private readonly vmidsUsed = new Set<number>();
  private readonly cds = new Map<number, ArmSmmuCd>();
  private readonly tlb: TlbEntry[] = [];
  /** Events no one took (arm_smmu_dump_event). */
  readonly unhandledEvents: (readonly bigint[])[] = [];
  /** Stage-1 TLB hits and walks, for tests. */
  readonly stats = { tlbHits: 0, walks: 0 };

  constructor(
    private readonly mem: SmmuPhysMem,
    /** The StreamID of the next device probed (IORT's ID mapping, in order of probe). */
    private nextSid = 0x100,
  ) {}

  /** The device's stream, given a StreamID when first seen. */
  master(dev: IommuDevice): ArmSmmuMaster {
    let m = this.masters.get(dev);
    if (!m) {
      m = { dev, sid: this.nextSid++, vmaster: undefined };
      this.masters.set(dev, m);
      this.bySid.set(m.sid, m);
    }
    return m;
  }

  /**
   * A stage-2 domain's VMID, allocated with the domain: the lowest free one from 1, as an IDA
   * hands them out, so a freed domain's VMID is the next one given.
   * @see arm_smmu_domain_finalise_s2
   */
  vmidOf(s2: IommuDomain): number {
    let vmid = this.vmids.get(s2);
    if (vmid === undefined) {
      vmid = 1;
      while (this.vmidsUsed.has(vmid)) vmid++;
      this.vmidsUsed.add(vmid);
      this.vmids.set(s2, vmid);
    }
    return vmid;
  }

  /**
   * Freeing a stage-2 domain drops every TLB entry of its VMID (TLBI_S12_VMALL), then frees
   * the VMID. @see arm_smmu_domain_free_paging
   */
  freeVmid(s2: IommuDomain): void {
    const vmid = this.vmids.get(s2);
    if (vmid === undefined) return;
    this.tlbDrop((e) => e.vmid === vmid);
    this.vmids.delete(s2);
    this.vmidsUsed.delete(vmid);
  }

  /** Installing a new STE for a stream (CFGI_STE) forgets its cached CD. */
  steChanged(master: ArmSmmuMaster): void {
    this.cds.delete(master.sid);
  }

  /** Execute one command already in host form (physical SID, the vIOMMU's VMID). */
  issueCmd(cmd0: bigint, cmd1: bigint): void {
    const op = cmd0 & CMDQ_0_OP;
    const vmid = Number((cmd0 & CMDQ_TLBI_0_VMID) >> 32n);
    const asid = (cmd0 & CMDQ_TLBI_0_ASID) >> 48n;
    switch (op) {
      case CMDQ_OP_TLBI_NH_ALL:
        this.tlbDrop((e) => e.vmid === vmid);
        return;
      case CMDQ_OP_TLBI_NH_ASID:
        this.tlbDrop((e) => e.vmid === vmid && e.asid === asid);
        return;
      case CMDQ_OP_TLBI_NH_VA:
      case CMDQ_OP_TLBI_NH_VAA: {
        const [start, size] = tlbiRange(cmd0, cmd1);
        const anyAsid = op === CMDQ_OP_TLBI_NH_VAA;
        this.tlbDrop(
          (e) =>
            e.vmid === vmid &&
            (anyAsid || e.asid === asid) &&
            e.base < start + size &&
            start < e.base + e.size,
        );
        return;
      }
      case CMDQ_OP_CFGI_CD:
      case CMDQ_OP_CFGI_CD_ALL:
        this.cds.delete(Number((cmd0 & CMDQ_CFGI_0_SID) >> 32n));
        return;
      case CMDQ_OP_ATC_INV:
        return;
      default:
        throw new KernelWarning(`SMMU command 0x${op.toString(16)} is not a nesting command`);
    }
  }

  /** Stage-1 TLB entries of a VMID (for tests and the playground). */
  tlbEntries(vmid: number): number {
    return this.tlb.filter((e) => e.vmid === vmid).length;
  }

  private tlbDrop(match: (e: TlbEntry) => boolean): void {
    for (let i = this.tlb.length - 1; i >= 0; i--) if (match(this.tlb[i]!)) this.tlb.splice(i, 1);
  }

  private tlbLookup(vmid: number, asid: bigint, iova: bigint): TlbEntry | undefined {
    return this.tlb.find(
      (e) => e.vmid === vmid && e.asid === asid && e.base <= iova && iova < e.base + e.size,
    );
  }

  /** A device's DMA through a nested domain: stage 1 (per STE Config), then stage 2. */
  dma(
    nested: ArmSmmuNestedDomain,
    dev: IommuDevice,
    iova: bigint,
    length: bigint,
    access: DmaAccess,
  ): IommuPhysRun[] {
    const master = this.master(dev);
    const cfg = nested.cfg;
    if (cfg === STRTAB_STE_0_CFG_BYPASS)
      return this.stage2(nested, master, iova, iova, length, access);
    if (cfg !== STRTAB_STE_0_CFG_S1_TRANS) {
      // An abort STE terminates the transaction without an event.
      const f = new IommuFault(dev.name, iova, access, "blocked");
      dev.recordFault(f);
      throw f;
    }
    const out: IommuPhysRun[] = [];
    const end = iova + length;
    for (let at = iova; at < end; ) {
      let e: TlbEntry;
      try {
        const cd = this.cd(nested, master);
        const hit = this.tlbLookup(nested.vmid, cd.asid, at);
        if (hit) this.stats.tlbHits++;
        e = hit ?? this.walk(nested, cd, at);
        if (access === IOMMU_WRITE && !e.writable)
          throw new WalkFault(EVT_ID_PERMISSION_FAULT, false, EVT_CLASS_IN, 0n, "permission");
      } catch (w) {
        if (!(w instanceof WalkFault)) throw w;
        return this.fault(master, at, access, w);
      }
      const n = minBig(end - at, e.base + e.size - at);
      const ipa = e.oa + (at - e.base);
      for (const r of this.stage2(nested, master, at, ipa, n, access)) out.push(r);
      at += n;
    }
    return out;
  }

  /** Stage 2 of [ipa, ipa + n) for input address `iova`: runs in IOVA terms. */
  private stage2(
    nested: ArmSmmuNestedDomain,
    master: ArmSmmuMaster,
    iova: bigint,
    ipa: bigint,
    n: bigint,
    access: DmaAccess,
  ): IommuPhysRun[] {
    let runs: IommuPhysRun[];
    try {
      runs = iommuPagingDma(nested.s2, undefined, ipa, n, access);
    } catch (f) {
      if (!(f instanceof IommuFault)) throw f;
      const id = f.reason === "permission" ? EVT_ID_PERMISSION_FAULT : EVT_ID_TRANSLATION_FAULT;
      return this.fault(
        master,
        iova + (f.iova - ipa),
        access,
        new WalkFault(
          id,
          true,
          EVT_CLASS_IN,
          f.iova,
          f.reason === "permission" ? "permission" : "not-present",
        ),
      );
    }
    return runs.map((r) => ({ ...r, iova: iova + (r.iova - ipa) }));
  }

  /** The stream's CD: cached, or fetched from guest memory at STE.S1ContextPtr. */
  private cd(nested: ArmSmmuNestedDomain, master: ArmSmmuMaster): ArmSmmuCd {
    const cached = this.cds.get(master.sid);
    if (cached) return cached;
    const ptr = nested.ste[0] & STRTAB_STE_0_S1CTXPTR_MASK;
    const cd0 = this.read64(nested, ptr, EVT_CLASS_CD);
    const cd1 = this.read64(nested, ptr + 8n, EVT_CLASS_CD);
    const t0sz = Number(field(cd0, ...CTXDESC_CD_0_TCR_T0SZ));
    const bad =
      !(cd0 & CTXDESC_CD_0_V) ||
      !(cd0 & CTXDESC_CD_0_AA64) ||
      cd0 & CTXDESC_CD_0_TCR_EPD0 ||
      field(cd0, ...CTXDESC_CD_0_TCR_TG0) !== 0n ||
      t0sz < 16 ||
      t0sz > 39;
    if (bad) throw new WalkFault(EVT_ID_BAD_CD_CONFIG, false, EVT_CLASS_CD, 0n, "config");
    const cd = {
      asid: field(cd0, ...CTXDESC_CD_0_ASID),
      ttb0: cd1 & CTXDESC_CD_1_TTB0_MASK & LPAE_ADDR,
      ias: 64 - t0sz,
    };
    this.cds.set(master.sid, cd);
    return cd;
  }

  /** The stage-1 walk of `iova` from TTB0; each descriptor is read through stage 2. */
  private walk(nested: ArmSmmuNestedDomain, cd: ArmSmmuCd, iova: bigint): TlbEntry {
    this.stats.walks++;
    if (iova >> BigInt(cd.ias) !== 0n)
      throw new WalkFault(EVT_ID_TRANSLATION_FAULT, false, EVT_CLASS_IN, 0n, "not-present");
    const levels = Math.ceil((cd.ias - 12) / 9);
    let table = cd.ttb0;
    for (let level = 4 - levels; level <= 3; level++) {
      const shift = BigInt(12 + 9 * (3 - level));
      const idx = (iova >> shift) & 0x1ffn;
      const desc = this.read64(nested, table + idx * 8n, EVT_CLASS_TT);
      const isTable = level < 3 && (desc & LPAE_TABLE) !== 0n;
      if (
        !(desc & LPAE_VALID) ||
        (level === 3 && !(desc & LPAE_TABLE)) ||
        (level === 0 && !isTable)
      )
        throw new WalkFault(EVT_ID_TRANSLATION_FAULT, false, EVT_CLASS_IN, 0n, "not-present");
      if (isTable) {
        table = desc & LPAE_ADDR;
        continue;
      }
      if (!(desc & LPAE_AF))
        throw new WalkFault(EVT_ID_ACCESS_FAULT, false, EVT_CLASS_IN, 0n, "not-present");
      const size = 1n << shift;
      const e: TlbEntry = {
        vmid: nested.vmid,
        asid: cd.asid,
        base: iova & ~(size - 1n),
        size,
        oa: desc & LPAE_ADDR & ~(size - 1n),
        writable: !(desc & LPAE_AP_RDONLY),
      };
      if (this.tlb.length === TLB_MAX) this.tlb.shift();
      this.tlb.push(e);
      return e;
    }
    throw new KernelWarning("stage-1 walk ran past level 3");
  }

  /** A little-endian u64 of guest memory at `ipa`, read through stage 2. */
  private read64(nested: ArmSmmuNestedDomain, ipa: bigint, cls: bigint): bigint {
    let pa: bigint;
    try {
      pa = iommuTranslate(nested.s2, ipa, IOMMU_READ);
    } catch (f) {
      if (!(f instanceof IommuFault)) throw f;
      throw new WalkFault(EVT_ID_TRANSLATION_FAULT, true, cls, ipa, "not-present");
    }
    const b = new Uint8Array(8);
    this.mem.readPhys(pa, b);
    return new DataView(b.buffer).getBigUint64(0, true);
  }

  /** Record the fault on the device, raise its event, and abort the transaction. */
  private fault(master: ArmSmmuMaster, iova: bigint, access: DmaAccess, w: WalkFault): never {
    const evt = [
      BigInt(w.id) | (BigInt(master.sid) << 32n),
      (access === IOMMU_READ ? EVTQ_1_RnW : 0n) |
        (w.s2 ? EVTQ_1_S2 : 0n) |
        (w.cls << EVTQ_1_CLASS_SHIFT),
      iova,
      w.ipa & EVTQ_3_IPA,
    ];
    this.handleEvent(evt);
    const f = new IommuFault(master.dev.name, iova, access, w.reason, w.s2 ? 2 : 1);
    master.dev.recordFault(f);
    throw f;
  }

  /**
   * The event queue's consumer: fault and configuration events of a stream with a vmaster go
   * to the guest unless stage 2 raised them; the rest are only logged.
   * @see arm_smmu_handle_event
   */
  private handleEvent(evt: readonly bigint[]): void {
    const id = Number(evt[0]! & EVTQ_0_ID);
    const master = this.bySid.get(Number((evt[0]! & EVTQ_0_SID) >> 32n));
    const forwarded = [
      EVT_ID_BAD_STE_CONFIG,
      EVT_ID_STREAM_DISABLED_FAULT,
      EVT_ID_BAD_SUBSTREAMID_CONFIG,
      EVT_ID_BAD_CD_CONFIG,
      EVT_ID_TRANSLATION_FAULT,
      EVT_ID_ADDR_SIZE_FAULT,
      EVT_ID_ACCESS_FAULT,
      EVT_ID_PERMISSION_FAULT,
    ].includes(id);
    if (forwarded && master?.vmaster && !(evt[1]! & EVTQ_1_S2)) {
      try {
        master.vmaster.report(evt);
        return;
      } catch {
        // No vEVENTQ: the event is dumped like any other.
      }
    }
    if (this.unhandledEvents.length === EVTQ_LOG_MAX) this.unhandledEvents.shift();
    this.unhandledEvents.push(evt);
  }
}

/** The IOVA range of a TLBI_NH_VA / VAA: a range (TG set) or the one address. */
function tlbiRange(cmd0: bigint, cmd1: bigint): [bigint, bigint] {
  const start = cmd1 & CMDQ_TLBI_1_VA_MASK;
  const tg = field(cmd1, ...CMDQ_TLBI_1_TG);
  if (tg === 0n) return [start, 1n];
  const granule = 1n << (tg === 1n ? 12n : tg === 2n ? 14n : 16n);
  const num = field(cmd0, ...CMDQ_TLBI_0_NUM);
  const scale = field(cmd0, ...CMDQ_TLBI_0_SCALE);
  return [start, ((num + 1n) << scale) * granule];
}

function minBig(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}
