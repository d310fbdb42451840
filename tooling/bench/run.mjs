// `pnpm bench`: runs every package's bench/*.bench.ts on the sources (tsx + the @x/source
// condition) in its own node process, so heap figures are per workload. BENCH_SMOKE=1 for CI.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

const root = new URL("../../", import.meta.url).pathname;
rmSync(join(root, "bench-results"), { recursive: true, force: true });
// Positionals keep the benches whose "<package>/<file>" contains one of them.
const { positionals: only } = parseArgs({ allowPositionals: true });
let failed = 0;
for (const dir of ["packages", "apps", "tooling"]) {
  if (!existsSync(join(root, dir))) continue;
  for (const pkg of readdirSync(join(root, dir))) {
    const bdir = join(root, dir, pkg, "bench");
    if (!existsSync(bdir)) continue;
    for (const f of readdirSync(bdir)
      .filter((f) => f.endsWith(".bench.ts"))
      .sort()) {
      if (only.length && !only.some((o) => `${pkg}/${f}`.includes(o))) continue;
      console.log(`\n## ${pkg}/${f}`);
      const r = spawnSync(
        process.execPath,
        [
          "--expose-gc",
          "--max-old-space-size=8192",
          "--conditions=@x/source",
          "--import",
          "tsx",
          join(bdir, f),
        ],
        { stdio: "inherit", cwd: join(root, dir, pkg) },
      );
      if (r.status !== 0) failed++;
    }
  }
}

// One table over every package, written as JSON too.
const resultsFile = join(root, "bench-results", "results.jsonl");
const rows = existsSync(resultsFile)
  ? readFileSync(resultsFile, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l))
  : [];
writeFileSync(join(root, "bench-results", "results.json"), JSON.stringify(rows, null, 2));
if (rows.length) {
  const fmt = (n) =>
    n === undefined ? "" : n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toPrecision(3);
  const header = ["package", "workload", "value", "baseline", "ratio", "target", "met"];
  const table = rows.map((r) => [
    r.pkg,
    r.workload,
    `${fmt(r.value)} ${r.unit}`,
    fmt(r.baseline),
    r.ratio === undefined ? "" : `${fmt(r.ratio)}x`,
    r.target,
    r.met ? "yes" : "NO",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join(" | ");
  console.log(
    `\n## all benchmarks${process.env.BENCH_SMOKE === "1" ? " (smoke mode: figures not meaningful)" : ""}`,
  );
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("-|-"));
  for (const row of table) console.log(line(row));
  const missed = rows.filter((r) => !r.met).length;
  console.log(`${rows.length} workloads, ${rows.length - missed} targets met, ${missed} missed`);
}
process.exit(failed ? 1 : 0);
