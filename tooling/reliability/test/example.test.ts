import { expect, it } from "vitest";
import { Checker, Machine, type Op, Runner } from "../src/index.js";

it("README example: a VMM-like program checked after every step", () => {
  const machine = new Machine();
  const runner = new Runner(machine);
  const checker = new Checker({
    kernel: machine.kernel,
    tasks: [machine.libc.task],
    devices: machine.devices,
  });
  const ops: Op[] = [
    { k: "ioasAlloc" },
    { k: "devOpen", dev: 0 },
    { k: "attach", dev: 0, pt: 0 },
    { k: "map", ioas: 0, memfd: true, off: 0, pages: 4, slot: 0, readOnly: false },
    { k: "memory", dev: 0, on: true },
    { k: "dmabufExport", dev: 0, off: 0, pages: 4 },
    { k: "mapDmabuf", ioas: 0, buf: 0, off: 0, pages: 4, slot: 2 },
    { k: "flr", dev: 0 },
  ];
  for (const op of ops) {
    expect(runner.step(op)).toBe(0);
    checker.check();
  }
  runner.teardown();
  checker.checkQuiesced();
});
