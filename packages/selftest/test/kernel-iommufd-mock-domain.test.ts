import { registerFixtures } from "./kernel-suites.js";

registerFixtures("iommufd_mock_domain");
