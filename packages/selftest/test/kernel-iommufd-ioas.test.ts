import { RW_TESTS, registerInstances } from "./kernel-suites.js";

registerInstances((i) => i.fixture === "iommufd_ioas" && !RW_TESTS.includes(i.test));
