import { defineConfig } from "vitest/config";

export default defineConfig({
  test: { projects: ["packages/*", "apps/*", "tooling/reliability", "tooling/reliability/vitest.interleave.config.ts"] },
});
