import { describe, it } from "vitest";
import { type Instance, registerVitest } from "../src/harness.js";
import { selftestBinaries } from "../src/suites/index.js";

/**
 * Instances that fail because of a dependency's behaviour, each with the reason (registered
 * with `it.fails`). Empty: every ported instance passes.
 */
export const knownFailures = new Map<string, string>([]);

/** The tests that copy bytes through an access, page boundary by page boundary (the slow ones). */
export const RW_TESTS = ["access_rw", "access_rw_unaligned", "fork_present", "fork_gone"];

/**
 * Register the ported instances `keep` accepts as vitest tests under their kernel names. The
 * suites are split over several test files so that vitest runs them in parallel.
 */
export function registerInstances(keep: (i: Instance) => boolean): void {
  for (const bin of selftestBinaries()) {
    const instances = bin.harness.instances().filter(keep);
    if (instances.length)
      describe(bin.name, () => registerVitest(instances, it, { knownFailures }));
  }
}
