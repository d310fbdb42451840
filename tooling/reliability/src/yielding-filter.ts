/**
 * Which modules the race explorer loads through the dual compilation: the packages' sources
 * and the reliability tooling's paths and tests, but not the runtime and scheduler themselves
 * nor the selftest suites (test programs no race path runs).
 */
const SOURCES = /\/(packages\/[^/]+\/src|tooling\/reliability\/(src|test))\/[^?]*\.[cm]?[jt]s$/;
const SKIPPED =
  /\/tooling\/reliability\/src\/(yielding[^/]*|race-interleave)\.ts$|\/packages\/selftest\/src\/suites\//;

export function yieldingApplies(file: string): boolean {
  return SOURCES.test(file) && !SKIPPED.test(file) && !file.includes("/node_modules/");
}
