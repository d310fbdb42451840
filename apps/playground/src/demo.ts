/**
 * The CLI behind `pnpm -s demo [scenario...] [--trace] [--json] [--list] [--all]` (src/cli.ts).
 *
 * Runs a scenario (the flagship by default) and prints it step by step: who acted, the system
 * calls and warnings, the DMA probes, and whether the invariants hold. `--trace` adds the kernel's
 * trace events, `--json` prints the step records instead (one JSON document on stdout: an object
 * for one scenario, an array for several), `--list` names the scenarios, `--all` runs every one.
 * Exits 1 when a step fails or an invariant breaks, 2 on a usage error.
 */
import { parseArgs } from "node:util";
import { type ScenarioDef, ScenarioRun, type StepRecord } from "./scenario.js";
import { scenarioById, scenarios } from "./scenarios/index.js";
import { bytes, hex, toJson } from "./snapshot.js";

const OPTIONS = {
  trace: { type: "boolean", default: false },
  json: { type: "boolean", default: false },
  list: { type: "boolean", default: false },
  all: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

type Args = ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>["values"];

const USAGE = `usage: pnpm -s demo [scenario...] [--trace] [--json] [--list] [--all]

  --trace  add the kernel's trace events to each step
  --json   print the step records as one JSON document: an object for one scenario, an
           array of them for several or --all (pnpm's -s keeps its banner off stdout)
  --list   name the scenarios
  --all    run every scenario and end with a count of those that held
Exit status: 0 when every check holds, 1 when one fails, 2 on a usage error.`;

const tty = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: number) => (s: string) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s);
const green = paint(32);
const red = paint(31);
const yellow = paint(33);
const dim = paint(2);
const cyan = paint(36);
const bold = paint(1);

function printList(): void {
  for (const s of scenarios)
    console.log(`${s.id.padEnd(18)} ${s.number ? `#${s.number}`.padEnd(4) : "    "}${s.title}`);
}

function eventLine(name: string, data: unknown): string {
  const t = JSON.stringify(data, (_k, v) => (typeof v === "bigint" ? hex(v) : v));
  return `${name} ${t.length > 140 ? `${t.slice(0, 137)}…` : t}`;
}

function stepHeader(index: number, actor: string, name: string, total: number): string {
  const n = `[${String(index + 1).padStart(String(total).length)}/${total}]`;
  return `${bold(n)} ${actor.padEnd(6)} ${bold(name)}`;
}

/** A step's lines, under the header printed when it started (so progress sits beneath it). */
function printStep(r: StepRecord, trace: boolean): void {
  if (r.note) console.log(dim(`         ${r.note}`));
  for (const l of r.lines) {
    const text = `         ${l.text}`;
    console.log(
      l.kind === "warn"
        ? yellow(text)
        : l.kind === "error"
          ? red(text)
          : l.kind === "ioctl"
            ? dim(text)
            : l.kind === "tolerated"
              ? cyan(`${text}  [tolerated]`)
              : text,
    );
  }
  if (r.rounds.length) {
    const most = Math.max(1, ...r.rounds.map((x) => x.dirtyPages));
    for (const x of r.rounds) {
      const bar = "█".repeat(
        Math.max(x.dirtyPages ? 1 : 0, Math.round((x.dirtyPages / most) * 40)),
      );
      console.log(
        `         ${x.label.padEnd(14)} ${String(x.dirtyPages).padStart(6)} dirty pages ${bar}`,
      );
    }
  }
  if (trace) for (const e of r.events) console.log(dim(`         ⤷ ${eventLine(e.name, e.data)}`));
  for (const p of r.probes) {
    const mark =
      p.verdict === "fault"
        ? yellow("fault")
        : p.verdict === "stale"
          ? red("STALE")
          : green(p.verdict);
    console.log(`         dma ${p.name.padEnd(22)} @${hex(p.iova)} → ${mark} ${dim(p.detail)}`);
  }
  for (const v of [...r.violations, ...r.probeMismatches]) console.log(red(`         ✗ ${v}`));
  const ms = dim(`(${r.ms.toFixed(1)} ms)`);
  console.log(
    r.ok
      ? `${green("         ✓ invariants hold")} ${ms}`
      : `${red("         ✗ step failed")} ${ms}`,
  );
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

function summary(s: StepRecord | undefined): string {
  if (!s) return "";
  const areas = s.snapshot.ioas.flatMap((i) => i.areas);
  const dead = areas.filter((a) => !a.live).length;
  const domains = s.snapshot.domains.length;
  const mapped = bytes(s.snapshot.domains.reduce((t, d) => t + d.mappedBytes, 0n));
  return `${plural(areas.length, "area")} (${dead} dead), ${plural(domains, "domain")}, ${mapped} mapped`;
}

/** Draw a one-line progress bar on a terminal, a line per tenth otherwise. */
function progressPrinter(): (done: number, total: number, label: string) => void {
  let lastTenth = -1;
  return (done, total, label) => {
    const frac = total ? done / total : 1;
    if (tty) {
      const w = 30;
      const fill = Math.round(frac * w);
      process.stdout.write(
        `\r         [${"#".repeat(fill)}${" ".repeat(w - fill)}] ${done}/${total} ${label}`,
      );
      if (done === total) process.stdout.write("\n");
      return;
    }
    const tenth = Math.floor(frac * 10);
    if (tenth !== lastTenth) {
      lastTenth = tenth;
      console.log(`         progress ${Math.round(frac * 100)}% (${done}/${total}) ${label}`);
    }
  };
}

interface Outcome {
  readonly ok: boolean;
  readonly doc: { scenario: string; ok: boolean; steps: StepRecord[] };
}

function runOne(def: ScenarioDef, args: Args): Outcome {
  if (!args.json) {
    console.log(bold(`\n== ${def.number ? `#${def.number} ` : ""}${def.title} (${def.id})`));
    console.log(dim(def.summary));
  }
  const total = def.steps.length;
  const run = new ScenarioRun(def, {
    ...(args.json || !def.long ? {} : { onProgress: progressPrinter() }),
    ...(args.json
      ? {}
      : {
          onStepStart: (i: number) => {
            const s = def.steps[i];
            if (s) console.log(stepHeader(i, s.actor, s.name, total));
          },
          onStep: (r: StepRecord) => printStep(r, args.trace),
        }),
  });
  const records = run.runTo();
  if (!args.json) {
    const failed = records.filter((r) => !r.ok).length;
    console.log(
      run.ok
        ? green(
            `== ${def.id}: ${records.length} steps, all checks hold — ${summary(records.at(-1))}`,
          )
        : red(`== ${def.id}: ${failed} of ${records.length} steps failed`),
    );
  }
  return { ok: run.ok, doc: { scenario: def.id, ok: run.ok, steps: records } };
}

/** Run the CLI with `argv` (without node and the script); returns the exit status. */
export function main(argv: readonly string[]): number {
  let args: Args;
  let ids: string[];
  try {
    const parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true });
    args = parsed.values;
    ids = parsed.positionals;
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    printList();
    return 0;
  }
  if (args.list) {
    printList();
    return 0;
  }
  const defs: ScenarioDef[] = [];
  for (const id of args.all ? scenarios.map((s) => s.id) : ids.length ? ids : ["flagship"]) {
    const def = scenarioById(id);
    if (!def) {
      console.error(`no scenario "${id}"; --list shows them`);
      return 2;
    }
    defs.push(def);
  }
  const outcomes = defs.map((def) => runOne(def, args));
  const failed = outcomes.filter((o) => !o.ok).length;
  if (args.json) {
    const docs = outcomes.map((o) => o.doc);
    console.log(toJson(docs.length === 1 ? docs[0] : docs, 2));
  } else if (args.all) {
    const line = `== ${plural(defs.length, "scenario")}, ${defs.length - failed} ok, ${failed} failed`;
    console.log(failed ? red(line) : green(line));
  }
  return failed ? 1 : 0;
}
