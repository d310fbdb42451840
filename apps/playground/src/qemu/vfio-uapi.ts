/**
 * The part of the VFIO region-info uAPI (include/uapi/linux/vfio.h) QEMU reads and @x/vfio-pci
 * does not produce: the SPARSE_MMAP capability, which variant drivers emit and QEMU parses
 * generically (vfio_setup_region_sparse_mmaps, hw/vfio/region.c).
 */
import { decodeInfoCaps } from "@x/vfio-pci";

const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;

/** An mmap-able piece of a region, as struct vfio_region_sparse_mmap_area lists them. */
export interface MmapArea {
  readonly offset: bigint;
  readonly size: bigint;
}

/**
 * The areas of a region-info reply's SPARSE_MMAP capability (header, nr_areas @8, areas @16 of
 * {offset, size}), or undefined without one.
 */
export function sparseMmapAreas(buf: Uint8Array, capOffset: number): MmapArea[] | undefined {
  const cap = decodeInfoCaps(buf, capOffset).find((c) => c.id === VFIO_REGION_INFO_CAP_SPARSE_MMAP);
  if (!cap) return undefined;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const areas: MmapArea[] = [];
  const nr = v.getUint32(cap.offset + 8, true);
  for (let i = 0; i < nr && cap.offset + 32 + 16 * i <= buf.length; i++)
    areas.push({
      offset: v.getBigUint64(cap.offset + 16 + 16 * i, true),
      size: v.getBigUint64(cap.offset + 24 + 16 * i, true),
    });
  return areas;
}
