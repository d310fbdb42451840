import fc from "fast-check";

/**
 * `fc.record(model)` as an ordinary object. fast-check's `record` draws each field and then a
 * boolean that, when true, makes the object with a null prototype, which V8 keeps in dictionary
 * mode: half of the fuzzer's ops were, every read of their fields a hash lookup and every site
 * reading them megamorphic. This draws the same values and the same boolean, in the same order
 * (so a seed gives the same programs, and shrinking walks the same tree), and always builds an
 * object with `Object.prototype`, its keys in the model's order. (`record`'s `noNullPrototype`
 * option does not draw that boolean, so every seed would give other programs.)
 */
export function plainRecord<T extends object>(
  model: {
    [K in keyof T]: fc.Arbitrary<T[K]>;
  },
): fc.Arbitrary<T> {
  const keys = Object.keys(model) as Array<keyof T & string>;
  const fields = keys.map((k) => model[k] as fc.Arbitrary<unknown>);
  return fc.tuple(...fields, fc.boolean()).map((values) => {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < keys.length; i++) out[keys[i]!] = values[i];
    return out as T;
  });
}
