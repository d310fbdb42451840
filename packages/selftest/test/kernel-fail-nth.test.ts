import { registerInstances } from "./kernel-suites.js";

registerInstances((i) => i.fixture === "basic_fail_nth");
