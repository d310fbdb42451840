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
  },
});
