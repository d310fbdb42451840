export * from "./harness.js";
export * from "./iommufd-test.js";
export * from "./ustruct.js";
