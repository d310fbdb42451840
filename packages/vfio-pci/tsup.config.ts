import { defineConfig } from "tsup";
import base from "../../tooling/tsup.base.js";

// The main entry and the testing subpath (test-only build switches).
export default defineConfig({ ...base, entry: ["src/index.ts", "src/testing.ts"] });
