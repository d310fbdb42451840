/**
 * The command line of `iommufd-selftest` (src/cli.ts) over any set of selftest binaries: the
 * filters, the listing, one kselftest TAP stream (TAP version 13, one plan line for every
 * instance run) and kselftest's exit status (tools/testing/selftests/kselftest.h): KSFT_PASS when
 * nothing failed, KSFT_FAIL when an instance failed, a filter matched nothing or an option is
 * unknown, KSFT_SKIP when every instance run was skipped.
 */
import { parseArgs } from "node:util";
import { type Instance, runTap } from "./harness.js";
import type { SelftestBinary } from "./suites/index.js";

export const KSFT_PASS = 0;
export const KSFT_FAIL = 1;
export const KSFT_SKIP = 4;

const USAGE = `usage: iommufd-selftest [-h] [-l] [filter...]

Runs the ported selftests of tools/testing/selftests/iommu/ (iommufd, iommufd_fail_nth) and
prints one kselftest TAP stream.

  filter      run the instances whose name (fixture.variant.test) contains it; with several,
              those that match any; a filter that matches nothing is an error
  -l, --list  print the names of the instances that would run, one a line, and run nothing
  -h, --help  print this text

Exit status: 0 (KSFT_PASS) when nothing failed, 1 (KSFT_FAIL) when an instance failed, a
filter matched nothing or an option is unknown, 4 (KSFT_SKIP) when every instance was skipped.`;

/** Where the command writes: TAP and listings to `out`, complaints to `err`. */
export interface SelftestIo {
  out(line: string): void;
  err(line: string): void;
}

/** Run the command with `argv` (without node and the script); returns the exit status. */
export function selftestMain(
  argv: readonly string[],
  binaries: readonly SelftestBinary[],
  io: SelftestIo,
): number {
  let values: { list?: boolean; help?: boolean };
  let filters: string[];
  try {
    ({ values, positionals: filters } = parseArgs({
      args: [...argv],
      options: { list: { type: "boolean", short: "l" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
    }));
  } catch (e) {
    io.err(`${(e as Error).message}\n${USAGE}`);
    return KSFT_FAIL;
  }
  if (values.help) {
    io.out(USAGE);
    return KSFT_PASS;
  }
  const all: Instance[] = binaries.flatMap((bin) => bin.harness.instances());
  const unmatched = filters.filter((f) => !all.some((i) => i.name.includes(f)));
  if (unmatched.length) {
    io.err(
      `no test instance matches ${unmatched.map((f) => `"${f}"`).join(", ")}; --list names them`,
    );
    return KSFT_FAIL;
  }
  const keep = (name: string) => filters.length === 0 || filters.some((f) => name.includes(f));
  if (values.list) {
    for (const i of all) if (keep(i.name)) io.out(i.name);
    return KSFT_PASS;
  }
  const t0 = performance.now();
  const { results, pass, fail, skip } = runTap(all, io.out, keep);
  const seconds = (performance.now() - t0) / 1000;
  // One count line per fixture (the part of fixture.variant.test before the first dot).
  const fixtures = new Map<string, { pass: number; fail: number; skip: number }>();
  for (const r of results) {
    const name = r.name.split(".")[0]!;
    const c = fixtures.get(name) ?? { pass: 0, fail: 0, skip: 0 };
    c[r.status]++;
    fixtures.set(name, c);
  }
  for (const [name, c] of fixtures)
    io.out(`# fixture ${name}: pass:${c.pass} fail:${c.fail} skip:${c.skip}`);
  io.out(`# all: pass:${pass} fail:${fail} skip:${skip} in ${seconds.toFixed(2)} s`);
  if (fail) return KSFT_FAIL;
  return pass === 0 && skip > 0 ? KSFT_SKIP : KSFT_PASS;
}
