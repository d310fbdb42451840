import { IOMMU_READ, IOMMU_WRITE, IommuFault, iommuDeviceDma } from "@x/iommu-pgtable";
import { EFAULT, EINVAL, EIO, KernelError, fail } from "@x/kernel";
import { pciRoot } from "./pci.js";
import type { VfioPciCoreDevice } from "./vfio-pci-core.js";

/**
 * Devices as DMA masters. A function bound through VFIO issues reads and writes at IOVAs; its
 * IOMMU translates them through the domain attached to it (the HWPT iommufd attached; none:
 * blocked), checking presence and the IOPTE's READ / WRITE permission. The whole range is
 * translated and checked before any byte moves, so a failing DMA changes nothing. A failure is
 * recorded in the device's `dmaFaults` (the IOMMU also logs its faults on the IommuDevice) and
 * thrown as a KernelError:
 *
 * - EFAULT: IOMMU fault — blocked, not present (unmapped or revoked) or a permission miss;
 * - EIO: the transaction reached nothing that answers — bus mastering off, or a peer BAR whose
 *   device does not decode memory (an unsupported request), or no RAM / MMIO at the address.
 */

export interface DmaFault {
  readonly iova: bigint;
  readonly write: boolean;
  readonly errno: number;
  readonly reason: string;
}

declare module "@x/kernel" {
  interface TraceEvents {
    "vfio-pci:dma-fault": { dev: string; iova: bigint; write: boolean; reason: string };
  }
}

function dmaFail(
  vdev: VfioPciCoreDevice,
  iova: bigint,
  write: boolean,
  errno: number,
  reason: string,
): never {
  vdev.dmaFaults.push({ iova, write, errno, reason });
  vdev.kernel.trace.emit("vfio-pci:dma-fault", { dev: vdev.name, iova, write, reason });
  throw new KernelError(
    errno,
    `DMA ${write ? "write" : "read"} at 0x${iova.toString(16)}: ${reason}`,
  );
}

/** The physical runs of [iova, iova + len), every one checked; nothing moved yet. */
function translate(
  vdev: VfioPciCoreDevice,
  iova: bigint,
  len: number,
  write: boolean,
): Array<{ paddr: bigint; n: number }> {
  const kernel = vdev.kernel;
  if (len <= 0) fail(EINVAL, "empty DMA");
  if (!vdev.pdev.busMaster) dmaFail(vdev, iova, write, EIO, "bus mastering disabled");
  const dev = vdev.pdev.iommuDev;
  if (!dev) dmaFail(vdev, iova, write, EFAULT, "no IOMMU");
  let runs: ReturnType<typeof iommuDeviceDma>;
  try {
    runs = iommuDeviceDma(dev, iova, BigInt(len), write ? IOMMU_WRITE : IOMMU_READ);
  } catch (e) {
    if (e instanceof IommuFault) dmaFail(vdev, e.iova, write, EFAULT, e.reason);
    throw e;
  }
  const root = pciRoot(kernel);
  const ramEnd = BigInt(kernel.mem.ramPages) << 12n;
  const out: Array<{ paddr: bigint; n: number }> = [];
  for (const r of runs) {
    // A run may cross into another BAR or device: check each page-sized piece's target.
    for (let off = 0n; off < r.length; ) {
      const paddr = r.paddr + off;
      const n = Number(
        r.length - off < 4096n - (paddr % 4096n) ? r.length - off : 4096n - (paddr % 4096n),
      );
      const target = root.barAt(paddr);
      if (target && !target.dev.decodesMemory)
        dmaFail(vdev, r.iova + off, write, EIO, `${target.dev.name} does not decode memory`);
      if (!target && paddr >= ramEnd && !kernel.mem.mmioRegionAt(paddr))
        dmaFail(vdev, r.iova + off, write, EIO, "nothing at the address");
      out.push({ paddr, n });
      off += BigInt(n);
    }
  }
  return out;
}

/** The device reads `len` bytes at `iova` (RAM, or a peer's BAR). */
export function vfioPciDmaRead(vdev: VfioPciCoreDevice, iova: bigint, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let pos = 0;
  for (const { paddr, n } of translate(vdev, iova, len, false)) {
    vdev.kernel.mem.readPhys(paddr, out.subarray(pos, pos + n));
    pos += n;
  }
  return out;
}

/** The device writes `data` at `iova` (RAM, or a peer's BAR). */
export function vfioPciDmaWrite(vdev: VfioPciCoreDevice, iova: bigint, data: Uint8Array): void {
  let pos = 0;
  for (const { paddr, n } of translate(vdev, iova, data.length, true)) {
    vdev.kernel.mem.writePhys(paddr, data.subarray(pos, pos + n));
    pos += n;
  }
}
