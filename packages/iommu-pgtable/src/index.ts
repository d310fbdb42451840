/**
 * @x/iommu-pgtable: the IOMMU core (domains, map/unmap, iotlb gather, dirty tracking), the
 * generic page table with its formats (AMDv1, x86-64, VT-d second stage, ARM LPAE), the page
 * table drivers, and the selftest's mock IOMMU page table. The mock lives in the main entry
 * because iommufd's selftest module is a user of it, not a test of this package.
 */
export {
  AMDV1PT_FMT_OA,
  PT_FEAT_AMDV1_FORCE_COHERENCE,
  amdv1Format,
} from "./fmt/amdv1.js";
export {
  PT_FEAT_VTDSS_FORCE_COHERENCE,
  PT_FEAT_VTDSS_FORCE_WRITEABLE,
  vtdssFormat,
} from "./fmt/vtdss.js";
export { x86_64Format } from "./fmt/x86-64.js";
export {
  ArmSmmuNestedDomain,
  type ArmSmmuMaster,
  type ArmSmmuV3Nesting,
  type ArmSmmuVmaster,
  CMDQ_0_OP,
  CMDQ_BATCH_ENTRIES,
  CMDQ_CFGI_0_SID,
  CMDQ_OP_ATC_INV,
  CMDQ_OP_CFGI_CD,
  CMDQ_OP_CFGI_CD_ALL,
  CMDQ_OP_TLBI_NH_ALL,
  CMDQ_OP_TLBI_NH_ASID,
  CMDQ_OP_TLBI_NH_VA,
  CMDQ_OP_TLBI_NH_VAA,
  CMDQ_OP_TLBI_NSNH_ALL,
  CMDQ_TLBI_0_ASID,
  CMDQ_TLBI_0_VMID,
  CTXDESC_CD_0_AA64,
  CTXDESC_CD_0_V,
  EVTQ_0_ID,
  EVTQ_0_SID,
  EVTQ_1_S2,
  EVT_ID_ACCESS_FAULT,
  EVT_ID_BAD_CD_CONFIG,
  EVT_ID_PERMISSION_FAULT,
  EVT_ID_TRANSLATION_FAULT,
  STRTAB_STE_0_CFG,
  STRTAB_STE_0_CFG_ABORT,
  STRTAB_STE_0_CFG_BYPASS,
  STRTAB_STE_0_CFG_S1_TRANS,
  STRTAB_STE_0_NESTING_ALLOWED,
  STRTAB_STE_0_V,
  STRTAB_STE_1_EATS,
  STRTAB_STE_1_EATS_ABT,
  STRTAB_STE_1_EATS_TRANS,
  STRTAB_STE_1_NESTING_ALLOWED,
  type SmmuPhysMem,
} from "./arm-smmu-v3-nested.js";
export {
  IO_PGTABLE_QUIRK_NO_WARN,
  armLpaeDomainAlloc,
} from "./io-pgtable-arm.js";
export {
  IommuDevice,
  type IommuDriver,
  IommuFault,
  type IommuHwInfo,
  PT_DRIVER_ALLOC_FLAGS,
  type PtDriverDesc,
  PtIommuDriver,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceDma,
  iommuTranslate,
  iommuptDomainAlloc,
} from "./iommu-driver.js";
export {
  IOMMU_NO_PASID,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuPasidDomain,
  iommuReplaceDevicePasid,
} from "./iommu-pasid.js";
export {
  ArmSmmuV3Driver,
  type ArmSmmuV3Hw,
  amdIommuDriver,
  intelIommuDriver,
  x86FirstStageIommuDriver,
} from "./iommu-drivers.js";
export {
  ptDumpText,
  ptImage,
} from "./iommu-pt-dump.js";
export {
  type PtIommuCfg,
  TABLE_PA_BASE,
  ctz53,
  fls53,
} from "./iommu-pt.js";
export {
  IOMMU_CACHE,
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_DOMAIN_NESTED,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HW_INFO_TYPE_AMD,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "./iommu-types.js";
export {
  IommuDomain,
  type IommuPhysRun,
  iommuDomainFree,
  iommuIotlbSync,
  iommuIovaToPhys,
  iommuMap,
  iommuMapSg,
  iommuPgsize,
  iommuReadAndClearDirty,
  iommuReadRuns,
  iommuUnmap,
  iommuUnmapFast,
  iommuptSetDirty,
} from "./iommu.js";
export { IotlbGather } from "./iotlb-gather.js";
export {
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IOMMUPT_AMDV1,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_PAGE_SIZE,
  mockIommuptDomainAlloc,
} from "./mock.js";
export {
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_FLUSH_RANGE,
  PT_FEAT_FLUSH_RANGE_NO_GAPS,
  PT_FEAT_SIGN_EXTEND,
} from "./pt-format.js";
export {
  type AmdUnityMap,
  type FirmwareResvRegion,
  IOMMU_RESV_DIRECT,
  IOMMU_RESV_DIRECT_RELAXABLE,
  IOMMU_RESV_MSI,
  IOMMU_RESV_RESERVED,
  IOMMU_RESV_SW_MSI,
  type IommuResvRegion,
  type IortRmr,
  MSI_IOVA_BASE,
  MSI_IOVA_LENGTH,
  X86_MSI_RANGE_END,
  X86_MSI_RANGE_START,
} from "./iommu-resv.js";
