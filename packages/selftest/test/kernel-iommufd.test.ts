import { registerInstances } from "./kernel-suites.js";

registerInstances((i) =>
  [
    "iommufd",
    "change_process",
    "vfio_compat_mock_domain",
    "iommufd_mock_domain",
    "iommufd_device_pasid",
  ].includes(i.fixture),
);
