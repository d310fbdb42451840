/**
 * The exporter side of drivers/vfio/pci/vfio_pci_dmabuf.c not reached through the ioctl checks:
 * the sg-table built for a non-iommufd importer (dma_buf_phys_vec_to_sgt), the release of a
 * buffer whose device closed first, the file reference a revoke takes and gives back, the ops
 * test of the iommufd interconnect, the exporter name.
 */
import {
  DMA_BIDIRECTIONAL,
  dmaBufExport,
  dmaBufMapAttachment,
  dmaBufPut,
  symDmaBufIommufdMap,
} from "@x/dmabuf";
import { ENOMEM, EOPNOTSUPP, isKernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import { PCI_COMMAND } from "../src/pci-regs.js";
import type { VfioPciDmaBuf } from "../src/vfio-pci-dmabuf.js";
import {
  GPU,
  type Machine,
  MiB,
  PAGE,
  TestImporter,
  cfgWrite,
  createDmaBuf,
  getBuf,
  gpu,
  machine,
  catchErr,
} from "./helpers.js";

const GiB = 1n << 30n;
const UINT_MAX = 0xffffffffn;
const BUS_OFFSET = 0x1000_0000n;

/** A device with one 64-bit BAR of `size` whose bus addresses sit BUS_OFFSET above the CPU's. */
function bigBar(m: Machine, size: bigint) {
  return gpu(m, { ...GPU, bars: [{ type: "mem64", size, busOffset: BUS_OFFSET }] });
}

describe("vfio_pci_dma_buf_map: the table of dma_buf_phys_vec_to_sgt", () => {
  it("through the host bridge: CPU physical addresses, a range split in UINT_MAX-byte entries", () => {
    const m = machine();
    const { vdev, fd } = bigBar(m, 16n * GiB);
    // A PCI function on another bus reaches the BAR through the host bridge
    // (PCI_P2PDMA_MAP_THRU_HOST_BRIDGE): no bus offset applies.
    const far = m.bus.root.newBus().addDevice({ vendor: 1, device: 9 });
    const buf = getBuf(
      m,
      createDmaBuf(m, fd, 0, [
        { offset: GiB, length: 8n * GiB },
        { offset: 0n, length: PAGE },
      ]),
    );
    const imp = new TestImporter(m.kernel, buf, far);
    const sgt = buf.resv.with(() => dmaBufMapAttachment(imp.attach, DMA_BIDIRECTIONAL));
    const start = vdev.pdev.resource(0).start + GiB;
    // 8 GiB = 2 * UINT_MAX + 2: DIV_ROUND_UP gives three entries, each starting where the
    // previous one ended.
    expect(sgt.nents).toBe(4);
    expect([...sgt.dmaAddress]).toEqual([
      start,
      start + UINT_MAX,
      start + 2n * UINT_MAX,
      vdev.pdev.resource(0).start,
    ]);
    expect([...sgt.dmaLength]).toEqual([Number(UINT_MAX), Number(UINT_MAX), 2, Number(PAGE)]);
    dmaBufPut(buf);
  });

  it("a range of exactly n * UINT_MAX bytes takes n entries (DIV_ROUND_UP), none empty", () => {
    const m = machine();
    // 4096 * UINT_MAX is page aligned: the smallest such range, in a 16 TiB BAR.
    const len = 4096n * UINT_MAX;
    const { fd } = bigBar(m, 1n << 44n);
    const peer = m.bus.addDevice({ vendor: 1, device: 9 });
    const buf = getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: len }]));
    const imp = new TestImporter(m.kernel, buf, peer);
    const sgt = buf.resv.with(() => dmaBufMapAttachment(imp.attach, DMA_BIDIRECTIONAL));
    expect(sgt.nents).toBe(4096);
    expect(sgt.totalLength).toBe(len);
    expect(sgt.dmaLength.every((l) => l === Number(UINT_MAX))).toBe(true);
    dmaBufPut(buf);
  });

  it("a failed sg_alloc_table is ENOMEM and changes nothing: the next map succeeds", () => {
    const m = machine();
    const { fd } = gpu(m);
    const peer = m.bus.addDevice({ vendor: 1, device: 9 });
    const buf = getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }]));
    const imp = new TestImporter(m.kernel, buf, peer);
    const map = () =>
      m.kernel.runAs(m.libc.task, () =>
        buf.resv.with(() => dmaBufMapAttachment(imp.attach, DMA_BIDIRECTIONAL)),
      );
    const fault = m.libc.task.fault;
    fault.arm(1_000_000);
    map();
    const nth = fault.sitesHit.indexOf("sg_alloc_table") + 1;
    fault.disarm();
    expect(nth).toBeGreaterThan(0);
    fault.arm(nth);
    const err = catchErr(map);
    fault.disarm();
    expect(isKernelError(err, ENOMEM)).toBe(true);
    expect(map().totalLength).toBe(MiB);
    dmaBufPut(buf);
  });
});

describe("vfio_pci_dma_buf_move / _release: references", () => {
  it("a revoke's temporary file reference (get_file_active / fput) is given back", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const dfd = createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }]);
    const buf = getBuf(m, dfd);
    const priv = buf.priv as VfioPciDmaBuf;
    const events: string[] = [];
    const off = m.kernel.trace.on((r) => {
      if (r.name === "vfio-pci:dmabuf") {
        const d = r.data as { dev: string; state: string };
        events.push(`${d.dev} ${d.state}`);
      }
    });
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    cfgWrite(m, fd, PCI_COMMAND, 2, 2);
    off();
    expect(events).toEqual([`${vdev.pdev.name} revoked`, `${vdev.pdev.name} live`]);
    dmaBufPut(buf);
    m.libc.close(dfd);
    expect([priv.state, vdev.dmabufs.size]).toEqual(["freed", 0]);
  });

  it("release after the device closed: the zombie has no device to unlink from", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const dfd = createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }]);
    const buf = getBuf(m, dfd);
    const priv = buf.priv as VfioPciDmaBuf;
    m.libc.close(fd);
    expect(priv.state).toBe("zombie");
    const refs = vdev.registrationRefs;
    dmaBufPut(buf);
    m.libc.close(dfd);
    // vfio_pci_dma_buf_cleanup gave the registration back already; release only frees.
    expect([priv.state, vdev.registrationRefs]).toEqual(["freed", refs]);
  });
});

describe("vfio_pci_dma_buf_iommufd_map, dma_buf_export info", () => {
  it("tests the ops before reading priv: a foreign buffer is EOPNOTSUPP whatever its priv", () => {
    const m = machine();
    const foreign = dmaBufExport(m.kernel, {
      expName: "other",
      size: PAGE,
      // Shaped like a revoked single-range VFIO buffer: only the ops test refuses it first.
      priv: { revoked: true, nrRanges: 1, paddr: [0n], len: [PAGE] },
      ops: { mapDmaBuf: () => null, unmapDmaBuf: () => {}, release: () => {} },
    });
    const imp = new TestImporter(m.kernel, foreign);
    const err = catchErr(() => foreign.resv.with(() => symDmaBufIommufdMap(m.kernel, imp.attach)));
    expect(isKernelError(err, EOPNOTSUPP)).toBe(true);
    imp.detach();
    dmaBufPut(foreign);
  });

  it("the exporter name is the module's, vfio_pci (DEFINE_DMA_BUF_EXPORT_INFO: KBUILD_MODNAME)", () => {
    const m = machine();
    const { fd } = gpu(m);
    const buf = getBuf(m, createDmaBuf(m, fd, 0, [{ offset: 0n, length: MiB }]));
    expect(buf.expName).toBe("vfio_pci");
    dmaBufPut(buf);
  });
});
