import { IOMMU_READ, iommuIovaToPhys, iommuMap } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import { InvariantViolation } from "../src/checker.js";
import { firstIoas, world } from "./helpers.js";

function violation(fn: () => void): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof InvariantViolation) return e.rule;
    throw e;
  }
  throw new Error("the checker found nothing");
}

describe("checker", () => {
  it("passes a consistent VMM state and its teardown", () => {
    const w = world();
    const vdev = w.machine.devices[0]!;
    expect([...vdev.dmabufs].map((b) => b.state)).toEqual(["live"]);
    expect(firstIoas(w).ioas.iopt.areas()).toHaveLength(2);
    w.checker.check();
    w.runner.teardown();
    w.checker.checkQuiesced();
  });

  it("catches a leaked pin", () => {
    const w = world();
    const { ioas } = firstIoas(w);
    const domain = ioas.iopt.domainList[0]!;
    const pfn = Number(iommuIovaToPhys(domain, ioas.iopt.areas()[0]!.iova) >> 12n);
    w.machine.kernel.mem.pinPages(pfn, 1);
    expect(violation(() => w.checker.check())).toBe("pins");
  });

  it("catches an IOPTE outside every area", () => {
    const w = world();
    const { ioas } = firstIoas(w);
    const domain = ioas.iopt.domainList[0]!;
    const paddr = iommuIovaToPhys(domain, ioas.iopt.areas()[0]!.iova);
    iommuMap(domain, 0x4000_0000n, paddr, 4096n, IOMMU_READ);
    expect(violation(() => w.checker.check())).toBe("iopte");
  });

  it("catches a stale MMIO IOPTE: the exporter revoked behind iommufd's back", () => {
    const w = world();
    const priv = [...w.machine.devices[0]!.dmabufs][0]!;
    priv.revoked = true;
    expect(violation(() => w.checker.check())).toBe("iopte");
  });

  it("runs @x/iommufd's I1-I11: a lost DMABUF tracker entry is I2", () => {
    const w = world();
    const { ioas } = firstIoas(w);
    const pages = ioas.iopt.areas().find((a) => a.pages?.dmabuf)!.pages!;
    pages.dmabuf!.tracker.pop();
    expect(violation(() => w.checker.check())).toBe("iommufd");
  });

  it("catches an accounting drift", () => {
    const w = world();
    w.machine.libc.process.cred.user.lockedVm += 1;
    expect(violation(() => w.checker.check())).toBe("accounting");
  });

  it("catches a lock held across a system call boundary", () => {
    const w = world();
    const { ioas } = firstIoas(w);
    w.machine.kernel.runAs(w.machine.libc.task, () => ioas.mutex.lock());
    expect(violation(() => w.checker.check())).toBe("lockdep");
  });

  it("catches a live dma-buf on a device whose memory decode is off", () => {
    const w = world([
      { k: "devOpen", dev: 1 },
      { k: "memory", dev: 1, on: false },
      { k: "dmabufExport", dev: 1, off: 0, pages: 1 },
    ]);
    const priv = [...w.machine.devices[1]!.dmabufs][0]!;
    expect(priv.state).toBe("revoked");
    priv.revoked = false;
    expect(violation(() => w.checker.check())).toBe("exporter");
  });

  it("catches a descriptor left behind at teardown", () => {
    const w2 = world();
    w2.machine.libc.open(w2.machine.cdev(1), 2);
    w2.runner.teardown();
    expect(violation(() => w2.checker.checkQuiesced())).toBe("leak");
  });
});
