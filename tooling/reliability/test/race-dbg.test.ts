import { it } from "vitest";
import { raceExplorerSummary } from "../src/race-explorer.js";
it("dbg", () => {
  const t = Date.now();
  const s = raceExplorerSummary();
  console.log(JSON.stringify(s, null, 1), Date.now() - t);
}, 600000);
