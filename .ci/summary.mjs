// Prints the closing line `N passed, N failed[, N skipped]` from vitest and Playwright JSON
// reports. A file that failed to load has no failed assertion but counts as a failure; so does an
// unreadable report, a report that ran no test, and a Playwright run-level error (the web server
// did not start, a spec did not compile).
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
    const { expected = 0, unexpected = 0, flaky = 0, skipped: skip = 0 } = r.stats;
    passed += expected + flaky;
    failed += unexpected;
    skipped += skip;
    const errors = r.errors ?? [];
    for (const e of errors) {
      console.error(`summary: ${path}: ${(e.message ?? "").split("\n")[0]}`);
      failed++;
    }
    if (errors.length === 0 && expected + unexpected + flaky + skip === 0) {
      console.error(`summary: ${path} ran no test`);
      failed++;
    }
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
