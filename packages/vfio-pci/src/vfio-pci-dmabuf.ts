import {
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufOps,
  type PhysVec,
  SgTable,
  dmaBufExport,
  dmaBufFd,
  dmaBufMoveNotify,
  dmaBufPut,
} from "@x/dmabuf";
import {
  EINVAL,
  ENODEV,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
  type Kernel,
  PAGE_SIZE,
  copyFromUser,
  fail,
  U64_MAX,
  memdupArrayUser,
} from "@x/kernel";
import { pciP2pdmaMapType } from "./p2pdma.js";
import {
  PCI_P2PDMA_MAP_BUS_ADDR,
  PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
  type P2pdmaProvider,
} from "./pci-p2pdma.js";
import type { VfioPciCoreDevice } from "./vfio-pci-core.js";
import {
  VFIO_DEVICE_FEATURE_DMA_BUF_SIZE,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_PCI_ROM_REGION_INDEX,
  vfio_device_feature_dma_buf,
  vfio_region_dma_range,
} from "./vfio-uapi.js";
import { vfioCheckFeature } from "./vfio-main.js";

/**
 * The DMA_BUF exporter: slices of a BAR shared as a revocable dma-buf.
 *
 * States of one exporter object (`VfioPciDmaBuf.state`):
 * - LIVE: on the device list, `vdev` set, not revoked. Attach and map succeed.
 * - REVOKED: on the list, revoked. Attach, map and the iommufd map fail with ENODEV.
 * - ZOMBIE: taken off the list at device close (`vdev` cleared, revoked for good).
 * - DYING: the file's last reference is gone and release has not unlinked it yet; move and
 *   cleanup skip it.
 * - FREED: release ran.
 *
 * Transitions: creation → LIVE or REVOKED by the current memory-enable state (no notification);
 * LIVE ↔ REVOKED by `vfioPciDmaBufMove`, one `move_notify` per object whose state changes;
 * LIVE / REVOKED → ZOMBIE by `vfioPciDmaBufCleanup` with one `move_notify` even if already
 * revoked; any → DYING → FREED on the last file put (release unlinks if still linked and drops
 * the registration reference). Exactly one of cleanup and release unlinks and drops the
 * registration.
 *
 * Lock order: `memory_lock` (write) → dma-buf reservation lock. `revoked` is written with both
 * held. Importer `move_notify` callbacks run under both.
 */

type VfioPciDmaBufState = "live" | "revoked" | "zombie" | "dying" | "freed";

/** struct vfio_pci_dma_buf: the exporter's private data behind one dma-buf. */
export class VfioPciDmaBuf {
  /** Set right after export; the object is unreachable before. */
  dmabuf!: DmaBuf;
  vdev: VfioPciCoreDevice | undefined;
  /** phys_vec as two parallel arrays: CPU-physical start and length of each range. */
  readonly paddr: BigUint64Array;
  readonly len: BigUint64Array;
  /** The BAR's P2P provider, set when the ranges are filled. */
  provider!: P2pdmaProvider;
  revoked = false;
  freed = false;

  constructor(
    vdev: VfioPciCoreDevice,
    readonly nrRanges: number,
    readonly size: bigint,
  ) {
    this.vdev = vdev;
    this.paddr = new BigUint64Array(nrRanges);
    this.len = new BigUint64Array(nrRanges);
  }

  get state(): VfioPciDmaBufState {
    if (this.freed) return "freed";
    if (this.dmabuf.file.released) return "dying";
    if (!this.vdev) return "zombie";
    return this.revoked ? "revoked" : "live";
  }
}

/**
 * The sg-table for a non-iommufd importer: P2P reachability is decided here, at map time, not at
 * export or attach. One entry per range, split at UINT_MAX bytes; bus addresses for a peer below
 * the bridge, CPU physical addresses through the host bridge.
 * @see dma_buf_phys_vec_to_sgt
 */
function physVecToSgt(priv: VfioPciDmaBuf, attach: DmaBufAttachment): SgTable {
  const type = pciP2pdmaMapType(priv.provider, attach.dev);
  if (type !== PCI_P2PDMA_MAP_BUS_ADDR && type !== PCI_P2PDMA_MAP_THRU_HOST_BRIDGE)
    fail(EINVAL, "importer cannot reach the BAR peer to peer");
  const offset = type === PCI_P2PDMA_MAP_BUS_ADDR ? priv.provider.busOffset : 0n;
  const UINT_MAX = 0xffffffffn;
  let nents = 0;
  for (let i = 0; i < priv.nrRanges; i++)
    nents += Number((priv.len[i]! + UINT_MAX - 1n) / UINT_MAX);
  if (attach.dmabuf.kernel.shouldFail("sg_alloc_table")) fail(ENOMEM, "sg table");
  const sgt = new SgTable(nents);
  let e = 0;
  for (let i = 0; i < priv.nrRanges; i++) {
    let addr = priv.paddr[i]! + offset;
    let left = priv.len[i]!;
    while (left > 0n) {
      const n = left < UINT_MAX ? left : UINT_MAX;
      sgt.dmaAddress[e] = addr;
      sgt.dmaLength[e] = Number(n);
      e++;
      addr += n;
      left -= n;
    }
  }
  return sgt;
}

/** The ops table; its identity is how the iommufd map recognises VFIO's buffers. */
export const vfioPciDmaBufOps: DmaBufOps = {
  /** Advisory: a revoke may slip in before the attachment is linked; map re-checks. */
  attach(dmabuf, attach) {
    const priv = dmabuf.priv as VfioPciDmaBuf;
    if (!attach.peer2peer) fail(EOPNOTSUPP, "importer cannot take peer-to-peer MMIO");
    if (priv.revoked) fail(ENODEV, "dma-buf is revoked");
  },
  mapDmaBuf(attach) {
    const priv = attach.dmabuf.priv as VfioPciDmaBuf;
    attach.dmabuf.resv.assertHeld();
    if (priv.revoked) fail(ENODEV, "dma-buf is revoked");
    return physVecToSgt(priv, attach);
  },
  unmapDmaBuf() {
    // The table holds no IOVA or pages of its own: nothing to give back.
  },
  release(dmabuf) {
    const priv = dmabuf.priv as VfioPciDmaBuf;
    const vdev = priv.vdev;
    if (vdev) {
      vdev.memoryLock.withWrite(() => {
        vdev.dmabufs.delete(priv);
        priv.vdev = undefined;
      });
      vdev.putRegistration();
    }
    priv.freed = true;
  },
};

/** get_file_active: a temporary reference, unless the file is already dying. */
function getFileActive(priv: VfioPciDmaBuf): boolean {
  if (priv.dmabuf.file.released) return false;
  priv.dmabuf.file.get();
  return true;
}

/**
 * Set every dma-buf of the device to `revoked`, notifying the importers of each one that
 * changes. Caller holds `memory_lock` for write.
 * @see vfio_pci_dma_buf_move
 */
export function vfioPciDmaBufMove(vdev: VfioPciCoreDevice, revoked: boolean): void {
  vdev.memoryLock.assertHeldWrite();
  for (const priv of [...vdev.dmabufs]) {
    if (!getFileActive(priv)) continue;
    try {
      if (priv.revoked !== revoked) {
        priv.dmabuf.resv.with(() => {
          priv.revoked = revoked;
          dmaBufMoveNotify(priv.dmabuf);
        });
        vdev.pdev.kernel.trace.emit("vfio-pci:dmabuf", { dev: vdev.pdev.name, state: priv.state });
      }
    } finally {
      // Decision: the file layer is synchronous, so this put could release; with memory_lock
      // held that would self-deadlock and lockdep reports it. Importers never drop the last
      // reference from move_notify, so it does not happen.
      priv.dmabuf.file.put();
    }
  }
}

/**
 * At device close: every dma-buf of the device becomes a zombie, with one final notification,
 * and gives back its registration reference.
 * @see vfio_pci_dma_buf_cleanup
 */
export function vfioPciDmaBufCleanup(vdev: VfioPciCoreDevice): void {
  const dropped: VfioPciDmaBuf[] = [];
  vdev.memoryLock.withWrite(() => {
    for (const priv of [...vdev.dmabufs]) {
      if (!getFileActive(priv)) continue;
      priv.dmabuf.resv.with(() => {
        vdev.dmabufs.delete(priv);
        priv.vdev = undefined;
        priv.revoked = true;
        dmaBufMoveNotify(priv.dmabuf);
      });
      vdev.pdev.kernel.trace.emit("vfio-pci:dmabuf", { dev: vdev.pdev.name, state: "zombie" });
      vdev.putRegistration();
      dropped.push(priv);
    }
  });
  // Outside memory_lock, like the deferred fput: a last put here only frees (vdev is cleared).
  for (const priv of dropped) priv.dmabuf.file.put();
}

/**
 * The private interconnect for iommufd: the single physical range of a live VFIO dma-buf.
 * Caller holds the reservation lock.
 * @see vfio_pci_dma_buf_iommufd_map
 */
export function vfioPciDmaBufIommufdMap(attach: DmaBufAttachment): PhysVec {
  const dmabuf = attach.dmabuf;
  dmabuf.resv.assertHeld();
  if (dmabuf.ops !== vfioPciDmaBufOps) fail(EOPNOTSUPP, "not a VFIO dma-buf");
  const priv = dmabuf.priv as VfioPciDmaBuf;
  if (priv.revoked) fail(ENODEV, "dma-buf is revoked");
  if (priv.nrRanges !== 1) fail(EOPNOTSUPP, "iommufd takes single-range dma-bufs only");
  return { paddr: priv.paddr[0]!, len: priv.len[0]! };
}

const PAGE = BigInt(PAGE_SIZE);

/**
 * Fill the ranges from the BAR: EINVAL without a P2P provider (not a memory BAR), EOVERFLOW
 * when start + offset (+ length) wraps, EINVAL past the end of the BAR.
 * @see vfio_pci_core_get_dmabuf_phys
 */
function vfioPciCoreGetDmabufPhys(
  vdev: VfioPciCoreDevice,
  regionIndex: number,
  offsets: BigUint64Array,
  lengths: BigUint64Array,
  priv: VfioPciDmaBuf,
): void {
  const provider = vdev.pdev.p2pProviders[regionIndex];
  if (!provider) fail(EINVAL, `BAR${regionIndex} has no P2P provider`);
  const r = vdev.pdev.resource(regionIndex);
  const max = r.start + r.len;
  for (let i = 0; i < offsets.length; i++) {
    const paddr = r.start + offsets[i]!;
    const end = paddr + lengths[i]!;
    if (paddr > U64_MAX || end > U64_MAX) fail(EOVERFLOW, `range ${i} wraps`);
    if (end > max) fail(EINVAL, `range ${i} ends past BAR${regionIndex}`);
    priv.paddr[i] = paddr;
    priv.len[i] = lengths[i]!;
  }
  priv.provider = provider;
}

/** The per-driver hook behind DMA_BUF (struct vfio_pci_device_ops). */
export interface VfioPciDeviceOps {
  getDmabufPhys: typeof vfioPciCoreGetDmabufPhys;
}

export const vfioPciDefaultOps: VfioPciDeviceOps = { getDmabufPhys: vfioPciCoreGetDmabufPhys };

/**
 * VFIO_DEVICE_FEATURE_DMA_BUF: `arg` is the user address of the payload, `argsz` its size.
 * Returns 0 for a probe, else the new dma-buf's fd.
 * @see vfio_pci_core_feature_dma_buf
 */
export function vfioPciCoreFeatureDmaBuf(
  vdev: VfioPciCoreDevice,
  flags: number,
  arg: bigint,
  argsz: number,
): number {
  const kernel: Kernel = vdev.pdev.kernel;
  const ops = vdev.pciOps;
  if (!ops?.getDmabufPhys) fail(EOPNOTSUPP, "driver cannot export dma-bufs");
  if (
    vfioCheckFeature(flags, argsz, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_DMA_BUF_SIZE) === 0
  )
    return 0;
  const hdr = vfio_device_feature_dma_buf.decode(
    copyFromUser(kernel, arg, vfio_device_feature_dma_buf.size),
  );
  const { region_index: regionIndex, open_flags: openFlags, flags: dmaFlags } = hdr;
  const nrRanges = hdr.nr_ranges;
  if (nrRanges === 0 || dmaFlags !== 0) fail(EINVAL, "nr_ranges 0 or flags set");
  if (regionIndex >= VFIO_PCI_ROM_REGION_INDEX) fail(ENODEV, `region ${regionIndex} is not a BAR`);

  // OBSERVATION kept: argsz is not checked against nr_ranges; the array is read from user memory
  // after the header whatever argsz says.
  const raw = memdupArrayUser(
    kernel,
    arg + BigInt(vfio_device_feature_dma_buf.size),
    nrRanges,
    vfio_region_dma_range.size,
  );
  const offsets = new BigUint64Array(nrRanges);
  const lengths = new BigUint64Array(nrRanges);
  let total = 0n;
  for (let i = 0; i < nrRanges; i++) {
    const { offset: off, length: len } = vfio_region_dma_range.decode(
      raw.subarray(vfio_region_dma_range.size * i),
    );
    if (len === 0n || off % PAGE !== 0n || len % PAGE !== 0n)
      fail(EINVAL, `range ${i} empty or unaligned`);
    total += len;
    if (total > U64_MAX) fail(EINVAL, "total length overflows size_t");
    offsets[i] = off;
    lengths[i] = len;
  }
  // DMA_IOVA_USE_SWIOTLB is bit 63 of a DMA IOVA size: such a size is refused outright.
  if (total & (1n << 63n)) fail(EINVAL, "total length has bit 63 set");

  if (kernel.shouldFail("vfio_pci_dma_buf alloc")) fail(ENOMEM, "exporter object");
  const priv = new VfioPciDmaBuf(vdev, nrRanges, total);
  ops.getDmabufPhys(vdev, regionIndex, offsets, lengths, priv);
  // Unreachable from user space (the caller's device fd holds a registration reference); kept
  // for drivers calling in while the device unregisters.
  if (!vdev.tryGetRegistration()) fail(ENODEV, "device is being unregistered");
  try {
    priv.dmabuf = dmaBufExport(kernel, {
      expName: "vfio_pci",
      ops: vfioPciDmaBufOps,
      size: total,
      flags: openFlags,
      priv,
    });
  } catch (e) {
    vdev.putRegistration();
    throw e;
  }

  vdev.memoryLock.withWrite(() =>
    priv.dmabuf.resv.with(() => {
      priv.revoked = !vdev.memoryEnabled();
      vdev.dmabufs.add(priv);
    }),
  );
  try {
    return dmaBufFd(kernel, priv.dmabuf, openFlags);
  } catch (e) {
    // The release op undoes the linking and the registration: nothing else to free.
    dmaBufPut(priv.dmabuf);
    throw e;
  }
}

declare module "@x/kernel" {
  interface TraceEvents {
    "vfio-pci:dmabuf": { dev: string; state: VfioPciDmaBufState };
  }
}
