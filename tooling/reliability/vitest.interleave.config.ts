import { defineProject, mergeConfig } from "vitest/config";
import shared from "../../vitest.shared.js";
import { yieldingApplies } from "./src/yielding-filter.js";
import { transformYielding } from "./src/yielding-transform.js";

const runtime = new URL("./src/yielding.ts", import.meta.url).pathname;

// The interleaving explorer's tests: every module of the packages is loaded with its
// generator twins (src/yielding-transform.ts), so these run apart from the other tests.
const config = mergeConfig(
  shared,
  defineProject({
    plugins: [
      {
        name: "x-iommu-yielding",
        enforce: "post",
        transform(code: string, id: string) {
          if (!yieldingApplies(id)) return;
          return { code: transformYielding(code, id, runtime), map: null };
        },
      },
    ],
    test: { name: "@x/reliability:interleave" },
  }),
);
// Not merged: the shared include would take every test of the package.
config.test.include = ["test/interleave/**/*.test.ts"];
export default config;
