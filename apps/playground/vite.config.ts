import { defaultClientConditions, defineConfig } from "vite";

// The page is built from the packages' TypeScript sources (the @x/source export condition), so
// `vite build` needs no package to be built first and runs exactly the code the CLI runs.
export default defineConfig({
  base: "./",
  resolve: { conditions: ["@x/source", ...defaultClientConditions] },
  build: { target: "es2022", chunkSizeWarningLimit: 2048 },
  preview: { host: "127.0.0.1", strictPort: true },
});
