/** Every scenario, in the order of their numbers (the flagship, number 0, first). */
import type { ScenarioDef, World } from "../scenario.js";
import { accessCopy } from "./access-copy.js";
import { alignment } from "./alignment.js";
import { boot } from "./boot.js";
import { churn } from "./churn.js";
import { compatVa } from "./compat-va.js";
import { deviceClose } from "./device-close.js";
import { failNth } from "./fail-nth.js";
import { flagship } from "./flagship.js";
import { flrOrder } from "./flr-order.js";
import { forgotRemap } from "./forgot-remap.js";
import { hotAdd } from "./hot-add.js";
import { hugeGuest } from "./huge-guest.js";
import { importRevoked } from "./import-revoked.js";
import { liveMigration } from "./live-migration.js";
import { memToggle } from "./mem-toggle.js";
import { multiRange } from "./multi-range.js";
import { qemu, qemuAnon, qemuAnonTwoIommus, qemuTwoIommus } from "./qemu.js";
import { type1Contrast } from "./type1-contrast.js";
import { viommu } from "./viommu.js";

export const scenarios: readonly ScenarioDef<World>[] = [
  flagship,
  boot,
  memToggle,
  flrOrder,
  forgotRemap,
  importRevoked,
  hotAdd,
  multiRange,
  type1Contrast,
  compatVa,
  alignment,
  deviceClose,
  accessCopy,
  failNth,
  churn,
  hugeGuest,
  qemu,
  qemuAnon,
  qemuTwoIommus,
  qemuAnonTwoIommus,
  liveMigration,
  viommu,
];

export function scenarioById(id: string): ScenarioDef<World> | undefined {
  return scenarios.find((s) => s.id === id);
}
