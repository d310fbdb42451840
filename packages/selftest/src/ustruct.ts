/**
 * C structs as user-space test code handles them: `ustruct(layout, init)` allocates the zeroed
 * bytes of one struct (plus optional trailing bytes, like the C tests' wrapper structs with an
 * `extra` member) and gives an object whose properties read and write those bytes. A test fills a
 * command like a C designated initialiser, passes `cmd.$` to ioctl, and reads the kernel's answer
 * back through the same properties. Layouts are @x/iommufd's uapi tables, so user and kernel side
 * share one set of offsets.
 */
import type { FieldSpec, Struct } from "@x/iommufd";

type ValueOf<K> = K extends "u64" ? bigint : number;

export type UStruct<S extends FieldSpec> = { -readonly [N in keyof S]: ValueOf<S[N][1]> } & {
  /** The bytes handed to the kernel (the `&cmd` of the C code). */
  readonly $: Uint8Array;
};

/** Initialisers accept a number for u64 fields too (converted exactly). */
export type UInit<S extends FieldSpec> = {
  [N in keyof S]?: S[N][1] extends "u64" ? bigint | number : number;
};

/** The struct's bytes: what every accessor of a ustruct reads and writes through `this`. */
interface Backed {
  readonly $: Uint8Array;
}

/**
 * One accessor per field of a layout, made once and shared by every ustruct of that layout:
 * a ustruct is then its bytes plus these properties, with no closure and no DataView of its
 * own (a DataView of a small on-heap array moves the array's storage off the heap).
 */
const accessors = new WeakMap<object, PropertyDescriptorMap>();

function accessorsOf(layout: Struct<FieldSpec>): PropertyDescriptorMap {
  let map = accessors.get(layout);
  if (map) return map;
  map = {};
  for (const name of layout.fieldNames) {
    const u64 = layout.fields[name]![1] === "u64";
    map[name] = {
      enumerable: true,
      get(this: Backed) {
        return layout.get(this.$, name);
      },
      // Test loops step fields one by one (`cmd.iova++`), and initialisers give numbers for
      // u64 fields: both are converted exactly, u64 modulo 2^64.
      set(this: Backed, v: number | bigint) {
        layout.set(this.$, name, u64 ? BigInt.asUintN(64, BigInt(v)) : Number(v));
      },
    };
  }
  accessors.set(layout, map);
  return map;
}

export function ustruct<S extends FieldSpec>(
  layout: Struct<S>,
  init: UInit<S> = {},
  extra = 0,
): UStruct<S> {
  const obj: Record<string, unknown> = { $: new Uint8Array(layout.size + extra) };
  Object.defineProperties(obj, accessorsOf(layout as unknown as Struct<FieldSpec>));
  for (const [name, v] of Object.entries(init)) if (v !== undefined) obj[name] = v;
  return obj as UStruct<S>;
}
