import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { Kernel, KernelWarning, ModuleKey } from "../src/index.js";

interface ListState {
  readonly kernel: Kernel;
  readonly list: Set<number>;
}

const KEY = new ModuleKey<ListState>("test_module");

describe("module state", () => {
  it("is undefined until set, then the state set, per machine", () => {
    const a = new Kernel();
    const b = new Kernel();
    expect(a.moduleState(KEY)).toBeUndefined();
    const state = { kernel: a, list: new Set<number>() };
    expect(a.setModuleState(KEY, state)).toBe(state);
    expect(a.moduleState(KEY)).toBe(state);
    expect(b.moduleState(KEY)).toBeUndefined();
    // Another key of the same name is another module's.
    expect(a.moduleState(new ModuleKey<ListState>("test_module"))).toBeUndefined();
  });

  it("is made by `create` on first use, once, and found by a plain lookup after", () => {
    const k = new Kernel();
    let made = 0;
    const create = (kernel: Kernel): ListState => {
      made++;
      return { kernel, list: new Set() };
    };
    const first = k.moduleState(KEY, create);
    expect(first.kernel).toBe(k);
    expect(k.moduleState(KEY, create)).toBe(first);
    expect(k.moduleState(KEY)).toBe(first);
    expect(made).toBe(1);
  });

  it("WARNs on a second set and keeps the first state", () => {
    const k = new Kernel();
    const first = k.setModuleState(KEY, { kernel: k, list: new Set() });
    expect(() => k.setModuleState(KEY, { kernel: k, list: new Set() })).toThrow(
      new KernelWarning("test_module: module state set twice"),
    );
    expect(k.moduleState(KEY)).toBe(first);
  });

  it("leaves nothing of a dropped machine to survive a minor GC", () => {
    // A module's state points back at its Kernel. Kept in a WeakMap keyed by the Kernel,
    // each of these machines survived the young-generation GC whole (about 9 KiB each).
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as (opts?: { type: string; execution: string }) => void;
    const young = () =>
      getHeapSpaceStatistics().find((s) => s.space_name === "new_space")!.space_used_size;
    // Full GCs first: what lives long (a module's tables) is old, as in a long run.
    gc();
    gc();
    gc({ type: "minor", execution: "sync" });
    const before = young();
    for (let i = 0; i < 100; i++) {
      const k = new Kernel({ ramBytes: 1n << 30n });
      k.setModuleState(KEY, { kernel: k, list: new Set([i]) });
    }
    gc({ type: "minor", execution: "sync" });
    expect(young() - before).toBeLessThan(100 * 1024);
  });
});
