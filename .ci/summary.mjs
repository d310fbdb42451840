// Prints the closing line `N passed, N failed[, N skipped]` from vitest (and Playwright-style)
// JSON reports. A file that failed to load has no failed assertion but counts as a failure.
import { readFileSync } from "node:fs";

let passed = 0;
let failed = 0;
let skipped = 0;
for (const path of process.argv.slice(2)) {
  let r;
  try {
    r = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    console.error(`summary: cannot read ${path}: ${e.message}`);
    failed++;
    continue;
  }
  if (r.stats) {
    passed += (r.stats.expected ?? 0) + (r.stats.flaky ?? 0);
    failed += r.stats.unexpected ?? 0;
    skipped += r.stats.skipped ?? 0;
    continue;
  }
  passed += r.numPassedTests ?? 0;
  failed += r.numFailedTests ?? 0;
  skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  for (const f of r.testResults ?? []) {
    const anyFailed = (f.assertionResults ?? []).some((a) => a.status === "failed");
    if (f.status === "failed" && !anyFailed) {
      console.error(`summary: ${f.name} failed to run: ${(f.message ?? "").split("\n")[0]}`);
      failed++;
    }
  }
  if ((r.numTotalTests ?? 0) === 0) {
    console.error(`summary: ${path} ran no test`);
    failed++;
  }
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
