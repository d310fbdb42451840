/** Every scenario, in the order of spec §6 (the flagship first). */
import type { ScenarioDef } from "../scenario.js";

export const scenarios: readonly ScenarioDef[] = [];

export function scenarioById(id: string): ScenarioDef | undefined {
  return scenarios.find((s) => s.id === id);
}
