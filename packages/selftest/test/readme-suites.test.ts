// The README's library example, kept runnable.
import { expect, it } from "vitest";
import { createSelftestEnv, iommufdSuite, runTap, selftestBinaries } from "../src/index.js";

it("the README's suites example runs as written", () => {
  const names = selftestBinaries().map((b) => b.name);
  expect(names).toEqual(["iommufd", "iommufd_fail_nth"]);

  const suite = iommufdSuite(() => createSelftestEnv({ bufferSize: 16 * 4096, hugeAligned: true }));
  const tap: string[] = [];
  const { pass, fail } = runTap(
    suite.instances(),
    (line) => tap.push(line),
    (name) => name.endsWith(".dmabuf_simple"),
  );
  expect([pass, fail]).toEqual([4, 0]);
  expect(tap.slice(0, 2)).toEqual(["TAP version 13", "1..4"]);
});
