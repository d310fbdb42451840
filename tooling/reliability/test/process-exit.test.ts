/**
 * A VMM killed in the middle of its work leaves nothing behind: with a BAR mmapped, a BAR
 * dma-buf and user memory mapped into an IOAS, an in-kernel access holding pins and every
 * descriptor open, exit tears the address space down first and releases the files after it
 * (kernel/exit.c do_exit: exit_mm, then exit_files, the final fputs run as task_work), so the
 * device's release never runs under mmap_lock. Then nothing is pinned, charged or referenced,
 * and a new process binds the same device.
 */
import { MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE } from "@x/kernel";
import { Libc } from "@x/kernel";
import { IommufdClient } from "@x/iommufd";
import { VFIO_DEVICE_BIND_IOMMUFD } from "@x/vfio-pci";
import { describe, expect, it } from "vitest";
import { BAR_SIZE, FUZZ_UID } from "../src/machine.js";
import { VMM_STATE, world } from "./helpers.js";

describe("process death", () => {
  it("a killed VMM leaves nothing behind and the device binds again", () => {
    const w = world([
      ...VMM_STATE,
      { k: "map", ioas: 0, memfd: false, off: 8, pages: 4, slot: 4, readOnly: false },
      { k: "accessCreate", ioas: 0, pin: true },
      { k: "accessPages", access: 0, area: 0, pages: 2, write: true },
    ]);
    const { machine, checker } = w;
    const libc = machine.libc;
    const dfd = w.runner.deviceFd(0);
    const bar = libc.mmap(0n, BAR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, 0);
    expect(bar).toBeGreaterThan(0n);
    libc.poke(bar, new Uint8Array([1, 2, 3, 4])); // fault the BAR in
    checker.check();
    expect(machine.kernel.mem.totalPinned()).toBeGreaterThan(0);

    libc.exit();
    checker.checkQuiesced();

    const next = new Libc(machine.kernel, machine.kernel.newProcess(FUZZ_UID));
    const iommufd = IommufdClient.open(next);
    const fd = next.open(machine.cdev(0), O_RDWR);
    expect(fd).toBeGreaterThanOrEqual(0);
    const bind = new Uint8Array(24);
    const v = new DataView(bind.buffer);
    v.setUint32(0, 24, true);
    v.setInt32(8, iommufd.fd, true);
    expect(next.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, bind)).toBe(0);
  });

  it("the fuzzer's die op: quiesced check, then a new process carries on with the same devices", () => {
    const w = world([
      ...VMM_STATE,
      { k: "accessCreate", ioas: 0, pin: true },
      { k: "accessPages", access: 0, area: 0, pages: 2, write: false },
    ]);
    const first = w.machine.libc;
    expect(w.runner.step({ k: "die" })).toBe(0);
    expect(first.process.exited).toBe(true);
    expect(w.machine.libc).not.toBe(first);
    expect(w.machine.tasks).toHaveLength(2);
    for (const op of VMM_STATE) expect(w.runner.step(op)).toBe(0);
    w.checker.check();
    expect(w.runner.step({ k: "die" })).toBe(0);
    w.runner.teardown();
    w.checker.checkQuiesced();
  });
});
