import { describe, expect, it } from "vitest";
import {
  FIXTURE_VARIANT,
  type Instance,
  kselftest,
  registerVitest,
  runTap,
} from "../src/harness.js";

/** A system factory that counts how many machines were built. */
function counting() {
  let n = 0;
  return { make: () => ({ id: ++n }), count: () => n };
}

function byName(list: Instance[], name: string): Instance {
  const i = list.find((x) => x.name === name);
  if (!i) throw new Error(`no instance ${name}`);
  return i;
}

describe("kselftest harness", () => {
  it("ASSERT stops the body, EXPECT records and continues, teardown runs once either way", () => {
    const trace: string[] = [];
    const { harness, FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN, TEST_F } = kselftest(() => ({}));
    const f = FIXTURE("f", () => ({ x: 0 }));
    FIXTURE_SETUP(f, (self) => {
      self.x = 1;
      trace.push("setup");
    });
    FIXTURE_TEARDOWN(f, () => trace.push("teardown"));
    TEST_F(f, "expect", (self, _v, t) => {
      t.EXPECT_EQ(2, self.x);
      trace.push("after-expect");
      t.EXPECT_EQ(1, self.x);
    });
    TEST_F(f, "assert", (self, _v, t) => {
      t.ASSERT_EQ(2, self.x);
      trace.push("after-assert");
    });
    TEST_F(f, "ok", (self, _v, t) => {
      t.ASSERT_EQ(1, self.x);
      t.EXPECT_NE(0n, self.x);
      t.ASSERT_LT(0, 1n);
      t.ASSERT_GE(5n, 5);
      t.ASSERT_TRUE(true);
      t.ASSERT_FALSE(0);
      t.ASSERT_NULL(undefined);
    });
    const list = harness.instances();
    expect(list.map((i) => i.name)).toEqual(["f.expect", "f.assert", "f.ok"]);

    const e = byName(list, "f.expect").run();
    expect(e.status).toBe("fail");
    expect(e.log).toHaveLength(1);
    expect(e.log[0]).toContain("Expected 2 == 1");
    expect(trace.splice(0)).toEqual(["setup", "after-expect", "teardown"]);

    const a = byName(list, "f.assert").run();
    expect(a.status).toBe("fail");
    expect(trace.splice(0)).toEqual(["setup", "teardown"]);

    expect(byName(list, "f.ok").run().status).toBe("pass");
    expect(trace.splice(0)).toEqual(["setup", "teardown"]);
  });

  it("teardown runs exactly once after a throw; setup failure skips body and teardown", () => {
    let teardowns = 0;
    let bodies = 0;
    const { harness, FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN, TEST_F, FIXTURE_VARIANT_ADD } =
      kselftest(() => ({}));
    const f = FIXTURE("g", () => ({}), FIXTURE_VARIANT<{ failSetup: boolean }>());
    FIXTURE_VARIANT_ADD(f, "good", { failSetup: false });
    FIXTURE_VARIANT_ADD(f, "bad", { failSetup: true });
    FIXTURE_SETUP(f, (_self, v, t) => t.ASSERT_FALSE(v.failSetup));
    FIXTURE_TEARDOWN(f, () => {
      teardowns++;
    });
    TEST_F(f, "throws", () => {
      bodies++;
      throw new TypeError("boom");
    });
    const list = harness.instances();
    const good = byName(list, "g.good.throws").run();
    expect(good.status).toBe("fail");
    expect(good.log.join("\n")).toContain("boom");
    expect([bodies, teardowns]).toEqual([1, 1]);
    const bad = byName(list, "g.bad.throws").run();
    expect(bad.status).toBe("fail");
    expect([bodies, teardowns]).toEqual([1, 1]);
  });

  it("a failing ASSERT in teardown fails the instance without running teardown again", () => {
    let teardowns = 0;
    const { harness, FIXTURE, FIXTURE_TEARDOWN, TEST_F } = kselftest(() => ({}));
    const f = FIXTURE("h", () => ({}));
    FIXTURE_TEARDOWN(f, (_s, _v, t) => {
      teardowns++;
      t.ASSERT_EQ(0, 1);
    });
    TEST_F(f, "t", () => {});
    expect(harness.instances()[0]!.run().status).toBe("fail");
    expect(teardowns).toBe(1);
  });

  it("variants multiply tests, each instance gets a fresh system and fresh self", () => {
    const c = counting();
    const seen: Array<[number, string, number]> = [];
    const { harness, FIXTURE, FIXTURE_VARIANT_ADD, TEST_F } = kselftest(c.make);
    const f = FIXTURE("v", () => ({ n: 0 }), FIXTURE_VARIANT<{ k: number }>());
    FIXTURE_VARIANT_ADD(f, "one", { k: 1 });
    FIXTURE_VARIANT_ADD(f, "two", { k: 2 });
    TEST_F(f, "a", (self, v, t) => {
      self.n += v.k;
      seen.push([t.sys.id, t.variant === v ? "same" : "other", self.n]);
    });
    TEST_F(f, "b", (self, v) => {
      self.n += 10 * v.k;
    });
    const list = harness.instances();
    expect(list.map((i) => i.name)).toEqual(["v.one.a", "v.one.b", "v.two.a", "v.two.b"]);
    for (const i of list) expect(i.run().status).toBe("pass");
    expect(c.count()).toBe(4);
    expect(seen).toEqual([
      [1, "same", 1],
      [3, "same", 2],
    ]);
    expect(() => FIXTURE_VARIANT_ADD(f, "one", { k: 3 })).toThrow();
  });

  it("SKIP ends the body as skipped and still tears down; TEST uses the global fixture", () => {
    let teardowns = 0;
    const { harness, FIXTURE, FIXTURE_TEARDOWN, TEST_F, TEST } = kselftest(() => ({}));
    const f = FIXTURE("s", () => ({}));
    FIXTURE_TEARDOWN(f, () => {
      teardowns++;
    });
    TEST_F(f, "skipped", (_s, _v, t) => {
      t.SKIP("no mock bus");
    });
    TEST("plain", (t) => t.EXPECT_EQ(1, 1));
    const [s, p] = harness.instances();
    const r = s!.run();
    expect([r.status, r.skipReason, teardowns]).toEqual(["skip", "no mock bus", 1]);
    expect(p!.name).toBe("global.plain");
    expect(p!.run().status).toBe("pass");
  });

  it("prints kselftest TAP with totals", () => {
    const { harness, FIXTURE, TEST_F } = kselftest(() => ({}));
    const f = FIXTURE("tap", () => ({}));
    TEST_F(f, "good", () => {});
    TEST_F(f, "bad", (_s, _v, t) => t.ASSERT_EQ(1n, 2n));
    TEST_F(f, "skip", (_s, _v, t) => t.SKIP("why"));
    const lines: string[] = [];
    const sum = runTap(harness.instances(), (l) => lines.push(l));
    expect([sum.pass, sum.fail, sum.skip]).toEqual([1, 1, 1]);
    expect(lines.slice(0, 2)).toEqual(["TAP version 13", "1..3"]);
    expect(lines).toContain("ok 1 tap.good");
    expect(lines).toContain("not ok 2 tap.bad");
    expect(lines).toContain("ok 3 tap.skip # SKIP why");
    expect(lines).toContain("# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0");
  });

  describe("registerVitest", () => {
    const { harness, FIXTURE, TEST_F } = kselftest(() => ({}));
    const f = FIXTURE("reg", () => ({}));
    TEST_F(f, "passes", (_s, _v, t) => t.ASSERT_EQ(0, 0));
    TEST_F(f, "known_bad", (_s, _v, t) => t.ASSERT_EQ(0, 1));
    TEST_F(f, "skips", (_s, _v, t) => t.SKIP("skip through vitest"));
    TEST_F(f, "excluded", () => {
      throw new Error("never run");
    });
    registerVitest(harness.instances(), it, {
      knownFailures: new Map([["reg.known_bad", "demonstration"]]),
      excluded: new Map([["reg.excluded", "demonstration"]]),
    });
  });
});
