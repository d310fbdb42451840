/**
 * The per-module choices of one loaded iommufd: the selftest's temp memory limit and the
 * switches between the DMABUF behaviours the model can show. The `IommufdModule` of a kernel
 * owns one `IommufdOptions`; the switches are set through `@x/iommufd/testing` (the
 * CONFIG_IOMMUFD_TEST counterpart). An io_pagetable used without a loaded module sees the
 * defaults.
 */

/** The default TEMP_MEMORY_LIMIT (drivers/iommu/iommufd/pages.c). */
export const TEMP_MEMORY_LIMIT_DEFAULT = 65536;

/** The batch kind a domain read-back of DMABUF pages gets. */
export type DmabufReadbackKind = "cpu" | "mmio";

export interface IommufdOptions {
  /**
   * iommufd_test_memory_limit: bytes of temporary memory one batch may take
   * (IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT).
   */
  tempMemoryLimit: number;
  /** "cpu" as merged (pfn_reader_fill_span reads domains back as CPU memory), or "mmio". */
  dmabufReadbackKind: DmabufReadbackKind;
  /** Act as a pinning importer: dma_buf_pin at map, unpin at release (the 2026 behaviour). */
  dmabufPinImporter: boolean;
  /**
   * A deliberate fault for the race explorer, never on in the model: a fill tracks its (area,
   * domain) pairs in a second pages.mutex section after the one that mapped them, so a revoke
   * between the two misses the new mapping and leaves a stale MMIO IOPTE.
   */
  trackerMutant: boolean;
}

export function defaultIommufdOptions(): IommufdOptions {
  return {
    tempMemoryLimit: TEMP_MEMORY_LIMIT_DEFAULT,
    dmabufReadbackKind: "cpu",
    dmabufPinImporter: false,
    trackerMutant: false,
  };
}

/** What an io_pagetable used without a loaded module sees. */
export const IOMMUFD_DEFAULT_OPTIONS: Readonly<IommufdOptions> = Object.freeze(
  defaultIommufdOptions(),
);
