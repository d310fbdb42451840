import { describe, expect, it, vi } from "vitest";

describe("examples/demo.ts", () => {
  it("runs end to end and reports the refused charge and a clean exit", async () => {
    const lines: string[] = [];
    const spy = vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
      lines.push(args.join(" "));
    });
    try {
      await import("../examples/demo.js");
    } finally {
      spy.mockRestore();
    }
    const out = lines.join("\n");
    expect(out).toContain("pinned 1048576 pages in 1 physical runs");
    expect(out).toContain("second 4 GiB charge: ENOMEM");
    expect(out).toContain('guest reads: "HELLO from the guest"');
    expect(out).toContain("after exit: 0 pages in use, 0 pinned");
    expect(out).toContain("gup:pin");
  });
});
