/**
 * @x/reliability — the cross-package invariant checker, uAPI and byte fuzzers, fail_nth sweeps
 * and the reliability report. Tests, scenarios and fuzzers build a `Machine`, drive it through
 * a `Runner` (or their own calls) and call `Checker.check()` after any step.
 */
export * from "./checker.js";
export * from "./errnos.js";
export * from "./fail-nth.js";
export * from "./fuzz-bytes.js";
export * from "./fuzz-uapi.js";
export * from "./iommu.js";
export * from "./machine.js";
export * from "./sequence.js";
export * from "./snapshot.js";
