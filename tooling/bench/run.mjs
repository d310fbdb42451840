// `pnpm bench`: runs every package's bench/*.bench.ts on the sources (tsx + the @x/source
// condition) in its own node process, so heap figures are per workload. BENCH_SMOKE=1 for CI.
import { spawnSync } from "node:child_process";
import { readdirSync, existsSync, rmSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;
rmSync(join(root, "bench-results"), { recursive: true, force: true });
const only = process.argv.slice(2);
let failed = 0;
for (const dir of ["packages", "apps"]) {
  if (!existsSync(join(root, dir))) continue;
  for (const pkg of readdirSync(join(root, dir))) {
    const bdir = join(root, dir, pkg, "bench");
    if (!existsSync(bdir)) continue;
    for (const f of readdirSync(bdir)
      .filter((f) => f.endsWith(".bench.ts"))
      .sort()) {
      if (only.length && !only.some((o) => `${pkg}/${f}`.includes(o))) continue;
      console.log(`\n## ${pkg}/${f}`);
      const r = spawnSync(
        process.execPath,
        [
          "--expose-gc",
          "--max-old-space-size=8192",
          "--conditions=@x/source",
          "--import",
          "tsx",
          join(bdir, f),
        ],
        { stdio: "inherit", cwd: join(root, dir, pkg) },
      );
      if (r.status !== 0) failed++;
    }
  }
}
process.exit(failed ? 1 : 0);
