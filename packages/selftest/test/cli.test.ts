/**
 * `iommufd-selftest`: the filters, the listing, one TAP stream a TAP consumer accepts, and
 * kselftest's exit codes (tools/testing/selftests/kselftest.h).
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type FinalResults, Parser } from "tap-parser";
import { describe, expect, it } from "vitest";
import { kselftest } from "../src/harness.js";
import { KSFT_FAIL, KSFT_PASS, KSFT_SKIP, selftestMain } from "../src/selftest-cli.js";
import type { SelftestBinary } from "../src/suites/index.js";

const pkg = fileURLToPath(new URL("../", import.meta.url));
const command = "node --conditions=@x/source --import tsx src/cli.ts";

function sh(line: string) {
  return spawnSync("sh", ["-c", line], { cwd: pkg, encoding: "utf8" });
}

function parseTap(text: string): Promise<FinalResults> {
  return new Promise((resolve) => {
    const p = new Parser((results) => resolve(results));
    p.end(text);
  });
}

/** A binary of made-up tests: one passes, one fails, one skips. */
function made(): SelftestBinary {
  const k = kselftest(() => ({}));
  k.TEST("passes", (t) => t.ASSERT_EQ(1, 1));
  k.TEST("fails", (t) => t.ASSERT_EQ(1, 2));
  k.TEST("skips", (t) => t.SKIP("nothing to test"));
  return { name: "made", harness: k.harness as unknown as SelftestBinary["harness"] };
}

function run(argv: string[], binaries = [made()]) {
  const out: string[] = [];
  const err: string[] = [];
  const rc = selftestMain(argv, binaries, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { rc, out, err };
}

describe("iommufd-selftest", () => {
  it("prints one TAP stream with one plan that a TAP parser accepts", async () => {
    const r = sh(`${command} dmabuf_simple`);
    expect(r.status).toBe(KSFT_PASS);
    expect(r.stdout.split("\n").filter((l) => /^\d+\.\.\d+$/.test(l))).toEqual(["1..4"]);
    const tap = await parseTap(r.stdout);
    expect(tap.ok).toBe(true);
    expect(tap.count).toBe(4);
    expect(tap.pass).toBe(4);
    expect(tap.plan.end).toBe(4);
  }, 120_000);

  it("one plan over both binaries when a filter spans them", async () => {
    const r = sh(`${command} -- dmabuf_simple basic_fail_nth.basic`);
    const tap = await parseTap(r.stdout);
    expect(tap.plan.end).toBe(5);
    expect(tap.count).toBe(5);
  }, 120_000);

  it("a reader that closes the pipe early ends it quietly", () => {
    const r = sh(`${command} | head -n 2`);
    expect(r.stdout).toMatch(/^TAP version 13\n1\.\.\d+\n$/);
    expect(r.stderr).toBe("");
  }, 120_000);

  it("-l lists the matching names and runs nothing", () => {
    const r = run(["-l", "pass"]);
    expect(r).toEqual({ rc: KSFT_PASS, out: ["global.passes"], err: [] });
  });

  it("a filter that matches nothing fails with a message", () => {
    const r = run(["passes", "nothing-like-this"]);
    expect(r.rc).toBe(KSFT_FAIL);
    expect(r.out).toEqual([]);
    expect(r.err.join("\n")).toMatch(/no test instance matches "nothing-like-this"/);
  });

  it("an unknown option fails with the usage", () => {
    const r = run(["--frobnicate"]);
    expect(r.rc).toBe(KSFT_FAIL);
    expect(r.err.join("\n")).toMatch(/usage: iommufd-selftest/);
  });

  it("exit status: KSFT_FAIL on a failure, KSFT_SKIP when all skipped, else KSFT_PASS", () => {
    expect(run([]).rc).toBe(KSFT_FAIL);
    expect(run(["skips"]).rc).toBe(KSFT_SKIP);
    expect(run(["passes", "skips"]).rc).toBe(KSFT_PASS);
    expect(run(["-h"]).out[0]).toMatch(/^usage: iommufd-selftest/);
  });
});
