import {
  ENODEV,
  EOPNOTSUPP,
  Kernel,
  KernelError,
  LockdepError,
  type SymbolKey,
  fail,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufIommufdMap,
  type DmaBufOps,
  IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP,
  type PhysVec,
  VFIO_PCI_DMA_BUF_IOMMUFD_MAP,
  dmaBufDynamicAttach,
  dmaBufExport,
  dmaBufIommufdMap,
  symDmaBufIommufdMap,
} from "../src/index.js";
import { dev, exporterOps, importerOps } from "./helpers.js";

interface Region {
  revoked: boolean;
  ranges: PhysVec[];
}

/** A provider of the contract: owns the buffers made with its ops table, checks in order. */
function provider(kernel: Kernel, sym: SymbolKey<DmaBufIommufdMap>, ops: DmaBufOps) {
  const map: DmaBufIommufdMap = (attach) => {
    attach.dmabuf.resv.assertHeld();
    if (attach.dmabuf.ops !== ops) fail(EOPNOTSUPP, "not my dma-buf");
    const region = attach.dmabuf.priv as Region;
    if (region.revoked) fail(ENODEV, "revoked");
    const [only, ...more] = region.ranges;
    if (!only || more.length) fail(EOPNOTSUPP, "more than one range");
    return { ...only };
  };
  kernel.symbols.exportSymbol(sym, map, sym.name);
  return (region: Region): DmaBuf =>
    dmaBufExport(kernel, { expName: sym.name, ops, size: 0x4000n, priv: region });
}

function bar(paddr = 0x80_0000_0000n): Region {
  return { revoked: false, ranges: [{ paddr, len: 0x4000n }] };
}

function attachTo(kernel: Kernel, dmabuf: DmaBuf): DmaBufAttachment {
  return dmaBufDynamicAttach(kernel, dmabuf, dev, importerOps());
}

function mapLocked(
  kernel: Kernel,
  attach: DmaBufAttachment,
  sym?: SymbolKey<DmaBufIommufdMap>,
): PhysVec {
  return attach.dmabuf.resv.with(() =>
    sym === undefined ? dmaBufIommufdMap(kernel, attach) : symDmaBufIommufdMap(kernel, attach, sym),
  );
}

describe("the private interconnect", () => {
  it("a missing provider is EOPNOTSUPP, as when the kernel option is off", () => {
    const kernel = new Kernel();
    const dmabuf = dmaBufExport(kernel, { expName: "x", ops: exporterOps(), size: 1n, priv: 1 });
    const a = attachTo(kernel, dmabuf);
    expect(() => mapLocked(kernel, a, VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toThrow(
      expect.objectContaining({ errno: EOPNOTSUPP }),
    );
    expect(() => mapLocked(kernel, a)).toThrow(expect.objectContaining({ errno: EOPNOTSUPP }));
    expect(() => dmaBufIommufdMap(kernel, a, [])).toThrow(KernelError);
  });

  it("returns a copy of the single range and puts the symbol back", () => {
    const kernel = new Kernel();
    const vfio = provider(kernel, VFIO_PCI_DMA_BUF_IOMMUFD_MAP, exporterOps());
    const region = bar();
    const a = attachTo(kernel, vfio(region));
    const phys = mapLocked(kernel, a, VFIO_PCI_DMA_BUF_IOMMUFD_MAP);
    expect(phys).toEqual({ paddr: 0x80_0000_0000n, len: 0x4000n });
    phys.len = 0n;
    expect(region.ranges[0]?.len).toBe(0x4000n);
    expect(kernel.symbols.refs(VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toBe(0);
  });

  it("needs the reservation lock", () => {
    const kernel = new Kernel();
    const vfio = provider(kernel, VFIO_PCI_DMA_BUF_IOMMUFD_MAP, exporterOps());
    const a = attachTo(kernel, vfio(bar()));
    expect(() => symDmaBufIommufdMap(kernel, a)).toThrow(LockdepError);
    expect(kernel.symbols.refs(VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toBe(0);
  });

  it("passes through the provider's errors in its order and always puts the symbol", () => {
    const kernel = new Kernel();
    const vfio = provider(kernel, VFIO_PCI_DMA_BUF_IOMMUFD_MAP, exporterOps());
    const foreign = dmaBufExport(kernel, {
      expName: "f",
      ops: exporterOps(),
      size: 1n,
      priv: bar(),
    });
    const revokedTwoRanges: Region = { revoked: true, ranges: [...bar().ranges, ...bar().ranges] };
    const cases: Array<[DmaBuf, number]> = [
      [foreign, EOPNOTSUPP],
      [vfio(revokedTwoRanges), ENODEV],
      [vfio({ revoked: false, ranges: revokedTwoRanges.ranges }), EOPNOTSUPP],
    ];
    for (const [dmabuf, errno] of cases) {
      const a = attachTo(kernel, dmabuf);
      expect(() => mapLocked(kernel, a, VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toThrow(
        expect.objectContaining({ errno }),
      );
      expect(kernel.symbols.refs(VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toBe(0);
    }
  });

  it("asks the selftest provider first; its EOPNOTSUPP hands over to vfio-pci", () => {
    const kernel = new Kernel();
    const mock = provider(kernel, IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP, exporterOps());
    const vfio = provider(kernel, VFIO_PCI_DMA_BUF_IOMMUFD_MAP, exporterOps());
    expect(mapLocked(kernel, attachTo(kernel, mock(bar(0x1000n))))).toEqual({
      paddr: 0x1000n,
      len: 0x4000n,
    });
    expect(mapLocked(kernel, attachTo(kernel, vfio(bar(0x2000n))))).toEqual({
      paddr: 0x2000n,
      len: 0x4000n,
    });
    const revokedMock = mock({ ...bar(), revoked: true });
    expect(() => mapLocked(kernel, attachTo(kernel, revokedMock))).toThrow(
      expect.objectContaining({ errno: ENODEV }),
    );
    expect(kernel.symbols.refs(IOMMUFD_TEST_DMA_BUF_IOMMUFD_MAP)).toBe(0);
    expect(kernel.symbols.refs(VFIO_PCI_DMA_BUF_IOMMUFD_MAP)).toBe(0);
  });

  it("a provider that is unloaded between calls is simply gone", () => {
    const kernel = new Kernel();
    const vfio = provider(kernel, VFIO_PCI_DMA_BUF_IOMMUFD_MAP, exporterOps());
    const a = attachTo(kernel, vfio(bar()));
    mapLocked(kernel, a);
    kernel.symbols.unexportSymbol(VFIO_PCI_DMA_BUF_IOMMUFD_MAP);
    expect(() => mapLocked(kernel, a)).toThrow(expect.objectContaining({ errno: EOPNOTSUPP }));
  });
});
