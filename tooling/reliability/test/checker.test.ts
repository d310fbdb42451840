import { IOMMU_READ, iommuIovaToPhys, iommuMap, iommuUnmap } from "@x/iommu-pgtable";
import {
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_UNMAP,
  IommufdIoas,
  iommu_ioas_map,
  iommu_ioas_unmap,
} from "@x/iommufd";
import { ENOENT, EventfdCtx } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { InvariantViolation, gatherIommufd } from "../src/checker.js";
import { pinProblem } from "../src/translations.js";
import { runProgram } from "../src/fuzz-uapi.js";
import type { Op } from "../src/sequence.js";
import { VMM_STATE, type World, firstIoas, world } from "./helpers.js";

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

  it("carries nothing from one check to the next: rules fire after clean checks and clear once repaired", () => {
    const w = world();
    w.checker.check();
    const user = w.machine.libc.process.cred.user;
    user.lockedVm += 1;
    expect(violation(() => w.checker.check())).toBe("accounting");
    user.lockedVm -= 1;
    w.checker.check();
    // The live dma-buf ranges are read when an MMIO IOPTE is met, in each check anew.
    const priv = [...w.machine.devices[0]!.dmabufs][0]!;
    priv.revoked = true;
    expect(violation(() => w.checker.check())).toBe("iopte");
    priv.revoked = false;
    w.checker.check();
    const mem = w.machine.kernel.mem;
    const { ioas } = firstIoas(w);
    const pfn = Number(
      iommuIovaToPhys(ioas.iopt.domainList[0]!, ioas.iopt.areas()[0]!.iova) >> 12n,
    );
    mem.pinPages(pfn, 1);
    expect(violation(() => w.checker.check())).toBe("pins");
    mem.unpinPages(pfn, 1);
    w.checker.check();
  });

  it("walks the domains of an IOAS that follows one without domains", () => {
    const w = world([
      { k: "ioasAlloc" },
      { k: "ioasAlloc" },
      { k: "devOpen", dev: 0 },
      { k: "attach", dev: 0, pt: 1 },
      { k: "map", ioas: 1, memfd: true, off: 0, pages: 4, slot: 0, readOnly: false },
    ]);
    const ioases = [...firstIoas(w).ctx.objectsInOrder()].filter((o) => o instanceof IommufdIoas);
    expect(ioases.map((o) => o.iopt.domainList.length)).toEqual([0, 1]);
    w.checker.check();
    const iopt = ioases[1]!.iopt;
    const domain = iopt.domainList[0]!;
    iommuMap(
      domain,
      0x4000_0000n,
      iommuIovaToPhys(domain, iopt.areas()[0]!.iova),
      4096n,
      IOMMU_READ,
    );
    expect(violation(() => w.checker.check())).toBe("iopte");
  });

  it("pinned: pages without a filled area or an access must pin nothing", () => {
    const w = world([
      { k: "ioasAlloc" },
      { k: "map", ioas: 0, memfd: true, off: 0, pages: 4, slot: 0, readOnly: false },
    ]);
    w.checker.check();
    const pages = gatherIommufd(w.checker.scope).iopts[0]!.areas()[0]!.pages!;
    expect(pages.domainsItree.isEmpty && pages.accessItree.isEmpty).toBe(true);
    const { mem } = w.machine.kernel;
    expect(pinProblem([pages], mem)).toBeUndefined();
    pages.npinned = 1;
    expect(pinProblem([pages], mem)).toBe("pages pin 1 frames for 0 held indexes");
  });

  it("exporter: a device's registration references count each open cdev file once, dups included", () => {
    const w = world();
    const { libc } = w.machine;
    const fd = libc.open(w.machine.cdev(1), 2);
    libc.dup(fd);
    libc.open(w.machine.cdev(1), 2);
    const vdev = w.machine.devices[1]!;
    expect(vdev.registrationRefs).toBe(3);
    w.checker.check();
    vdev.tryGetRegistration();
    expect(violation(() => w.checker.check())).toBe("exporter");
    vdev.putRegistration();
    w.checker.check();
    // The dup alone keeps the first file open, past a free descriptor below it.
    libc.close(fd);
    expect(vdev.registrationRefs).toBe(3);
    w.checker.check();
    vdev.tryGetRegistration();
    expect(violation(() => w.checker.check())).toBe("exporter");
  });

  it("irq: an ERR or REQ trigger the device holds must be a live reference", () => {
    for (const slot of ["errTrigger", "reqTrigger"] as const) {
      const w = world();
      const vdev = w.machine.devices[0]!;
      const ctx = new EventfdCtx(0, 0);
      vdev[slot] = ctx;
      w.checker.check();
      ctx.put();
      expect(violation(() => w.checker.check())).toBe("irq");
      vdev[slot] = undefined;
    }
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

  it("catches an IOPTE pointing at another pinned frame of its own area (wrong target)", () => {
    const w = world();
    const { ioas } = firstIoas(w);
    const domain = ioas.iopt.domainList[0]!;
    const area = ioas.iopt.areas().find((a) => !a.pages?.dmabuf)!;
    const [a, b] = [area.iova, area.iova + 4096n];
    const [pa, pb] = [iommuIovaToPhys(domain, a), iommuIovaToPhys(domain, b)];
    iommuUnmap(domain, a, 8192n);
    iommuMap(domain, a, pb, 4096n, area.iommuProt);
    iommuMap(domain, b, pa, 4096n, area.iommuProt);
    expect(violation(() => w.checker.check())).toBe("translation");
  });

  it("catches a frame pinned twice while another of the same pages lost its pin", () => {
    const w = world([
      ...VMM_STATE,
      { k: "ioasAlloc" },
      { k: "map", ioas: 1, memfd: true, off: 8, pages: 2, slot: 0, readOnly: false },
      { k: "accessCreate", ioas: 1, pin: true },
      { k: "accessPages", access: 0, area: 0, pages: 2, write: false },
    ]);
    w.checker.check();
    const pages = [...w.machine.iommufd.contexts()]
      .flatMap((c) => [...c.objectsInOrder()])
      .flatMap((o) => (o instanceof IommufdIoas ? o.iopt.areas() : []))
      .find((a) => a.pages?.pinnedPfns.count === 2)!.pages!;
    const [x, y] = [pages.pinnedPfns.load(0), pages.pinnedPfns.load(1)];
    // The totals still agree (pins rule); frame x is now pinned twice, frame y not at all.
    w.machine.kernel.mem.pinPages(x, 1);
    w.machine.kernel.mem.unpinPages(y, 1);
    expect(violation(() => w.checker.check())).toBe("pinned");
  });

  // Two IOMMU_IOAS_MAP_FILE of one memfd page are two pages objects: one pinned by an access
  // (xarray), one by a domain fill. Truncating the memfd drops the folio from the page cache
  // while both pins keep it, so the frame is still pinned twice (mm/shmem.c, mm/gup.c).
  const TRUNCATED_UNDER_PINS: readonly Op[] = [
    { k: "devOpen", dev: 1 },
    { k: "sealedCreate" },
    { k: "ioasAlloc" },
    { k: "accessCreate", ioas: 0, pin: true },
    { k: "mapSealed", ioas: 0, mfd: 0, pages: 1 },
    { k: "accessPages", access: 0, area: 0, pages: 1, write: false },
    { k: "mapSealed", ioas: 0, mfd: 0, pages: 1 },
    { k: "attach", dev: 1, pt: 0 },
    { k: "sealedTruncate", mfd: 0, pages: 0 },
  ];

  function truncatedUnderPins(): { w: World; pfn: number } {
    const w = world(TRUNCATED_UNDER_PINS);
    const ioas = [...w.machine.devices[1]!.binding!.ctx.objectsInOrder()].find(
      (o) => o instanceof IommufdIoas,
    )!.iopt;
    const [byAccess, byDomain] = ioas.areas().map((a) => a.pages!);
    expect(byAccess).not.toBe(byDomain);
    const pfn = byAccess!.pinnedPfns.load(0);
    expect(byDomain!.pinnedPfns.load(0)).toBe(-1);
    expect(ioas.domainList[0]!.iovaToPfn(Number(ioas.areas()[1]!.iova >> 12n))).toBe(pfn);
    return { w, pfn };
  }

  it("counts a frame a domain holds pinned after its memfd was truncated", () => {
    const { w, pfn } = truncatedUnderPins();
    expect(w.machine.kernel.mem.pinCount(pfn)).toBe(2);
    w.checker.check();
    expect(runProgram([...TRUNCATED_UNDER_PINS, { k: "die" }]).steps).toBe(10);
  });

  it("still catches a lost pin of a frame only a domain holds, its memfd truncated", () => {
    const { w, pfn } = truncatedUnderPins();
    const { mem } = w.machine.kernel;
    // The totals still agree (pins rule): the frame lost one of its two pins to a stray frame.
    mem.unpinPages(pfn, 1);
    mem.pinPages(mem.allocFolio(0), 1);
    expect(violation(() => w.checker.check())).toBe("pinned");
  });

  it("accepts the frame a domain keeps after its memfd was truncated and grown again", () => {
    const program: Op[] = [
      ...TRUNCATED_UNDER_PINS,
      { k: "sealedTruncate", mfd: 0, pages: 1 },
      { k: "mapSealed", ioas: 0, mfd: 0, pages: 1 },
    ];
    const w = world(program);
    const ioas = [...w.machine.devices[1]!.binding!.ctx.objectsInOrder()].find(
      (o) => o instanceof IommufdIoas,
    )!.iopt;
    const [, byDomain, fresh] = ioas.areas();
    const domain = ioas.domainList[0]!;
    const kept = domain.iovaToPfn(Number(byDomain!.iova >> 12n));
    // The old area still maps the truncated folio; the new one maps the file's new folio.
    expect(domain.iovaToPfn(Number(fresh!.iova >> 12n))).not.toBe(kept);
    expect(w.machine.kernel.mem.pinCount(kept)).toBe(2);
    w.checker.check();
  });

  it("still catches a file page no shrink reached mapped to another pinned frame", () => {
    const w = world(TRUNCATED_UNDER_PINS.slice(0, -1));
    const ioas = [...w.machine.devices[1]!.binding!.ctx.objectsInOrder()].find(
      (o) => o instanceof IommufdIoas,
    )!.iopt;
    const [, byDomain] = ioas.areas();
    const domain = ioas.domainList[0]!;
    const { mem } = w.machine.kernel;
    // Out of the file's cache and pinned, with the pin totals kept equal (one pin of the right
    // frame moved to it): only the translation rule can see that the IOPTE is not the file's.
    const right = domain.iovaToPfn(Number(byDomain!.iova >> 12n));
    const stray = mem.allocFolio(0);
    mem.pinPages(stray, 1);
    mem.unpinPages(right, 1);
    iommuUnmap(domain, byDomain!.iova, 4096n);
    iommuMap(domain, byDomain!.iova, BigInt(stray) << 12n, 4096n, byDomain!.iommuProt);
    expect(violation(() => w.checker.check())).toBe("translation");
  });

  it("catches a copy that got pages objects of its own instead of the source's", () => {
    const w = world([
      ...VMM_STATE,
      { k: "ioasAlloc" },
      { k: "devOpen", dev: 1 },
      { k: "attach", dev: 1, pt: 1 },
      { k: "copy", src: 0, dst: 1, area: 0, slot: 8 },
    ]);
    w.checker.check();
    const [copy] = [...w.runner.copies()];
    expect(copy).toBeDefined();
    // What a COPY that pins afresh would leave: the same memory, mapped again at the copy's IOVA.
    const dst = [...w.machine.devices[1]!.binding!.ctx.objectsInOrder()].find(
      (o) => o instanceof IommufdIoas && o.iopt === copy!.dst,
    )!;
    ioctl(
      w,
      IOMMU_IOAS_UNMAP,
      iommu_ioas_unmap.encode({
        size: 24,
        ioas_id: dst.id,
        iova: copy!.dstIova,
        length: copy!.length,
      }),
    );
    ioctl(
      w,
      IOMMU_IOAS_MAP,
      iommu_ioas_map.encode({
        size: 40,
        flags: 7,
        ioas_id: dst.id,
        user_va: w.machine.memfdVa,
        length: copy!.length,
        iova: copy!.dstIova,
      }),
    );
    expect(violation(() => w.checker.check())).toBe("shared");
  });

  it("ends a copy whose source a failed IOAS_UNMAP took down (the areas before the one that sticks out go)", () => {
    // Source: 2 pages at 0x100000; its copy at 0x110000; the unmap covers 0x100000..0x110fff,
    // so it frees the source and stops with ENOENT at the copy; then 0x100000 is mapped anew.
    const program: Op[] = [
      { k: "ioasAlloc" },
      { k: "map", ioas: 0, memfd: false, off: 0, pages: 2, slot: 0, readOnly: false },
      { k: "copy", src: 0, dst: 0, area: 0, slot: 1 },
      { k: "unmapRange", ioas: 0, slot: 0, pages: 17 },
      { k: "map", ioas: 0, memfd: false, off: 0, pages: 2, slot: 0, readOnly: false },
    ];
    const w = world(program.slice(0, 3));
    const [copy] = [...w.runner.copies()];
    expect(w.runner.step(program[3]!)).toBe(ENOENT);
    // iopt_unmap_iova_range keeps what it unmapped before the failing area.
    expect(copy!.src.areas(copy!.srcIova, copy!.srcIova)).toHaveLength(0);
    expect(copy!.dst.areas(copy!.dstIova, copy!.dstIova)).toHaveLength(1);
    expect([...w.runner.copies()]).toHaveLength(0);
    expect(w.runner.step(program[4]!)).toBe(0);
    w.checker.check();
    expect(() => runProgram(program)).not.toThrow();
  });

  it("keeps checking a copy when a failed IOAS_UNMAP unmapped nothing", () => {
    const w = world([
      { k: "ioasAlloc" },
      { k: "map", ioas: 0, memfd: false, off: 0, pages: 2, slot: 0, readOnly: false },
      { k: "copy", src: 0, dst: 0, area: 0, slot: 1 },
    ]);
    expect(w.runner.step({ k: "unmapRange", ioas: 0, slot: 1, pages: 1 })).toBe(ENOENT);
    expect([...w.runner.copies()]).toHaveLength(1);
  });
});

function ioctl(w: World, cmd: number, bytes: Uint8Array): void {
  const libc = w.machine.libc;
  const va = libc.malloc(bytes.length);
  libc.poke(va, bytes);
  if (libc.ioctl(w.runner.iommufdFd, cmd, va) < 0) throw new Error(`ioctl errno ${libc.errno}`);
}
