// `pnpm bench [filter...] [--update-baseline] [--tolerance <percent>]`: runs every package's
// bench/*.bench.ts on the sources (tsx + the @x/source condition) in its own node process, so
// heap figures are per workload, then prints one table with each ratio against
// tooling/bench/baseline.json. BENCH_SMOKE=1 for CI (smaller sizes; regressions reported).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { compare, DEFAULT_TOLERANCE, readBaseline, updateBaseline } from "./baseline.mjs";

const { values: opts, positionals: only } = parseArgs({
  allowPositionals: true,
  options: {
    "update-baseline": { type: "boolean", default: false },
    tolerance: { type: "string", default: String(DEFAULT_TOLERANCE * 100) },
  },
});
const tolerance = Number(opts.tolerance) / 100;
if (!(tolerance >= 0)) throw new Error(`--tolerance wants a percentage, got ${opts.tolerance}`);
const smoke = process.env.BENCH_SMOKE === "1";
const root = new URL("../../", import.meta.url).pathname;
const baselineFile = join(root, "tooling", "bench", "baseline.json");
rmSync(join(root, "bench-results"), { recursive: true, force: true });
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
const baseline = readBaseline(baselineFile);
if (rows.length) {
  const pct = (x) => `${x > 0 ? "+" : ""}${(x * 100).toFixed(0)} %`;
  const fmt = (n) =>
    n === undefined ? "" : n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toPrecision(3);
  const header = [
    "package",
    "workload",
    "value",
    "baseline",
    "ratio",
    "target",
    "met",
    `ratio vs committed (worse by > ${(tolerance * 100).toFixed(0)} % = REGRESSED)`,
  ];
  let regressed = 0;
  const table = rows.map((r) => {
    const c = compare(r, baseline, smoke, tolerance);
    if (c?.regressed) regressed++;
    const vs =
      c === undefined
        ? ""
        : `${c.regressed ? "REGRESSED " : ""}${fmt(c.base)}x, ${pct(c.change)} ${r.better === "higher" ? "(higher is better)" : ""}`.trimEnd();
    return [
      r.pkg,
      r.workload,
      `${fmt(r.value)} ${r.unit}`,
      fmt(r.baseline),
      r.ratio === undefined ? "" : `${fmt(r.ratio)}x`,
      r.target,
      r.met ? "yes" : "NO",
      vs,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join(" | ");
  console.log(`\n## all benchmarks${smoke ? " (smoke mode: figures not meaningful)" : ""}`);
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("-|-"));
  for (const row of table) console.log(line(row));
  const missed = rows.filter((r) => !r.met).length;
  console.log(`${rows.length} workloads, ${rows.length - missed} targets met, ${missed} missed`);
  console.log(
    `${regressed} ratios regressed by more than ${(tolerance * 100).toFixed(0)} % against the ${smoke ? "smoke" : "full"} baselines of tooling/bench/baseline.json (reported, not failing)`,
  );
  if (opts["update-baseline"]) {
    updateBaseline(baselineFile, baseline, rows, smoke, {
      date: new Date().toISOString(),
      node: process.version,
      cpus: `${cpus().length} x ${cpus()[0]?.model ?? "unknown"}`,
      memGiB: Math.round(totalmem() / 2 ** 30),
      loadavg1: Number(loadavg()[0].toFixed(1)),
    });
    console.log(`baselines of this run written to ${baselineFile}`);
  }
}
process.exit(failed ? 1 : 0);
