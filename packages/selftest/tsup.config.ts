import { defineConfig } from "tsup";
import base from "../../tooling/tsup.base.js";

// The library (src/index.ts) and the `iommufd-selftest` command (src/cli.ts; its #! line makes
// tsup mark dist/cli.js executable). Only the library has declarations.
export default defineConfig({
  ...base,
  entry: ["src/index.ts", "src/cli.ts"],
  dts: { entry: ["src/index.ts"] },
});
