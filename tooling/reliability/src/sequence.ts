/**
 * A user-space program as data: a sequence of `Op`s a VMM-like process issues against
 * /dev/iommu, the VFIO device cdevs, their dma-bufs and every revoke trigger; their fast-check
 * generators; and `Runner`, which executes them on a `Machine` through the public APIs
 * (iommufd's typed client, byte structs through `Libc` for VFIO).
 *
 * Ops name their targets by small indexes into what the program knows so far (the IOAS ids it
 * allocated, the areas it mapped, the dma-buf fds it holds), taken modulo the count, so every
 * generated sequence is meaningful and shrinks well. A call that fails must fail with an errno
 * its row of DOCUMENTED_ERRNOS allows; anything thrown other than a KernelError is a model bug
 * and propagates. The `die` op kills the process mid-program: the machine must then be
 * quiesced (checkQuiesced), and a fresh process carries on.
 */
import fc from "fast-check";
import {
  type Decoded,
  type FieldSpec,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMUFD_OBJ_IOAS,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_TEST_CMD,
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  iommu_destroy,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_copy,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_option,
  type IoPagetable,
  IommufdClient,
  type IommufdIoas,
  type Struct,
} from "@x/iommufd";
import {
  IOMMU_TEST_CMD_SIZE,
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_WRITE,
  iommu_test_cmd,
} from "@x/selftest";
import { KernelError, O_RDWR, RLIMIT_MEMLOCK, U64_MAX } from "@x/kernel";
import {
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_PM_CTRL,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_RESET,
  encodeDmaBufFeature,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
} from "@x/vfio-pci";
import { X86_MSI_RANGE_START } from "@x/iommu-pgtable";
import { Checker, type CopiedRange } from "./checker.js";
import { type SyscallName, errnoDocumented } from "./errnos.js";
import { BUFFER_PAGES, type Machine, NUM_DEVICES, PAGE } from "./machine.js";
import { type NestOp, NestOps, isNestOp, nestOpArbs } from "./nested-ops.js";
import { type VmmOp, VmmOps, vmmOpArbs } from "./vmm-ops.js";
import { plainRecord } from "./plain-record.js";

/** Fixed IOVAs are slots of this size from IOVA_BASE, so maps collide often. */
const IOVA_SLOT = 16n * PAGE;
const IOVA_BASE = 1n << 20n;
const IOVA_SLOTS = 16;
/** Pages a dma-buf may span inside the 1 MiB BAR. */
const BAR_PAGES = 256;

export type Op =
  | { readonly k: "ioasAlloc" }
  | { readonly k: "destroy"; readonly obj: number }
  | {
      readonly k: "map";
      readonly ioas: number;
      readonly memfd: boolean;
      readonly off: number;
      readonly pages: number;
      readonly slot: number | null;
      readonly readOnly: boolean;
    }
  | {
      readonly k: "mapFile";
      readonly ioas: number;
      readonly off: number;
      readonly pages: number;
      readonly slot: number | null;
    }
  | {
      readonly k: "mapDmabuf";
      readonly ioas: number;
      readonly buf: number;
      readonly off: number;
      readonly pages: number;
      readonly slot: number | null;
    }
  | {
      readonly k: "copy";
      readonly src: number;
      readonly dst: number;
      readonly area: number;
      readonly slot: number | null;
    }
  | { readonly k: "unmap"; readonly ioas: number; readonly area: number }
  | {
      readonly k: "unmapRange";
      readonly ioas: number;
      readonly slot: number;
      readonly pages: number;
    }
  | { readonly k: "unmapAll"; readonly ioas: number }
  | { readonly k: "hugePages"; readonly ioas: number; readonly on: boolean }
  | {
      readonly k: "allowIovas";
      readonly ioas: number;
      readonly slot: number;
      readonly pages: number;
    }
  | {
      readonly k: "hwptAlloc";
      readonly dev: number;
      readonly ioas: number;
      /** IOMMU_HWPT_ALLOC_DIRTY_TRACKING. */
      readonly dirty?: boolean;
    }
  | { readonly k: "dirtyTracking"; readonly hwpt: number; readonly on: boolean }
  | {
      readonly k: "dirtyBitmap";
      readonly hwpt: number;
      readonly slot: number;
      readonly pages: number;
      readonly noClear: boolean;
    }
  | { readonly k: "iommufdReopen" }
  | { readonly k: "devOpen"; readonly dev: number }
  | { readonly k: "devClose"; readonly dev: number }
  | { readonly k: "attach"; readonly dev: number; readonly pt: number }
  | { readonly k: "detach"; readonly dev: number }
  | {
      readonly k: "dmabufExport";
      readonly dev: number;
      readonly off: number;
      readonly pages: number;
    }
  | { readonly k: "dmabufClose"; readonly buf: number }
  | { readonly k: "memory"; readonly dev: number; readonly on: boolean }
  | { readonly k: "power"; readonly dev: number; readonly d3hot: boolean }
  | { readonly k: "reset"; readonly dev: number }
  | { readonly k: "flr"; readonly dev: number }
  | { readonly k: "accessCreate"; readonly ioas: number; readonly pin: boolean }
  | {
      readonly k: "accessPages";
      readonly access: number;
      readonly area: number;
      readonly pages: number;
      readonly write: boolean;
    }
  | { readonly k: "accessUnpin"; readonly access: number; readonly item: number }
  | {
      readonly k: "accessRw";
      readonly access: number;
      readonly area: number;
      readonly write: boolean;
    }
  | { readonly k: "accessClose"; readonly access: number }
  | { readonly k: "rlimitMode"; readonly mm: boolean }
  | { readonly k: "memlock"; readonly pages: number }
  /** Guest RAM mapped over the MSI window the IOMMUs reserve (EINVAL once a device attached). */
  | { readonly k: "mapMsi"; readonly ioas: number; readonly pages: number }
  /** A sealable memfd mapped by MAP_FILE (its pins then refuse F_SEAL_WRITE, EBUSY). */
  | { readonly k: "mapSealed"; readonly ioas: number; readonly mfd: number; readonly pages: number }
  | { readonly k: "die" }
  | VmmOp
  | NestOp;

const idx = fc.nat({ max: 7 });
const dev = fc.nat({ max: NUM_DEVICES - 1 });
const bufOff = fc.nat({ max: BUFFER_PAGES - 1 });
const npages = fc.integer({ min: 1, max: 8 });
const slot = fc.option(fc.nat({ max: IOVA_SLOTS - 1 }), { nil: null, freq: 2 });

/** One op, weighted toward the paths that build and tear down state. */
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ k: "ioasAlloc" } as const) },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("destroy" as const), obj: idx }) },
  {
    weight: 4,
    arbitrary: plainRecord({
      k: fc.constant("map" as const),
      ioas: idx,
      memfd: fc.boolean(),
      off: bufOff,
      pages: npages,
      slot,
      readOnly: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: plainRecord({
      k: fc.constant("mapFile" as const),
      ioas: idx,
      off: bufOff,
      pages: npages,
      slot,
    }),
  },
  {
    weight: 3,
    arbitrary: plainRecord({
      k: fc.constant("mapDmabuf" as const),
      ioas: idx,
      buf: idx,
      off: fc.nat({ max: 3 }),
      pages: npages,
      slot,
    }),
  },
  {
    weight: 2,
    arbitrary: plainRecord({
      k: fc.constant("copy" as const),
      src: idx,
      dst: idx,
      area: idx,
      slot,
    }),
  },
  { weight: 3, arbitrary: plainRecord({ k: fc.constant("unmap" as const), ioas: idx, area: idx }) },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("unmapRange" as const),
      ioas: idx,
      slot: fc.nat({ max: IOVA_SLOTS - 1 }),
      pages: fc.integer({ min: 1, max: 64 }),
    }),
  },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("unmapAll" as const), ioas: idx }) },
  {
    weight: 1,
    arbitrary: plainRecord({ k: fc.constant("hugePages" as const), ioas: idx, on: fc.boolean() }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("allowIovas" as const),
      ioas: idx,
      slot: fc.nat({ max: IOVA_SLOTS - 1 }),
      pages: fc.integer({ min: 0, max: 64 }),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("hwptAlloc" as const),
      dev,
      ioas: idx,
      dirty: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("dirtyTracking" as const),
      hwpt: idx,
      on: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("dirtyBitmap" as const),
      hwpt: idx,
      slot: fc.nat({ max: IOVA_SLOTS - 1 }),
      pages: fc.integer({ min: 1, max: 64 }),
      noClear: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ k: "iommufdReopen" } as const) },
  { weight: 2, arbitrary: plainRecord({ k: fc.constant("devOpen" as const), dev }) },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("devClose" as const), dev }) },
  { weight: 3, arbitrary: plainRecord({ k: fc.constant("attach" as const), dev, pt: idx }) },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("detach" as const), dev }) },
  {
    weight: 2,
    arbitrary: plainRecord({
      k: fc.constant("dmabufExport" as const),
      dev,
      off: fc.nat({ max: BAR_PAGES - 1 }),
      pages: fc.integer({ min: 1, max: 16 }),
    }),
  },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("dmabufClose" as const), buf: idx }) },
  {
    weight: 3,
    arbitrary: plainRecord({ k: fc.constant("memory" as const), dev, on: fc.boolean() }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({ k: fc.constant("power" as const), dev, d3hot: fc.boolean() }),
  },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("reset" as const), dev }) },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("flr" as const), dev }) },
  {
    weight: 2,
    arbitrary: plainRecord({
      k: fc.constant("accessCreate" as const),
      ioas: idx,
      pin: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: plainRecord({
      k: fc.constant("accessPages" as const),
      access: idx,
      area: idx,
      pages: fc.integer({ min: 1, max: 4 }),
      write: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({ k: fc.constant("accessUnpin" as const), access: idx, item: idx }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("accessRw" as const),
      access: idx,
      area: idx,
      write: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: plainRecord({ k: fc.constant("accessClose" as const), access: idx }) },
  {
    weight: 1,
    arbitrary: plainRecord({ k: fc.constant("rlimitMode" as const), mm: fc.boolean() }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("memlock" as const),
      pages: fc.constantFrom(0, 4, 16, 2048),
    }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({ k: fc.constant("mapMsi" as const), ioas: idx, pages: npages }),
  },
  {
    weight: 1,
    arbitrary: plainRecord({
      k: fc.constant("mapSealed" as const),
      ioas: idx,
      mfd: idx,
      pages: fc.integer({ min: 1, max: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ k: "die" } as const) },
  ...vmmOpArbs,
  ...nestOpArbs,
);

/** A program of up to `maxLength` ops. */
export function programArb(maxLength: number): fc.Arbitrary<Op[]> {
  return fc.array(opArb, { minLength: 1, maxLength, size: "max" });
}

/** What `Runner.step` answers for an op that had no target and issued nothing. */
const SKIPPED = -1;
/** Internal marker: a libc call that was not made. */
const NOT_ISSUED = -2;

/** A call answered with an errno its row does not document. */
class UndocumentedErrno extends Error {
  constructor(call: SyscallName, errno: number, op: Op) {
    super(`${call} failed with errno ${errno}, not documented for it (op ${JSON.stringify(op)})`);
    this.name = "UndocumentedErrno";
  }
}

interface Area {
  readonly iova: bigint;
  readonly length: bigint;
}

type IoptArea = ReturnType<CopiedRange["src"]["areas"]>[number];

/** A range IOAS_COPY mapped, the IOAS ids of its ends and the areas both ends had then. */
interface Copy extends CopiedRange {
  readonly srcId: number;
  readonly dstId: number;
  readonly areas: readonly IoptArea[];
}

/** The areas now at both ends of a copied range, source first. */
function copyAreas(c: CopiedRange): IoptArea[] {
  return [
    ...c.src.areas(c.srcIova, c.srcIova + c.length - 1n),
    ...c.dst.areas(c.dstIova, c.dstIova + c.length - 1n),
  ];
}

function sameAreas(now: readonly IoptArea[], then: readonly IoptArea[]): boolean {
  return now.length === then.length && now.every((a, i) => a === then[i]);
}

function pick<T>(list: readonly T[], i: number): T | undefined {
  return list.length ? list[i % list.length] : undefined;
}

const PAGE_BYTES = Number(PAGE);
/** Bytes ACCESS_RW moves. */
const RW_BYTES = 64;

/**
 * The user's struct iommu_test_cmd: built, issued and read back within one step, and steps
 * never interleave (every tool runs them one after another), so one serves every step (a new
 * array of its 72 bytes would be an off-heap allocation in V8).
 */
const testCmdBuf = new Uint8Array(IOMMU_TEST_CMD_SIZE);

/** A struct iommu_test_cmd through one union member, header filled in (valid until the next). */
function testCmd<S extends FieldSpec>(
  member: Struct<S>,
  op: number,
  id: number,
  values: Partial<Decoded<S>>,
): Uint8Array {
  const cmd = testCmdBuf.fill(0);
  member.encode(values, cmd);
  iommu_test_cmd.header.encode({ size: IOMMU_TEST_CMD_SIZE, op, id }, cmd);
  return cmd;
}

const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/** FIXED_IOVA at IOVA slot `slot`, or anywhere the kernel picks (null). */
function slotAt(slot: number | null): { fixed: number; iova: bigint } {
  return slot === null
    ? { fixed: 0, iova: 0n }
    : { fixed: IOMMU_IOAS_MAP_FIXED_IOVA, iova: IOVA_BASE + BigInt(slot) * IOVA_SLOT };
}

/** A call that maps into an IOAS: its errno row, request and struct, and the IOVA it answered. */
interface MapCall<S extends FieldSpec> {
  readonly call: SyscallName;
  readonly request: number;
  readonly struct: Struct<S>;
  iovaOf(out: Uint8Array): bigint;
}

const IOAS_MAP: MapCall<(typeof iommu_ioas_map)["fields"]> = {
  call: "IOMMU_IOAS_MAP",
  request: IOMMU_IOAS_MAP,
  struct: iommu_ioas_map,
  iovaOf: (out) => iommu_ioas_map.get(out, "iova"),
};
const IOAS_MAP_FILE: MapCall<(typeof iommu_ioas_map_file)["fields"]> = {
  call: "IOMMU_IOAS_MAP_FILE",
  request: IOMMU_IOAS_MAP_FILE,
  struct: iommu_ioas_map_file,
  iovaOf: (out) => iommu_ioas_map_file.get(out, "iova"),
};
const IOAS_COPY: MapCall<(typeof iommu_ioas_copy)["fields"]> = {
  call: "IOMMU_IOAS_COPY",
  request: IOMMU_IOAS_COPY,
  struct: iommu_ioas_copy,
  iovaOf: (out) => iommu_ioas_copy.get(out, "dst_iova"),
};

/**
 * Executes ops as one user process of `machine` would, remembering what that process knows.
 * `checkErrnos` off (fault-injection sweeps) accepts any errno, like iommufd_fail_nth.c.
 */
export class Runner {
  private fd: IommufdClient;
  private ioas: number[] = [];
  private hwpts: number[] = [];
  private areas = new Map<number, Area[]>();
  private readonly devFds: number[] = new Array(NUM_DEVICES).fill(-1);
  /** out_devid of each device's BIND (0 while unbound). */
  private readonly devIds: number[] = new Array(NUM_DEVICES).fill(0);
  private readonly bufs: number[] = [];
  /** In-kernel accesses (selftest access fds): the IOAS each sits on and its pinned items. */
  private readonly accesses: Array<{ fd: number; ioas: number; items: number[] }> = [];
  /** A user buffer ACCESS_RW reads into and writes from. */
  private rwBuf = 0n;
  /** Eventfds, sealable memfds and interrupts (vmm-ops.ts). */
  private readonly vmm: VmmOps;
  /** vIOMMUs, vDEVICEs, nested HWPTs and vEVENTQs (nested-ops.ts). */
  private readonly nest: NestOps;
  /** Ranges IOAS_COPY mapped, with the IOAS ids of both ends, while both are mapped. */
  private copied: Copy[] = [];
  /** Calls made and calls that failed (with a documented errno). */
  calls = 0;
  failures = 0;

  constructor(
    readonly machine: Machine,
    readonly checkErrnos = true,
  ) {
    this.fd = IommufdClient.open(machine.libc);
    // Methods rather than arrows: tsx, which runs the fuzzers, names each arrow it creates
    // through a defineProperty call, and every program builds a Runner.
    const runner = this;
    this.vmm = new VmmOps({
      machine,
      deviceFd(i) {
        return runner.deviceFd(i);
      },
      sys(call, op, ret) {
        return runner.sys(call, op, ret);
      },
    });
    this.nest = new NestOps({
      machine,
      client() {
        return runner.fd;
      },
      ioas() {
        return runner.ioas;
      },
      devId(i) {
        return runner.devIds[i] ?? 0;
      },
      call(call, op, fn) {
        return runner.call(call, op, fn);
      },
      iommufd(call, op, request, struct, values, done) {
        return runner.iommufd(call, op, request, struct, values, done);
      },
      attach(dev, pt) {
        return runner.step({ k: "attach", dev, pt: runner.ptIds().indexOf(pt) });
      },
    });
  }

  /** The process's /dev/iommu descriptor. */
  get iommufdFd(): number {
    return this.fd.fd;
  }

  /** The bound cdev descriptor of device `i`, or -1. */
  deviceFd(i: number): number {
    return this.devFds[i] ?? -1;
  }

  /** What a device can be attached to: IOASes, paging HWPTs, nest parents, nested HWPTs. */
  private ptIds(): number[] {
    return [...this.ioas, ...this.hwpts, ...this.nest.hwpts()];
  }

  /** The ranges IOAS_COPY mapped whose both ends are still mapped (for the checker). */
  copies(): Iterable<CopiedRange> {
    return this.copied;
  }

  /** Issue one op: 0 on success, the errno of a failed call, or SKIPPED. */
  step(op: Op): number {
    switch (op.k) {
      case "ioasAlloc":
        return this.iommufd(
          "IOMMU_IOAS_ALLOC",
          op,
          IOMMU_IOAS_ALLOC,
          iommu_ioas_alloc,
          {},
          (out) => {
            const id = iommu_ioas_alloc.get(out, "out_ioas_id");
            this.ioas.push(id);
            this.areas.set(id, []);
          },
        );
      case "destroy": {
        const all = [...this.ioas, ...this.hwpts, ...this.nest.objects()];
        const id = pick(all, op.obj) ?? 0;
        return this.iommufd("IOMMU_DESTROY", op, IOMMU_DESTROY, iommu_destroy, { id }, () => {
          this.nest.destroyed(id);
          this.forgetCopies(id, 0n, U64_MAX);
          this.ioas = this.ioas.filter((x) => x !== id);
          this.hwpts = this.hwpts.filter((x) => x !== id);
          this.areas.delete(id);
        });
      }
      case "map": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const base = op.memfd ? this.machine.memfdVa : this.machine.anonVa;
        const pages = Math.min(op.pages, BUFFER_PAGES - op.off);
        const at = slotAt(op.slot);
        const length = BigInt(pages) * PAGE;
        const map = {
          flags: (op.readOnly ? IOMMU_IOAS_MAP_READABLE : RW) | at.fixed,
          ioas_id: ioasId,
          user_va: base + BigInt(op.off) * PAGE,
          length,
          iova: at.iova,
        };
        return this.mapInto(IOAS_MAP, op, ioasId, length, map);
      }
      case "mapFile": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const pages = Math.min(op.pages, BUFFER_PAGES - op.off);
        const at = slotAt(op.slot);
        const length = BigInt(pages) * PAGE;
        const map = {
          flags: RW | at.fixed,
          ioas_id: ioasId,
          fd: this.machine.memfd,
          start: BigInt(op.off) * PAGE,
          length,
          iova: at.iova,
        };
        return this.mapInto(IOAS_MAP_FILE, op, ioasId, length, map);
      }
      case "mapDmabuf": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const bufFd = pick(this.bufs, op.buf) ?? -1;
        const at = slotAt(op.slot);
        const length = BigInt(op.pages) * PAGE;
        const map = {
          flags: RW | at.fixed,
          ioas_id: ioasId,
          fd: bufFd,
          start: BigInt(op.off) * PAGE,
          length,
          iova: at.iova,
        };
        return this.mapInto(IOAS_MAP_FILE, op, ioasId, length, map);
      }
      case "copy": {
        const src = pick(this.ioas, op.src) ?? 0;
        const dst = pick(this.ioas, op.dst) ?? 0;
        const area = pick(this.areas.get(src) ?? [], op.area) ?? { iova: 0n, length: PAGE };
        const at = slotAt(op.slot);
        const length = area.length;
        const args = {
          flags: RW | at.fixed,
          dst_ioas_id: dst,
          src_ioas_id: src,
          length,
          dst_iova: at.iova,
          src_iova: area.iova,
        };
        return this.mapInto(IOAS_COPY, op, dst, length, args, (dstIova) => {
          const copy = {
            src: this.ioptOf(src),
            srcId: src,
            srcIova: area.iova,
            dst: this.ioptOf(dst),
            dstId: dst,
            dstIova,
            length,
          };
          this.copied.push({ ...copy, areas: copyAreas(copy) });
        });
      }
      case "unmap": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const list = this.areas.get(ioasId) ?? [];
        const area = pick(list, op.area) ?? { iova: IOVA_BASE, length: PAGE };
        return this.unmap(op, ioasId, area.iova, area.length);
      }
      case "unmapRange": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        return this.unmap(
          op,
          ioasId,
          IOVA_BASE + BigInt(op.slot) * IOVA_SLOT,
          BigInt(op.pages) * PAGE,
        );
      }
      case "unmapAll": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const all = { ioas_id: ioasId, iova: 0n, length: U64_MAX };
        return this.iommufd("IOMMU_IOAS_UNMAP", op, IOMMU_IOAS_UNMAP, iommu_ioas_unmap, all, () => {
          this.forgetCopies(ioasId, 0n, U64_MAX);
          this.areas.set(ioasId, []);
        });
      }
      case "hugePages": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        return this.iommufd("IOMMU_OPTION", op, IOMMU_OPTION, iommu_option, {
          option_id: IOMMU_OPTION_HUGE_PAGES,
          op: IOMMU_OPTION_OP_SET,
          object_id: ioasId,
          val64: op.on ? 1n : 0n,
        });
      }
      case "allowIovas": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const start = IOVA_BASE + BigInt(op.slot) * IOVA_SLOT;
        const ranges = op.pages ? [{ start, last: start + BigInt(op.pages) * PAGE - 1n }] : [];
        // Through the typed client: the ranges are stored in the program's memory before the
        // call, and a fault there (fail-nth fails the page's first touch) is the call's errno.
        return this.call("IOMMU_IOAS_ALLOW_IOVAS", op, () =>
          this.fd.ioasAllowIovas(ioasId, ranges),
        );
      }
      case "hwptAlloc": {
        const devId = this.devIds[op.dev]!;
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const flags = op.dirty ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0;
        const alloc = { flags, dev_id: devId, pt_id: ioasId };
        return this.iommufd(
          "IOMMU_HWPT_ALLOC",
          op,
          IOMMU_HWPT_ALLOC,
          iommu_hwpt_alloc,
          alloc,
          (out) => this.hwpts.push(iommu_hwpt_alloc.get(out, "out_hwpt_id")),
        );
      }
      case "dirtyTracking": {
        const hwptId = pick(this.hwpts, op.hwpt) ?? 0;
        return this.iommufd(
          "IOMMU_HWPT_SET_DIRTY_TRACKING",
          op,
          IOMMU_HWPT_SET_DIRTY_TRACKING,
          iommu_hwpt_set_dirty_tracking,
          { flags: op.on ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0, hwpt_id: hwptId },
        );
      }
      case "dirtyBitmap": {
        // One bit per page over `pages` pages from a slot; the bitmap is the process's memory.
        const hwptId = pick(this.hwpts, op.hwpt) ?? 0;
        const libc = this.machine.libc;
        const data = libc.malloc(Math.ceil(op.pages / 8));
        const ret = this.iommufd(
          "IOMMU_HWPT_GET_DIRTY_BITMAP",
          op,
          IOMMU_HWPT_GET_DIRTY_BITMAP,
          iommu_hwpt_get_dirty_bitmap,
          {
            hwpt_id: hwptId,
            flags: op.noClear ? IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0,
            iova: IOVA_BASE + BigInt(op.slot) * IOVA_SLOT,
            length: BigInt(op.pages) * PAGE,
            page_size: PAGE,
            data,
          },
        );
        libc.free(data);
        return ret;
      }
      case "iommufdReopen":
        return this.call("CLOSE", op, () => {
          // Open the new one first: a failed open leaves the program its old descriptor.
          const next = IommufdClient.open(this.machine.libc);
          this.fd.close();
          this.fd = next;
          this.nest.forgetIds();
          this.copied = [];
          this.ioas = [];
          this.hwpts = [];
          this.areas.clear();
        });
      case "devOpen":
        return this.devOpen(op);
      case "devClose": {
        const dfd = this.devFds[op.dev]!;
        if (dfd < 0) return SKIPPED;
        this.devFds[op.dev] = -1;
        this.devIds[op.dev] = 0;
        return this.sys("CLOSE", op, this.machine.libc.close(dfd));
      }
      case "attach": {
        const dfd = this.devFds[op.dev]!;
        const pt = pick(this.ptIds(), op.pt) ?? 0;
        const arg = vfio_device_attach_iommufd_pt.encode({
          argsz: vfio_device_attach_iommufd_pt.size,
          pt_id: pt,
        });
        return this.sys(
          "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
          op,
          this.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg),
        );
      }
      case "detach": {
        const dfd = this.devFds[op.dev]!;
        const arg = vfio_device_detach_iommufd_pt.encode({
          argsz: vfio_device_detach_iommufd_pt.size,
        });
        return this.sys(
          "VFIO_DEVICE_DETACH_IOMMUFD_PT",
          op,
          this.ioctl(dfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, arg),
        );
      }
      case "dmabufExport": {
        const dfd = this.devFds[op.dev]!;
        const pages = Math.min(op.pages, BAR_PAGES - op.off);
        const arg = encodeDmaBufFeature({
          regionIndex: 0,
          openFlags: O_RDWR,
          ranges: [{ offset: BigInt(op.off) * PAGE, length: BigInt(pages) * PAGE }],
        });
        const ret = this.ioctl(dfd, VFIO_DEVICE_FEATURE, arg);
        if (ret >= 0) this.bufs.push(ret);
        return this.sys("VFIO_DEVICE_FEATURE", op, ret);
      }
      case "dmabufClose": {
        if (!this.bufs.length) return SKIPPED;
        const [bufFd] = this.bufs.splice(op.buf % this.bufs.length, 1);
        return this.sys("CLOSE", op, this.machine.libc.close(bufFd!));
      }
      case "memory": {
        const v = PCI_COMMAND_MASTER | (op.on ? PCI_COMMAND_MEMORY : 0);
        return this.cfgWrite(op, PCI_COMMAND, v);
      }
      case "power": {
        const pm = this.machine.devices[op.dev]!.pdev.pmCap;
        return this.cfgWrite(op, pm + PCI_PM_CTRL, op.d3hot ? 3 : 0);
      }
      case "reset": {
        const dfd = this.devFds[op.dev]!;
        return this.sys("VFIO_DEVICE_RESET", op, this.ioctl(dfd, VFIO_DEVICE_RESET, 0));
      }
      case "flr": {
        const cap = this.machine.devices[op.dev]!.pdev.pcieCap;
        return this.cfgWrite(op, cap + PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR);
      }
      case "accessCreate": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const cmd = testCmd(iommu_test_cmd.create_access, IOMMU_TEST_OP_CREATE_ACCESS, ioasId, {
          flags: op.pin ? MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES : 0,
        });
        const ret = this.testIoctl(cmd);
        if (ret >= 0) {
          const fd = iommu_test_cmd.create_access.decode(cmd).out_access_fd;
          this.accesses.push({ fd, ioas: ioasId, items: [] });
        }
        return this.sys("IOMMU_TEST_CMD", op, ret);
      }
      case "accessPages": {
        const a = pick(this.accesses, op.access);
        if (!a) return SKIPPED;
        const area = this.accessArea(a.ioas, op.area);
        const length =
          BigInt(op.pages) * PAGE < area.length ? BigInt(op.pages) * PAGE : area.length;
        const cmd = testCmd(iommu_test_cmd.access_pages, IOMMU_TEST_OP_ACCESS_PAGES, a.fd, {
          flags: op.write ? MOCK_FLAGS_ACCESS_WRITE : 0,
          iova: area.iova,
          length,
        });
        const ret = this.testIoctl(cmd);
        if (ret >= 0) a.items.push(iommu_test_cmd.access_pages.decode(cmd).out_access_pages_id);
        return this.sys("IOMMU_TEST_CMD", op, ret);
      }
      case "accessUnpin": {
        const a = pick(this.accesses, op.access);
        if (!a?.items.length) return SKIPPED;
        const [item] = a.items.splice(op.item % a.items.length, 1);
        const cmd = testCmd(
          iommu_test_cmd.destroy_access_pages,
          IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
          a.fd,
          {
            access_pages_id: item!,
          },
        );
        return this.sys("IOMMU_TEST_CMD", op, this.testIoctl(cmd));
      }
      case "accessRw": {
        const a = pick(this.accesses, op.access);
        if (!a) return SKIPPED;
        const area = this.accessArea(a.ioas, op.area);
        if (!this.rwBuf) this.rwBuf = this.machine.libc.malloc(RW_BYTES);
        const cmd = testCmd(iommu_test_cmd.access_rw, IOMMU_TEST_OP_ACCESS_RW, a.fd, {
          iova: area.iova,
          length: BigInt(RW_BYTES),
          uptr: this.rwBuf,
          flags: op.write ? MOCK_ACCESS_RW_WRITE : 0,
        });
        return this.sys("IOMMU_TEST_CMD", op, this.testIoctl(cmd));
      }
      case "rlimitMode":
        // Accepted only while the context has no object (EBUSY otherwise).
        return this.iommufd("IOMMU_OPTION", op, IOMMU_OPTION, iommu_option, {
          option_id: IOMMU_OPTION_RLIMIT_MODE,
          op: IOMMU_OPTION_OP_SET,
          val64: op.mm ? 1n : 0n,
        });
      case "memlock":
        // RLIMIT_MEMLOCK in pages: small values make pinning hit the limit (ENOMEM).
        return this.sys(
          "SETRLIMIT",
          op,
          this.machine.libc.setrlimit(RLIMIT_MEMLOCK, op.pages * PAGE_BYTES),
        );
      case "accessClose": {
        if (!this.accesses.length) return SKIPPED;
        const [a] = this.accesses.splice(op.access % this.accesses.length, 1);
        return this.sys("CLOSE", op, this.machine.libc.close(a!.fd));
      }
      case "die":
        this.die();
        return 0;
      case "mapMsi": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const length = BigInt(op.pages) * PAGE;
        const map = {
          flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
          ioas_id: ioasId,
          user_va: this.machine.memfdVa,
          length,
          iova: X86_MSI_RANGE_START,
        };
        return this.mapInto(IOAS_MAP, op, ioasId, length, map);
      }
      case "mapSealed": {
        const ioasId = pick(this.ioas, op.ioas) ?? 0;
        const fd = this.vmm.memfd(op.mfd);
        if (fd < 0) return SKIPPED;
        const length = BigInt(op.pages) * PAGE;
        const map = { flags: RW, ioas_id: ioasId, fd, start: 0n, length };
        return this.mapInto(IOAS_MAP_FILE, op, ioasId, length, map);
      }
      default:
        return isNestOp(op) ? this.nest.step(op) : this.vmm.step(op);
    }
  }

  /**
   * The process is killed where it stands: exit must leave nothing behind (no pin, charge,
   * dma-buf, context or device reference), then the program goes on as a new process that
   * knows nothing of the old one's descriptors and objects.
   */
  private die(): void {
    const { machine } = this;
    machine.libc.exit();
    new Checker({
      kernel: machine.kernel,
      tasks: machine.tasks,
      devices: machine.devices,
    }).checkQuiesced();
    machine.spawn();
    this.fd = IommufdClient.open(machine.libc);
    this.copied = [];
    this.vmm.forget();
    this.nest.forget();
    this.ioas = [];
    this.hwpts = [];
    this.areas.clear();
    this.devFds.fill(-1);
    this.devIds.fill(0);
    this.bufs.length = 0;
    this.accesses.length = 0;
    this.rwBuf = 0n;
  }

  /** Close every descriptor the program holds (then nothing may remain). */
  teardown(checkReleased = true): void {
    const libc = this.machine.libc;
    this.vmm.teardown();
    this.nest.teardown();
    for (const a of this.accesses.splice(0)) libc.close(a.fd);
    for (const bufFd of this.bufs.splice(0)) libc.close(bufFd);
    this.devFds.forEach((dfd, i) => {
      if (dfd >= 0) libc.close(dfd);
      this.devFds[i] = -1;
    });
    this.fd.close();
    if (checkReleased) this.checkReleased();
  }

  /** No eventfd context the program made may still be referenced (every holder is closed). */
  checkReleased(): void {
    this.vmm.checkReleased();
  }

  private devOpen(op: Op & { k: "devOpen" }): number {
    if (this.devFds[op.dev]! >= 0) return SKIPPED;
    const libc = this.machine.libc;
    const dfd = libc.open(this.machine.cdev(op.dev), O_RDWR);
    if (dfd < 0) return this.sys("OPEN_VFIO_CDEV", op, dfd);
    const bind = vfio_device_bind_iommufd.encode({
      argsz: vfio_device_bind_iommufd.size,
      iommufd: this.fd.fd,
    });
    const ret = this.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, bind);
    if (ret < 0) {
      libc.close(dfd);
      return this.sys("VFIO_DEVICE_BIND_IOMMUFD", op, ret);
    }
    this.devFds[op.dev] = dfd;
    this.devIds[op.dev] = vfio_device_bind_iommufd.get(bind, "out_devid");
    this.calls += 2;
    return 0;
  }

  private ioptOf(ioasId: number): IoPagetable {
    const { iommufd, libc } = this.machine;
    const ctx = iommufd.ctxFromFile(libc.process.files.lookup(this.fd.fd));
    return ctx.withObject(ioasId, IOMMUFD_OBJ_IOAS, (o) => (o as IommufdIoas).iopt);
  }

  /** Drop the copies with an end in [iova, last] of `ioasId` (that end was unmapped). */
  private forgetCopies(ioasId: number, iova: bigint, last: bigint): void {
    const hit = (id: number, at: bigint, len: bigint) =>
      id === ioasId && at <= last && at + len - 1n >= iova;
    this.copied = this.copied.filter(
      (c) => !hit(c.srcId, c.srcIova, c.length) && !hit(c.dstId, c.dstIova, c.length),
    );
  }

  /** The area an access op aims at: one of its IOAS's areas, else the first page of the base. */
  private accessArea(ioas: number, i: number): Area {
    return pick(this.areas.get(ioas) ?? [], i) ?? { iova: IOVA_BASE, length: PAGE };
  }

  private testIoctl(cmd: Uint8Array): number {
    return this.machine.libc.ioctl(this.fd.fd, IOMMU_TEST_CMD, cmd);
  }

  private ioctl(fd: number, request: number, arg: Uint8Array | number): number {
    if (fd < 0) return NOT_ISSUED;
    return this.machine.libc.ioctl(fd, request, arg);
  }

  private cfgWrite(op: Op & { dev: number }, offset: number, value: number): number {
    const dfd = this.devFds[op.dev]!;
    if (dfd < 0) return SKIPPED;
    const data = new Uint8Array([value & 0xff, (value >> 8) & 0xff]);
    return this.sys(
      "VFIO_CONFIG_WRITE",
      op,
      this.machine.libc.pwrite(dfd, data, (7n << 40n) + BigInt(offset)),
    );
  }

  /**
   * An iommufd ioctl as a C VMM issues it: `struct` filled from `values` with its size word
   * sizeof, ioctl(2), the errno on failure; `done` reads a successful call's answer.
   *
   * Decision: not through the typed client, which throws each errno. Most of a program's iommufd
   * calls fail, and V8 tiers a function up on its returns: the client's methods, left by a throw
   * nearly every time, ran without feedback, and a failing call cost some 2 µs more than its
   * ioctl (PERFORMANCE.md, eleventh round).
   */
  private iommufd<S extends FieldSpec>(
    call: SyscallName,
    op: Op,
    request: number,
    struct: Struct<S>,
    values: Partial<Decoded<S>>,
    done?: (out: Uint8Array) => void,
  ): number {
    const buf = struct.encode(values);
    struct.set(buf, "size" as keyof S & string, struct.size as never);
    const ret = this.sys(call, op, this.ioctl(this.fd.fd, request, buf));
    if (ret === 0) done?.(buf);
    return ret;
  }

  /**
   * A MAP, MAP_FILE or COPY into `ioasId` of `length` bytes: on success its area, at the IOVA
   * the kernel answered, is remembered and handed to `mapped`.
   */
  private mapInto<S extends FieldSpec>(
    map: MapCall<S>,
    op: Op,
    ioasId: number,
    length: bigint,
    values: Partial<Decoded<S>>,
    mapped?: (iova: bigint) => void,
  ): number {
    return this.iommufd(map.call, op, map.request, map.struct, values, (out) => {
      const iova = map.iovaOf(out);
      this.areas.get(ioasId)?.push({ iova, length });
      mapped?.(iova);
    });
  }

  private unmap(op: Op, ioasId: number, iova: bigint, length: bigint): number {
    const range = { ioas_id: ioasId, iova, length };
    const ret = this.iommufd(
      "IOMMU_IOAS_UNMAP",
      op,
      IOMMU_IOAS_UNMAP,
      iommu_ioas_unmap,
      range,
      () => {
        const last = iova + length - 1n;
        this.forgetCopies(ioasId, iova, last);
        const list = this.areas.get(ioasId) ?? [];
        this.areas.set(
          ioasId,
          list.filter((a) => a.iova + a.length - 1n < iova || a.iova > last),
        );
      },
    );
    // iopt_unmap_iova_range fails at the first area that sticks out of the range or is busy
    // and keeps the areas it unmapped before it: a copy that lost one of its areas is over.
    if (ret !== 0) this.copied = this.copied.filter((c) => sameAreas(copyAreas(c), c.areas));
    return ret;
  }

  /** A libc result: NOT_ISSUED (no descriptor yet) is SKIPPED; -1 is checked against `call`. */
  private sys(call: SyscallName, op: Op, ret: number): number {
    if (ret === NOT_ISSUED) return SKIPPED;
    this.calls++;
    if (ret >= 0) return 0;
    return this.failed(call, op, this.machine.libc.errno);
  }

  /** A typed-client call: a KernelError is the -1/errno of the C call. */
  private call(call: SyscallName, op: Op, fn: () => void): number {
    this.calls++;
    try {
      fn();
      return 0;
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      return this.failed(call, op, e.errno);
    }
  }

  private failed(call: SyscallName, op: Op, errno: number): number {
    this.failures++;
    if (this.checkErrnos && !errnoDocumented(call, errno))
      throw new UndocumentedErrno(call, errno, op);
    return errno;
  }
}
