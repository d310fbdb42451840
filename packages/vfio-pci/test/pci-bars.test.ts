import { Kernel, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { type PciBarSpec, type PciDevSpec, pciRoot } from "../src/pci.js";
import { PCI_BASE_ADDRESS_0, PCI_ROM_ADDRESS } from "../src/pci-regs.js";

const KiB = 1n << 10n;
const GiB = 1n << 30n;
const BAR = (i: number) => PCI_BASE_ADDRESS_0 + 4 * i;

function bus() {
  return pciRoot(new Kernel()).newBus();
}

/** __pci_read_base's sizing probe: write all ones, read the mask, put the address back. */
function size(d: ReturnType<ReturnType<typeof bus>["addDevice"]>, off: number): number {
  const orig = d.readConfig(off, 4);
  d.writeConfig(off, 4, 0xffffffff);
  const mask = d.readConfig(off, 4) >>> 0;
  d.writeConfig(off, 4, orig);
  return mask;
}

describe("BAR registers (drivers/pci/probe.c __pci_read_base)", () => {
  it("an I/O BAR sizes with bit 0 set and leaves the next register unimplemented", () => {
    const d = bus().addDevice({ vendor: 1, device: 1, bars: [{ type: "io", size: 32 }] });
    expect(size(d, BAR(0))).toBe(0xffffffe1);
    // An unimplemented BAR reads 0 whatever is written (sz == 0: no resource).
    expect(size(d, BAR(1))).toBe(0);
  });

  it("a 32-bit BAR leaves the next register unimplemented; an 8 GiB 64-bit BAR sizes across both", () => {
    const d = bus().addDevice({
      vendor: 1,
      device: 1,
      bars: [{ type: "mem32", size: 4n * KiB }, undefined, { type: "mem64", size: 8n * GiB }],
    });
    expect(size(d, BAR(0))).toBe(0xfffff000);
    expect(size(d, BAR(1))).toBe(0);
    expect(size(d, BAR(2)) & 0xf).toBe(0x4);
    expect(size(d, BAR(3))).toBe(0xfffffffe);
  });

  it("I/O ports are handed out aligned to their size, one range after the other", () => {
    const b = bus();
    const io = (n: number) =>
      b.addDevice({ vendor: 1, device: 1, bars: [{ type: "io", size: n }] }).resource(0).start;
    expect([io(32), io(256), io(4)]).toEqual([0x1000n, 0x1100n, 0x1200n]);
  });

  it("I/O BARs are 4..256 bytes, a power of two", () => {
    const mk = (n: number) => () =>
      bus().addDevice({ vendor: 1, device: 1, bars: [{ type: "io", size: n }] });
    for (const n of [3, 2, 12, 512]) expect(mk(n)).toThrow(KernelWarning);
    for (const n of [4, 256]) expect(mk(n)).not.toThrow();
  });

  it("memory BARs: a power of two ≥ 16 bytes, 32-bit ones at most 2 GiB, no 64-bit BAR5", () => {
    const mk = (bars: Array<PciBarSpec | undefined>) => () =>
      bus().addDevice({ vendor: 1, device: 1, bars });
    for (const s of [24n, 8n, 0x3000n])
      expect(mk([{ type: "mem32", size: s }])).toThrow(KernelWarning);
    expect(mk([{ type: "mem32", size: 16n }])).not.toThrow();
    expect(mk([{ type: "mem32", size: 4n * GiB }])).toThrow(KernelWarning);
    expect(mk([{ type: "mem32", size: 2n * GiB }])).not.toThrow();
    const at5 = (type: "mem32" | "mem64") =>
      mk([undefined, undefined, undefined, undefined, undefined, { type, size: 4n * KiB }]);
    expect(at5("mem64")).toThrow(KernelWarning);
    expect(at5("mem32")).not.toThrow();
    // The register after a 64-bit BAR is its upper half, never a BAR of its own.
    expect(
      mk([
        { type: "mem64", size: 4n * KiB },
        { type: "mem32", size: 4n * KiB },
      ]),
    ).toThrow(KernelWarning);
  });

  it("the ROM: ≥ 2 KiB power of two; its register holds the address with enable clear", () => {
    const mk = (romSize: bigint) => () =>
      bus().addDevice({
        vendor: 1,
        device: 1,
        bars: [{ type: "mem32", size: 4n * KiB }],
        romSize,
      });
    for (const s of [0x400n, 0xc00n]) expect(mk(s)).toThrow(KernelWarning);
    const d = mk(0x800n)();
    const rom = d.resource(6);
    expect(rom.len).toBe(0x800n);
    const reg = d.readConfig(PCI_ROM_ADDRESS, 4);
    expect(BigInt(reg)).toBe(rom.start & 0xfffff800n);
    expect(reg).not.toBe(0);
    // The CardBus CIS pointer before it is untouched.
    expect(d.readConfig(0x28, 4)).toBe(0);
  });

  it("each BAR region carries the function's name", () => {
    const spec: PciDevSpec = {
      vendor: 1,
      device: 1,
      bars: [{ type: "mem32", size: 4n * KiB }],
      romSize: 0x800n,
    };
    const d = bus().addDevice(spec);
    expect(d.resource(0).region?.name).toBe(`${d.name} BAR0`);
    expect(d.resource(6).region?.name).toBe(`${d.name} ROM`);
  });

  it("I/O BAR registers keep their contents between accesses", () => {
    const d = bus().addDevice({ vendor: 1, device: 1, bars: [{ type: "io", size: 32 }] });
    d.ioSpace(0)[5] = 0x5a;
    expect(d.ioSpace(0)[5]).toBe(0x5a);
    expect(d.ioSpace(0).length).toBe(32);
  });
});
