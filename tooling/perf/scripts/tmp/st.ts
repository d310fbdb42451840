import { runTap, selftestBinaries } from "@x/selftest";
const bin = selftestBinaries()[0]!;
const chosen = bin.harness.instances().filter((i) => /mock_domain\.access_rw$|fork_gone|no_domain\.access_rw_unaligned/.test(i.name));
const c0 = process.cpuUsage();
const s = runTap(chosen, () => {});
const c = process.cpuUsage(c0);
console.log(chosen.map((i) => i.name).join(" "), `wall ${s.ms.toFixed(0)} ms cpu ${((c.user + c.system) / 1000).toFixed(0)} ms fail ${s.fail}`);
