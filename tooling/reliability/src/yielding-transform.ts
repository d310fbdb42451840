/**
 * The race explorer's dual compilation: a Babel plugin run on a module's JavaScript (after
 * TypeScript is stripped) that keeps every function as written and attaches its generator
 * twin (yielding.ts). What gets a twin:
 * - function declarations: `wrap(f, function* (…) {…})` at the top of their block;
 * - function expressions and arrows: `wrap(fn, twin)` in place (an arrow's twin keeps the
 *   arrow's `this`);
 * - class and object-literal methods: a generator method under `key(name)` beside them, moved
 *   onto the method by the class's static block (`linkClass`) or around the literal
 *   (`linkObject`).
 * What keeps only its plain form (so its lock boundaries are not preemption points): async
 * functions and generators, constructors, getters and setters, private (#) methods, methods
 * with computed names, named function expressions, and arrows that read `arguments`. Inside a
 * twin, optional calls (`f?.()`), `new`, tagged templates, `super(...)` and dynamic `import()`
 * stay plain calls too.
 */
import { generate } from "@babel/generator";
import { parse } from "@babel/parser";
import * as t from "@babel/types";

const RUNTIME = "__yielding";

function rt(name: string): t.MemberExpression {
  return t.memberExpression(t.identifier(RUNTIME), t.identifier(name));
}

/** `yield* __yielding.<fn>(args)` */
function delegate(fn: string, args: t.Expression[]): t.YieldExpression {
  return t.yieldExpression(t.callExpression(rt(fn), args), true);
}

/** The yielding form of one call inside a twin, or undefined to leave it plain. */
function yieldingCall(call: t.CallExpression): t.Expression | undefined {
  const { callee } = call;
  if (t.isSuper(callee) || t.isImport(callee) || t.isV8IntrinsicIdentifier(callee)) return;
  // The runtime's own calls (inner functions' `wrap`, `linkObject`) stay plain.
  if (t.isMemberExpression(callee) && t.isIdentifier(callee.object, { name: RUNTIME })) return;
  if (call.arguments.some((a) => t.isArgumentPlaceholder(a))) return;
  const args = t.arrayExpression(call.arguments as Array<t.Expression | t.SpreadElement>);
  if (t.isMemberExpression(callee)) {
    if (t.isPrivateName(callee.property)) return;
    if (t.isSuper(callee.object)) return delegate("callW", [callee, t.thisExpression(), args]);
    const prop = callee.computed
      ? (callee.property as t.Expression)
      : t.stringLiteral((callee.property as t.Identifier).name);
    return delegate("callM", [callee.object, prop, args]);
  }
  return delegate("callW", [callee as t.Expression, t.identifier("undefined"), args]);
}

/** Rewrite every call of `node` that runs in the function itself (not in nested ones). */
function rewriteCalls(node: t.Node): t.Node {
  if (t.isFunction(node) || t.isClass(node)) return node;
  const fields = node as unknown as Record<string, unknown>;
  for (const k of t.VISITOR_KEYS[node.type] ?? []) {
    const v = fields[k];
    if (Array.isArray(v)) {
      v.forEach((c: unknown, i) => {
        if (isNode(c)) v[i] = rewriteCalls(c);
      });
    } else if (isNode(v)) fields[k] = rewriteCalls(v);
  }
  return t.isCallExpression(node) ? (yieldingCall(node) ?? node) : node;
}

function isNode(v: unknown): v is t.Node {
  return typeof v === "object" && v !== null && typeof (v as { type?: unknown }).type === "string";
}

/** Does `node` (an arrow's body) read `arguments` or `new.target` of an enclosing function? */
function readsOuterBindings(node: t.Node): boolean {
  let found = false;
  t.traverseFast(node, (n) => {
    if (t.isIdentifier(n, { name: "arguments" }) || t.isMetaProperty(n)) found = true;
  });
  return found;
}

/** The twin's params and body: copies of `fn`'s, calls rewritten. */
function twinParts(fn: t.Function): { params: t.FunctionParameter[]; body: t.BlockStatement } {
  // JavaScript in, so no TypeScript parameter properties.
  const params = fn.params.map((p) => t.cloneNode(p, true) as t.FunctionParameter);
  const copy = t.cloneNode(fn.body, true);
  const body = t.isBlockStatement(copy) ? copy : t.blockStatement([t.returnStatement(copy)]);
  rewriteCalls(body);
  return { params, body };
}

function generator(fn: t.Function): t.FunctionExpression {
  const { params, body } = twinParts(fn);
  return t.functionExpression(null, params, body, true, false);
}

function methodName(m: t.ClassMethod | t.ObjectMethod): string | undefined {
  if (m.computed) return;
  if (t.isIdentifier(m.key)) return m.key.name;
  if (t.isStringLiteral(m.key)) return m.key.value;
  return;
}

function twinMethod<M extends t.ClassMethod | t.ObjectMethod>(m: M, name: string): M {
  const { params, body } = twinParts(m);
  const k = t.callExpression(rt("key"), [t.stringLiteral(name)]);
  const twin = t.isClassMethod(m)
    ? t.classMethod("method", k, params, body, true, m.static, true, false)
    : t.objectMethod("method", k, params, body, true, true, false);
  return twin as M;
}

/** The twin-carrying replacement of one function node (already walked), if it gets one. */
function withTwin(fn: t.Function): t.Expression | undefined {
  if (fn.generator || fn.async) return;
  if (t.isFunctionExpression(fn)) return fn.id ? undefined : call("wrap", [fn, generator(fn)]);
  if (t.isArrowFunctionExpression(fn)) {
    if (readsOuterBindings(fn.body)) return;
    // (...a) => (function* () {…}).apply(this, a): the arrow's `this`, the twin's body.
    const a = t.identifier("__args");
    const apply = t.callExpression(t.memberExpression(generator(fn), t.identifier("apply")), [
      t.thisExpression(),
      a,
    ]);
    return call("wrap", [fn, t.arrowFunctionExpression([t.restElement(a)], apply)]);
  }
  return;
}

function call(fn: string, args: t.Expression[]): t.CallExpression {
  return t.callExpression(rt(fn), args);
}

/** `wrap(f, function* …)` statements for the function declarations of a statement list. */
function declarationTwins(body: t.Statement[]): t.Statement[] {
  const out: t.Statement[] = [];
  for (const st of body) {
    const decl =
      t.isExportNamedDeclaration(st) || t.isExportDefaultDeclaration(st) ? st.declaration : st;
    if (!t.isFunctionDeclaration(decl) || !decl.id || decl.generator || decl.async) continue;
    out.push(t.expressionStatement(call("wrap", [t.identifier(decl.id.name), generator(decl)])));
  }
  return out;
}

/** Twin methods for the methods of a class body or object literal. */
function methodTwins<M extends t.ClassMethod | t.ObjectMethod>(members: readonly t.Node[]): M[] {
  const out: M[] = [];
  for (const m of members) {
    if (!(t.isClassMethod(m) || t.isObjectMethod(m)) || m.kind !== "method") continue;
    if (m.generator || m.async) continue;
    const name = methodName(m);
    if (name !== undefined) out.push(twinMethod(m as M, name));
  }
  return out;
}

/**
 * Walk `node` bottom-up, giving every eligible function its twin; returns the node to put in
 * its place. Children first, so a twin's copy of a body already holds its inner functions'
 * twins.
 */
function walk(node: t.Node): t.Node {
  const fields = node as unknown as Record<string, unknown>;
  for (const k of t.VISITOR_KEYS[node.type] ?? []) {
    const v = fields[k];
    if (Array.isArray(v)) {
      v.forEach((c: unknown, i) => {
        if (isNode(c)) v[i] = walk(c);
      });
    } else if (isNode(v)) fields[k] = walk(v);
  }
  if (t.isProgram(node) || t.isBlockStatement(node)) {
    node.body.unshift(...declarationTwins(node.body));
    return node;
  }
  if (t.isClassBody(node)) {
    const twins = methodTwins<t.ClassMethod>(node.body);
    if (twins.length) {
      const link = call("linkClass", [t.thisExpression()]);
      node.body.push(...twins, t.staticBlock([t.expressionStatement(link)]));
    }
    return node;
  }
  if (t.isObjectExpression(node)) {
    const twins = methodTwins<t.ObjectMethod>(node.properties);
    if (!twins.length) return node;
    node.properties.push(...twins);
    return call("linkObject", [node]);
  }
  if (t.isFunctionExpression(node) || t.isArrowFunctionExpression(node))
    return withTwin(node) ?? node;
  return node;
}

/**
 * Transform one module's JavaScript: every eligible function gets its twin, and the module
 * imports the runtime (yielding.ts) by the specifier `runtime`.
 */
export function transformYielding(code: string, filename: string, runtime: string): string {
  const ast = parse(code, { sourceType: "module", sourceFilename: filename });
  walk(ast.program);
  const spec = t.importNamespaceSpecifier(t.identifier(RUNTIME));
  ast.program.body.unshift(t.importDeclaration([spec], t.stringLiteral(runtime)));
  return generate(ast, { compact: false }).code;
}
