import { defineConfig } from "tsup";
import base from "../../tooling/tsup.base.js";

// The main entry and the testing subpath (guest-side table writers for tests).
export default defineConfig({ ...base, entry: ["src/index.ts", "src/testing.ts"] });
