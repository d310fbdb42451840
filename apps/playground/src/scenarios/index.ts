/** Every scenario, in the order of spec §6 (the flagship first). */
import type { ScenarioDef, World } from "../scenario.js";
import { flagship } from "./flagship.js";

export const scenarios: readonly ScenarioDef<World>[] = [flagship];

export function scenarioById(id: string): ScenarioDef<World> | undefined {
  return scenarios.find((s) => s.id === id);
}
