/**
 * @x/reliability — the cross-package invariant checker, uAPI and byte fuzzers, fail_nth sweeps
 * and the reliability report. Tests, scenarios and fuzzers build a `Machine`, drive it through
 * a `Runner` (or their own calls) and call `Checker.check()` after any step. The report, the
 * fuzz CLI and the race explorer are commands (package.json scripts), not part of this entry.
 */
export { Checker } from "./checker.js";
export { Machine } from "./machine.js";
export { type Op, Runner } from "./sequence.js";
