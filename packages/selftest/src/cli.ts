/**
 * Run the ported iommufd selftests and print kselftest TAP, then pass / fail / skip counts and
 * the wall time. Exit status 1 when an instance failed.
 *
 *   node --conditions=@x/source --import tsx packages/selftest/src/cli.ts [-l] [filter…]
 *
 * A filter keeps the instances whose name (fixture.variant.test) contains it; `-l` lists the
 * instance names without running them.
 */
import { runTap } from "./harness.js";
import { selftestBinaries } from "./suites/index.js";

function main(argv: readonly string[]): number {
  const list = argv.includes("-l");
  const filters = argv.filter((a) => a !== "-l");
  const keep = (name: string) => filters.length === 0 || filters.some((f) => name.includes(f));
  const t0 = performance.now();
  let pass = 0;
  let fail = 0;
  let skip = 0;
  for (const bin of selftestBinaries()) {
    const instances = bin.harness.instances();
    if (list) {
      for (const i of instances) if (keep(i.name)) console.log(i.name);
      continue;
    }
    console.log(`# selftests: iommu: ${bin.name}`);
    const sum = runTap(instances, (line) => console.log(line), keep);
    pass += sum.pass;
    fail += sum.fail;
    skip += sum.skip;
  }
  if (list) return 0;
  const seconds = (performance.now() - t0) / 1000;
  console.log(`# all: pass:${pass} fail:${fail} skip:${skip} in ${seconds.toFixed(2)} s`);
  return fail ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
