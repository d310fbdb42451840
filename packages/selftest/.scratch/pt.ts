import {
  mockIommuptDomainAlloc,
  iommuMap,
  iommuUnmap,
  MOCK_IOMMUPT_DEFAULT,
} from "@x/iommu-pgtable";
const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT);
iommuMap(d, 1n << 24n, 0x100000n, 2048n, 3);
console.log("mapped");
console.log(iommuUnmap(d, 1n << 24n, 2048n));
