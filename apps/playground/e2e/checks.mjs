// The browser checks run by e2e/run.mjs: each opens the page, acts like a person would, and reads
// the data-* attributes the views draw.
import { join } from "node:path";

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function open(page, base, hash = "") {
  await page.goto(`${base}${hash}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 15_000 });
}

export const checks = [
  {
    title: "the page loads with its controls and lists every scenario",
    slug: "load",
    async run({ page, base, resultsDir }) {
      await open(page, base);
      const options = await page.locator("#scenario option").count();
      assert(options >= 1, `expected scenarios in the picker, found ${options}`);
      for (const id of ["step", "run", "reset"])
        assert(await page.locator(`#${id}`).isVisible(), `#${id} is not visible`);
      await page.screenshot({ path: join(resultsDir, "playground-start.png"), fullPage: true });
    },
  },
];
