/**
 * Stryker ignorer "diagnostics": skips mutants inside the text a failure carries, not the failure.
 *
 * The model's outcomes are the errno of `fail(errno, ...)`, the KernelWarning of
 * `WARN_ON(condition, ...)` and the thrown class of `new KernelError(errno, ...)`,
 * `new KernelWarning(...)`, `new LockdepError(...)`. Their other arguments (the reason string and
 * the values that explain it) are words for a person: the kernel returns -errno or prints a
 * backtrace without them, so emptying or rewriting them changes nothing a test may assert.
 * Mutants of the errno and of the WARN condition are still made and tested. The invariant
 * checkers' `broken(name, detail)` throws a KernelWarning naming the broken invariant or rule:
 * the name is mutated and tested, the detail is text like the others.
 *
 * Reported as "Ignored" with the reason below, so they count neither as killed nor as survived.
 */
const FIRST_DIAGNOSTIC_ARG = new Map([
  ["fail", 1],
  ["WARN_ON", 1],
  ["KernelError", 1],
  ["KernelWarning", 0],
  ["LockdepError", 0],
  ["broken", 1],
]);

/** `path` is a Babel NodePath: an argument of a call when its listKey is "arguments". */
function shouldIgnore(path) {
  if (path.listKey !== "arguments") return undefined;
  const call = path.parentPath?.node;
  if (call?.type !== "CallExpression" && call?.type !== "NewExpression") return undefined;
  if (call.callee.type !== "Identifier") return undefined;
  const first = FIRST_DIAGNOSTIC_ARG.get(call.callee.name);
  if (first === undefined || path.key < first) return undefined;
  return `diagnostic text of ${call.callee.name}(): the errno / warning / thrown class is what the kernel defines`;
}

export const strykerPlugins = [{ kind: "Ignore", name: "diagnostics", value: { shouldIgnore } }];
