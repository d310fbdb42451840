import { describe, it } from "vitest";
import { type Instance, registerVitest } from "../src/harness.js";
import { selftestBinaries } from "../src/suites/index.js";

/**
 * Instances that fail because of a dependency's behaviour, each reported in
 * .lead/requests/selftest.md, with the reason (registered with `it.fails`). Empty: every
 * ported instance passes.
 */
export const knownFailures = new Map<string, string>(
  ["8k", "16k", "64k", "128k", "320k", "64M", "128M"].flatMap((size) =>
    ["get_dirty_bitmap", "get_dirty_bitmap_no_clear"].map((test) => [
      `iommufd_dirty_tracking.domain_dirty${size}.${test}`,
      "the DEFAULT mock table maps a 4 KiB page as one contiguous 2 x 2 KiB leaf, so a set_dirty " +
        "on one 2 KiB item reports its neighbour too; selftest.c's table keeps 2 KiB leaves",
    ]),
  ),
);

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
