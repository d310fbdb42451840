/**
 * The page: pick a scenario, step / run / reset, and watch the machine. The URL hash names the
 * scenario and how many steps have run (`#scenario=flagship&step=7`), so a link reopens the same
 * state: the world is rebuilt and the steps replayed (runs are deterministic). A URL naming a
 * scenario or step that does not exist is said so on the page, with the valid ones.
 */
import { ScenarioRun } from "../scenario.js";
import { scenarioById, scenarios } from "../scenarios/index.js";
import { EMPTY_SNAPSHOT } from "../snapshot.js";
import {
  h,
  renderDetail,
  renderDevices,
  renderDomains,
  renderIoas,
  renderProbes,
  renderSteps,
  renderTimeline,
} from "./render.js";

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page is missing #${id}`);
  return el as T;
}

const ui = {
  select: byId<HTMLSelectElement>("scenario"),
  step: byId<HTMLButtonElement>("step"),
  run: byId<HTMLButtonElement>("run"),
  reset: byId<HTMLButtonElement>("reset"),
  position: byId("position"),
  status: byId("status"),
  summary: byId("summary"),
  steps: byId("steps"),
  detail: byId("detail"),
  ioas: byId("ioas"),
  domains: byId("domains"),
  devices: byId("devices"),
  probes: byId("probes"),
  timeline: byId("timeline"),
  urlError: byId("url-error"),
};

let run: ScenarioRun | undefined;

/** The scenario and step the URL asks for: the hash, or the query string when there is no hash. */
function urlParams(): { scenario: string; step: string } {
  const p = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
  return { scenario: p.get("scenario") ?? "flagship", step: p.get("step") ?? "0" };
}

function reportUrl(problems: readonly string[]): void {
  ui.urlError.textContent = problems.join(" ");
  ui.urlError.hidden = problems.length === 0;
}

/**
 * Open what the URL names. An unknown scenario opens the first one and an unknown step opens
 * step 0, each reported with what is valid.
 */
function openFromUrl(): void {
  const want = urlParams();
  const def = scenarioById(want.scenario) ?? scenarios[0];
  if (!def) return;
  const problems: string[] = [];
  if (def.id !== want.scenario)
    problems.push(
      `The URL names scenario "${want.scenario}", which does not exist; showing ${def.id}. Scenarios: ${scenarios.map((d) => d.id).join(", ")}.`,
    );
  const step = /^\d+$/.test(want.step) ? Number(want.step) : Number.NaN;
  const valid = step <= def.steps.length;
  if (!valid)
    problems.push(
      `The URL names step "${want.step}", which ${def.id} does not have; showing step 0. Steps: 0–${def.steps.length}.`,
    );
  reportUrl(problems);
  openAt(def.id, valid ? step : 0);
}

function writeHash(): void {
  if (!run) return;
  const next = `#scenario=${run.def.id}&step=${run.position}`;
  if (location.hash !== next) history.replaceState(null, "", next);
}

function draw(): void {
  if (!run) return;
  const r = run.records[run.records.length - 1];
  const snap = r?.snapshot ?? run.initial ?? EMPTY_SNAPSHOT;
  ui.summary.textContent = run.def.summary;
  ui.position.textContent = `step ${run.position} / ${run.def.steps.length}`;
  const ok = run.ok;
  ui.status.textContent = run.position === 0 ? "" : ok ? "✓ all checks hold" : "✗ a check failed";
  ui.status.className = `status ${run.position === 0 ? "" : ok ? "ok" : "bad"}`;
  ui.step.disabled = ui.run.disabled = run.done;
  renderSteps(ui.steps, run.def, run.records, (n) => openAt(run?.def.id ?? "", n));
  renderDetail(ui.detail, r);
  renderIoas(ui.ioas, snap);
  renderDomains(ui.domains, snap);
  renderDevices(ui.devices, snap);
  renderProbes(ui.probes, r?.probes ?? []);
  renderTimeline(ui.timeline, run.records);
  document.body.dataset.scenario = run.def.id;
  document.body.dataset.step = String(run.position);
  writeHash();
}

/** Rebuild the world of `id` and run its first `steps` steps. */
function openAt(id: string, steps: number): void {
  const def = scenarioById(id) ?? scenarios[0];
  if (!def) {
    ui.summary.textContent = "No scenario is available.";
    return;
  }
  ui.select.value = def.id;
  run = new ScenarioRun(def);
  run.runTo(Math.min(steps, def.steps.length) - 1);
  draw();
}

for (const d of scenarios)
  ui.select.append(h("option", { value: d.id }, `${d.number ? `#${d.number} ` : ""}${d.title}`));

ui.select.addEventListener("change", () => {
  reportUrl([]);
  openAt(ui.select.value, 0);
});
ui.step.addEventListener("click", () => {
  if (run && !run.done) run.step();
  draw();
});
ui.run.addEventListener("click", () => {
  run?.runTo();
  draw();
});
ui.reset.addEventListener("click", () => openAt(run?.def.id ?? "", 0));
document.addEventListener("keydown", (e) => {
  if (e.key === "ArrowRight" && e.target === document.body) ui.step.click();
});
window.addEventListener("hashchange", () => {
  const { scenario, step } = urlParams();
  if (!run || scenario !== run.def.id || step !== String(run.position)) openFromUrl();
});

openFromUrl();
document.body.dataset.ready = "true";
