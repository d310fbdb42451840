import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../src/demo.js";
import { scenarios } from "../src/scenarios/index.js";

function capture(): { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  vi.spyOn(console, "error").mockImplementation((...a: unknown[]) => void err.push(a.join(" ")));
  return { out, err };
}

describe("pnpm demo", () => {
  afterEach(() => vi.restoreAllMocks());

  it("--list names every scenario", () => {
    const { out } = capture();
    expect(main(["--list"])).toBe(0);
    expect(out).toHaveLength(scenarios.length);
    expect(out[0]).toMatch(/^flagship /);
  });

  it("runs the flagship by default, step by step, and exits 0 when every check holds", () => {
    const { out } = capture();
    expect(main([])).toBe(0);
    const text = out.join("\n");
    expect(text).toContain("IOMMU_IOAS_MAP_FILE");
    expect(text).toMatch(/\[ ?9\/12\] vmm +The VMM's bug/);
    expect(text).toContain("→ fault");
    expect(out.at(-1)).toMatch(
      /flagship: 12 steps, all checks hold — \d+ areas? \(\d+ dead\), 2 domains, .* mapped$/,
    );
  });

  it("--json prints the step records with bigints as hex", () => {
    const { out } = capture();
    expect(main(["boot", "--json"])).toBe(0);
    const doc = JSON.parse(out.join("\n"));
    expect(doc.scenario).toBe("boot");
    expect(doc.ok).toBe(true);
    expect(doc.steps[1].snapshot.ioas[0].areas[0].iova).toBe("0x0");
  });

  it("several scenarios with --json print one array", () => {
    const { out } = capture();
    expect(main(["boot", "mem-toggle", "--json"])).toBe(0);
    const docs = JSON.parse(out.join("\n"));
    expect(docs.map((d: { scenario: string }) => d.scenario)).toEqual(["boot", "mem-toggle"]);
  });

  it("-h prints the usage, which says what --json prints", () => {
    const { out } = capture();
    expect(main(["-h"])).toBe(0);
    expect(out[0]).toMatch(/^usage: pnpm -s demo /);
    expect(out[0]).toContain("array of them for several or --all");
  });

  it("--trace adds the kernel's events", () => {
    const { out } = capture();
    expect(main(["mem-toggle", "--trace"])).toBe(0);
    expect(out.join("\n")).toContain("⤷ iommufd:dmabuf_revoke");
  });

  it("exits 2 on an unknown scenario or option", () => {
    const { err } = capture();
    expect(main(["no-such-scenario"])).toBe(2);
    expect(main(["--frobnicate"])).toBe(2);
    expect(err.join("\n")).toMatch(/no scenario "no-such-scenario"/);
  });
});
