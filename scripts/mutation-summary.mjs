/**
 * Adds up the mutation results kept in reports/stryker-incremental-*.json (one per package, or
 * one per shard when MUTATE_FILE, and MUTATE_LINES, were used) into a score per source file and
 * per package.
 * `--survivors` also lists each surviving mutant with its line, for classifying it. A file whose
 * source changed after a report of it was made is marked STALE: rerun its shard(s).
 *
 *   node scripts/mutation-summary.mjs [--survivors] [package]
 *
 * Score as Stryker computes it: killed + timed out over everything tested or uncovered; ignored
 * and static mutants are outside it.
 */
import { readFileSync, readdirSync } from "node:fs";

const args = process.argv.slice(2);
const survivors = args.includes("--survivors");
const only = args.find((a) => !a.startsWith("--"));

const DETECTED = ["Killed", "Timeout"];
const UNDETECTED = ["Survived", "NoCoverage"];

/** A mutant's place and change: the same mutant in two reports of one file counts once. */
const mutantKey = (m) => {
  const { start, end } = m.location;
  return `${start.line}:${start.column}-${end.line}:${end.column} ${m.mutatorName} ${m.replacement}`;
};

/**
 * file -> { sources, byKey }: every source text the file's reports were made from, and its
 * mutants by key. The line-range shards of one file (MUTATE_LINES) add up; where reports
 * overlap, the later one's result of a mutant replaces the earlier one's.
 */
const files = new Map();
for (const name of readdirSync("reports").sort()) {
  if (!/^stryker-incremental-.*\.json$/.test(name)) continue;
  const report = JSON.parse(readFileSync(`reports/${name}`, "utf8"));
  for (const [file, result] of Object.entries(report.files)) {
    const entry = files.get(file) ?? { sources: new Set(), byKey: new Map() };
    for (const m of result.mutants) entry.byKey.set(mutantKey(m), m);
    entry.sources.add(result.source);
    files.set(file, entry);
  }
}

/** A report made from another text than the file's today no longer describes it. */
function isStale(file, entry) {
  let current;
  try {
    current = readFileSync(file, "utf8");
  } catch {
    return true;
  }
  return [...entry.sources].some((s) => s !== current);
}

function count(mutants) {
  const c = { Killed: 0, Timeout: 0, Survived: 0, NoCoverage: 0, Ignored: 0, other: 0 };
  for (const m of mutants) c[m.status in c ? m.status : "other"]++;
  const detected = DETECTED.reduce((n, s) => n + c[s], 0);
  const valid = detected + UNDETECTED.reduce((n, s) => n + c[s], 0);
  return { ...c, score: valid ? (100 * detected) / valid : 100, total: mutants.length };
}

function row(name, c) {
  const score = c.score.toFixed(2).padStart(6);
  return `${name.padEnd(40)} ${score} %  killed ${c.Killed}, timeout ${c.Timeout}, survived ${c.Survived}, no coverage ${c.NoCoverage}, ignored ${c.Ignored} (${c.total})`;
}

const byPkg = new Map();
for (const [file, result] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
  const pkg = /^packages\/([^/]+)\//.exec(file)?.[1] ?? "?";
  if (only && pkg !== only) continue;
  if (!byPkg.has(pkg)) byPkg.set(pkg, []);
  byPkg.get(pkg).push([file, result]);
}

for (const [pkg, list] of byPkg) {
  console.log(row(`@x/${pkg}`, count(list.flatMap(([, r]) => [...r.byKey.values()]))));
  for (const [file, result] of list) {
    const mutants = [...result.byKey.values()];
    const stale = isStale(file, result) ? "  STALE" : "";
    console.log(row(`  ${file.replace(/^packages\/[^/]+\/src\//, "")}`, count(mutants)) + stale);
    if (!survivors) continue;
    const lines = [...result.sources].at(-1).split("\n");
    const open = mutants.filter((m) => UNDETECTED.includes(m.status));
    open.sort((a, b) => a.location.start.line - b.location.start.line);
    for (const m of open) {
      const { line, column } = m.location.start;
      const text = lines[line - 1].trim().slice(0, 100);
      console.log(
        `    ${line}:${column} ${m.status} ${m.mutatorName} -> ${m.replacement} | ${text}`,
      );
    }
  }
}
