import { registerFixtures } from "./kernel-suites.js";

registerFixtures("iommufd", "vfio_compat_mock_domain");
