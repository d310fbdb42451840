import { registerFixtures } from "./kernel-suites.js";

registerFixtures("basic_fail_nth");
