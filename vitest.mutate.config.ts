import { defineConfig } from "vitest/config";

// The test projects of a `pnpm mutate` shard run with MUTATE_TESTS=<pkg>,<pkg> (stryker.config.mjs).
export default defineConfig({
  test: {
    projects: (process.env.MUTATE_TESTS ?? "").split(",").map((p) => `packages/${p}`),
  },
});
