import { defineConfig } from "tsup";

/**
 * Every library package builds the same way: ESM + declarations from src/index.ts. A package
 * with a testing subpath (package.json "./testing") adds src/testing.ts to `entry`.
 */
export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm"],
  dts: true,
  clean: true,
  sourcemap: true,
  target: "es2022",
});
