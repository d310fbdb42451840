/**
 * Byte fuzzing: random and mutated structs into every /dev/iommu ioctl and the VFIO device
 * ioctls, on a machine already holding a VMM-like state (IOASes, areas, two domains, a live
 * BAR dma-buf mapped, a bound and an unbound device fd).
 *
 * The only acceptable outcomes are success — after which the cross-package checker must pass —
 * or -1 with an errno documented for that ioctl (DOCUMENTED_ERRNOS), after which the machine's
 * observable state (`snapshot`: objects, areas, domains and their IOPTE counts, pins,
 * accounting, dma-bufs, descriptors, exporter and device states) must be exactly as before.
 * Any other exception is a failure.
 *
 * Documented exceptions to "unchanged on error": IOAS_UNMAP keeps the whole areas it removed
 * before the failing one (iopt_unmap_iova_range in drivers/iommu/iommufd/io_pagetable.c), and
 * LOW_POWER_ENTRY on an engaged device revokes before answering EINVAL (vfio_pci_core.c);
 * SET_IRQS on an enabled MSI / MSI-X block leaves the vectors from `start` to the failing one
 * de-assigned (vfio_msi_set_block), and a hot reset that fails has revoked first
 * (vfio_pci_dev_set_hot_reset); for those the checker runs instead.
 *
 * Inputs come from a seeded generator: each field is drawn from a pool that fits its name (ids,
 * flags, IOVAs, lengths, user pointers, descriptors), the size word from the boundary sizes
 * (min − 1, min, sizeof, sizeof + 8 with a zero or non-zero tail, random); "mutated" inputs
 * start from a valid struct and change one to three fields or bytes. A failure reports the
 * seed and input index; `fuzzBytes({ seed, from: index - index % INPUTS_PER_MACHINE,
 * inputs: index + 1 })` replays it on the same machine history.
 */
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_TEST_CMD,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VIOMMU_ALLOC,
  Struct,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_invalidate,
  iommu_hw_queue_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_option,
  iommu_test_cmd,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_vfio_ioas,
  iommu_viommu_alloc,
  U64_MAX,
} from "@x/iommufd";
import { KernelError, O_RDWR, errnoName, withoutErrorStacks } from "@x/kernel";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
} from "@x/vfio-pci";
import { type CheckScope, Checker } from "./checker.js";
import { type SyscallName, errnoDocumented } from "./errnos.js";
import { BUFFER_PAGES, Machine, PAGE } from "./machine.js";
import { type Op, Runner } from "./sequence.js";
import { type Shard, ownsUnit } from "./shard.js";
import { snapshot, snapshotDiff } from "./snapshot.js";
import { errorText } from "./fuzz-uapi.js";

/** The state every byte-fuzz machine starts from. */
const BYTES_SETUP: readonly Op[] = [
  { k: "ioasAlloc" },
  { k: "ioasAlloc" },
  { k: "devOpen", dev: 0 },
  { k: "attach", dev: 0, pt: 0 },
  { k: "devOpen", dev: 1 },
  { k: "attach", dev: 1, pt: 0 },
  { k: "map", ioas: 0, memfd: true, off: 0, pages: 8, slot: 0, readOnly: false },
  { k: "map", ioas: 1, memfd: false, off: 8, pages: 4, slot: 2, readOnly: true },
  { k: "memory", dev: 0, on: true },
  { k: "dmabufExport", dev: 0, off: 0, pages: 4 },
  { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 4, slot: 4 },
  { k: "devClose", dev: 1 },
  { k: "eventfdCreate", semaphore: false },
  { k: "setIrqs", dev: 0, index: 2, action: "trigger", start: 0, count: 1, efds: [0, -1, -1] },
];

/** VFIO structs (argsz instead of size; vfio.h layouts). */
const vfio_device_bind_iommufd = new Struct(
  "vfio_device_bind_iommufd",
  24,
  {
    size: [0, "u32"],
    flags: [4, "u32"],
    fd: [8, "s32"],
    out_devid: [12, "u32"],
    token_uuid_ptr: [16, "u64"],
  },
  16,
);
const vfio_device_attach_iommufd_pt = new Struct(
  "vfio_device_attach_iommufd_pt",
  16,
  { size: [0, "u32"], flags: [4, "u32"], pt_id: [8, "u32"], pasid: [12, "u32"] },
  12,
);
const vfio_device_detach_iommufd_pt = new Struct(
  "vfio_device_detach_iommufd_pt",
  12,
  { size: [0, "u32"], flags: [4, "u32"], pasid: [8, "u32"] },
  8,
);
/** VFIO_DEVICE_FEATURE with the DMA_BUF payload and one range. */
const vfio_device_feature_dma_buf = new Struct(
  "vfio_device_feature",
  40,
  {
    size: [0, "u32"],
    flags: [4, "u32"],
    region_index: [8, "u32"],
    open_flags: [12, "u32"],
    dma_flags: [16, "u32"],
    nr_ranges: [20, "u32"],
    offset: [24, "u64"],
    length: [32, "u64"],
  },
  8,
);
const vfio_device_info = new Struct(
  "vfio_device_info",
  24,
  { size: [0, "u32"], flags: [4, "u32"], num_regions: [8, "u32"], num_irqs: [12, "u32"] },
  16,
);
const vfio_region_info = new Struct(
  "vfio_region_info",
  32,
  { size: [0, "u32"], flags: [4, "u32"], index: [8, "u32"], cap_offset: [12, "u32"] },
  16,
);

/** GET_IRQ_INFO, SET_IRQS with two eventfd slots, and the hot reset pair (vfio.h layouts). */
const vfio_irq_info = new Struct(
  "vfio_irq_info",
  16,
  { size: [0, "u32"], flags: [4, "u32"], index: [8, "u32"], count: [12, "u32"] },
  16,
);
const vfio_irq_set = new Struct(
  "vfio_irq_set",
  28,
  {
    size: [0, "u32"],
    flags: [4, "u32"],
    index: [8, "u32"],
    start: [12, "u32"],
    count: [16, "u32"],
    data_fd: [20, "s32"],
    data_next_fd: [24, "s32"],
  },
  20,
);
const vfio_pci_hot_reset_info = new Struct(
  "vfio_pci_hot_reset_info",
  28,
  { size: [0, "u32"], flags: [4, "u32"], count: [8, "u32"] },
  12,
);
const vfio_pci_hot_reset = new Struct(
  "vfio_pci_hot_reset",
  16,
  { size: [0, "u32"], flags: [4, "u32"], count: [8, "u32"], group_fd: [12, "s32"] },
  12,
);

/** One fuzzed ioctl: its struct, and which descriptor it goes to. */
interface IoctlTarget {
  readonly call: SyscallName;
  readonly cmd: number;
  // biome-ignore lint/suspicious/noExplicitAny: any structure's field table
  readonly struct: Struct<any> | undefined;
  readonly on: "iommufd" | "vfio-bound" | "vfio-unbound";
}

/** Every ioctl the byte fuzzer drives. */
export const IOCTL_TARGETS: readonly IoctlTarget[] = [
  { call: "IOMMU_DESTROY", cmd: IOMMU_DESTROY, struct: iommu_destroy, on: "iommufd" },
  { call: "IOMMU_IOAS_ALLOC", cmd: IOMMU_IOAS_ALLOC, struct: iommu_ioas_alloc, on: "iommufd" },
  {
    call: "IOMMU_IOAS_IOVA_RANGES",
    cmd: IOMMU_IOAS_IOVA_RANGES,
    struct: iommu_ioas_iova_ranges,
    on: "iommufd",
  },
  {
    call: "IOMMU_IOAS_ALLOW_IOVAS",
    cmd: IOMMU_IOAS_ALLOW_IOVAS,
    struct: iommu_ioas_allow_iovas,
    on: "iommufd",
  },
  { call: "IOMMU_IOAS_MAP", cmd: IOMMU_IOAS_MAP, struct: iommu_ioas_map, on: "iommufd" },
  {
    call: "IOMMU_IOAS_MAP_FILE",
    cmd: IOMMU_IOAS_MAP_FILE,
    struct: iommu_ioas_map_file,
    on: "iommufd",
  },
  { call: "IOMMU_IOAS_COPY", cmd: IOMMU_IOAS_COPY, struct: iommu_ioas_copy, on: "iommufd" },
  { call: "IOMMU_IOAS_UNMAP", cmd: IOMMU_IOAS_UNMAP, struct: iommu_ioas_unmap, on: "iommufd" },
  { call: "IOMMU_OPTION", cmd: IOMMU_OPTION, struct: iommu_option, on: "iommufd" },
  { call: "IOMMU_VFIO_IOAS", cmd: IOMMU_VFIO_IOAS, struct: iommu_vfio_ioas, on: "iommufd" },
  { call: "IOMMU_HWPT_ALLOC", cmd: IOMMU_HWPT_ALLOC, struct: iommu_hwpt_alloc, on: "iommufd" },
  { call: "IOMMU_GET_HW_INFO", cmd: IOMMU_GET_HW_INFO, struct: iommu_hw_info, on: "iommufd" },
  {
    call: "IOMMU_HWPT_INVALIDATE",
    cmd: IOMMU_HWPT_INVALIDATE,
    struct: iommu_hwpt_invalidate,
    on: "iommufd",
  },
  {
    call: "IOMMU_VIOMMU_ALLOC",
    cmd: IOMMU_VIOMMU_ALLOC,
    struct: iommu_viommu_alloc,
    on: "iommufd",
  },
  {
    call: "IOMMU_VDEVICE_ALLOC",
    cmd: IOMMU_VDEVICE_ALLOC,
    struct: iommu_vdevice_alloc,
    on: "iommufd",
  },
  {
    call: "IOMMU_VEVENTQ_ALLOC",
    cmd: IOMMU_VEVENTQ_ALLOC,
    struct: iommu_veventq_alloc,
    on: "iommufd",
  },
  {
    call: "IOMMU_HW_QUEUE_ALLOC",
    cmd: IOMMU_HW_QUEUE_ALLOC,
    struct: iommu_hw_queue_alloc,
    on: "iommufd",
  },
  {
    call: "IOMMU_HWPT_SET_DIRTY_TRACKING",
    cmd: IOMMU_HWPT_SET_DIRTY_TRACKING,
    struct: iommu_hwpt_set_dirty_tracking,
    on: "iommufd",
  },
  {
    call: "IOMMU_HWPT_GET_DIRTY_BITMAP",
    cmd: IOMMU_HWPT_GET_DIRTY_BITMAP,
    struct: iommu_hwpt_get_dirty_bitmap,
    on: "iommufd",
  },
  { call: "IOMMU_OTHER", cmd: IOMMU_IOAS_CHANGE_PROCESS, struct: iommu_destroy, on: "iommufd" },
  { call: "IOMMU_TEST_CMD", cmd: IOMMU_TEST_CMD, struct: iommu_test_cmd, on: "iommufd" },
  { call: "IOMMU_OTHER", cmd: -1, struct: iommu_ioas_map, on: "iommufd" },
  {
    call: "VFIO_DEVICE_BIND_IOMMUFD",
    cmd: VFIO_DEVICE_BIND_IOMMUFD,
    struct: vfio_device_bind_iommufd,
    on: "vfio-unbound",
  },
  {
    call: "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
    cmd: VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    struct: vfio_device_attach_iommufd_pt,
    on: "vfio-bound",
  },
  {
    call: "VFIO_DEVICE_DETACH_IOMMUFD_PT",
    cmd: VFIO_DEVICE_DETACH_IOMMUFD_PT,
    struct: vfio_device_detach_iommufd_pt,
    on: "vfio-bound",
  },
  {
    call: "VFIO_DEVICE_FEATURE",
    cmd: VFIO_DEVICE_FEATURE,
    struct: vfio_device_feature_dma_buf,
    on: "vfio-bound",
  },
  { call: "VFIO_DEVICE_RESET", cmd: VFIO_DEVICE_RESET, struct: undefined, on: "vfio-bound" },
  {
    call: "VFIO_DEVICE_OTHER",
    cmd: VFIO_DEVICE_GET_INFO,
    struct: vfio_device_info,
    on: "vfio-bound",
  },
  {
    call: "VFIO_DEVICE_GET_REGION_INFO",
    cmd: VFIO_DEVICE_GET_REGION_INFO,
    struct: vfio_region_info,
    on: "vfio-bound",
  },
  {
    call: "VFIO_DEVICE_GET_IRQ_INFO",
    cmd: VFIO_DEVICE_GET_IRQ_INFO,
    struct: vfio_irq_info,
    on: "vfio-bound",
  },
  {
    call: "VFIO_DEVICE_SET_IRQS",
    cmd: VFIO_DEVICE_SET_IRQS,
    struct: vfio_irq_set,
    on: "vfio-bound",
  },
  {
    call: "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
    cmd: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
    struct: vfio_pci_hot_reset_info,
    on: "vfio-bound",
  },
  {
    call: "VFIO_DEVICE_PCI_HOT_RESET",
    cmd: VFIO_DEVICE_PCI_HOT_RESET,
    struct: vfio_pci_hot_reset,
    on: "vfio-bound",
  },
  { call: "VFIO_DEVICE_OTHER", cmd: -1, struct: vfio_region_info, on: "vfio-unbound" },
];

/** A small deterministic PRNG (mulberry32): inputs regenerate from (seed, index). */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  below(n: number): number {
    return this.u32() % n;
  }
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
  of<T>(list: readonly T[]): T {
    return list[this.below(list.length)]!;
  }
}

const IOVA_BASE = 1n << 20n;

/** What the fuzzing process knows to aim with: its buffers and descriptors. */
interface Aim {
  readonly validPtr: bigint;
  readonly machine: Machine;
}

/**
 * Decision: MAP_FILE is not aimed at /dev/iommu, VFIO cdev or selftest access descriptors.
 * Mapping one makes the pages hold that file while the file (its context, the device bound to
 * it, the access on it) holds the pages' context: a reference cycle nothing breaks, in the kernel as in the model (no file-type
 * check in iopt_alloc_file_pages). Aimed
 * at, it would only make every quiesced check report that same leak.
 */
const CYCLE_FILES = new Set(["iommufd", "vfio-device", "[iommufd_test_staccess]"]);

/**
 * Decision: IOMMU_TEST_CMD is aimed at the access ops (and at numbers no op has). The mock
 * domain and mock device ops belong to the selftests; their 2 KiB IO pages are outside the
 * checker's frame-exact IOPTE rule, and @x/selftest's own suites cover them.
 */
const TEST_OPS = [0n, 5n, 6n, 7n, 8n, 1000n];

function pickValue(rng: Rng, struct: string, name: string, kind: string, aim: Aim): bigint {
  if (struct === iommu_test_cmd.name && name === "op") return rng.of(TEST_OPS);
  const m = aim.machine;
  const fds = [...m.libc.process.files.entries()]
    .filter(([, file]) => struct !== iommu_ioas_map_file.name || !CYCLE_FILES.has(file.fops.name))
    .map(([fd]) => BigInt(fd));
  let pool: readonly bigint[];
  if (/fd$/.test(name)) pool = [...fds, -1n, 999n];
  else if (/_id$|^id$|devid/.test(name)) pool = [0n, 1n, 2n, 3n, 4n, 5n, 6n, 0x7fffffffn];
  else if (/flags|^op$|option_id|type|index/.test(name))
    pool = [0n, 1n, 2n, 3n, 4n, 6n, 7n, 8n, 11n, 0x10000n | 11n];
  else if (/uptr|user_va|allowed_iovas|_ptr/.test(name)) {
    pool = [
      0n,
      aim.validPtr,
      m.memfdVa,
      m.anonVa + PAGE,
      m.memfdVa + BigInt(BUFFER_PAGES) * PAGE - PAGE,
      0x1000n,
    ];
  } else if (/iova|start|offset/.test(name)) {
    pool = [
      0n,
      IOVA_BASE,
      IOVA_BASE + 32n * PAGE,
      IOVA_BASE + 64n * PAGE,
      PAGE,
      1n,
      U64_MAX,
      U64_MAX - PAGE + 1n,
      1n << 63n,
    ];
  } else if (/length|len|num|nr_|val64|size/.test(name)) {
    pool = [0n, 1n, PAGE, 2n * PAGE, 4n * PAGE, 8n * PAGE, 64n * PAGE, U64_MAX];
  } else pool = [0n];
  if (rng.below(8) === 0) return kind === "u64" ? rng.u64() : BigInt(rng.u32());
  return rng.of(pool);
}

function writeField(dv: DataView, off: number, kind: string, v: bigint): void {
  switch (kind) {
    case "u8":
      dv.setUint8(off, Number(v & 0xffn));
      return;
    case "u16":
      dv.setUint16(off, Number(v & 0xffffn), true);
      return;
    case "u32":
    case "s32":
      dv.setUint32(off, Number(v & 0xffffffffn), true);
      return;
    case "u64":
      dv.setBigUint64(off, v & U64_MAX, true);
      return;
  }
}

/** One input: the bytes, and the size word they claim. */
// biome-ignore lint/suspicious/noExplicitAny: any structure's field table
function generate(rng: Rng, struct: Struct<any>, aim: Aim, mutate: boolean): Uint8Array {
  const sizes = [
    struct.minSize - 1,
    struct.minSize,
    struct.size,
    struct.size + 8,
    struct.size + 8,
    rng.below(96),
  ];
  const size = mutate ? struct.size : Math.max(4, rng.of(sizes));
  const buf = new Uint8Array(Math.max(size, struct.size));
  const dv = new DataView(buf.buffer);
  for (const name of struct.fieldNames) {
    const [off, kind] = struct.fields[name] as [number, string];
    if (off + 4 > buf.length || kind === "u8x3") continue;
    if (name === "size") continue;
    // A mutated input keeps most fields valid-looking (zero flags, aimed values).
    if (mutate && rng.below(3) !== 0) {
      const v = /flags|__reserved|pasid/.test(name)
        ? 0n
        : pickValue(rng, struct.name, name, kind, aim);
      writeField(dv, off, kind, v);
    } else if (!name.startsWith("__reserved") || rng.below(4) === 0) {
      writeField(dv, off, kind, pickValue(rng, struct.name, name, kind, aim));
    }
  }
  if (mutate) {
    for (let n = rng.below(3); n > 0; n--) buf[rng.below(buf.length)] = rng.u32() & 0xff;
  }
  dv.setUint32(0, size >>> 0, true);
  if (size > struct.size && rng.below(2) === 0) buf[struct.size + rng.below(8)] = 1;
  return buf.subarray(0, Math.max(size, 4));
}

interface ByteFailure {
  readonly seed: number;
  readonly index: number;
  readonly call: SyscallName;
  readonly bytes: string;
  readonly error: string;
}

export interface FuzzBytesResult {
  inputs: number;
  successes: number;
  /** Inputs per ioctl row, and failed inputs per errno (coverage). */
  readonly perCall: Record<string, number>;
  readonly errnos: Record<string, number>;
  ms: number;
  /** Every failing input (the machine is replaced after each), at most MAX_FAILURES. */
  readonly failures: ByteFailure[];
}

export interface FuzzBytesOptions {
  readonly seed: number;
  /** Inputs are numbered [from, inputs); `from` (a multiple of perMachine) replays a failure. */
  readonly inputs: number;
  readonly from?: number;
  /** Inputs per machine before a fresh one is set up. */
  readonly perMachine?: number;
  /** Run only the machines (blocks of perMachine inputs) this shard owns. */
  readonly shard?: Shard;
}

/** Inputs per machine by default. */
export const INPUTS_PER_MACHINE = 200;
/** Failures after which a run stops. */
const MAX_FAILURES = 20;

interface World {
  readonly machine: Machine;
  readonly runner: Runner;
  readonly scope: CheckScope;
  readonly checker: Checker;
  /** Descriptor per target kind. */
  readonly fds: Readonly<Record<IoctlTarget["on"], number>>;
  /** The last input issued, for a leak found when the machine is retired. */
  last: { call: SyscallName; bytes: Uint8Array } | undefined;
}

function freshWorld(): World {
  const machine = new Machine();
  const runner = new Runner(machine);
  for (const op of BYTES_SETUP) runner.step(op);
  // Device 1's cdev is open but not bound: the target of BIND.
  const unbound = machine.libc.open(machine.cdev(1), O_RDWR);
  if (unbound < 0) throw new KernelError(machine.libc.errno, "open vfio cdev");
  const scope: CheckScope = {
    kernel: machine.kernel,
    tasks: [machine.libc.task],
    devices: machine.devices,
  };
  const fds = {
    iommufd: runner.iommufdFd,
    "vfio-bound": runner.deviceFd(0),
    "vfio-unbound": unbound,
  };
  return { machine, runner, scope, checker: new Checker(scope), fds, last: undefined };
}

/** Is a state change after this failed input one the kernel documents? */
function changeDocumented(target: IoctlTarget, bytes: Uint8Array): boolean {
  // SET_IRQS: vfio_msi_set_block's partial unwind; hot reset: revoked before the reset fails.
  if (
    target.cmd === IOMMU_IOAS_UNMAP ||
    target.cmd === VFIO_DEVICE_SET_IRQS ||
    target.cmd === VFIO_DEVICE_PCI_HOT_RESET
  )
    return true;
  if (target.cmd !== VFIO_DEVICE_FEATURE || bytes.length < 8) return false;
  const feature =
    new DataView(bytes.buffer, bytes.byteOffset).getUint32(4, true) & VFIO_DEVICE_FEATURE_MASK;
  return (
    feature === VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY ||
    feature === VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP
  );
}

/** Run `inputs` byte inputs from `seed`; KernelErrors carry no stack meanwhile (most inputs fail). */
export function fuzzBytes(opts: FuzzBytesOptions): FuzzBytesResult {
  return withoutErrorStacks(() => fuzzBytesRun(opts));
}

function fuzzBytesRun(opts: FuzzBytesOptions): FuzzBytesResult {
  const t0 = performance.now();
  const perMachine = opts.perMachine ?? INPUTS_PER_MACHINE;
  const from = opts.from ?? 0;
  const res: FuzzBytesResult = {
    inputs: 0,
    successes: 0,
    perCall: {},
    errnos: {},
    ms: 0,
    failures: [],
  };
  let w: World | undefined;
  let validPtr = 0n;
  let lastIndex = from;
  let broken = false;
  for (let index = from; index < opts.inputs && res.failures.length < MAX_FAILURES; index++) {
    const block = Math.floor(index / perMachine);
    if (opts.shard && !ownsUnit(opts.shard, block)) {
      index = (block + 1) * perMachine - 1;
      continue;
    }
    if (!w || broken || index % perMachine === 0) {
      if (w && !broken) retire(w, opts.seed, lastIndex, res);
      w = freshWorld();
      validPtr = w.machine.libc.malloc(4096);
      broken = false;
    }
    lastIndex = index;
    const rng = new Rng(opts.seed * 1_000_003 + index);
    const target = IOCTL_TARGETS[rng.below(IOCTL_TARGETS.length)]!;
    const fd = w.fds[target.on];
    const cmd = target.cmd === -1 ? randomCmd(rng, target.on) : target.cmd;
    const aim = { validPtr, machine: w.machine };
    w.machine.libc.poke(validPtr, randomBytes(rng, 64));
    const bytes = target.struct
      ? generate(rng, target.struct, aim, rng.below(2) === 0)
      : new Uint8Array(0);
    res.inputs++;
    w.last = { call: target.call, bytes };
    res.perCall[target.call] = (res.perCall[target.call] ?? 0) + 1;
    try {
      tryOne(w, target, fd, cmd, bytes, res);
    } catch (e) {
      res.failures.push({
        seed: opts.seed,
        index,
        call: target.call,
        bytes: hex(bytes),
        error: errorText(e),
      });
      broken = true;
    }
  }
  if (w && !broken) retire(w, opts.seed, lastIndex, res);
  res.ms = performance.now() - t0;
  return res;
}

function tryOne(
  w: World,
  target: IoctlTarget,
  fd: number,
  cmd: number,
  bytes: Uint8Array,
  res: FuzzBytesResult,
): void {
  const libc = w.machine.libc;
  const before = snapshot(w.scope);
  const ret = target.struct ? libc.ioctl(fd, cmd, bytes) : libc.ioctl(fd, cmd, 0);
  if (ret >= 0) {
    res.successes++;
    w.checker.check();
    return;
  }
  res.errnos[errnoName(libc.errno)] = (res.errnos[errnoName(libc.errno)] ?? 0) + 1;
  if (!errnoDocumented(target.call, libc.errno)) {
    throw new Error(`${target.call} failed with undocumented errno ${libc.errno}`);
  }
  if (changeDocumented(target, bytes)) {
    w.checker.check();
    return;
  }
  const after = snapshot(w.scope);
  if (after !== before)
    throw new Error(
      `${target.call} failed (errno ${libc.errno}) but changed state:\n${snapshotDiff(before, after)}`,
    );
}

/**
 * A command number no handler owns: on /dev/iommu past the table (nr 0x95..0xff: ENOTTY after
 * the size read); on a VFIO cdev any VFIO number (an unbound fd refuses them all).
 * Decision: the type1 compat numbers (nr < 0x80) are left out — their errnos are UNVERIFIED.
 */
function randomCmd(rng: Rng, on: IoctlTarget["on"]): number {
  return (0x3b << 8) | (on === "iommufd" ? 0x95 + rng.below(0x6b) : 0x60 + rng.below(0x20));
}

/**
 * Close every descriptor but the memfd (whose pages are the guest RAM mapping): then nothing
 * may be left — a leak any successful input caused shows up here.
 */
function closeAll(w: World): void {
  // The eventfds may be held by descriptors the byte inputs opened: check them once all are shut.
  w.runner.teardown(false);
  const libc = w.machine.libc;
  for (const [fd] of [...libc.process.files.entries()]) if (fd !== w.machine.memfd) libc.close(fd);
  w.runner.checkReleased();
  w.checker.checkQuiesced();
}

/** closeAll, a leak reported against the machine's last input. */
function retire(w: World, seed: number, lastIndex: number, res: FuzzBytesResult): void {
  try {
    closeAll(w);
  } catch (e) {
    const last = w.last;
    res.failures.push({
      seed,
      index: lastIndex,
      call: last?.call ?? "CLOSE",
      bytes: last ? hex(last.bytes) : "",
      error: `leak after the machine's last input: ${errorText(e)}`,
    });
  }
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rng.u32() & 0xff;
  return b;
}
