/**
 * The CLI behind `pnpm demo [scenario...] [--trace] [--json] [--list] [--all]` (src/cli.ts).
 *
 * Runs a scenario (the flagship by default) and prints it step by step: who acted, the system
 * calls and warnings, the DMA probes, and whether the invariants hold. `--trace` adds the kernel's
 * trace events, `--json` prints the step records instead, `--list` names the scenarios, `--all`
 * runs every one. Exits 1 when a step fails or an invariant breaks, 2 on a usage error.
 */
import { type ScenarioDef, ScenarioRun, type StepRecord } from "./scenario.js";
import { scenarioById, scenarios } from "./scenarios/index.js";
import { bytes, hex, toJson } from "./snapshot.js";

interface Args {
  ids: string[];
  trace: boolean;
  json: boolean;
  list: boolean;
  all: boolean;
  help: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { ids: [], trace: false, json: false, list: false, all: false, help: false };
  for (const arg of argv) {
    if (arg === "--trace") a.trace = true;
    else if (arg === "--json") a.json = true;
    else if (arg === "--list") a.list = true;
    else if (arg === "--all") a.all = true;
    else if (arg === "--help" || arg === "-h") a.help = true;
    else if (arg.startsWith("-")) throw new Error(`unknown option ${arg}`);
    else a.ids.push(arg);
  }
  return a;
}

const USAGE = "usage: pnpm demo [scenario...] [--trace] [--json] [--list] [--all]";

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
    console.log(`${s.id.padEnd(18)} ${s.number ? `§6.${s.number}`.padEnd(6) : "      "}${s.title}`);
}

function eventLine(name: string, data: unknown): string {
  const t = JSON.stringify(data, (_k, v) => (typeof v === "bigint" ? hex(v) : v));
  return `${name} ${t.length > 140 ? `${t.slice(0, 137)}…` : t}`;
}

function printStep(r: StepRecord, total: number, trace: boolean): void {
  const n = `[${String(r.index + 1).padStart(String(total).length)}/${total}]`;
  console.log(`${bold(n)} ${r.actor.padEnd(6)} ${bold(r.name)} ${dim(`(${r.ms.toFixed(1)} ms)`)}`);
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
  if (r.ok) console.log(green("         ✓ invariants hold"));
}

function summary(s: StepRecord | undefined): string {
  if (!s) return "";
  const areas = s.snapshot.ioas.flatMap((i) => i.areas);
  const dead = areas.filter((a) => !a.live).length;
  return `${areas.length} areas (${dead} dead), ${s.snapshot.domains.length} domains, ${bytes(
    s.snapshot.domains.reduce((t, d) => t + d.mappedBytes, 0n),
  )} of IOPTEs`;
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

function runOne(def: ScenarioDef, args: Args): boolean {
  if (!args.json) {
    console.log(bold(`\n== ${def.number ? `§6.${def.number} ` : ""}${def.title} (${def.id})`));
    console.log(dim(def.summary));
  }
  const run = new ScenarioRun(def, {
    ...(args.json || !def.long ? {} : { onProgress: progressPrinter() }),
    ...(args.json ? {} : { onStep: (r: StepRecord) => printStep(r, def.steps.length, args.trace) }),
  });
  const records = run.runTo();
  if (args.json) {
    console.log(toJson({ scenario: def.id, ok: run.ok, steps: records }, 2));
  } else {
    const failed = records.filter((r) => !r.ok).length;
    console.log(
      run.ok
        ? green(
            `== ${def.id}: ${records.length} steps, all checks hold — ${summary(records.at(-1))}`,
          )
        : red(`== ${def.id}: ${failed} of ${records.length} steps failed`),
    );
  }
  return run.ok;
}

/** Run the CLI with `argv` (without node and the script); returns the exit status. */
export function main(argv: readonly string[]): number {
  let args: Args;
  try {
    args = parseArgs(argv);
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
  for (const id of args.all
    ? scenarios.map((s) => s.id)
    : args.ids.length
      ? args.ids
      : ["flagship"]) {
    const def = scenarioById(id);
    if (!def) {
      console.error(`no scenario "${id}"; --list shows them`);
      return 2;
    }
    defs.push(def);
  }
  let ok = true;
  for (const def of defs) ok = runOne(def, args) && ok;
  return ok ? 0 : 1;
}
