#!/usr/bin/env bash
# Every check and test of the repository; JSON reports land in .ci-out/. Exit status: non-zero on
# any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
mkdir -p .ci-out
rc=0
step() { echo "== $*"; }

step install
pnpm install --frozen-lockfile || exit 1
step lint
NO_COLOR=1 pnpm lint --colors=off --max-diagnostics=50 || rc=1
step links
NO_COLOR=1 pnpm links || rc=1
step architecture
pnpm arch || rc=1
step unused code
pnpm knip || rc=1
step build + typecheck
pnpm turbo run build typecheck --output-logs=errors-only || rc=1
step packaging
node scripts/check-packages.mjs || rc=1
step tests
pnpm vitest run --reporter=dot --reporter=json --outputFile.json=.ci-out/vitest.json || rc=1
if [ -f apps/playground/playwright.config.ts ] && [ "${SKIP_E2E:-0}" != 1 ]; then
  step browser tests
  PW_JSON="$PWD/.ci-out/playwright.json" pnpm --filter playground e2e || rc=1
fi
step reliability report: fuzzing, fault injection, race exploration
pnpm reliability || rc=1
if [ -f tooling/bench/run.mjs ]; then
  step benchmarks, smoke mode
  BENCH_SMOKE=1 pnpm bench || rc=1
fi
exit $rc
