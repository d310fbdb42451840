import { registerInstances } from "./kernel-suites.js";

registerInstances((i) =>
  ["iommufd", "vfio_compat_mock_domain", "iommufd_mock_domain"].includes(i.fixture),
);
