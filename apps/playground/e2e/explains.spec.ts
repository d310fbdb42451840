// The page explains itself: a legend for what the colours mean, the step list pointing at the step
// shown, an IOVA axis that stays readable for a terabyte guest, a timeline of one line per event,
// and a URL naming something that does not exist said so on the page.
import { areas, atStep, expect, open, test } from "./fixtures.js";

test("a legend defines every colour and state the views draw", async ({ page }) => {
  await open(page, "#scenario=flagship&step=9");
  const legend = page.locator("#legend");
  await expect(legend).toBeVisible();
  for (const term of ["ram", "mmio", "live", "dead", "revoked", "zombie", "stale", "fault"]) {
    const item = legend.locator(`[data-term="${term}"]`);
    await expect(item, `legend entry ${term}`).toBeVisible();
    const text = ((await item.textContent()) ?? "").trim();
    expect(text.length, `${term} has a definition`).toBeGreaterThan(term.length + 10);
    const box = await item.boundingBox();
    expect(box?.height ?? 99, `${term} fits on one line`).toBeLessThan(30);
  }
  // The swatches are drawn with the colours the views use.
  const swatch = (term: string) =>
    legend
      .locator(`[data-term="${term}"] .swatch`)
      .evaluate((e) => getComputedStyle(e).borderTopColor);
  const stroke = (sel: string) =>
    page
      .locator(sel)
      .first()
      .evaluate((e) => getComputedStyle(e).stroke);
  expect(await swatch("ram")).toBe(await stroke("g.area.ram rect"));
  expect(await swatch("mmio")).toBe(await stroke("g.area.mmio.live rect"));
  expect(await swatch("dead")).toBe(await stroke("g.area.dead rect"));
  const chip = (term: string) =>
    legend
      .locator(`[data-term="${term}"] .chip`)
      .evaluate((e) => getComputedStyle(e).backgroundColor);
  const fault = await page
    .locator('tr[data-probe="nic→gpu1.bar2"] .chip')
    .evaluate((e) => getComputedStyle(e).backgroundColor);
  expect(await chip("fault")).toBe(fault);
});

test("the highlighted step is the step shown, and its snapshot is the one drawn", async ({
  page,
}) => {
  await open(page, "#scenario=flagship&step=0");
  await expect(page.locator("#steps li.current"), "nothing shown before a step").toHaveCount(0);
  const pick = async (k: number) => {
    const li = page.locator(`#steps li[data-step="${k}"]`);
    const name = ((await li.textContent()) ?? "").replace(/^\s*\S+\s+/, "").trim();
    await li.click();
    await atStep(page, k);
    await expect(page.locator("#steps li.current")).toHaveCount(1);
    await expect(page.locator("#steps li.current")).toHaveAttribute("data-step", String(k));
    await expect(page.locator(`#steps li[data-step="${k}"]`)).toHaveAttribute(
      "aria-current",
      "step",
    );
    await expect(page.locator("#detail h3")).toHaveText(`Step ${k}: ${name}`);
  };
  // Step 9 is the forgetful reset: gpu1's BAR areas are dead in its snapshot, not in step 8's.
  await pick(9);
  expect((await areas(page)).filter((a) => a.state === "dead")).toHaveLength(2);
  await pick(8);
  expect((await areas(page)).filter((a) => a.state === "dead")).toHaveLength(0);
  await page.click("#step");
  await atStep(page, 9);
  await expect(page.locator("#steps li.current")).toHaveAttribute("data-step", "9");
  expect((await areas(page)).filter((a) => a.state === "dead")).toHaveLength(2);
});

test("the huge guest's IOVA axis keeps its sixteen RAM areas' labels apart", async ({
  page,
}, info) => {
  test.setTimeout(300_000);
  await open(page, "#scenario=huge-guest");
  await page.click("#run");
  const total = await page.locator("#steps li").count();
  await atStep(page, total);
  const ram = (await areas(page)).filter((a) => a.kind === "ram");
  expect(ram, "sixteen 64 GiB MAP_FILE areas").toHaveLength(16);
  const axis = page.locator("svg.axis").first();
  await axis.scrollIntoViewIfNeeded();
  const boxes = await axis.evaluate((svg) =>
    [...svg.querySelectorAll("text")]
      .filter((t) => t.textContent && getComputedStyle(t).display !== "none")
      .map((t) => {
        const r = t.getBoundingClientRect();
        return { text: t.textContent ?? "", x: r.x, y: r.y, w: r.width, h: r.height };
      }),
  );
  expect(boxes.length, "labels drawn").toBeGreaterThan(16);
  const edge = await axis.evaluate((svg) => svg.getBoundingClientRect().left);
  const clipped = boxes.filter((b) => b.x < edge - 0.5).map((b) => b.text);
  expect(clipped, "labels cut off at the axis' left edge").toEqual([]);
  const overlaps: string[] = [];
  for (let i = 0; i < boxes.length; i++)
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i];
      const b = boxes[j];
      if (!a || !b) continue;
      const dx = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
      const dy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
      if (dx > 0.5 && dy > 0.5) overlaps.push(`"${a.text}" × "${b.text}"`);
    }
  expect(overlaps, "overlapping labels on the IOVA axis").toEqual([]);
  // Every label stays inside its area's box, and the ticks name round addresses with units.
  const spill = await axis.evaluate((svg) =>
    [...svg.querySelectorAll("g.area")].flatMap((g) => {
      const rect = g.querySelector("rect")?.getBoundingClientRect();
      return [...g.querySelectorAll("text.label, text.sub")]
        .filter((t) => getComputedStyle(t).display !== "none")
        .filter((t) => {
          const r = t.getBoundingClientRect();
          return !rect || r.right > rect.right + 0.5 || r.left < rect.left - 0.5;
        })
        .map((t) => `${g.getAttribute("data-label")}: ${t.textContent}`);
    }),
  );
  expect(spill, "labels spilling out of their area").toEqual([]);
  const ticks = await axis.locator("text.tick").allTextContents();
  expect(ticks).toContain("0x100_0000_0000 (1 TiB)");
  const first = page.locator('g.area[data-kind="ram"] title').first();
  expect(await first.textContent()).toMatch(/^ram\n0x100_0000_0000 \+64 GiB/);
  // The 32 Ki pins of filling each domain are counted, not listed.
  const more = page.locator('#timeline .tl-step[data-step="3"] .tl-more');
  await expect(more).toContainText(/more: memfd:pin × [\d,]+/);
  await expect(page.locator('#timeline .tl-step[data-step="3"] li[data-event]')).toHaveCount(100);
  await page.screenshot({ path: info.outputPath("huge-guest.png"), fullPage: true });
});

test("the event timeline has one readable line per event, the first one in view", async ({
  page,
}) => {
  await open(page, "#scenario=flagship&step=9");
  const timeline = page.locator("#timeline");
  await timeline.scrollIntoViewIfNeeded();
  const first = timeline.locator("li").first();
  await expect(first).toBeVisible();
  const text = ((await first.textContent()) ?? "").trim();
  expect(text, "not JSON").not.toMatch(/[{}"]/);
  expect(text, "step, sequence number and kind first").toMatch(/^9 · #\d+ [a-z-]+:[a-z_-]+ /);
  expect(text, "key fields as key=value").toMatch(/ \w+=\S+/);
  // One line per event.
  const lines = await timeline
    .locator("li")
    .evaluateAll((els) =>
      els.map(
        (e) => e.getBoundingClientRect().height / Number.parseFloat(getComputedStyle(e).lineHeight),
      ),
    );
  expect(Math.max(...lines), "an event wraps onto a second line").toBeLessThan(1.5);
  // The first line is in the timeline's visible box, and nothing (a sticky header) covers it.
  const seen = await first.evaluate((li) => {
    const box = li.getBoundingClientRect();
    const view = (li.closest("#timeline") as HTMLElement).getBoundingClientRect();
    const top = document.elementFromPoint(box.left + 20, box.top + box.height / 2);
    return {
      inside: box.top >= view.top && box.bottom <= view.bottom,
      covered: !(top && li.contains(top)),
    };
  });
  expect(seen).toEqual({ inside: true, covered: false });
  // Addresses in hex: the revoke's zap names the device, the dma-buf its new state.
  await expect(timeline.locator('li[data-event="vfio-pci:dmabuf"]').first()).toContainText(
    "state=revoked",
  );
  const mmap = page.locator("#timeline li[data-event='mm:mmap']");
  await page.goto("./#scenario=flagship&step=1");
  await atStep(page, 1);
  if ((await mmap.count()) > 0) await expect(mmap.first()).toContainText(/addr=0x[0-9a-f_]+/);
});

test("an unknown scenario in the URL is reported with the valid ones", async ({ page }) => {
  await open(page, "#scenario=nope&step=2");
  const alert = page.locator("#url-error");
  await expect(alert).toBeVisible();
  await expect(alert).toContainText('"nope"');
  for (const id of ["flagship", "huge-guest", "type1-contrast"])
    await expect(alert).toContainText(id);
  // The query string says the same.
  await page.goto("./?scenario=nope");
  await page.waitForSelector("body[data-ready=true]");
  await expect(page.locator("#url-error")).toContainText('"nope"');
  // Choosing a scenario clears the report.
  await page.selectOption("#scenario", "boot");
  await expect(page.locator("#url-error")).toBeHidden();
});

test("a step past the end of the scenario is reported with the valid range", async ({ page }) => {
  await open(page, "#scenario=flagship&step=999");
  const alert = page.locator("#url-error");
  await expect(alert).toBeVisible();
  await expect(alert).toContainText('"999"');
  const total = await page.locator("#steps li").count();
  await expect(alert).toContainText(`0–${total}`);
  await open(page, "#scenario=flagship&step=abc");
  await expect(page.locator("#url-error")).toContainText('"abc"');
  await open(page, "#scenario=flagship&step=3");
  await expect(page.locator("#url-error")).toBeHidden();
});
