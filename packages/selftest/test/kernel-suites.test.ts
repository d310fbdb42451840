import { describe, it } from "vitest";
import { registerVitest } from "../src/harness.js";
import { selftestBinaries } from "../src/suites/index.js";

/**
 * Every ported kernel selftest instance as a vitest test under its kernel name. Instances that
 * fail because of a dependency's behaviour are reported in .lead/requests/selftest.md and listed
 * here with the reason.
 */
const knownFailures = new Map<string, string>([]);

for (const bin of selftestBinaries()) {
  describe(bin.name, () => registerVitest(bin.harness.instances(), it, { knownFailures }));
}
