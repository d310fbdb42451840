// The architecture of the repository as rules (docs/architecture.md). `pnpm arch` checks them
// over every package, app and tool; any violation fails the run.

/** A package's own directory, for rules that hold inside one package. */
const PKG = "^packages/([^/]+)/";

/** `from` may import only the @x packages in `allowed` (besides its own files and npm). */
function onlyImports(pkg, allowed, comment) {
  const ok = [pkg, ...allowed].join("|");
  return {
    name: `${pkg}-imports`,
    comment,
    severity: "error",
    from: { path: `^packages/${pkg}/` },
    to: {
      // `@x/...` names an import that did not resolve (not in the package's dependencies).
      path: "^((packages|apps|tooling)/|@x/)",
      pathNot: [
        `^packages/(${ok})/`,
        `^@x/(${ok})$`,
        "^tooling/(bench/|tsup\\.base\\.ts$)",
        "^@x/bench$",
      ],
    },
  };
}

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    // (a) The layers: imports point down kernel <- iommu-pgtable / dmabuf <- iommufd <- vfio-pci
    // <- selftest; apps and tooling may import every package.
    onlyImports(
      "kernel",
      [],
      "@x/kernel is the machine every other package runs on; it imports none of them.",
    ),
    onlyImports(
      "iommu-pgtable",
      ["kernel"],
      "The iommu core and its page tables sit on the kernel alone.",
    ),
    onlyImports("dmabuf", ["kernel"], "The dma-buf core sits on the kernel alone."),
    onlyImports(
      "iommufd",
      ["kernel", "iommu-pgtable", "dmabuf"],
      "iommufd is built on the kernel, the iommu domains and the dma-buf core.",
    ),
    onlyImports(
      "vfio-pci",
      ["kernel", "iommu-pgtable", "dmabuf", "iommufd"],
      "VFIO binds devices to iommufd and exports dma-bufs; nothing above it.",
    ),
    onlyImports(
      "selftest",
      ["kernel", "iommu-pgtable", "dmabuf", "iommufd", "vfio-pci"],
      "The selftests drive every package.",
    ),
    {
      // (b) Stated on its own although (a) implies it: the one edge that must never come back.
      name: "iommufd-not-to-vfio-pci",
      comment:
        "iommufd reaches vfio_pci_dma_buf_iommufd_map through the kernel symbol table (symbol_get, " +
        "drivers/iommu/iommufd/pages.c), as the kernel does: iommufd.ko does not link against vfio-pci.ko.",
      severity: "error",
      from: { path: "^packages/iommufd/" },
      to: { path: "^(packages/vfio-pci/|@x/vfio-pci$)" },
    },
    {
      // (c) Runtime cycles inside a package; `import type` edges are erased by the compiler and
      // do not count, neither as the first edge nor along the cycle.
      name: "no-runtime-cycle",
      comment: "A runtime import cycle makes module initialisation order-dependent.",
      severity: "error",
      from: { path: "^(packages|apps|tooling)/" },
      to: {
        circular: true,
        dependencyTypesNot: ["type-only"],
        viaOnly: { dependencyTypesNot: ["type-only"] },
      },
    },
    {
      // (d) Another package is reached only through its name (its exports), never by path.
      name: "no-cross-package-path",
      comment: "Import another package by its name (@x/...), which goes through its exports.",
      severity: "error",
      from: { path: PKG },
      to: { path: "^packages/", pathNot: "^packages/$1/", dependencyTypes: ["local"] },
    },
    {
      name: "no-cross-package-internals",
      comment: "Through the package name, only a package's entry points are reachable.",
      severity: "error",
      from: { path: PKG },
      to: {
        path: "^packages/[^/]+/src/",
        pathNot: ["^packages/$1/", "^packages/[^/]+/src/(index|testing)\\.ts$"],
      },
    },
    {
      // (e) Tests and benches import their own package's src; src never imports them.
      name: "src-not-to-tests",
      comment: "Sources do not depend on tests, benches or examples.",
      severity: "error",
      from: { path: "^(packages|apps|tooling)/[^/]+/src/" },
      to: { path: "^(packages|apps|tooling)/[^/]+/(test|bench|examples|e2e)/" },
    },
    {
      name: "not-to-unresolvable",
      comment: "Every import resolves.",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)(node_modules|dist|\\.ci-out|bench-results)/" },
    // Keep `import type` edges (dependency type "type-only") so that the layer rules see them,
    // and the cycle rule can leave them out.
    tsPreCompilationDeps: true,
    // Workspace packages resolve to their TypeScript sources, as vitest and tsc do.
    enhancedResolveOptions: {
      conditionNames: ["@x/source", "import", "types", "default"],
      exportsFields: ["exports"],
      mainFields: ["module", "main", "types"],
      extensions: [".ts", ".js", ".mjs", ".cjs", ".json"],
    },
    moduleSystems: ["es6", "cjs"],
    reporterOptions: { text: { highlightFocused: true } },
  },
};
