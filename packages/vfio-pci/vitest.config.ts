import { fileURLToPath } from "node:url";
import { defineProject, mergeConfig } from "vitest/config";
import shared from "../../vitest.shared.js";

// Until @x/iommu-pgtable is a dependency of this package (requested), the tests reach its
// sources directly to build IOMMU drivers for the PCI functions.
const pgtable = fileURLToPath(new URL("../iommu-pgtable/src/index.ts", import.meta.url));

export default mergeConfig(
  shared,
  defineProject({
    test: { name: "@x/vfio-pci" },
    resolve: { alias: { "@x/iommu-pgtable": pgtable } },
  }),
);
