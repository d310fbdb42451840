import { IommufdIoas, type IommufdCtx } from "@x/iommufd";
import { Checker } from "../src/checker.js";
import { Machine } from "../src/machine.js";
import { type Op, Runner } from "../src/sequence.js";

/** A VMM-like state: device 0 attached to an IOAS with a memfd area and a live BAR dma-buf area. */
export const VMM_STATE: readonly Op[] = [
  { k: "ioasAlloc" },
  { k: "devOpen", dev: 0 },
  { k: "attach", dev: 0, pt: 0 },
  { k: "map", ioas: 0, memfd: true, off: 0, pages: 4, slot: 0, readOnly: false },
  { k: "memory", dev: 0, on: true },
  { k: "dmabufExport", dev: 0, off: 0, pages: 4 },
  { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 4, slot: 2 },
];

export interface World {
  machine: Machine;
  runner: Runner;
  checker: Checker;
}

export function world(ops: readonly Op[] = VMM_STATE): World {
  const machine = new Machine();
  const runner = new Runner(machine);
  const checker = new Checker({
    kernel: machine.kernel,
    tasks: machine.tasks,
    devices: machine.devices,
    copies: () => runner.copies(),
  });
  for (const op of ops) runner.step(op);
  return { machine, runner, checker };
}

/** The user's iommufd context and its first IOAS. */
export function firstIoas(w: World): { ctx: IommufdCtx; ioas: IommufdIoas } {
  const ctx = w.machine.devices[0]!.binding!.ctx;
  for (const obj of ctx.objectsInOrder()) if (obj instanceof IommufdIoas) return { ctx, ioas: obj };
  throw new Error("no IOAS");
}
