// Top self-time functions over V8 .cpuprofile files (from `node --cpu-prof`; tsx adds a
// profile for its loader thread, so pass them all):
//   node tooling/perf/scripts/top-self.mjs <file.cpuprofile>... [count]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { positionals: args } = parseArgs({ allowPositionals: true });
const count = /^\d+$/.test(args.at(-1) ?? "") ? Number(args.pop()) : 25;
if (!args.length) throw new Error("usage: top-self.mjs <file.cpuprofile>... [count]");
const self = new Map();
for (const file of args) {
  const prof = JSON.parse(readFileSync(file, "utf8"));
  const byId = new Map(prof.nodes.map((n) => [n.id, n.callFrame]));
  // timeDeltas[i] is the time before samples[i].
  prof.samples.forEach((id, i) => {
    const frame = byId.get(id);
    self.set(frame, (self.get(frame) ?? 0) + (prof.timeDeltas[i] ?? 0));
  });
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
const byFn = new Map();
for (const [frame, us] of self) {
  const { functionName, url, lineNumber } = frame;
  const where = url
    ? `${url.replace(/^.*\/(packages|tooling|node_modules)\//, "$1/")}:${lineNumber + 1}`
    : "";
  const key = `${functionName || "(anonymous)"} ${where}`;
  byFn.set(key, (byFn.get(key) ?? 0) + us);
}
// Percentages are of the busy samples: on a shared machine "(idle)" is time spent waiting.
const idle = byFn.get("(idle) ") ?? 0;
const busy = total - idle;
console.log(`total ${(total / 1000).toFixed(0)} ms sampled, ${(busy / 1000).toFixed(0)} ms busy`);
for (const [key, us] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, count)) {
  console.log(
    `${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / busy).toFixed(1).padStart(5)}%  ${key}`,
  );
}
