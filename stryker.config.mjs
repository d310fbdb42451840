/**
 * Mutation testing of the five core packages with StrykerJS (`pnpm mutate`). Not part of CI:
 * a full run takes hours on two cores. Incremental: results are kept in
 * reports/stryker-incremental[-<pkg>].json (committed), so a later run only re-tests mutants in
 * changed code or covered by changed tests. One package at a time, against that package's
 * own tests: `MUTATE_PKG=dmabuf pnpm mutate`. The HTML and JSON reports go to
 * reports/mutation/.
 */
// Read by vitest.shared.ts in the test-runner processes StrykerJS forks from this one.
process.env.X_MUTATE = "1";

const CORE = ["kernel", "iommu-pgtable", "dmabuf", "iommufd", "vfio-pci"];
const pkg = process.env.MUTATE_PKG;
if (pkg !== undefined && !CORE.includes(pkg)) throw new Error(`MUTATE_PKG: one of ${CORE}`);
const pkgs = pkg ? [pkg] : CORE;
// MUTATE_FILE=<name under src/, no .ts> shards a large package by source file: each shard keeps
// its own incremental file (the report of that file), so an interrupted package run loses one
// shard, and `--mutate` would otherwise drop the other files from a shared incremental file.
const file = process.env.MUTATE_FILE;
if (file !== undefined && pkg === undefined) throw new Error("MUTATE_FILE needs MUTATE_PKG");
// MUTATE_LINES=<from>-<to> narrows a MUTATE_FILE shard to those lines (Stryker's `file:from-to`
// mutate range) with an incremental file of its own, for a file too large for one sitting. Only
// nodes wholly inside the range are mutated, so cut between top-level declarations.
const lines = process.env.MUTATE_LINES;
if (lines !== undefined && (file === undefined || !/^\d+-\d+$/.test(lines)))
  throw new Error("MUTATE_LINES=<from>-<to> needs MUTATE_FILE");
const range = lines ? `:${lines}` : "";
// MUTATE_TESTS=<pkg>[,<pkg>…] (with MUTATE_FILE) runs a shard against those packages' tests
// instead of its own (vitest.mutate.config.ts): for code a package provides for a dependent to
// drive, such as iommu-pgtable's arm-smmu-v3-nested.ts, the SMMUv3 nested walk that @x/iommufd's
// nesting tests use, and for @x/iommufd's io_pagetable, whose strongest tests are the ports of
// the kernel's own iommufd selftests in @x/selftest. Run a file with its own package's tests
// first: a later run with more packages reuses every kill whose test is unchanged and retests
// only the rest.
const TEST_PKGS = [...CORE, "selftest"];
const testPkgs = process.env.MUTATE_TESTS?.split(",");
if (testPkgs && (file === undefined || !testPkgs.every((p) => TEST_PKGS.includes(p))))
  throw new Error(`MUTATE_TESTS: packages of ${TEST_PKGS}, with MUTATE_FILE`);
const suffix = pkg
  ? `-${pkg}${file ? `-${file.replaceAll("/", "-")}${lines ? `-L${lines}` : ""}` : ""}`
  : "";

export default {
  packageManager: "pnpm",
  plugins: ["@stryker-mutator/vitest-runner", "./scripts/stryker-ignore-diagnostics.mjs"],
  // Message strings and explanatory values of fail / WARN_ON / thrown kernel errors are not
  // behaviour; see scripts/stryker-ignore-diagnostics.mjs.
  ignorers: ["diagnostics"],
  testRunner: "vitest",
  // Tests reach sibling packages through the @x/source condition, not relative imports, so
  // "related" test lookup would miss them; per-test coverage picks the tests to run instead.
  vitest: {
    configFile: testPkgs
      ? "vitest.mutate.config.ts"
      : pkg
        ? `packages/${pkg}/vitest.config.ts`
        : "vitest.config.ts",
    ...(pkg && !testPkgs ? { dir: `packages/${pkg}` } : {}),
    related: false,
  },
  mutate: [
    ...(file
      ? [`packages/${pkg}/src/${file}.ts${range}`]
      : pkgs.map((p) => `packages/${p}/src/**/*.ts`)),
    "!packages/*/src/index.ts",
    "!packages/*/src/testing.ts",
  ],
  // pnpm's per-package node_modules are symlinks a sandbox copy would break.
  inPlace: true,
  coverageAnalysis: "perTest",
  ignoreStatic: true,
  incremental: true,
  incrementalFile: `reports/stryker-incremental${suffix}.json`,
  // A shard's incremental file is its report; scripts/mutation-summary.mjs adds shards up.
  reporters: file ? ["clear-text", "progress"] : ["clear-text", "progress", "html", "json"],
  htmlReporter: { fileName: `reports/mutation/mutation${suffix}.html` },
  jsonReporter: { fileName: `reports/mutation/mutation${suffix}.json` },
  concurrency: 2,
  timeoutMS: 30_000,
  tempDirName: ".stryker-tmp",
};
