// The page driven like a person drives it: stepping, running, resetting, and the views changing as
// the scenarios say.
import { areas, atStep, expect, open, test } from "./fixtures.js";

test("the page loads with its controls and lists every scenario", async ({ page }, info) => {
  await open(page);
  const options = await page.locator("#scenario option").count();
  expect(options, "scenarios in the picker").toBeGreaterThanOrEqual(1);
  for (const id of ["step", "run", "reset"]) await expect(page.locator(`#${id}`)).toBeVisible();
  await page.screenshot({ path: info.outputPath("playground-start.png"), fullPage: true });
});

test("stepping the flagship draws RAM areas and domains, and the URL follows the step", async ({
  page,
}) => {
  await open(page, "#scenario=flagship&step=0");
  expect(await areas(page), "areas drawn before any step").toHaveLength(0);
  await page.click("#step");
  await page.click("#step");
  await atStep(page, 2);
  const ram = (await areas(page)).filter((a) => a.kind === "ram");
  expect(ram, "the two RAM areas after step 2").toHaveLength(2);
  expect(page.url()).toMatch(/#scenario=flagship&step=2$/);
  await page.click("#step");
  await atStep(page, 3);
  await expect(page.locator(".card.domain"), "one domain after gpu0 attached").toHaveCount(1);
  const mapped = await page.getAttribute(".card.domain", "data-mapped");
  expect(BigInt(mapped ?? "-1"), "the first domain maps 4 GiB").toBe(4n << 30n);
});

test("after the revoke the area is drawn dead and the range has no IOPTE in any domain", async ({
  page,
}, info) => {
  await open(page, "#scenario=flagship&step=8");
  const before = (await areas(page)).filter((a) => a.kind === "mmio");
  expect(before.length, "MMIO areas before the bug").toBeGreaterThan(0);
  expect(
    before.every((a) => a.state === "live"),
    "MMIO areas all live before the bug",
  ).toBe(true);
  await page.click("#step");
  await atStep(page, 9);
  const dead = (await areas(page)).filter((a) => a.state === "dead");
  expect(dead, "gpu1's two BAR areas dead").toHaveLength(2);
  for (const a of dead) {
    expect(a.label, "a dead area is gpu1's").toMatch(/^gpu1/);
    expect(a.mapped, `dead area ${a.label} has no IOPTE`).toBe("0");
  }
  await expect(page.locator(".card.domain")).toHaveCount(2);
  const verdict = await page.getAttribute('tr[data-probe="nic→gpu1.bar2"]', "data-verdict");
  expect(verdict, "nic→gpu1.bar2").toBe("fault");
  await page.screenshot({ path: info.outputPath("flagship-revoked.png"), fullPage: true });
});

test("Run finishes the flagship with every check holding; Reset goes back to step 0", async ({
  page,
}, info) => {
  await open(page, "#scenario=flagship");
  await page.click("#run");
  const total = await page.locator("#steps li").count();
  await atStep(page, total);
  await expect(page.locator("#steps li.bad"), "failed steps").toHaveCount(0);
  await expect(page.locator("#status")).toHaveClass(/\bok\b/);
  expect(
    (await areas(page)).every((a) => a.state === "live"),
    "every area live after recovery",
  ).toBe(true);
  expect(await page.locator("#timeline li").count(), "events on the timeline").toBeGreaterThan(0);
  await page.screenshot({ path: info.outputPath("flagship-end.png"), fullPage: true });
  await page.click("#reset");
  await atStep(page, 0);
  expect(await areas(page), "areas after Reset").toHaveLength(0);
});

test("type1 contrast: after the close the type1 DMA is stale while iommufd's faults", async ({
  page,
}, info) => {
  await open(page, "#scenario=type1-contrast&step=8");
  const type1 = await page.getAttribute('tr[data-probe="nic→gpu1.bar0 (type1)"]', "data-verdict");
  const iommufd = await page.getAttribute(
    'tr[data-probe="nic→gpu1.bar0 (iommufd)"]',
    "data-verdict",
  );
  expect(type1, "type1 verdict").toBe("stale");
  expect(iommufd, "iommufd verdict").toBe("fault");
  await page.screenshot({ path: info.outputPath("type1-contrast.png"), fullPage: true });
});

test("live migration: the pre-copy step draws its dirty pages per round, shrinking", async ({
  page,
}, info) => {
  await open(page, "#scenario=live-migration&step=10");
  await atStep(page, 10);
  await page.waitForSelector(".rounds .round", { timeout: 60_000 });
  const dirty = await page.$$eval(".rounds .round", (els) =>
    els.map((e) => Number(e.getAttribute("data-dirty"))),
  );
  expect(dirty.length, "several rounds").toBeGreaterThanOrEqual(3);
  for (let i = 1; i < dirty.length; i++)
    expect(dirty[i], `round ${i + 1} has fewer dirty pages than round ${i}`).toBeLessThan(
      dirty[i - 1] ?? 0,
    );
  const width = await page.$eval(".rounds .round-bar", (e) => e.getBoundingClientRect().width);
  expect(width, "the first round's bar is drawn").toBeGreaterThan(0);
  await page.screenshot({ path: info.outputPath("live-migration.png"), fullPage: true });
});

test("every scenario runs to the end in the browser without a failed check", async ({ page }) => {
  test.setTimeout(600_000);
  await open(page);
  const ids = await page.$$eval("#scenario option", (os) =>
    os.map((o) => (o as HTMLOptionElement).value),
  );
  const failed: string[] = [];
  for (const id of ids) {
    await page.selectOption("#scenario", id);
    await atStep(page, 0);
    await page.click("#run");
    const total = await page.locator("#steps li").count();
    await atStep(page, total);
    if ((await page.locator("#steps li.bad").count()) > 0) failed.push(id);
  }
  expect(failed, "scenarios with a failed step").toEqual([]);
});
