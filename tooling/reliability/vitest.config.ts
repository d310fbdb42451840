import { defineProject, mergeConfig } from "vitest/config";
import shared from "../../vitest.shared.js";

export default mergeConfig(
  shared,
  defineProject({
    // test/interleave runs under vitest.interleave.config.ts (the modules' generator twins).
    test: { name: "@x/reliability", exclude: ["test/interleave/**", "node_modules/**"] },
  }),
);
