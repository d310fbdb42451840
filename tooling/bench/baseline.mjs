// The regression gate of `pnpm bench`: each row's ratio (the workload over a reference measured
// in the same process) is compared with the ratio committed in tooling/bench/baseline.json.
// Ratios, not absolute times, because the reference moves with the machine and its load just as
// the workload does; rows without a ratio are listed but not compared.
import { existsSync, readFileSync, writeFileSync } from "node:fs";

/** A row regressed when its ratio got worse than the baseline's by more than this fraction. */
export const DEFAULT_TOLERANCE = 0.25;

/** The key of a row in the baseline file. */
const keyOf = (row) => `${row.pkg} | ${row.workload}`;

/** Full runs and smoke runs measure different sizes, so each mode has its own baselines. */
const modeOf = (smoke) => (smoke ? "smoke" : "full");

export function readBaseline(file) {
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : { full: {}, smoke: {} };
}

/**
 * How `row` moved against its baseline: `change` is the fraction by which the ratio got worse
 * (negative: better), whichever direction `better` says is good; undefined when either side has
 * no ratio.
 */
export function compare(row, baseline, smoke, tolerance) {
  const base = baseline[modeOf(smoke)]?.[keyOf(row)];
  if (row.ratio === undefined || base?.ratio === undefined) return undefined;
  const higherIsBetter = row.better === "higher";
  const change = higherIsBetter ? base.ratio / row.ratio - 1 : row.ratio / base.ratio - 1;
  return { base: base.ratio, change, regressed: change > tolerance };
}

/**
 * Rewrite the baselines of the rows of this run (a run of a subset keeps the other rows'
 * baselines), with the machine facts that explain the figures.
 */
export function updateBaseline(file, baseline, rows, smoke, machine) {
  const mode = modeOf(smoke);
  const entries = { ...(baseline[mode] ?? {}) };
  for (const row of rows) {
    if (row.ratio === undefined) continue;
    entries[keyOf(row)] = { ratio: row.ratio, better: row.better ?? "lower", target: row.target };
  }
  const sorted = Object.fromEntries(Object.entries(entries).sort(([a], [b]) => (a < b ? -1 : 1)));
  const next = { ...baseline, [mode]: sorted, [`${mode}Machine`]: machine };
  writeFileSync(file, `${JSON.stringify(next, null, 2)}\n`);
}
