/**
 * The ported selftest binaries, each a harness over its own env (the binary's globals):
 * iommufd.c with BUFFER_SIZE = 16 pages at a huge-page-aligned address, iommufd_fail_nth.c with
 * BUFFER_SIZE = 2 MiB.
 */
import type { Harness } from "../harness.js";
import type { SelftestEnv } from "../iommufd-utils.js";
import { HUGEPAGE_SIZE, createSelftestEnv } from "../test-system.js";
import { iommufdFailNthSuite } from "./iommufd-fail-nth.js";
import { iommufdSuite } from "./iommufd.js";

export { iommufdFailNthSuite, iommufdSuite };

export interface SelftestBinary {
  readonly name: string;
  readonly harness: Harness<SelftestEnv>;
}

/** Every ported binary, ready to run. */
export function selftestBinaries(): SelftestBinary[] {
  return [
    {
      name: "iommufd",
      harness: iommufdSuite(() => createSelftestEnv({ bufferSize: 16 * 4096, hugeAligned: true })),
    },
    {
      name: "iommufd_fail_nth",
      harness: iommufdFailNthSuite(() =>
        createSelftestEnv({ bufferSize: HUGEPAGE_SIZE, hugeAligned: false }),
      ),
    },
  ];
}
