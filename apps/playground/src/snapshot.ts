/**
 * What the views draw: a plain-data picture of the machine after a step. Worlds build it from
 * the packages' inspection APIs; the CLI prints it, the page draws it, `--json` serialises it
 * (bigints as hex strings).
 */

type AreaKind = "ram" | "mmio";

export interface AreaView {
  readonly iova: bigint;
  readonly length: bigint;
  readonly kind: AreaKind;
  /** False once the backing dma-buf was revoked: the IOVA range is still taken, nothing mapped. */
  readonly live: boolean;
  readonly label: string;
  /** Bytes of this area's range that have an IOPTE, per domain label. */
  readonly mapped: Readonly<Record<string, bigint>>;
}

export interface IoasView {
  readonly id: number;
  readonly label: string;
  readonly areas: readonly AreaView[];
}

interface LevelView {
  readonly level: number;
  readonly tables: number;
  /** Leaf IOPTEs at this level, by page size in bytes. */
  readonly leaves: Readonly<Record<string, number>>;
}

export interface DomainView {
  readonly label: string;
  readonly format: string;
  readonly devices: readonly string[];
  readonly levels: readonly LevelView[];
  readonly mappedBytes: bigint;
}

type DmabufState = "live" | "revoked" | "zombie" | "dying";

export interface DmabufView {
  readonly device: string;
  readonly bar: number;
  readonly size: bigint;
  readonly state: DmabufState;
  /** Guest-physical IOVA the VMM mapped it at, if it is mapped. */
  readonly iova: bigint | undefined;
}

export interface DeviceView {
  readonly name: string;
  readonly memoryEnabled: boolean;
  readonly power: string;
  readonly attachedTo: string | undefined;
  readonly open: boolean;
}

export interface Snapshot {
  readonly ioas: readonly IoasView[];
  readonly domains: readonly DomainView[];
  readonly dmabufs: readonly DmabufView[];
  readonly devices: readonly DeviceView[];
  /** Free-form facts a scenario wants shown (warnings printed, type1 mappings, counters). */
  readonly notes: readonly string[];
}

export const EMPTY_SNAPSHOT: Snapshot = {
  ioas: [],
  domains: [],
  dmabufs: [],
  devices: [],
  notes: [],
};

export function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/** 4096n → "4 KiB", 3n << 30n → "3 GiB"; other sizes get one decimal in the largest unit. */
export function bytes(v: bigint | number): string {
  const n = typeof v === "bigint" ? v : BigInt(v);
  let u = 0;
  while (u < UNITS.length - 1 && n >= 1024n << BigInt(10 * u)) u++;
  const unit = 1n << BigInt(10 * u);
  if (n % unit === 0n) return `${n / unit} ${UNITS[u]}`;
  return `${(Number(n) / Number(unit)).toFixed(1)} ${UNITS[u]}`;
}

/** JSON.stringify with bigints as hex strings. */
export function toJson(value: unknown, space?: number): string {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? hex(v) : v), space);
}
