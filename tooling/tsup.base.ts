import { defineConfig } from "tsup";

/** Every library package builds the same way: ESM + declarations from src/index.ts. */
export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm"],
  dts: true,
  clean: true,
  sourcemap: true,
  target: "es2022",
});
