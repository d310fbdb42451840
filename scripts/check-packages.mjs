// Every package as its users get it: `pnpm pack`, then publint and arethetypeswrong on the
// tarball and a check that every "exports" and "bin" target of the packed package.json is in
// the tarball; then a scratch project installs all tarballs with npm, imports each package and
// runs @x/selftest's `iommufd-selftest` command.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const out = mkdtempSync(join(tmpdir(), "x-pack-"));
const run = (cmd, args, cwd) =>
  execFileSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
let failed = 0;
const tarballs = [];
const names = [];
for (const dir of readdirSync(join(root, "packages")).sort()) {
  const pdir = join(root, "packages", dir);
  if (!existsSync(join(pdir, "dist"))) {
    console.error(`${dir}: no dist/ (build first)`);
    failed++;
    continue;
  }
  const pkg = JSON.parse(readFileSync(join(pdir, "package.json"), "utf8"));
  const tgz = run("pnpm", ["pack", "--pack-destination", out], pdir).trim().split("\n").pop();
  tarballs.push(tgz);
  names.push(pkg.name);
  const inTarball = new Set(run("tar", ["tzf", tgz], out).split("\n"));
  const packed = JSON.parse(run("tar", ["xzf", tgz, "-O", "package/package.json"], out));
  const targets = (v) =>
    typeof v === "string" ? [v] : Object.values(v ?? {}).flatMap((x) => targets(x));
  const missing = [...targets(packed.exports), ...targets(packed.bin)].filter(
    (t) => !inTarball.has(`package/${t.replace(/^\.\//, "")}`),
  );
  if (missing.length) {
    failed++;
    console.error(`${pkg.name}: package.json points at files the tarball lacks: ${missing}`);
  } else console.log(`${pkg.name}: every exports/bin target is in the tarball`);
  for (const [tool, args] of [
    ["publint", ["exec", "publint", "--strict", tgz]],
    ["attw", ["exec", "attw", "--profile", "esm-only", "--format", "ascii", tgz]],
  ]) {
    try {
      run("pnpm", args, root);
      console.log(`${pkg.name}: ${tool} ok`);
    } catch (e) {
      failed++;
      console.error(`${pkg.name}: ${tool} failed\n${e.stdout}${e.stderr}`);
    }
  }
}
const scratch = mkdtempSync(join(tmpdir(), "x-smoke-"));
writeFileSync(
  join(scratch, "package.json"),
  JSON.stringify({ name: "smoke", private: true, type: "module" }),
);
try {
  run("npm", ["install", "--no-audit", "--no-fund", "--offline", ...tarballs], scratch);
} catch {
  run("npm", ["install", "--no-audit", "--no-fund", ...tarballs], scratch);
}
const imports = names.map(
  (n, i) =>
    `import * as m${i} from "${n}"; if (!Object.keys(m${i}).length) throw new Error("${n} exports nothing");`,
);
writeFileSync(
  join(scratch, "smoke.mjs"),
  `${imports.join("\n")}\nconsole.log("smoke: imported ${names.length} packages");\n`,
);
try {
  console.log(run("node", ["smoke.mjs"], scratch).trim());
} catch (e) {
  failed++;
  console.error(`smoke import failed\n${e.stdout}${e.stderr}`);
}
// The selftest command as an installed user runs it: list, a filter that passes, and a filter
// that matches nothing, which must fail.
const bin = join(scratch, "node_modules", ".bin", "iommufd-selftest");
for (const [args, wantOk, what] of [
  [["--list"], true, "--list"],
  [["dmabuf_simple"], true, "a passing filter"],
  [["no-such-test"], false, "an unknown filter"],
]) {
  let ok = true;
  let output = "";
  try {
    output = run(bin, args, scratch);
  } catch (e) {
    ok = false;
    output = `${e.stdout}${e.stderr}`;
  }
  if (ok === wantOk && output.trim()) console.log(`iommufd-selftest ${args.join(" ")}: ${what} ok`);
  else {
    failed++;
    console.error(`iommufd-selftest ${args.join(" ")}: ${what} ${ok ? "succeeded" : "failed"}\n${output}`);
  }
}
process.exit(failed ? 1 : 0);
