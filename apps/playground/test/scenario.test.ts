import { EINVAL, ENODEV, Kernel, fail } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  type ProbeVerdict,
  type ScenarioDef,
  ScenarioRun,
  type World,
  expectErrno,
} from "../src/scenario.js";
import { EMPTY_SNAPSHOT, bytes, toJson } from "../src/snapshot.js";

/** A world whose only state is one counter and a probe verdict the steps set. */
class CounterWorld implements World {
  readonly kernel = new Kernel();
  count = 0;
  verdict: ProbeVerdict = "ram";
  broken = false;
  check(): string[] {
    return this.broken ? ["counter broke"] : [];
  }
  probe() {
    return [{ name: "dev→ram", iova: 0x1000n, verdict: this.verdict, detail: "counter" }];
  }
  snapshot() {
    return { ...EMPTY_SNAPSHOT, notes: [`count=${this.count}`] };
  }
}

function scenario(steps: ScenarioDef<CounterWorld>["steps"]): ScenarioDef<CounterWorld> {
  return { id: "t", number: 0, title: "t", summary: "t", setup: () => new CounterWorld(), steps };
}

describe("ScenarioRun", () => {
  it("runs steps in order, one record each with log, probes and a snapshot", () => {
    const def = scenario([
      { name: "one", actor: "vmm", run: ({ world, log }) => void log(`n=${++world.count}`) },
      { name: "two", actor: "guest", run: ({ world }) => void world.count++ },
    ]);
    const run = new ScenarioRun(def);
    expect(run.initial.notes).toEqual(["count=0"]);
    const r = run.step();
    expect(r).toMatchObject({ index: 0, name: "one", actor: "vmm", ok: true, error: undefined });
    expect(r.lines).toEqual([{ kind: "info", text: "n=1" }]);
    expect(r.probes[0]?.verdict).toBe("ram");
    expect(r.snapshot.notes).toEqual(["count=1"]);
    run.runTo();
    expect(run.done).toBe(true);
    expect(run.ok).toBe(true);
    expect(() => run.step()).toThrow(/no step 2/);
  });

  it("records an unexpected error and keeps going", () => {
    const def = scenario([
      { name: "bad", actor: "vmm", run: () => fail(EINVAL, "boom") },
      { name: "after", actor: "vmm", run: ({ world }) => void world.count++ },
    ]);
    const run = new ScenarioRun(def);
    const [bad, after] = run.runTo();
    expect(bad?.ok).toBe(false);
    expect(bad?.error).toMatch(/EINVAL \(22\): boom/);
    expect(bad?.lines.at(-1)?.kind).toBe("error");
    expect(after?.ok).toBe(true);
    expect(run.ok).toBe(false);
  });

  it("fails a step whose invariants break or whose probe expectation does not hold", () => {
    const def = scenario([
      { name: "break", actor: "kernel", run: ({ world }) => void (world.broken = true) },
      {
        name: "fault expected",
        actor: "device",
        run: ({ world }) => void (world.broken = false),
        expectProbes: { "dev→ram": "fault" },
      },
      {
        name: "fault seen",
        actor: "device",
        run: ({ world }) => void (world.verdict = "fault"),
        expectProbes: { "dev→ram": "fault", "dev→nowhere": "ram" },
      },
    ]);
    const [a, b, c] = new ScenarioRun(def).runTo();
    expect(a?.violations).toEqual(["counter broke"]);
    expect(a?.ok).toBe(false);
    expect(b?.probeMismatches).toEqual(["probe dev→ram: expected fault, got ram (counter)"]);
    expect(c?.probeMismatches).toEqual(["probe dev→nowhere: not run"]);
  });

  it("collects the kernel trace events emitted during a step", () => {
    const def = scenario([
      {
        name: "emit",
        actor: "kernel",
        run: ({ world }) =>
          (world.kernel.trace as unknown as { emit(n: string, d: unknown): void }).emit("t:x", {
            a: 1,
          }),
      },
    ]);
    const [r] = new ScenarioRun(def).runTo();
    expect(r?.events.map((e) => [e.name, e.data])).toEqual([["t:x", { a: 1 }]]);
  });

  it("reports progress through the run options", () => {
    const seen: string[] = [];
    const def = scenario([
      { name: "long", actor: "vmm", run: ({ progress }) => progress(1, 2, "half") },
    ]);
    new ScenarioRun(def, { onProgress: (d, t, l) => seen.push(`${d}/${t} ${l}`) }).runTo();
    expect(seen).toEqual(["1/2 half"]);
  });
});

describe("expectErrno", () => {
  it("returns the message on the expected errno, rethrows others, fails on success", () => {
    expect(expectErrno(() => fail(ENODEV, "revoked"), ENODEV, "map")).toBe("ENODEV (19): revoked");
    expect(() => expectErrno(() => fail(EINVAL), ENODEV, "map")).toThrow(/EINVAL/);
    expect(() => expectErrno(() => 0, ENODEV, "map")).toThrow(/map: expected ENODEV, it succeeded/);
  });
});

describe("snapshot helpers", () => {
  it("prints sizes and serialises bigints as hex", () => {
    expect(bytes(4096n)).toBe("4 KiB");
    expect(bytes(1n << 40n)).toBe("1 TiB");
    expect(bytes(3n << 30n)).toBe("3 GiB");
    expect(bytes(1536n)).toBe("1.5 KiB");
    expect(bytes((12n << 30n) + (100n << 20n))).toBe("12.1 GiB");
    expect(bytes(0n)).toBe("0 B");
    expect(toJson({ iova: 0x1000n })).toBe('{"iova":"0x1000"}');
  });
});
