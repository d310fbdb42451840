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

async function atStep(page, n) {
  await page.waitForSelector(`body[data-step="${n}"]`, { timeout: 60_000 });
}

/** The areas drawn on the IOVA axis, as plain objects. */
function areas(page) {
  return page.$$eval("g.area", (els) =>
    els.map((e) => ({
      label: e.getAttribute("data-label"),
      kind: e.getAttribute("data-kind"),
      state: e.getAttribute("data-state"),
      mapped: e.getAttribute("data-mapped"),
      iova: e.getAttribute("data-iova"),
    })),
  );
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
  {
    title: "stepping the flagship draws RAM areas and domains, and the URL follows the step",
    slug: "stepping",
    async run({ page, base }) {
      await open(page, base, "#scenario=flagship&step=0");
      assert((await areas(page)).length === 0, "areas drawn before any step");
      await page.click("#step");
      await page.click("#step");
      await atStep(page, 2);
      const ram = (await areas(page)).filter((a) => a.kind === "ram");
      assert(ram.length === 2, `expected the two RAM areas after step 2, got ${ram.length}`);
      assert(page.url().endsWith("#scenario=flagship&step=2"), `URL is ${page.url()}`);
      await page.click("#step");
      await atStep(page, 3);
      const domains = await page.locator(".card.domain").count();
      assert(domains === 1, `expected one domain after gpu0 attached, got ${domains}`);
      const mapped = await page.getAttribute(".card.domain", "data-mapped");
      assert(BigInt(mapped) === 4n << 30n, `the first domain maps ${mapped} bytes, expected 4 GiB`);
    },
  },
  {
    title: "after the revoke the area is drawn dead and the range has no IOPTE in any domain",
    slug: "revoke",
    async run({ page, base, resultsDir }) {
      await open(page, base, "#scenario=flagship&step=8");
      const before = (await areas(page)).filter((a) => a.kind === "mmio");
      assert(
        before.length > 0 && before.every((a) => a.state === "live"),
        "MMIO areas not all live before the bug",
      );
      await page.click("#step");
      await atStep(page, 9);
      const all = await areas(page);
      const dead = all.filter((a) => a.state === "dead");
      assert(dead.length === 2, `expected gpu1's two BAR areas dead, got ${JSON.stringify(dead)}`);
      for (const a of dead) {
        assert(a.label.startsWith("gpu1"), `dead area ${a.label} is not gpu1's`);
        assert(a.mapped === "0", `dead area ${a.label} still has ${a.mapped} bytes of IOPTEs`);
      }
      const perDomain = await page.$$eval(".card.domain", (els) => els.length);
      assert(perDomain === 2, `expected 2 domains, got ${perDomain}`);
      const verdict = await page.getAttribute('tr[data-probe="nic→gpu1.bar2"]', "data-verdict");
      assert(verdict === "fault", `nic→gpu1.bar2 is ${verdict}, expected fault`);
      await page.screenshot({ path: join(resultsDir, "flagship-revoked.png"), fullPage: true });
    },
  },
  {
    title: "Run finishes the flagship with every check holding; Reset goes back to step 0",
    slug: "run-reset",
    async run({ page, base, resultsDir }) {
      await open(page, base, "#scenario=flagship");
      await page.click("#run");
      const total = await page.locator("#steps li").count();
      await atStep(page, total);
      const bad = await page.locator("#steps li.bad").count();
      assert(bad === 0, `${bad} steps failed`);
      assert((await page.getAttribute("#status", "class")).includes("ok"), "status is not ok");
      assert(
        (await areas(page)).every((a) => a.state === "live"),
        "an area is still dead after recovery",
      );
      const events = await page.locator("#timeline li").count();
      assert(events > 0, "the event timeline is empty");
      await page.screenshot({ path: join(resultsDir, "flagship-end.png"), fullPage: true });
      await page.click("#reset");
      await atStep(page, 0);
      assert((await areas(page)).length === 0, "Reset left areas behind");
    },
  },
  {
    title: "type1 contrast: after the close the type1 DMA is stale while iommufd's faults",
    slug: "type1",
    async run({ page, base, resultsDir }) {
      await open(page, base, "#scenario=type1-contrast&step=8");
      const type1 = await page.getAttribute(
        'tr[data-probe="nic→gpu1.bar0 (type1)"]',
        "data-verdict",
      );
      const iommufd = await page.getAttribute(
        'tr[data-probe="nic→gpu1.bar0 (iommufd)"]',
        "data-verdict",
      );
      assert(type1 === "stale", `type1 verdict is ${type1}, expected stale`);
      assert(iommufd === "fault", `iommufd verdict is ${iommufd}, expected fault`);
      await page.screenshot({ path: join(resultsDir, "type1-contrast.png"), fullPage: true });
    },
  },
  {
    title: "live migration: the pre-copy step draws its dirty pages per round, shrinking",
    slug: "dirty-rounds",
    async run({ page, base, resultsDir }) {
      await open(page, base, "#scenario=live-migration&step=10");
      await atStep(page, 10);
      await page.waitForSelector(".rounds .round", { timeout: 60_000 });
      const dirty = await page.$$eval(".rounds .round", (els) =>
        els.map((e) => Number(e.getAttribute("data-dirty"))),
      );
      assert(dirty.length >= 3, `expected several rounds, got ${dirty.length}`);
      for (let i = 1; i < dirty.length; i++)
        assert(dirty[i] < dirty[i - 1], `round ${i + 1} has ${dirty[i]} ≥ ${dirty[i - 1]}`);
      const width = await page.$eval(".rounds .round-bar", (e) => e.getBoundingClientRect().width);
      assert(width > 0, "the first round's bar is not drawn");
      await page.screenshot({ path: join(resultsDir, "live-migration.png"), fullPage: true });
    },
  },
  {
    title: "every scenario runs to the end in the browser without a failed check",
    slug: "all",
    async run({ page, base }) {
      await open(page, base);
      const ids = await page.$$eval("#scenario option", (os) => os.map((o) => o.value));
      const failed = [];
      for (const id of ids) {
        await page.selectOption("#scenario", id);
        await atStep(page, 0);
        await page.click("#run");
        const total = await page.locator("#steps li").count();
        await atStep(page, total);
        if ((await page.locator("#steps li.bad").count()) > 0) failed.push(id);
      }
      assert(failed.length === 0, `scenarios with a failed step: ${failed.join(", ")}`);
    },
  },
];
