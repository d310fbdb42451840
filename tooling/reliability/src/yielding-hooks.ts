/**
 * Node module hooks of the race CLI (registered by race-cli.ts only): every module
 * `yieldingApplies` to is loaded with its generator twins (yielding-transform.ts), after the
 * TypeScript loader has turned it into JavaScript.
 */
import type { LoadHook } from "node:module";
import { fileURLToPath } from "node:url";
import { yieldingApplies } from "./yielding-filter.js";
import { transformYielding } from "./yielding-transform.js";

const RUNTIME = new URL("./yielding.ts", import.meta.url).href;

export const load: LoadHook = async (url, context, nextLoad) => {
  const loaded = await nextLoad(url, context);
  if (loaded.format !== "module" || !url.startsWith("file:")) return loaded;
  if (!yieldingApplies(fileURLToPath(url)) || loaded.source === undefined) return loaded;
  return { ...loaded, source: transformYielding(String(loaded.source), url, RUNTIME) };
};
