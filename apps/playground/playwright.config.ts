import { fileURLToPath } from "node:url";
import { defineConfig } from "@playwright/test";

// The page's browser tests. Debian's chromium is driven directly (no browser download); the page
// is built by Vite and served by `vite preview` for the run. PW_JSON names the JSON report the CI
// summary reads; PLAYGROUND_PORT moves the server off 4174 when that port is taken.
const port = Number(process.env.PLAYGROUND_PORT ?? 4174);
const json =
  process.env.PW_JSON ?? fileURLToPath(new URL("../../.ci-out/playwright.json", import.meta.url));

export default defineConfig({
  testDir: "e2e",
  outputDir: "test-results",
  timeout: 120_000,
  expect: { timeout: 15_000 },
  forbidOnly: !!process.env.CI,
  workers: 2,
  reporter: [
    ["list"],
    ["json", { outputFile: json }],
    ["html", { open: "never", outputFolder: "playwright-report" }],
  ],
  use: {
    baseURL: `http://127.0.0.1:${port}/`,
    viewport: { width: 1400, height: 1000 },
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    },
  },
  projects: [{ name: "chromium" }],
  webServer: {
    command: `vite build --logLevel warn && vite preview --port ${port}`,
    url: `http://127.0.0.1:${port}/`,
    reuseExistingServer: false,
    timeout: 120_000,
    stdout: "ignore",
    stderr: "pipe",
  },
});
