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

export function ustruct<S extends FieldSpec>(
  layout: Struct<S>,
  init: UInit<S> = {},
  extra = 0,
): UStruct<S> {
  const bytes = new Uint8Array(layout.size + extra);
  const dv = new DataView(bytes.buffer);
  const obj: Record<string, unknown> = { $: bytes };
  for (const name of layout.fieldNames) {
    const [off, kind] = layout.fields[name]!;
    // Test loops step fields one by one (`cmd.iova++`): one DataView, no per-access objects.
    const accessor =
      kind === "u32"
        ? {
            get: () => dv.getUint32(off, true),
            set: (v: number) => dv.setUint32(off, Number(v), true),
          }
        : kind === "u64"
          ? {
              get: () => dv.getBigUint64(off, true),
              set: (v: number | bigint) =>
                dv.setBigUint64(off, BigInt.asUintN(64, BigInt(v)), true),
            }
          : {
              get: () => layout.get(bytes, name),
              set: (v: number | bigint) => layout.set(bytes, name, Number(v) as never),
            };
    Object.defineProperty(obj, name, { enumerable: true, ...accessor });
  }
  for (const [name, v] of Object.entries(init)) if (v !== undefined) obj[name] = v;
  return obj as UStruct<S>;
}
