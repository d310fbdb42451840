import { defineConfig } from "vitest/config";

// Every package's tests read sibling packages from their sources (the @x/source export
// condition), so nothing has to be built before `vitest run`.
export default defineConfig({
  ssr: { resolve: { conditions: ["@x/source"] } },
  resolve: { conditions: ["@x/source"] },
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: [new URL("./tooling/vitest.setup.ts", import.meta.url).pathname],
    testTimeout: 60_000,
    // Under `pnpm mutate` (stryker.config.mjs) test files share one module graph: StrykerJS
    // switches mutants at run time, so re-evaluating every module for each file only costs time.
    isolate: process.env.X_MUTATE !== "1",
  },
});
