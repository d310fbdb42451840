/**
 * The source tree of an older commit, unpacked from this clone's history under
 * node_modules/.cache/bench-ref/<commit> with its own dependencies installed, so a bench can
 * measure that commit's code in the same run as this tree's instead of comparing with a figure
 * recorded on another day. The first call unpacks it (`git archive`, then
 * `pnpm install --frozen-lockfile --prefer-offline`, a few seconds from a warm pnpm store);
 * later runs find it there.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";

/** Where the tree is, or why it could not be had (a shallow clone, no network, …). */
export type ReferenceTree = { readonly tree: string } | { readonly why: string };

function run(cmd: string, args: string[], cwd: string, input?: Buffer) {
  return spawnSync(cmd, args, { cwd, input, maxBuffer: 1 << 30 });
}

export function referenceTree(root: string, commit: string): ReferenceTree {
  const tree = join(root, "node_modules", ".cache", "bench-ref", commit);
  // Installed last: a tree without it is a set-up that did not finish.
  if (existsSync(join(tree, "node_modules", ".modules.yaml"))) return { tree };
  rmSync(tree, { recursive: true, force: true });
  const archive = run("git", ["archive", "--format=tar", commit], root);
  if (archive.status !== 0)
    return { why: `git archive ${commit}: ${archive.stderr.toString().trim() || archive.error}` };
  mkdirSync(tree, { recursive: true });
  const untar = run("tar", ["-x", "-C", tree], root, archive.stdout);
  const install =
    untar.status === 0
      ? run("pnpm", ["install", "--frozen-lockfile", "--prefer-offline", "--silent"], tree)
      : untar;
  if (install.status !== 0) {
    rmSync(tree, { recursive: true, force: true });
    const out = `${install.stderr?.toString() ?? ""}${install.error ?? ""}`.trim();
    return { why: `unpacking ${commit}: ${out.split("\n").at(-1)}` };
  }
  return { tree };
}
