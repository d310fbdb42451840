import { describe, expect, it } from "vitest";
import { callW, wrap } from "../../src/yielding.js";

/** Plainly "plain"; through its twin it yields "Y" and returns "twin". */
const hook = wrap((): string => "plain", function* () {
  yield "Y";
  return "twin";
} as (...args: unknown[]) => Generator<unknown>);

/** Run `f` through its twin, collecting what it yields. */
function drive(f: unknown, thisArg?: unknown, args: unknown[] = []) {
  const gen = callW(f, thisArg, args);
  const yields: unknown[] = [];
  for (let r = gen.next(); ; r = gen.next()) {
    if (r.done) return { yields, value: r.value };
    yields.push(r.value);
  }
}

class Base {
  m(x: string): string {
    return `${hook()}${x}`;
  }
}
class Derived extends Base {
  override m(x: string): string {
    return `<${super.m(x)}>`;
  }
  get viaGetter(): string {
    return hook();
  }
  static s(): string {
    return hook();
  }
}
function declared(): string {
  return [1, 2].map(() => hook()).join(",");
}
const literal = {
  v: "v",
  m(): string {
    return this.v + hook();
  },
  arrow(): string {
    return (() => this.v + hook())();
  },
};

describe("generator twins", () => {
  it("plain calls are untouched", () => {
    expect(new Derived().m("x")).toBe("<plainx>");
    expect(declared()).toBe("plain,plain");
    expect(literal.arrow()).toBe("vplain");
  });

  it("a twin delegates through methods, super, statics, declarations, literals and arrows", () => {
    const d = new Derived();
    expect(drive(d.m, d, ["x"])).toEqual({ yields: ["Y"], value: "<twinx>" });
    expect(drive(Derived.s, Derived)).toEqual({ yields: ["Y"], value: "twin" });
    expect(drive(declared)).toEqual({ yields: ["Y", "Y"], value: "twin,twin" });
    expect(drive(literal.m, literal)).toEqual({ yields: ["Y"], value: "vtwin" });
    // The arrow keeps the method's `this`.
    expect(drive(literal.arrow, literal)).toEqual({ yields: ["Y"], value: "vtwin" });
  });

  it("call, apply and bind keep the twin; getters run plainly", () => {
    const d = new Derived();
    const viaCall = () => d.m.call(d, "c");
    const viaApply = () => d.m.apply(d, ["a"]);
    const viaBind = () => d.m.bind(d)("b");
    const viaGetter = () => d.viaGetter;
    expect(drive(viaCall).value).toBe("<twinc>");
    expect(drive(viaApply).value).toBe("<twina>");
    expect(drive(viaBind).value).toBe("<twinb>");
    expect(drive(viaGetter)).toEqual({ yields: [], value: "plain" });
    // Object keys are those of the source: the twins hang on the functions.
    expect(Object.keys(literal)).toEqual(["v", "m", "arrow"]);
    expect(Object.getOwnPropertySymbols(Base.prototype)).toEqual([]);
  });
});
