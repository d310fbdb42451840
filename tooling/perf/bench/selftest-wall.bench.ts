/**
 * Wall time of the public selftest set: every instance of every ported kernel selftest binary
 * (@x/selftest's `selftestBinaries()`: iommufd, iommufd_fail_nth), run in-process through the
 * kselftest harness's TAP runner, one fresh machine per instance. Target: the whole set (all
 * instances of both binaries) in < 10 s wall. Smoke mode runs every 20th instance and reports its time (not
 * comparable to the target). The process CPU time is in the row's note: on the shared machine
 * the gap between the two is the other processes' load.
 */
import { SMOKE, record, report } from "@x/bench";
import { runTap, selftestBinaries } from "@x/selftest";

const STRIDE = SMOKE ? 20 : 1;
let total = 0;
let instances = 0;
let failed = 0;
const perBinary: string[] = [];
const slowest: Array<{ name: string; ms: number }> = [];
// CPU time beside the wall time: on a shared machine the gap is other processes' load.
const cpu0 = process.cpuUsage();
for (const bin of selftestBinaries()) {
  const chosen = bin.harness.instances().filter((_, i) => i % STRIDE === 0);
  const summary = runTap(chosen, () => {});
  total += summary.ms;
  instances += chosen.length;
  failed += summary.fail;
  perBinary.push(`${bin.name} ${(summary.ms / 1000).toFixed(1)} s / ${chosen.length}`);
  for (const r of summary.results) slowest.push({ name: r.name, ms: r.ms });
  for (const r of summary.results.filter((x) => x.status === "fail").slice(0, 5)) {
    console.log(`FAIL ${r.name}: ${r.log.join(" | ").slice(0, 300)}`);
  }
}
const cpu = process.cpuUsage(cpu0);
const cpuS = (cpu.user + cpu.system) / 1e6;
slowest.sort((a, b) => b.ms - a.ms);
console.log("slowest instances:");
for (const s of slowest.slice(0, 8)) console.log(`  ${s.ms.toFixed(0).padStart(6)} ms  ${s.name}`);

record({
  pkg: "perf",
  workload: `public selftest set wall time (${instances} instances${SMOKE ? ", every 20th" : ""})`,
  value: total / 1000,
  unit: "s",
  target: "< 10 s",
  met: total < 10_000,
  note: `${perBinary.join("; ")}; ${failed} failed; process CPU ${cpuS.toFixed(1)} s`,
});
report();
