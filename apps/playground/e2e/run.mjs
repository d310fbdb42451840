// Browser tests of the playground page: build it with Vite, serve dist/ with `vite preview` on
// 127.0.0.1, drive Debian's chromium through playwright-core (no browser download), and check that
// the views change as the scenarios say. Writes a Playwright-style JSON report to $PW_JSON
// ({ stats: { expected, unexpected, flaky, skipped } }) and screenshots to test-results/; exits
// non-zero when a check fails.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { checks } from "./checks.mjs";

const appDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const vite = join(appDir, "node_modules", ".bin", "vite");
const resultsDir = join(appDir, "test-results");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitForServer(url, child, ms = 20_000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`vite preview exited with ${child.exitCode}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${url} did not answer within ${ms} ms`);
}

function writeReport(stats, results) {
  const out = process.env.PW_JSON;
  if (!out) return;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ stats, suites: [{ title: "playground", specs: results }] }, null, 2)}\n`,
  );
}

async function main() {
  mkdirSync(resultsDir, { recursive: true });
  const stats = { expected: 0, unexpected: 0, flaky: 0, skipped: 0 };
  const results = [];

  const build = spawnSync(vite, ["build", "--logLevel", "warn"], { cwd: appDir, stdio: "inherit" });
  if (build.status !== 0) {
    stats.unexpected = 1;
    writeReport(stats, [{ title: "vite build", ok: false, error: `exit ${build.status}` }]);
    console.error("e2e: vite build failed");
    process.exit(1);
  }

  const port = await freePort();
  const base = `http://127.0.0.1:${port}/`;
  const server = spawn(
    vite,
    ["preview", "--host", "127.0.0.1", "--port", String(port), "--strictPort"],
    {
      cwd: appDir,
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  let browser;
  try {
    await waitForServer(base, server);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    for (const check of checks) {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const pageErrors = [];
      page.on("pageerror", (e) => pageErrors.push(e.message));
      const t0 = Date.now();
      try {
        await check.run({ page, base, resultsDir });
        if (pageErrors.length) throw new Error(`page error: ${pageErrors.join("; ")}`);
        stats.expected++;
        results.push({ title: check.title, ok: true, ms: Date.now() - t0 });
        console.log(`  ✓ ${check.title} (${Date.now() - t0} ms)`);
      } catch (e) {
        stats.unexpected++;
        results.push({ title: check.title, ok: false, error: String(e?.message ?? e) });
        console.log(
          `  ✗ ${check.title}\n      ${String(e?.message ?? e)
            .split("\n")
            .join("\n      ")}`,
        );
        await page.screenshot({
          path: join(resultsDir, `failed-${check.slug}.png`),
          fullPage: true,
        });
      } finally {
        await page.close();
      }
    }
  } catch (e) {
    stats.unexpected++;
    results.push({ title: "browser session", ok: false, error: String(e?.message ?? e) });
    console.error(`e2e: ${e?.message ?? e}`);
  } finally {
    await browser?.close();
    server.kill("SIGTERM");
  }
  writeReport(stats, results);
  console.log(`e2e: ${stats.expected} passed, ${stats.unexpected} failed`);
  process.exit(stats.unexpected ? 1 : 0);
}

await main();
