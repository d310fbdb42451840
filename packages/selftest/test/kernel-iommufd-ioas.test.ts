import { registerFixtures } from "./kernel-suites.js";

registerFixtures("iommufd_ioas");
