/**
 * SMMUv3 nested translation driven directly: the guest's STE / CD / stage-1 table in guest
 * memory, walked through a stage-2 parent; the stage-1 TLB tagged by VMID and ASID and what
 * each invalidation command drops; the event records of faults and where they go.
 * @see drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c, arm-smmu-v3-iommufd.c
 */
import { KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuNestedDomain,
  ArmSmmuV3Driver,
  CMDQ_OP_ATC_INV,
  CMDQ_OP_CFGI_CD,
  CMDQ_OP_CFGI_CD_ALL,
  CMDQ_OP_TLBI_NH_ALL,
  CMDQ_OP_TLBI_NH_ASID,
  CMDQ_OP_TLBI_NH_VA,
  CMDQ_OP_TLBI_NH_VAA,
  CMDQ_OP_TLBI_NSNH_ALL,
  CTXDESC_CD_0_AA64,
  CTXDESC_CD_0_V,
  EVT_ID_ACCESS_FAULT,
  EVT_ID_BAD_CD_CONFIG,
  EVT_ID_PERMISSION_FAULT,
  EVT_ID_TRANSLATION_FAULT,
  EVTQ_1_S2,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  IommuDevice,
  STRTAB_STE_0_CFG_ABORT,
  STRTAB_STE_0_CFG_BYPASS,
  STRTAB_STE_0_V,
  iommuDomainFree,
  iommuMap,
} from "../src/index.js";
import { RW } from "./helpers.js";
import { ArmLpaeS1Tables, faultOf, PTE_BLOCK, PTE_PAGE, PTE_RDONLY } from "../src/testing.js";

/** Guest RAM: 4 MiB of IPA space at 1 GiB, backed by host PAs at 4 MiB. */
const RAM_IPA = 0x4000_0000n;
const RAM_PA = 0x40_0000n;
const RAM_SIZE = 0x40_0000n;
/** A 2 MiB-aligned guest page range for blocks and data pages. */
const DATA_IPA = RAM_IPA + 0x20_0000n;
/** IPA mapped read-only in stage 2, and IPAs stage 2 does not map. */
const RO_IPA = 0x9000_0000n;
const RO_PA = 0x90_0000n;
const HOLE_IPA = 0x8000_0000n;
const PARTIAL_IPA = 0xa000_0000n;
/** Two IPA pages stage 2 maps to PAs far apart. */
const SPLIT_IPA = 0xb000_0000n;
const SPLIT_PA0 = 0xa0_0000n;
const SPLIT_PA1 = 0xb0_0000n;
const IOVA = 0x1000_0000n;
const PAGE = 0x1000n;

const EVTQ_1_RnW = 1n << 35n;
const CLASS_CD = 0n << 40n;
const CLASS_TT = 1n << 40n;
const CLASS_IN = 2n << 40n;
const STE_S1 = STRTAB_STE_0_V | (5n << 1n);

/** CD word 0: AArch64, valid, 4K TG0, the T0SZ and ASID. */
const cd0 = (t0sz: number, asid: bigint) =>
  BigInt(t0sz) | CTXDESC_CD_0_V | CTXDESC_CD_0_AA64 | (asid << 48n);
/** A TLBI command word 0 with its VMID and ASID (and NUM / SCALE of a range). */
const tlbi = (op: bigint, vmid: number, asid = 0n, num = 0n, scale = 0n) =>
  op | (BigInt(vmid) << 32n) | (asid << 48n) | (num << 12n) | (scale << 20n);

/** One SMMU with guest RAM; streams are devices on nested domains over stage-2 parents. */
function rig(opts: { mem?: boolean } = {}) {
  const phys = new Uint8Array(0x100_0000);
  const drv = new ArmSmmuV3Driver(
    12,
    undefined,
    [],
    opts.mem === false
      ? {}
      : {
          mem: {
            readPhys: (pa, out) => out.set(phys.subarray(Number(pa), Number(pa) + out.length)),
          },
        },
  );
  const nest = drv.nest!;
  const poke = (ipa: bigint, bytes: Uint8Array) => phys.set(bytes, Number(ipa - RAM_IPA + RAM_PA));
  let nextTable = RAM_IPA;
  /** A zeroed guest page for a CD or a table. */
  const allocPage = () => {
    const ipa = nextTable;
    nextTable += PAGE;
    return ipa;
  };
  let devs = 0;
  /** A stage-2 parent mapping guest RAM (RW), RO_IPA read-only and PARTIAL_IPA's first page. */
  const parent = (): IommuDomain => {
    const s2 = drv.domainAllocPaging(new IommuDevice("vmm", drv), IOMMU_HWPT_ALLOC_NEST_PARENT);
    iommuMap(s2, RAM_IPA, RAM_PA, RAM_SIZE, RW);
    iommuMap(s2, RO_IPA, RO_PA, PAGE, IOMMU_READ);
    iommuMap(s2, PARTIAL_IPA, RAM_PA, PAGE, RW);
    iommuMap(s2, SPLIT_IPA, SPLIT_PA0, PAGE, RW);
    iommuMap(s2, SPLIT_IPA + PAGE, SPLIT_PA1, PAGE, RW);
    return s2;
  };
  const events: bigint[][] = [];
  /** A device whose guest STE points at its own CD (T0SZ, ASID) and stage-1 table. */
  const stream = (
    s2: IommuDomain,
    o: { t0sz?: number; asid?: bigint; cd0?: bigint; ste0?: bigint; vmaster?: boolean } = {},
  ) => {
    const t0sz = o.t0sz ?? 25;
    const dev = new IommuDevice(`dev${devs++}`, drv);
    const master = nest.master(dev);
    if (o.vmaster !== false)
      master.vmaster = { vsid: BigInt(devs), report: (evt) => void events.push([...evt]) };
    const cdIpa = allocPage();
    const tables = new ArmLpaeS1Tables(poke, allocPage, 64 - t0sz);
    poke(cdIpa, tables.cd(o.cd0 ?? cd0(t0sz, o.asid ?? 7n)));
    const nested = new ArmSmmuNestedDomain(
      nest,
      s2,
      nest.vmidOf(s2),
      [o.ste0 ?? STE_S1 | cdIpa, 0n],
      false,
      undefined,
    );
    const dma = (iova: bigint, length = 1n, access = IOMMU_READ) =>
      nest.dma(nested, dev, iova, length, access);
    /** Whether reading `iova` needed a table walk (a TLB miss). */
    const walked = (iova: bigint) => {
      const w = nest.stats.walks;
      dma(iova);
      return nest.stats.walks - w;
    };
    return { dev, master, nested, tables, dma, walked, cdIpa };
  };
  return { drv, nest, poke, allocPage, parent, stream, events };
}

describe("SMMUv3 nested STE and CD", () => {
  it("an STE with V clear is abort whatever its Config; bypass passes the IOVA to stage 2", () => {
    const r = rig();
    const s2 = r.parent();
    const off = r.stream(s2, { ste0: STE_S1 & ~STRTAB_STE_0_V });
    expect(off.nested.cfg).toBe(STRTAB_STE_0_CFG_ABORT);
    expect(faultOf(() => off.dma(IOVA)).reason).toBe("blocked");
    const bypass = r.stream(s2, { ste0: STRTAB_STE_0_V | (4n << 1n) });
    expect(bypass.nested.cfg).toBe(STRTAB_STE_0_CFG_BYPASS);
    expect(bypass.dma(DATA_IPA + 8n, 4n)).toEqual([
      { iova: DATA_IPA + 8n, paddr: RAM_PA + 0x20_0008n, length: 4n, prot: RW },
    ]);
    // No event for an abort STE.
    expect([r.events, r.nest.unhandledEvents]).toEqual([[], []]);
    expect(off.nested.domain.geometry).toEqual(s2.geometry);
  });

  it("streams get StreamIDs in probe order and events carry them", () => {
    const r = rig();
    const s2 = r.parent();
    const a = r.stream(s2);
    const b = r.stream(s2);
    expect([a.master.sid, b.master.sid]).toEqual([0x100, 0x101]);
    faultOf(() => b.dma(IOVA));
    expect(r.events.map((e) => e[0]! >> 32n)).toEqual([0x101n]);
  });

  // The CD fields the SMMU refuses as C_BAD_CD: V clear, AArch32, EPD0 (no TTB0 walks),
  // a non-4K TG0, T0SZ outside 16..39 for a 4K granule.
  it.each([
    ["V clear", cd0(25, 7n) & ~CTXDESC_CD_0_V],
    ["AA64 clear", cd0(25, 7n) & ~CTXDESC_CD_0_AA64],
    ["EPD0", cd0(25, 7n) | (1n << 14n)],
    ["TG0 64K", cd0(25, 7n) | (1n << 6n)],
    ["TG0 16K", cd0(25, 7n) | (2n << 6n)],
    ["T0SZ 15", cd0(15, 7n)],
    ["T0SZ 40", cd0(40, 7n)],
  ])("a CD with %s raises C_BAD_CD", (_name, bad) => {
    const r = rig();
    const s = r.stream(r.parent(), { cd0: bad });
    s.tables.map(IOVA, DATA_IPA | PTE_PAGE);
    const f = faultOf(() => s.dma(IOVA + 4n));
    expect([f.reason, f.stage, f.iova]).toEqual(["config", 1, IOVA + 4n]);
    expect(r.events).toEqual([
      [BigInt(EVT_ID_BAD_CD_CONFIG) | (0x100n << 32n), EVTQ_1_RnW | CLASS_CD, IOVA + 4n, 0n],
    ]);
  });

  it.each([16, 25, 39])("T0SZ %i walks from the level the input size needs", (t0sz) => {
    const r = rig();
    const s = r.stream(r.parent(), { t0sz });
    s.tables.map(0x20_1000n, DATA_IPA | PTE_PAGE);
    expect(s.dma(0x20_1010n, 2n)[0]).toMatchObject({
      iova: 0x20_1010n,
      paddr: RAM_PA + 0x20_0010n,
    });
  });

  it("an IOVA above the CD's input size is a translation fault, not an alias", () => {
    const r = rig();
    const s = r.stream(r.parent(), { t0sz: 39 });
    s.tables.map(PAGE, DATA_IPA | PTE_PAGE);
    expect(s.dma(PAGE)).toHaveLength(1);
    const above = (1n << 30n) + PAGE;
    expect(faultOf(() => s.dma(above)).reason).toBe("not-present");
    expect(r.events[0]).toEqual([
      BigInt(EVT_ID_TRANSLATION_FAULT) | (0x100n << 32n),
      EVTQ_1_RnW | CLASS_IN,
      above,
      0n,
    ]);
  });

  it("the CD is cached per stream until a new STE or CFGI_CD for its StreamID", () => {
    const r = rig();
    const s2 = r.parent();
    const s = r.stream(s2);
    const other = r.stream(s2);
    s.tables.map(IOVA, DATA_IPA | PTE_PAGE);
    s.tables.map(IOVA + PAGE, DATA_IPA | PTE_PAGE);
    s.tables.map(IOVA + 2n * PAGE, DATA_IPA | PTE_PAGE);
    s.tables.map(IOVA + 3n * PAGE, DATA_IPA | PTE_PAGE);
    s.dma(IOVA);
    // The guest invalidates its CD in memory: the SMMU walks on with the cached one.
    r.poke(s.cdIpa, s.tables.cd(0n));
    expect(s.walked(IOVA + PAGE)).toBe(1);
    // A CFGI_CD for another stream leaves it cached.
    r.nest.issueCmd(CMDQ_OP_CFGI_CD | (BigInt(other.master.sid) << 32n), 0n);
    expect(s.walked(IOVA + 2n * PAGE)).toBe(1);
    r.nest.issueCmd(CMDQ_OP_CFGI_CD | (BigInt(s.master.sid) << 32n), 0n);
    expect(faultOf(() => s.dma(IOVA + 3n * PAGE)).reason).toBe("config");
    // CFGI_CD_ALL and a new STE refetch it too.
    r.poke(s.cdIpa, s.tables.cd(cd0(25, 7n)));
    r.nest.issueCmd(CMDQ_OP_CFGI_CD_ALL | (BigInt(s.master.sid) << 32n), 0n);
    expect(s.dma(IOVA + 3n * PAGE)).toHaveLength(1);
    r.poke(s.cdIpa, s.tables.cd(0n));
    r.nest.steChanged(s.master);
    expect(faultOf(() => s.dma(IOVA)).reason).toBe("config");
  });
});

describe("SMMUv3 nested stage-1 walk and stage 2", () => {
  it("IOVA -> IPA -> PA for 4K pages, 2M and 1G blocks; runs keep IOVA terms", () => {
    const r = rig();
    const s = r.stream(r.parent());
    s.tables.map(IOVA, DATA_IPA | PTE_PAGE);
    s.tables.map(IOVA + PAGE, (DATA_IPA + 0x5000n) | PTE_PAGE);
    s.tables.map(0x20_0000n, DATA_IPA | PTE_BLOCK, 2);
    s.tables.map(0x4000_0000n, RAM_IPA | PTE_BLOCK, 1);
    expect(s.dma(IOVA + 0xff0n, 0x20n)).toEqual([
      { iova: IOVA + 0xff0n, paddr: RAM_PA + 0x20_0ff0n, length: 0x10n, prot: RW },
      { iova: IOVA + PAGE, paddr: RAM_PA + 0x20_5000n, length: 0x10n, prot: RW },
    ]);
    expect(s.dma(0x21_2345n, 0x10n)).toEqual([
      { iova: 0x21_2345n, paddr: RAM_PA + 0x21_2345n, length: 0x10n, prot: RW },
    ]);
    // One stage-1 block over two stage-2 pages far apart: two runs, each at its own IOVA.
    s.tables.map(0x80_0000n, SPLIT_IPA | PTE_BLOCK, 2);
    expect(s.dma(0x80_0800n, 0x1000n)).toEqual([
      { iova: 0x80_0800n, paddr: SPLIT_PA0 + 0x800n, length: 0x800n, prot: RW },
      { iova: 0x80_1000n, paddr: SPLIT_PA1, length: 0x800n, prot: RW },
    ]);
    expect(s.dma(0x4012_3456n, 0x10n, IOMMU_WRITE)).toEqual([
      { iova: 0x4012_3456n, paddr: RAM_PA + 0x12_3456n, length: 0x10n, prot: RW },
    ]);
  });

  it("invalid, reserved level-3, and level-0 block descriptors are translation faults", () => {
    const r = rig();
    const s = r.stream(r.parent(), { t0sz: 16 });
    s.tables.map(IOVA, 0n);
    s.tables.map(IOVA + PAGE, (DATA_IPA | PTE_PAGE) & ~2n);
    s.tables.map(1n << 39n, RAM_IPA | PTE_BLOCK, 0);
    for (const iova of [IOVA, IOVA + PAGE, 1n << 39n]) {
      const f = faultOf(() => s.dma(iova, 1n, IOMMU_WRITE));
      expect([f.reason, f.stage, f.iova]).toEqual(["not-present", 1, iova]);
    }
    expect(r.events).toEqual(
      [IOVA, IOVA + PAGE, 1n << 39n].map((iova) => [
        BigInt(EVT_ID_TRANSLATION_FAULT) | (0x100n << 32n),
        CLASS_IN,
        iova,
        0n,
      ]),
    );
  });

  it("a leaf without AF is an access fault", () => {
    const r = rig();
    const s = r.stream(r.parent());
    s.tables.map(IOVA, (DATA_IPA | PTE_PAGE) & ~(1n << 10n));
    const f = faultOf(() => s.dma(IOVA + 8n));
    expect([f.reason, f.stage]).toEqual(["not-present", 1]);
    expect(r.events[0]!.slice(0, 3)).toEqual([
      BigInt(EVT_ID_ACCESS_FAULT) | (0x100n << 32n),
      EVTQ_1_RnW | CLASS_IN,
      IOVA + 8n,
    ]);
  });

  it("a write to an AP read-only page is a stage-1 permission fault at the IOVA", () => {
    const r = rig();
    const s = r.stream(r.parent());
    s.tables.map(IOVA, DATA_IPA | PTE_PAGE | PTE_RDONLY);
    expect(s.dma(IOVA, 4n)).toHaveLength(1);
    const f = faultOf(() => s.dma(IOVA + 0x10n, 4n, IOMMU_WRITE));
    expect([f.reason, f.stage, f.iova, f.access]).toEqual([
      "permission",
      1,
      IOVA + 0x10n,
      IOMMU_WRITE,
    ]);
    expect(r.events).toEqual([
      [BigInt(EVT_ID_PERMISSION_FAULT) | (0x100n << 32n), CLASS_IN, IOVA + 0x10n, 0n],
    ]);
    expect(s.dev.faults.at(-1)).toBe(f);
  });

  it("stage-2 faults carry S2, the class and the IPA, and stay with the host", () => {
    const r = rig();
    const s2 = r.parent();
    // The CD itself is outside what stage 2 maps.
    const noCd = r.stream(s2, { ste0: STE_S1 | HOLE_IPA });
    const f = faultOf(() => noCd.dma(IOVA));
    expect([f.reason, f.stage, f.iova]).toEqual(["not-present", 2, IOVA]);
    const s = r.stream(s2);
    s.tables.map(IOVA, DATA_IPA | PTE_PAGE);
    // A table descriptor pointing at an unmapped IPA.
    s.tables.map(0x4000_0000n, (HOLE_IPA + PAGE) | 3n, 1);
    // Data pages: unmapped, read-only in stage 2, a block only partly mapped.
    s.tables.map(IOVA + PAGE, (HOLE_IPA + 2n * PAGE) | PTE_PAGE);
    s.tables.map(IOVA + 2n * PAGE, RO_IPA | PTE_PAGE);
    s.tables.map(0x60_0000n, PARTIAL_IPA | PTE_BLOCK, 2);
    expect(faultOf(() => s.dma(0x4000_0000n)).stage).toBe(2);
    expect(faultOf(() => s.dma(IOVA + PAGE + 4n, 1n, IOMMU_WRITE)).iova).toBe(IOVA + PAGE + 4n);
    expect(s.dma(IOVA + 2n * PAGE, 4n)).toHaveLength(1);
    const ro = faultOf(() => s.dma(IOVA + 2n * PAGE + 8n, 4n, IOMMU_WRITE));
    expect([ro.reason, ro.stage, ro.iova]).toEqual(["permission", 2, IOVA + 2n * PAGE + 8n]);
    const part = faultOf(() => s.dma(0x60_0800n, 0x1000n));
    expect([part.reason, part.stage, part.iova]).toEqual(["not-present", 2, 0x60_1000n]);
    const sid = (id: number, sidv: bigint) => BigInt(id) | (sidv << 32n);
    expect(r.nest.unhandledEvents).toEqual([
      [sid(EVT_ID_TRANSLATION_FAULT, 0x100n), EVTQ_1_RnW | EVTQ_1_S2 | CLASS_CD, IOVA, HOLE_IPA],
      [
        sid(EVT_ID_TRANSLATION_FAULT, 0x101n),
        EVTQ_1_RnW | EVTQ_1_S2 | CLASS_TT,
        0x4000_0000n,
        HOLE_IPA + PAGE,
      ],
      [
        sid(EVT_ID_TRANSLATION_FAULT, 0x101n),
        EVTQ_1_S2 | CLASS_IN,
        IOVA + PAGE + 4n,
        HOLE_IPA + 2n * PAGE,
      ],
      [sid(EVT_ID_PERMISSION_FAULT, 0x101n), EVTQ_1_S2 | CLASS_IN, IOVA + 2n * PAGE + 8n, RO_IPA],
      [
        sid(EVT_ID_TRANSLATION_FAULT, 0x101n),
        EVTQ_1_RnW | EVTQ_1_S2 | CLASS_IN,
        0x60_1000n,
        PARTIAL_IPA + PAGE,
      ],
    ]);
    // Stage-2 events are the host's: none reached the guest.
    expect(r.events).toEqual([]);
  });

  it("a stream without a vmaster, or whose vEVENTQ refuses, logs its events; the log keeps 64", () => {
    const r = rig();
    const s2 = r.parent();
    const bare = r.stream(s2, { vmaster: false });
    const refusing = r.stream(s2);
    refusing.master.vmaster = {
      vsid: 9n,
      report() {
        throw new Error("no vEVENTQ");
      },
    };
    faultOf(() => refusing.dma(IOVA));
    expect(r.nest.unhandledEvents).toHaveLength(1);
    for (let i = 0n; i < 64n; i++) faultOf(() => bare.dma(IOVA + i * PAGE));
    expect(r.nest.unhandledEvents).toHaveLength(64);
    expect(r.nest.unhandledEvents[0]![2]).toBe(IOVA);
    expect(r.nest.unhandledEvents[0]![0]! >> 32n).toBe(BigInt(bare.master.sid));
    expect(r.nest.unhandledEvents[63]![2]).toBe(IOVA + 63n * PAGE);
    expect(r.events).toEqual([]);
  });

  it("an SMMU with no memory to walk warns instead of faulting", () => {
    const r = rig({ mem: false });
    const s = r.stream(r.parent());
    expect(() => s.dma(IOVA)).toThrow(KernelWarning);
  });
});

describe("SMMUv3 nested TLB and invalidation", () => {
  /** Two VMIDs; in the first, ASIDs 7 and 8; in the second, ASID 7. 16 pages each. */
  function tlbRig() {
    const r = rig();
    const s2a = r.parent();
    const s2b = r.parent();
    const a7 = r.stream(s2a, { asid: 7n });
    const a8 = r.stream(s2a, { asid: 8n });
    const b7 = r.stream(s2b, { asid: 7n });
    for (const s of [a7, a8, b7])
      for (let i = 0n; i < 16n; i++) s.tables.map(IOVA + i * PAGE, DATA_IPA | PTE_PAGE);
    const fill = () => {
      for (const s of [a7, a8, b7]) for (let i = 0n; i < 16n; i++) s.dma(IOVA + i * PAGE);
    };
    /** The pages of a stream that miss the TLB now. */
    const missing = (s: typeof a7) => {
      const out: number[] = [];
      for (let i = 0; i < 16; i++) if (s.walked(IOVA + BigInt(i) * PAGE)) out.push(i);
      return out;
    };
    fill();
    const vmidA = a7.nested.vmid;
    const vmidB = b7.nested.vmid;
    return { r, s2a, s2b, a7, a8, b7, fill, missing, vmidA, vmidB };
  }

  it("hits are tagged by VMID, ASID and page", () => {
    const t = tlbRig();
    expect([t.vmidA, t.vmidB]).toEqual([1, 2]);
    expect([t.r.nest.tlbEntries(t.vmidA), t.r.nest.tlbEntries(t.vmidB)]).toEqual([32, 16]);
    const { tlbHits, walks } = t.r.nest.stats;
    expect([t.missing(t.a7), t.missing(t.a8), t.missing(t.b7)]).toEqual([[], [], []]);
    expect(t.r.nest.stats).toEqual({ tlbHits: tlbHits + 48, walks });
    // Page 16 is just past the last cached one; the page before IOVA is not mapped.
    t.a7.tables.map(IOVA + 16n * PAGE, DATA_IPA | PTE_PAGE);
    expect(t.a7.walked(IOVA + 16n * PAGE)).toBe(1);
    expect(t.r.nest.stats.tlbHits).toBe(tlbHits + 48);
    expect(faultOf(() => t.a7.dma(IOVA - 1n)).reason).toBe("not-present");
  });

  it("TLBI_NH_ALL drops one VMID; TLBI_NH_ASID one VMID's ASID", () => {
    const t = tlbRig();
    t.r.nest.issueCmd(tlbi(CMDQ_OP_TLBI_NH_ASID, t.vmidA, 8n), 0n);
    expect([t.r.nest.tlbEntries(t.vmidA), t.r.nest.tlbEntries(t.vmidB)]).toEqual([16, 16]);
    expect([t.missing(t.a7), t.missing(t.b7)]).toEqual([[], []]);
    expect(t.missing(t.a8)).toHaveLength(16);
    t.r.nest.issueCmd(tlbi(CMDQ_OP_TLBI_NH_ASID, t.vmidB, 7n), 0n);
    expect([t.r.nest.tlbEntries(t.vmidA), t.r.nest.tlbEntries(t.vmidB)]).toEqual([32, 0]);
    // The same ASID and IOVAs cached under the other VMID do not serve this one.
    expect(t.missing(t.b7)).toHaveLength(16);
    t.fill();
    t.r.nest.issueCmd(tlbi(CMDQ_OP_TLBI_NH_ALL, t.vmidB), 0n);
    expect([t.r.nest.tlbEntries(t.vmidA), t.r.nest.tlbEntries(t.vmidB)]).toEqual([32, 0]);
    // ATC_INV has no ATC to drop in the model; the stage-1 TLB is untouched.
    t.r.nest.issueCmd(CMDQ_OP_ATC_INV, 0n);
    expect(t.r.nest.tlbEntries(t.vmidA)).toBe(32);
  });

  it("TLBI_NH_VA drops one address of one ASID; TLBI_NH_VAA of every ASID", () => {
    const t = tlbRig();
    t.r.nest.issueCmd(tlbi(CMDQ_OP_TLBI_NH_VA, t.vmidA, 7n), IOVA + 3n * PAGE + 0x10n);
    expect([t.missing(t.a7), t.missing(t.a8), t.missing(t.b7)]).toEqual([[3], [], []]);
    t.r.nest.issueCmd(tlbi(CMDQ_OP_TLBI_NH_VAA, t.vmidA), IOVA + 5n * PAGE);
    expect([t.missing(t.a7), t.missing(t.a8), t.missing(t.b7)]).toEqual([[5], [5], []]);
  });

  // Ranges: TG gives the granule (1: 4K, 2: 16K, 3: 64K); the length is (NUM + 1) << SCALE
  // granules from the address. @see arm_smmu_tlb_inv_range_cmd
  it.each([
    ["4K x1 ends where page 3 starts", 2n, 1n, 0n, 0n, [2]],
    ["4K x3", 2n, 1n, 2n, 0n, [2, 3, 4]],
    ["4K x(2 << 1)", 1n, 1n, 1n, 1n, [1, 2, 3, 4]],
    ["16K x1", 4n, 2n, 0n, 0n, [4, 5, 6, 7]],
    ["64K x1", 0n, 3n, 0n, 0n, [...Array(16).keys()]],
  ])("a TLBI_NH_VA range of %s", (_n, page, tg, num, scale, dropped) => {
    const t = tlbRig();
    t.r.nest.issueCmd(
      tlbi(CMDQ_OP_TLBI_NH_VA, t.vmidA, 7n, num, scale),
      (IOVA + page * PAGE) | (tg << 10n),
    );
    expect([t.missing(t.a7), t.missing(t.a8)]).toEqual([dropped, []]);
  });

  it("an unknown command is a driver bug (WARN)", () => {
    const t = tlbRig();
    expect(() => t.r.nest.issueCmd(CMDQ_OP_TLBI_NSNH_ALL, 0n)).toThrow(KernelWarning);
    expect(t.r.nest.tlbEntries(t.vmidA)).toBe(32);
  });

  it("freeing a stage-2 domain drops its VMID's entries; the VMID is reused and starts empty", () => {
    const t = tlbRig();
    iommuDomainFree(t.s2a);
    expect([t.r.nest.tlbEntries(t.vmidA), t.r.nest.tlbEntries(t.vmidB)]).toEqual([0, 16]);
    // Freeing a domain that has no VMID (already freed) changes nothing.
    t.r.nest.freeVmid(t.s2a);
    expect(t.r.nest.tlbEntries(t.vmidB)).toBe(16);
    const s2 = t.r.parent();
    const again = t.r.stream(s2, { asid: 7n });
    expect(again.nested.vmid).toBe(t.vmidA);
    again.tables.map(IOVA, (DATA_IPA + PAGE) | PTE_PAGE);
    expect(again.walked(IOVA)).toBe(1);
    expect(again.dma(IOVA)[0]!.paddr).toBe(RAM_PA + 0x20_1000n);
  });

  it("the TLB holds 1024 entries and evicts the oldest", () => {
    const r = rig();
    const s = r.stream(r.parent());
    for (let i = 0n; i < 1025n; i++) s.tables.map(i << 21n, DATA_IPA | PTE_BLOCK, 2);
    for (let i = 0n; i < 1025n; i++) s.dma(i << 21n);
    expect(r.nest.tlbEntries(s.nested.vmid)).toBe(1024);
    expect(s.walked(1n << 21n)).toBe(0);
    expect(s.walked(0n)).toBe(1);
  });
});
