/**
 * The page's views, drawn from a step's snapshot with plain DOM calls. Every drawn thing carries
 * data-* attributes (state, kind, verdict, mapped bytes) so the browser tests read the same facts a
 * person sees.
 */
import type { DirtyRound, ProbeResult, ScenarioDef, StepRecord, World } from "../scenario.js";
import { type AreaView, type Snapshot, bytes, hex, toJson } from "../snapshot.js";

type Attrs = Record<string, string | number | boolean | undefined>;

export function h(tag: string, attrs: Attrs = {}, ...children: Array<Node | string>): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "class") el.className = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) el.append(c);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

function s(tag: string, attrs: Attrs = {}, text?: string): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function totalMapped(a: AreaView): bigint {
  let t = 0n;
  for (const v of Object.values(a.mapped)) t += v;
  return t;
}

/** An IOVA as the axis writes it: hex in groups of four digits, 0x100_0000_0000. */
function iovaText(v: bigint): string {
  return `0x${v.toString(16).replace(/\B(?=([0-9a-f]{4})+$)/g, "_")}`;
}

const ROUND_UNITS: ReadonlyArray<readonly [bigint, string]> = [
  [1n << 40n, "TiB"],
  [1n << 30n, "GiB"],
  [1n << 20n, "MiB"],
];

/** A tick: the IOVA in hex, and in TiB / GiB / MiB when it is a whole number of one. */
function tickText(v: bigint): string {
  const unit = ROUND_UNITS.find(([u]) => v !== 0n && v % u === 0n);
  return unit ? `${iovaText(v)} (${v / unit[0]} ${unit[1]})` : iovaText(v);
}

/**
 * Hide what does not fit once laid out: an area's text wider than its box, a tick or gap label
 * running into the one before it. The area's tooltip keeps every fact.
 */
function elide(svg: SVGElement): void {
  const hide = (t: SVGTextContentElement) => t.classList.add("elided");
  for (const g of svg.querySelectorAll("g.area")) {
    const width = Number(g.querySelector("rect")?.getAttribute("width") ?? 0);
    for (const t of g.querySelectorAll<SVGTextContentElement>("text.label, text.sub"))
      if (t.getComputedTextLength() > width - 8) hide(t);
  }
  for (const row of ["text.tick", "text.gap"]) {
    let right = Number.NEGATIVE_INFINITY;
    for (const t of svg.querySelectorAll<SVGTextContentElement>(row)) {
      const len = t.getComputedTextLength();
      let left = Number(t.getAttribute("x")) - (t.getAttribute("text-anchor") ? len / 2 : 0);
      // The first gap's label starts at the axis' left edge rather than before it.
      if (left < 0) {
        t.setAttribute("x", String(len / 2));
        left = 0;
      }
      if (left < right + 6) hide(t);
      else right = left + len;
    }
  }
}

/**
 * IOVA axis, compressed: an area's width grows with log2 of its length and gaps become fixed
 * breaks labelled with their size, so a 4 KiB BAR and 1 TiB of RAM are both visible. Ticks name
 * each area's first IOVA; text that would not fit is left to the tooltip.
 */
export function renderIoas(root: HTMLElement, snap: Snapshot): void {
  root.replaceChildren();
  if (snap.ioas.length === 0) {
    root.append(h("p", { class: "empty" }, "No IOAS yet."));
    return;
  }
  const GAP = 18;
  const H = 64;
  const svgs: SVGElement[] = [];
  for (const ioas of snap.ioas) {
    const areas = [...ioas.areas].sort((a, b) => (a.iova < b.iova ? -1 : 1));
    const widths = areas.map((a) => 20 + 4 * Math.log2(Number(a.length)));
    const total = widths.reduce((x, w) => x + w, 0) + GAP * (areas.length + 1);
    const width = Math.max(total, 200);
    // Shrinks to fit down to 80 %, scrolls beyond that.
    const svg = s("svg", {
      style: `width: 100%; max-width: ${width}px; min-width: ${Math.round(width * 0.8)}px`,
      viewBox: `0 0 ${width} ${H + 40}`,
      class: "axis",
      "data-ioas": ioas.id,
      role: "img",
      "aria-label": `IOAS ${ioas.id}`,
    });
    svg.append(s("line", { x1: 0, y1: H + 4, x2: width, y2: H + 4, class: "base" }));
    let x = GAP;
    let prevEnd = 0n;
    areas.forEach((a, i) => {
      const gap = a.iova - prevEnd;
      if (gap > 0n)
        svg.append(
          s(
            "text",
            { x: x - GAP / 2, y: H + 33, class: "gap", "text-anchor": "middle" },
            `+${bytes(gap)}`,
          ),
        );
      const w = widths[i] ?? 40;
      const state = a.live ? "live" : "dead";
      const mapped = totalMapped(a);
      const g = s("g", {
        class: `area ${a.kind} ${state}`,
        "data-kind": a.kind,
        "data-state": state,
        "data-iova": hex(a.iova),
        "data-length": hex(a.length),
        "data-mapped": mapped.toString(),
        "data-label": a.label,
      });
      g.append(s("title", {}, `${a.label}\n${iovaText(a.iova)} +${bytes(a.length)} ${state}`));
      g.append(s("rect", { x, y: 8, width: w, height: H - 8, rx: 3 }));
      g.append(s("text", { x: x + 4, y: 26, class: "label" }, a.label));
      g.append(s("text", { x: x + 4, y: 42, class: "sub" }, bytes(a.length)));
      const domains = Object.values(a.mapped);
      const full = domains.filter((m) => m === a.length).length;
      const status = a.live
        ? `in ${full}/${domains.length} domains`
        : `dead · ${bytes(mapped)} IOPTEs`;
      g.append(s("text", { x: x + 4, y: 56, class: "sub" }, status));
      g.append(s("text", { x, y: H + 17, class: "tick" }, tickText(a.iova)));
      svg.append(g);
      x += w + GAP;
      prevEnd = a.iova + a.length;
    });
    root.append(
      h(
        "div",
        { class: "ioas" },
        h("h3", {}, ioas.label),
        h("div", { class: "scroll" }, svg as unknown as Node),
      ),
    );
    svgs.push(svg);
  }
  for (const svg of svgs) elide(svg);
}

export function renderDomains(root: HTMLElement, snap: Snapshot): void {
  root.replaceChildren();
  if (snap.domains.length === 0) root.append(h("p", { class: "empty" }, "No domain yet."));
  for (const d of snap.domains) {
    const sizes = [...new Set(d.levels.flatMap((l) => Object.keys(l.leaves)))].sort(
      (a, b) => Number(a) - Number(b),
    );
    const head = h("tr", {}, h("th", {}, "level"), h("th", {}, "tables"));
    for (const sz of sizes) head.append(h("th", {}, `${bytes(BigInt(sz))} leaves`));
    const body = d.levels.map((l) => {
      const tr = h("tr", {}, h("td", {}, String(l.level)), h("td", {}, String(l.tables)));
      for (const sz of sizes) {
        const n = l.leaves[sz] ?? 0;
        tr.append(h("td", { class: n ? "n" : "zero" }, String(n)));
      }
      return tr;
    });
    root.append(
      h(
        "div",
        { class: "card domain", "data-domain": d.label, "data-mapped": d.mappedBytes.toString() },
        h("h3", {}, `${d.label} `, h("small", {}, d.format)),
        h("p", {}, `devices: ${d.devices.join(", ") || "none"} · mapped ${bytes(d.mappedBytes)}`),
        h("table", {}, h("thead", {}, head), h("tbody", {}, ...body)),
      ),
    );
  }
}

export function renderDevices(root: HTMLElement, snap: Snapshot): void {
  root.replaceChildren();
  if (snap.devices.length === 0) root.append(h("p", { class: "empty" }, "No device yet."));
  const cards = h("div", { class: "cards" });
  for (const dev of snap.devices) {
    const bufs = snap.dmabufs.filter((b) => b.device === dev.name);
    cards.append(
      h(
        "div",
        { class: "card device", "data-device": dev.name },
        h("h3", {}, dev.name),
        h(
          "p",
          {},
          `memory decode ${dev.memoryEnabled ? "on" : "off"} · ${dev.power} · ${
            dev.open ? "open" : "closed"
          } · ${dev.attachedTo ?? "not attached"}`,
        ),
        ...bufs.map((b) =>
          h(
            "div",
            { class: `dmabuf ${b.state}`, "data-state": b.state, "data-bar": b.bar },
            h("span", { class: "chip" }, b.state),
            ` BAR${b.bar} ${bytes(b.size)}`,
            b.iova === undefined ? " · not mapped" : ` · at ${hex(b.iova)}`,
          ),
        ),
      ),
    );
  }
  root.append(cards);
  if (snap.notes.length)
    root.append(h("ul", { class: "notes" }, ...snap.notes.map((n) => h("li", {}, n))));
}

export function renderProbes(root: HTMLElement, probes: readonly ProbeResult[]): void {
  root.replaceChildren();
  if (probes.length === 0) {
    root.append(h("p", { class: "empty" }, "No probe yet."));
    return;
  }
  const rows = probes.map((p) =>
    h(
      "tr",
      { "data-probe": p.name, "data-verdict": p.verdict },
      h("td", {}, p.name),
      h("td", { class: "mono" }, hex(p.iova)),
      h("td", {}, h("span", { class: `chip ${p.verdict}` }, p.verdict)),
      h("td", {}, p.detail),
    ),
  );
  root.append(
    h(
      "table",
      { class: "probes" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, "DMA"),
          h("th", {}, "IOVA"),
          h("th", {}, "verdict"),
          h("th", {}, "what it reached"),
        ),
      ),
      h("tbody", {}, ...rows),
    ),
  );
}

/** A trace event's fields as `key=value`: u64s (bigints) and flag words in hex. */
function eventFields(data: object): string {
  return Object.entries(data)
    .map(([k, v]) => {
      if (typeof v === "bigint") return `${k}=${hex(v)}`;
      if (typeof v === "number" && /flags|prot/i.test(k)) return `${k}=${hex(BigInt(v))}`;
      return `${k}=${typeof v === "object" ? toJson(v) : String(v)}`;
    })
    .join(" ");
}

/** Events listed per step; the rest are counted by kind (filling a 1 TiB domain pins 32 Ki times). */
const EVENTS_PER_STEP = 100;

function moreEvents(events: readonly StepRecord["events"][number][]): HTMLElement {
  const byKind = new Map<string, number>();
  for (const e of events) byKind.set(e.name, (byKind.get(e.name) ?? 0) + 1);
  const kinds = [...byKind].map(([name, n]) => `${name} × ${n.toLocaleString("en")}`);
  return h(
    "li",
    { class: "tl-more", "data-more": events.length },
    `… ${events.length.toLocaleString("en")} more: ${kinds.join(", ")}`,
  );
}

/**
 * The kernel's trace events, one line each (step · sequence number, event, fields), the step shown
 * first so its events are in view without scrolling; earlier steps follow, newest first.
 */
export function renderTimeline(root: HTMLElement, records: readonly StepRecord[]): void {
  root.replaceChildren();
  for (const r of [...records].reverse()) {
    const items = r.events.slice(0, EVENTS_PER_STEP).map((e) => {
      const when = `${r.index + 1} · #${e.seq}`;
      const fields = eventFields(e.data);
      return h(
        "li",
        { "data-event": e.name, "data-seq": e.seq, title: `${when} ${e.name} ${fields}` },
        h("span", { class: "tl-when" }, when),
        " ",
        h("b", {}, e.name),
        fields ? ` ${fields}` : "",
      );
    });
    if (r.events.length > EVENTS_PER_STEP) items.push(moreEvents(r.events.slice(EVENTS_PER_STEP)));
    root.append(
      h(
        "div",
        { class: "tl-step", "data-step": r.index + 1 },
        h("h4", {}, `${r.index + 1}. ${r.name}`),
        items.length ? h("ul", {}, ...items) : h("p", { class: "empty" }, "no kernel event"),
      ),
    );
  }
  root.scrollTop = 0;
}

export function renderSteps<W extends World>(
  root: HTMLElement,
  def: ScenarioDef<W>,
  records: readonly StepRecord[],
  onPick: (index: number) => void,
): void {
  root.replaceChildren();
  // The views draw the last step run; the one after it is what Step ▶ runs.
  const shown = records.length - 1;
  def.steps.forEach((st, i) => {
    const r = records[i];
    const state = r ? (r.ok ? "ok" : "bad") : i === records.length ? "next" : "pending";
    const li = h(
      "li",
      {
        class: `step ${state}${i === shown ? " current" : ""}`,
        "data-step": i + 1,
        "data-state": state,
        "aria-current": i === shown ? "step" : undefined,
        title: st.note ?? "",
      },
      h("span", { class: `actor ${st.actor}` }, st.actor),
      ` ${st.name}`,
    );
    li.addEventListener("click", () => onPick(i + 1));
    root.append(li);
  });
}

/** The dirty pages of each migration round as a bar chart, one row per round. */
function renderRounds(rounds: readonly DirtyRound[]): HTMLElement {
  const most = Math.max(1, ...rounds.map((x) => x.dirtyPages));
  return h(
    "div",
    { class: "rounds" },
    h("h4", {}, "Dirty pages per round"),
    ...rounds.map((x, i) =>
      h(
        "div",
        { class: "round", "data-round": i + 1, "data-dirty": x.dirtyPages },
        h("span", { class: "round-label" }, x.label),
        h("span", {
          class: "round-bar",
          style: `width: ${Math.max(x.dirtyPages ? 1 : 0, Math.round((x.dirtyPages / most) * 100))}%`,
        }),
        h("span", { class: "round-count" }, String(x.dirtyPages)),
      ),
    ),
  );
}

export function renderDetail(root: HTMLElement, r: StepRecord | undefined): void {
  root.replaceChildren();
  if (!r) return;
  root.append(h("h3", {}, `Step ${r.index + 1}: ${r.name}`));
  if (r.note) root.append(h("p", { class: "note" }, r.note));
  root.append(
    h("pre", { class: "log" }, ...r.lines.map((l) => h("div", { class: l.kind }, l.text))),
  );
  if (r.rounds.length) root.append(renderRounds(r.rounds));
  const problems = [...r.violations, ...r.probeMismatches];
  root.append(
    problems.length
      ? h("ul", { class: "violations" }, ...problems.map((v) => h("li", {}, v)))
      : h("p", { class: "invariants-ok" }, "✓ invariants hold"),
  );
}
