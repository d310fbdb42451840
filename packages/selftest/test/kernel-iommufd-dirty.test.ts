import { registerInstances } from "./kernel-suites.js";

registerInstances((i) => i.fixture === "iommufd_dirty_tracking");
