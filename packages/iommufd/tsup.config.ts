import { defineConfig } from "tsup";
import base from "../../tooling/tsup.base.js";

// Two entries: the API (src/index.ts) and the CONFIG_IOMMUFD_TEST side (src/testing.ts).
export default defineConfig({ ...base, entry: ["src/index.ts", "src/testing.ts"] });
