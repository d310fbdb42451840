/**
 * Reserved IOVA regions a driver reports for a device (iommu_get_resv_regions): what the
 * device must not have mapped (MSI doorbells, HyperTransport), what firmware needs identity
 * mapped (VT-d RMRRs, AMD IVMD unity maps, IORT RMRs), and where the OS may place MSI
 * doorbells itself (SW_MSI on ARM).
 *
 * @see include/linux/iommu.h (enum iommu_resv_type, struct iommu_resv_region)
 */

/** Memory regions that must be identity mapped. */
export const IOMMU_RESV_DIRECT = 0;
/** Identity mapped, but the mapping may be dropped for device assignment. */
export const IOMMU_RESV_DIRECT_RELAXABLE = 1;
/** Never to be mapped. */
export const IOMMU_RESV_RESERVED = 2;
/** Hardware MSI doorbell window, never translated by the IOMMU. */
export const IOMMU_RESV_MSI = 3;
/** Window where software maps MSI doorbells through the IOMMU. */
export const IOMMU_RESV_SW_MSI = 4;

/** struct iommu_resv_region (without prot, which iommufd does not read). */
export interface IommuResvRegion {
  readonly start: bigint;
  readonly length: bigint;
  readonly type: number;
}

/** A firmware-described region (DMAR RMRR, IVRS IVMD, IORT RMR) scoped to named devices. */
export interface FirmwareResvRegion {
  readonly start: bigint;
  readonly length: bigint;
  /** Device names in the region's scope. */
  readonly devices: readonly string[];
}

/** x86 interrupt address range: VT-d IOAPIC_RANGE_START..END, AMD MSI_RANGE_START..END. */
export const X86_MSI_RANGE_START = 0xfee0_0000n;
export const X86_MSI_RANGE_END = 0xfeef_ffffn;
/** AMD HyperTransport reserved range, HT_RANGE_START..END. */
const AMD_HT_RANGE_START = 0xfd_0000_0000n;
const AMD_HT_RANGE_END = 0xff_ffff_ffffn;
/** Where ARM SMMU drivers put the software MSI window: MSI_IOVA_BASE, MSI_IOVA_LENGTH. */
export const MSI_IOVA_BASE = 0x800_0000n;
export const MSI_IOVA_LENGTH = 0x10_0000n;

/** PCI class codes (pdev->class >> 8 / >> 16) the VT-d driver looks at. */
const PCI_CLASS_SERIAL_USB = 0x0c03;
const PCI_CLASS_BRIDGE_ISA = 0x0601;
const PCI_BASE_CLASS_DISPLAY = 0x03;

function inScope(r: FirmwareResvRegion, dev: string): boolean {
  return r.devices.includes(dev);
}

/**
 * @see intel_iommu_get_resv_regions: each RMRR whose scope holds the device (relaxable for USB
 * and graphics devices, device_rmrr_is_relaxable), 0..16 MiB relaxable for an ISA bridge
 * (CONFIG_INTEL_IOMMU_FLOPPY_WA), then the interrupt range as IOMMU_RESV_MSI.
 */
export function intelResvRegions(
  dev: { readonly name: string; readonly pciClass: number },
  rmrrs: readonly FirmwareResvRegion[],
): IommuResvRegion[] {
  const relaxable =
    dev.pciClass >> 8 === PCI_CLASS_SERIAL_USB || dev.pciClass >> 16 === PCI_BASE_CLASS_DISPLAY;
  const out: IommuResvRegion[] = rmrrs
    .filter((r) => inScope(r, dev.name))
    .map((r) => ({
      start: r.start,
      length: r.length,
      type: relaxable ? IOMMU_RESV_DIRECT_RELAXABLE : IOMMU_RESV_DIRECT,
    }));
  if (dev.pciClass >> 8 === PCI_CLASS_BRIDGE_ISA)
    out.push({ start: 0n, length: 1n << 24n, type: IOMMU_RESV_DIRECT_RELAXABLE });
  out.push({
    start: X86_MSI_RANGE_START,
    length: X86_MSI_RANGE_END - X86_MSI_RANGE_START + 1n,
    type: IOMMU_RESV_MSI,
  });
  return out;
}

/** An IVMD unity map; an exclusion range is IOMMU_RESV_RESERVED instead of DIRECT. */
export interface AmdUnityMap extends FirmwareResvRegion {
  readonly exclusion?: boolean;
}

/**
 * @see amd_iommu_get_resv_regions: the device's unity maps, the MSI range as IOMMU_RESV_MSI,
 * then the HyperTransport range as IOMMU_RESV_RESERVED unless the IOMMU reports
 * FEATURE_HT_RANGE_IGNORE (amd_iommu_ht_range_ignore).
 */
export function amdResvRegions(
  dev: { readonly name: string },
  unityMaps: readonly AmdUnityMap[],
  htRangeIgnore: boolean,
): IommuResvRegion[] {
  const out: IommuResvRegion[] = unityMaps
    .filter((r) => inScope(r, dev.name))
    .map((r) => ({
      start: r.start,
      length: r.length,
      type: r.exclusion ? IOMMU_RESV_RESERVED : IOMMU_RESV_DIRECT,
    }));
  out.push({
    start: X86_MSI_RANGE_START,
    length: X86_MSI_RANGE_END - X86_MSI_RANGE_START + 1n,
    type: IOMMU_RESV_MSI,
  });
  if (!htRangeIgnore)
    out.push({
      start: AMD_HT_RANGE_START,
      length: AMD_HT_RANGE_END - AMD_HT_RANGE_START + 1n,
      type: IOMMU_RESV_RESERVED,
    });
  return out;
}

/** An IORT RMR; `remapPermitted` (ACPI_IORT_RMR_REMAP_PERMITTED) makes it relaxable. */
export interface IortRmr extends FirmwareResvRegion {
  readonly remapPermitted?: boolean;
}

/**
 * @see arm_smmu_get_resv_regions: the software MSI window, then iommu_dma_get_resv_regions'
 * firmware regions (iort_iommu_get_resv_regions: the device's RMRs).
 */
export function armSmmuResvRegions(
  dev: { readonly name: string },
  rmrs: readonly IortRmr[],
): IommuResvRegion[] {
  return [
    { start: MSI_IOVA_BASE, length: MSI_IOVA_LENGTH, type: IOMMU_RESV_SW_MSI },
    ...rmrs
      .filter((r) => inScope(r, dev.name))
      .map((r) => ({
        start: r.start,
        length: r.length,
        type: r.remapPermitted ? IOMMU_RESV_DIRECT_RELAXABLE : IOMMU_RESV_DIRECT,
      })),
  ];
}
