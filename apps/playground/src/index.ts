/**
 * playground — the packages composed as a VMM drives them: the scenario engine, the QEMU-like
 * VMM, the machine a scenario runs on, the legacy type1 counter-example and every scenario. The
 * CLI (src/cli.ts) and the page (src/web/) are built on these.
 */
export * from "./scenario.js";
export * from "./snapshot.js";
export * from "./vmm.js";
export * from "./world.js";
export * from "./iommu-hw.js";
export * from "./type1.js";
export { scenarios, scenarioById } from "./scenarios/index.js";
