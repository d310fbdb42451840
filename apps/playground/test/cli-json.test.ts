/**
 * The documented command lines, run as a person runs them: `pnpm -s demo … --json` in a child
 * process must put exactly one JSON document on stdout.
 */
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../../../", import.meta.url));

function demo(...args: string[]): string {
  return execFileSync("pnpm", ["-s", "demo", ...args], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
}

describe("pnpm -s demo --json", () => {
  it("one scenario: one JSON object", () => {
    const doc = JSON.parse(demo("boot", "--json"));
    expect(doc.scenario).toBe("boot");
    expect(doc.ok).toBe(true);
  }, 60_000);

  it("several scenarios: one JSON array, in the order asked", () => {
    const docs = JSON.parse(demo("boot", "mem-toggle", "--json"));
    expect(docs.map((d: { scenario: string }) => d.scenario)).toEqual(["boot", "mem-toggle"]);
    expect(docs.every((d: { ok: boolean }) => d.ok)).toBe(true);
  }, 60_000);
});
