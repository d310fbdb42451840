// What every page test shares: a page that fails its test on an uncaught page error, and the
// helpers that open the page at a state and read the data-* attributes the views draw.
import { type Page, test as base, expect } from "@playwright/test";

export const test = base.extend<{ page: Page }>({
  page: async ({ page }, use) => {
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await use(page);
    expect(errors, "uncaught page errors").toEqual([]);
  },
});

export { expect };

/** Open the page at `hash` and wait until it has drawn. */
export async function open(page: Page, hash = ""): Promise<void> {
  await page.goto(`./${hash}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 15_000 });
}

/** Wait until `n` steps have run. */
export async function atStep(page: Page, n: number): Promise<void> {
  await page.waitForSelector(`body[data-step="${n}"]`, { timeout: 60_000 });
}

interface DrawnArea {
  readonly label: string | null;
  readonly kind: string | null;
  readonly state: string | null;
  readonly mapped: string | null;
  readonly iova: string | null;
}

/** The areas drawn on the IOVA axis, as plain objects. */
export function areas(page: Page): Promise<DrawnArea[]> {
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
