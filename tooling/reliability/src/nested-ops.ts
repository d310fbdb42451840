/**
 * The nesting ops of a fuzzed program, for the machine's SMMUv3 (device 1): NEST_PARENT
 * HWPTs, vIOMMUs over them, vDEVICEs, nested HWPTs from guest STEs (abort, bypass, stage-1
 * translate, or one with a bit a guest may not set), vEVENTQs, guest commands forwarded with
 * IOMMU_HWPT_INVALIDATE, and device DMA through whatever domain the device is on. Nested HWPTs
 * and vIOMMUs join the objects the program's attach (attach or replace) and destroy ops pick
 * from.
 *
 * A stage-1 STE points its CD at an IPA the program may have mapped: the op writes a CD and a
 * stage-1 table into the first pages of the program's memfd for that IPA, so a DMA through it
 * walks to real data when the memfd is mapped there, and faults (at stage 1 or 2) otherwise.
 * A DMA may only end in RAM the IOAS maps or fault with an IommuFault; anything else thrown
 * is a model bug and propagates.
 */
import fc from "fast-check";
import {
  type Decoded,
  type FieldSpec,
  IOMMU_HWPT_ALLOC,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  type Struct,
  iommu_hwpt_alloc,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_viommu_alloc,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  type IommufdClient,
  iommu_hwpt_arm_smmuv3,
  iommu_viommu_arm_smmuv3_invalidate,
  setU64,
} from "@x/iommufd";
import {
  CMDQ_OP_ATC_INV,
  CMDQ_OP_CFGI_CD,
  CMDQ_OP_TLBI_NH_ALL,
  CMDQ_OP_TLBI_NH_ASID,
  CMDQ_OP_TLBI_NH_VA,
  CMDQ_OP_TLBI_NSNH_ALL,
  CTXDESC_CD_0_AA64,
  CTXDESC_CD_0_V,
  IOMMU_READ,
  IommuFault,
  STRTAB_STE_0_CFG_ABORT,
  STRTAB_STE_0_CFG_BYPASS,
  STRTAB_STE_0_CFG_S1_TRANS,
  STRTAB_STE_0_V,
  iommuDeviceDma,
} from "@x/iommu-pgtable";
import { KernelError } from "@x/kernel";
import { pciRoot } from "@x/vfio-pci";
import type { SyscallName } from "./errnos.js";
import { type Machine, NESTING_DEVICE, NUM_DEVICES, PAGE } from "./machine.js";
import { plainRecord } from "./plain-record.js";

/** The guest's STE kinds. */
type SteKind = "abort" | "bypass" | "s1" | "bad";
/** Guest commands: TLBI_NH_ALL / ASID / VA, NSNH_ALL, CFGI_CD, ATC_INV, one not for guests. */
type CmdKind = "nhAll" | "nhAsid" | "nhVa" | "nsnhAll" | "cfgiCd" | "atcInv" | "bad";

export type NestOp =
  | { readonly k: "nestParentAlloc"; readonly dev: number; readonly ioas: number }
  | { readonly k: "viommuAlloc"; readonly dev: number; readonly parent: number }
  | {
      readonly k: "vdeviceAlloc";
      readonly viommu: number;
      readonly dev: number;
      readonly vsid: number;
    }
  | {
      readonly k: "nestedAlloc";
      readonly dev: number;
      readonly viommu: number;
      readonly ste: SteKind;
      /** The IOVA slot (of the program's fixed slots) the CD's IPA is. */
      readonly slot: number;
    }
  | { readonly k: "veventqAlloc"; readonly viommu: number }
  | {
      readonly k: "invalidate";
      readonly viommu: number;
      readonly cmds: readonly { readonly kind: CmdKind; readonly vsid: number }[];
    }
  | { readonly k: "nestedDma"; readonly dev: number; readonly page: number }
  /**
   * A VMM's vSMMU bring-up in one go: NEST_PARENT on an IOAS, vIOMMU, vDEVICE, a stage-1
   * nested HWPT and the attach, stopping at the first call that fails.
   */
  | {
      readonly k: "vsmmuSetup";
      readonly ioas: number;
      readonly vsid: number;
      readonly slot: number;
    };

const NEST_KINDS = new Set<string>([
  "nestParentAlloc",
  "viommuAlloc",
  "vdeviceAlloc",
  "nestedAlloc",
  "veventqAlloc",
  "invalidate",
  "nestedDma",
  "vsmmuSetup",
]);

export function isNestOp(op: { readonly k: string }): op is NestOp {
  return NEST_KINDS.has(op.k);
}

const idx = fc.nat({ max: 7 });
/** Mostly the SMMUv3's device: the other one's IOMMU refuses nesting (EOPNOTSUPP). */
const dev = fc.oneof(
  { weight: 3, arbitrary: fc.constant(NESTING_DEVICE) },
  { weight: 1, arbitrary: fc.nat({ max: NUM_DEVICES - 1 }) },
);
const vsid = fc.nat({ max: 3 });

/** The nesting ops, weighted for the program's op mix. */
export const nestOpArbs: ReadonlyArray<fc.WeightedArbitrary<NestOp>> = [
  {
    weight: 2,
    arbitrary: plainRecord({ k: fc.constant("nestParentAlloc" as const), dev, ioas: idx }),
  },
  {
    weight: 2,
    arbitrary: plainRecord({ k: fc.constant("viommuAlloc" as const), dev, parent: idx }),
  },
  {
    weight: 2,
    arbitrary: plainRecord({ k: fc.constant("vdeviceAlloc" as const), viommu: idx, dev, vsid }),
  },
  {
    weight: 3,
    arbitrary: plainRecord({
      k: fc.constant("nestedAlloc" as const),
      dev,
      viommu: idx,
      ste: fc.constantFrom<SteKind>("abort", "bypass", "s1", "s1", "bad"),
      slot: fc.nat({ max: 15 }),
    }),
  },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("veventqAlloc" as const), viommu: idx }) },
  {
    weight: 2,
    arbitrary: plainRecord({
      k: fc.constant("invalidate" as const),
      viommu: idx,
      cmds: fc.array(
        plainRecord({
          kind: fc.constantFrom<CmdKind>(
            "nhAll",
            "nhAsid",
            "nhVa",
            "nsnhAll",
            "cfgiCd",
            "atcInv",
            "bad",
          ),
          vsid,
        }),
        { maxLength: 4 },
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: plainRecord({ k: fc.constant("nestedDma" as const), dev, page: fc.nat({ max: 7 }) }),
  },
  {
    weight: 2,
    arbitrary: plainRecord({
      k: fc.constant("vsmmuSetup" as const),
      ioas: idx,
      vsid,
      slot: fc.nat({ max: 15 }),
    }),
  },
];

/** What the ops need of the program that runs them. */
export interface NestOpHost {
  readonly machine: Machine;
  client(): IommufdClient;
  /** The IOAS ids the program holds. */
  ioas(): readonly number[];
  /** The dev_id of device `i` while bound, else 0. */
  devId(i: number): number;
  /** A typed-client call checked against `call`'s row: 0 or the errno. */
  call(call: SyscallName, op: NestOp, fn: () => void): number;
  /**
   * An iommufd ioctl issued as a C VMM issues it (`struct` from `values`, size sizeof), checked
   * against `call`'s row: 0 or the errno; `done` reads a successful call's answer.
   */
  iommufd<S extends FieldSpec>(
    call: SyscallName,
    op: NestOp,
    request: number,
    struct: Struct<S>,
    values: Partial<Decoded<S>>,
    done?: (out: Uint8Array) => void,
  ): number;
  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT of device `i` to `pt` (attach or replace). */
  attach(i: number, pt: number): number;
}

const SKIP = -1;
/** The fuzzer's fixed IOVA slots (sequence.ts): a CD's IPA is one of them. */
const IOVA_BASE = 1n << 20n;
const IOVA_SLOT = 16n * PAGE;
const ASID = 1n;
/** STE Config values in place, and an AArch64 CD with T0SZ 25, TG0 4K and ASID 1. */
const STE_CFG = {
  abort: BigInt(STRTAB_STE_0_CFG_ABORT) << 1n,
  bypass: BigInt(STRTAB_STE_0_CFG_BYPASS) << 1n,
  s1: BigInt(STRTAB_STE_0_CFG_S1_TRANS) << 1n,
} as const;
const CD_0 = 25n | CTXDESC_CD_0_V | CTXDESC_CD_0_AA64 | (ASID << 48n);
/** CMDQ_OP_TLBI_S12_VMALL: a command the host issues, never a guest. */
const CMDQ_OP_TLBI_S12_VMALL = 0x28n;
const OPCODES: Readonly<Record<CmdKind, bigint>> = {
  nhAll: CMDQ_OP_TLBI_NH_ALL,
  nhAsid: CMDQ_OP_TLBI_NH_ASID,
  nhVa: CMDQ_OP_TLBI_NH_VA,
  nsnhAll: CMDQ_OP_TLBI_NSNH_ALL,
  cfgiCd: CMDQ_OP_CFGI_CD,
  atcInv: CMDQ_OP_ATC_INV,
  bad: CMDQ_OP_TLBI_S12_VMALL,
};

/** `ids` without `id`. */
function without(ids: readonly number[], id: number): number[] {
  return ids.filter((x) => x !== id);
}

/** The IPA of page `n` of the memfd mapped at `ipa`. */
function ipaPage(ipa: bigint, n: number): bigint {
  return ipa + BigInt(n) * PAGE;
}

/** Little-endian u64s. Byte stores: a DataView would move the small array's bytes off-heap. */
function u64s(...v: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * v.length);
  for (let i = 0; i < v.length; i++) setU64(b, 8 * i, v[i]!);
  return b;
}

function pick<T>(list: readonly T[], i: number): T | undefined {
  return list.length ? list[i % list.length] : undefined;
}

export class NestOps {
  private parents: number[] = [];
  private viommus: number[] = [];
  private nested: number[] = [];
  private vdevices: number[] = [];
  private veventqs: number[] = [];
  /** vEVENTQ descriptors: they outlive an iommufd reopen until closed. */
  private readonly fds: number[] = [];

  constructor(private readonly host: NestOpHost) {}

  /** Object ids the program's attach and destroy ops may name. */
  objects(): number[] {
    return [...this.parents, ...this.nested, ...this.viommus, ...this.vdevices, ...this.veventqs];
  }

  /** HWPT ids a device may be attached to. */
  hwpts(): number[] {
    return [...this.parents, ...this.nested];
  }

  /** `id` was destroyed. */
  destroyed(id: number): void {
    this.parents = without(this.parents, id);
    this.viommus = without(this.viommus, id);
    this.nested = without(this.nested, id);
    this.vdevices = without(this.vdevices, id);
    this.veventqs = without(this.veventqs, id);
  }

  step(op: NestOp): number {
    const fd = this.host.client();
    switch (op.k) {
      case "nestParentAlloc": {
        const alloc = {
          flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
          dev_id: this.host.devId(op.dev),
          pt_id: pick(this.host.ioas(), op.ioas) ?? 0,
        };
        return this.host.iommufd(
          "IOMMU_HWPT_ALLOC",
          op,
          IOMMU_HWPT_ALLOC,
          iommu_hwpt_alloc,
          alloc,
          (out) => this.parents.push(iommu_hwpt_alloc.get(out, "out_hwpt_id")),
        );
      }
      case "viommuAlloc": {
        const alloc = {
          type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
          dev_id: this.host.devId(op.dev),
          hwpt_id: pick(this.parents, op.parent) ?? 0,
        };
        return this.host.iommufd(
          "IOMMU_VIOMMU_ALLOC",
          op,
          IOMMU_VIOMMU_ALLOC,
          iommu_viommu_alloc,
          alloc,
          (out) => this.viommus.push(iommu_viommu_alloc.get(out, "out_viommu_id")),
        );
      }
      case "vdeviceAlloc": {
        const alloc = {
          viommu_id: pick(this.viommus, op.viommu) ?? 0,
          dev_id: this.host.devId(op.dev),
          virt_id: BigInt(op.vsid),
        };
        return this.host.iommufd(
          "IOMMU_VDEVICE_ALLOC",
          op,
          IOMMU_VDEVICE_ALLOC,
          iommu_vdevice_alloc,
          alloc,
          (out) => this.vdevices.push(iommu_vdevice_alloc.get(out, "out_vdevice_id")),
        );
      }
      case "nestedAlloc":
        return this.nestedAlloc(op);
      case "veventqAlloc": {
        const alloc = {
          viommu_id: pick(this.viommus, op.viommu) ?? 0,
          type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
          veventq_depth: 4,
        };
        return this.host.iommufd(
          "IOMMU_VEVENTQ_ALLOC",
          op,
          IOMMU_VEVENTQ_ALLOC,
          iommu_veventq_alloc,
          alloc,
          (out) => {
            this.veventqs.push(iommu_veventq_alloc.get(out, "out_veventq_id"));
            this.fds.push(iommu_veventq_alloc.get(out, "out_veventq_fd"));
          },
        );
      }
      case "invalidate": {
        const hwptId = pick(this.viommus, op.viommu) ?? 0;
        const entries = op.cmds.map((c) =>
          iommu_viommu_arm_smmuv3_invalidate.encode({
            cmd0:
              OPCODES[c.kind] |
              (c.kind === "nhVa" || c.kind === "nhAsid" ? ASID << 48n : 0n) |
              (c.kind === "cfgiCd" || c.kind === "atcInv" ? BigInt(c.vsid) << 32n : 0n),
            cmd1: c.kind === "nhVa" ? 0x1000n : 0n,
          }),
        );
        return this.host.call("IOMMU_HWPT_INVALIDATE", op, () => {
          const r = fd.hwptInvalidate({
            hwptId,
            dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
            entries,
            entryLen: iommu_viommu_arm_smmuv3_invalidate.size,
          });
          if (r.entryNum > entries.length)
            throw new Error(`HWPT_INVALIDATE handled ${r.entryNum} of ${entries.length} entries`);
          if (r.errno) throw new KernelError(r.errno, "IOMMU_HWPT_INVALIDATE");
        });
      }
      case "nestedDma":
        return this.dma(op);
      case "vsmmuSetup":
        return this.setup(op);
    }
  }

  private setup(op: NestOp & { k: "vsmmuSetup" }): number {
    const dev = NESTING_DEVICE;
    const steps: (() => number)[] = [
      () => this.step({ k: "nestParentAlloc", dev, ioas: op.ioas }),
      () => this.step({ k: "viommuAlloc", dev, parent: this.parents.length - 1 }),
      () => this.step({ k: "vdeviceAlloc", viommu: this.viommus.length - 1, dev, vsid: op.vsid }),
      () =>
        this.step({
          k: "nestedAlloc",
          dev,
          viommu: this.viommus.length - 1,
          ste: "s1",
          slot: op.slot,
        }),
      () => this.host.attach(dev, this.nested.at(-1) ?? 0),
    ];
    for (const s of steps) {
      const ret = s();
      if (ret !== 0) return ret;
    }
    return 0;
  }

  private nestedAlloc(op: NestOp & { k: "nestedAlloc" }): number {
    const viommuId = pick(this.viommus, op.viommu) ?? 0;
    const ipa = IOVA_BASE + BigInt(op.slot) * IOVA_SLOT;
    let ste0: bigint;
    if (op.ste === "bad") ste0 = STRTAB_STE_0_V | STE_CFG.s1 | (1n << 55n);
    else ste0 = STRTAB_STE_0_V | STE_CFG[op.ste] | (op.ste === "s1" ? ipa : 0n);
    if (op.ste === "s1") this.writeGuestTables(ipa);
    return this.host.call("IOMMU_HWPT_ALLOC", op, () =>
      this.nested.push(
        this.host.client().hwptAlloc({
          devId: this.host.devId(op.dev),
          ptId: viommuId,
          dataType: IOMMU_HWPT_DATA_ARM_SMMUV3,
          data: iommu_hwpt_arm_smmuv3.encode({ ste0, ste1: 0n }),
        }),
      ),
    );
  }

  /**
   * A CD at page 0 of the memfd and a stage-1 table in pages 1-3, laid out for the memfd mapped
   * at `ipa`: IOVA page i -> IPA ipa + (4 + i) pages.
   */
  private writeGuestTables(ipa: bigint): void {
    const { libc, memfdVa } = this.host.machine;
    const ptes = Array.from({ length: 8 }, (_, i) => ipaPage(ipa, 4 + i) | 3n | (1n << 10n));
    try {
      libc.poke(memfdVa, u64s(CD_0, ipaPage(ipa, 1)));
      libc.poke(memfdVa + PAGE, u64s(ipaPage(ipa, 2) | 3n));
      libc.poke(memfdVa + 2n * PAGE, u64s(ipaPage(ipa, 3) | 3n));
      libc.poke(memfdVa + 3n * PAGE, u64s(...ptes));
    } catch (e) {
      // A store to its own memory faults only under fault injection (the page cannot be
      // allocated); the guest's tables then keep what they held.
      if (!(e instanceof KernelError)) throw e;
    }
  }

  /** Device DMA through its domain: runs in RAM, or an IommuFault. */
  private dma(op: NestOp & { k: "nestedDma" }): number {
    const iommuDev = this.host.machine.devices[op.dev]?.pdev.iommuDev;
    if (!iommuDev?.domain) return SKIP;
    try {
      const runs = iommuDeviceDma(iommuDev, BigInt(op.page) * PAGE, 8n, IOMMU_READ);
      const { kernel } = this.host.machine;
      const ramEnd = BigInt(kernel.mem.ramPages) * PAGE;
      for (const r of runs)
        if (r.paddr + r.length > ramEnd && !pciRoot(kernel).barAt(r.paddr))
          throw new Error(`[nested-dma] DMA reached 0x${r.paddr.toString(16)}, not RAM or a BAR`);
    } catch (e) {
      if (!(e instanceof IommuFault)) throw e;
    }
    return 0;
  }

  /** Close the vEVENTQ descriptors (before the quiesced check). */
  teardown(): void {
    const libc = this.host.machine.libc;
    for (const fd of this.fds.splice(0)) libc.close(fd);
    this.forgetIds();
  }

  /** The iommufd was closed: its object ids mean nothing now. */
  forgetIds(): void {
    this.parents = [];
    this.viommus = [];
    this.nested = [];
    this.vdevices = [];
    this.veventqs = [];
  }

  /** The process died: its exit closed the descriptors too. */
  forget(): void {
    this.fds.length = 0;
    this.forgetIds();
  }
}
