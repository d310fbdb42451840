import { describe, it } from "vitest";
import { registerVitest } from "../src/harness.js";
import { selftestBinaries } from "../src/suites/index.js";

/**
 * Instances that fail because of a dependency's behaviour, each reported in
 * .lead/requests/selftest.md, with the reason (registered with `it.fails`).
 */
export const knownFailures = new Map<string, string>([]);

/**
 * Register the ported instances of `fixtures` as vitest tests under their kernel names. The
 * suites are split by fixture over several test files so vitest runs them in parallel.
 */
export function registerFixtures(...fixtures: string[]): void {
  for (const bin of selftestBinaries()) {
    const instances = bin.harness.instances().filter((i) => fixtures.includes(i.fixture));
    if (instances.length)
      describe(bin.name, () => registerVitest(instances, it, { knownFailures }));
  }
}
