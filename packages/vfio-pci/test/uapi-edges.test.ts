/**
 * The edges of the variable-length VFIO decoders and encoders (include/uapi/linux/vfio.h): a
 * capability chain that leaves the buffer or loops, a sparse-mmap capability whose nr_areas
 * exceeds the areas the buffer holds, an id the decoder does not know, vfio_irq_set data bounded by `count` and by the payload, and a
 * vfio_pci_hot_reset_info whose `count` exceeds the room for devices (the kernel's
 * vfio_pci_ioctl_get_pci_hot_reset_info reports the count with ENOSPC and copies no devices).
 */
import { describe, expect, it } from "vitest";
import {
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_FLAG_CAPS,
  decodeHotResetInfo,
  decodeInfoCaps,
  decodeIrqSet,
  decodeRegionInfo,
  encodeIrqSet,
  encodePciHotReset,
  vfio_irq_set,
} from "../src/index.js";

/** A 32-byte vfio_region_info with FLAG_CAPS and its chain at 32, in a buffer of `len` bytes. */
function regionInfo(len: number): { b: Uint8Array; v: DataView } {
  const b = new Uint8Array(len);
  const v = new DataView(b.buffer);
  v.setUint32(0, len, true);
  v.setUint32(4, VFIO_REGION_INFO_FLAG_CAPS, true);
  v.setUint32(12, 32, true);
  v.setBigUint64(16, 0x4000n, true);
  return { b, v };
}

/** A capability header (vfio_info_cap_header: id u16, version u16, next u32) at `off`. */
function cap(v: DataView, off: number, id: number, next: number): void {
  v.setUint16(off, id, true);
  v.setUint16(off + 2, 1, true);
  v.setUint32(off + 4, next, true);
}

describe("capability chains (vfio_info_cap_header)", () => {
  it("a `next` whose header would end past the buffer is a RangeError naming it", () => {
    const { b, v } = regionInfo(48);
    cap(v, 32, 4, 44); // 44 + 8 > 48
    expect(() => decodeInfoCaps(b, 32)).toThrow(/leaves the buffer at 44$/);
    cap(v, 32, 4, 40); // 40 + 8 == 48: a header that ends at the buffer's end is read
    cap(v, 40, 5, 0);
    expect(decodeInfoCaps(b, 32)).toEqual([
      { id: 4, version: 1, offset: 32 },
      { id: 5, version: 1, offset: 40 },
    ]);
  });

  it("a chain that loops is a RangeError, not an endless walk", () => {
    const { b, v } = regionInfo(40);
    cap(v, 32, 4, 32);
    expect(() => decodeInfoCaps(b, 32)).toThrow(RangeError);
  });

  it("ids the decoder does not know (NVLINK2 SSATGT 4, LNKSPD 5) are skipped, not MSIX_MAPPABLE", () => {
    const { b, v } = regionInfo(48);
    cap(v, 32, 4, 40);
    cap(v, 40, 5, 0);
    expect(decodeRegionInfo(b)).toEqual({
      flags: VFIO_REGION_INFO_FLAG_CAPS,
      index: 0,
      size: 0x4000n,
      offset: 0n,
      msixMappable: false,
    });
  });

  it("sparse mmap: only the areas the buffer holds are read, however large nr_areas is", () => {
    // Header 16 at 32, then room for two 16-byte areas (48 and 64) before the end at 80.
    const { b, v } = regionInfo(80);
    cap(v, 32, VFIO_REGION_INFO_CAP_SPARSE_MMAP, 0);
    v.setUint32(40, 3, true);
    v.setBigUint64(48, 0n, true);
    v.setBigUint64(56, 0x1000n, true);
    v.setBigUint64(64, 0x2000n, true);
    v.setBigUint64(72, 0x2000n, true);
    expect(decodeRegionInfo(b).sparseMmap).toEqual([
      { offset: 0n, size: 0x1000n },
      { offset: 0x2000n, size: 0x2000n },
    ]);
    v.setUint32(40, 1, true);
    expect(decodeRegionInfo(b).sparseMmap).toEqual([{ offset: 0n, size: 0x1000n }]);
  });
});

describe("vfio_irq_set data[] bounded by count and by argsz", () => {
  it("eventfds: `count` entries when the payload holds more, the payload's when it holds fewer", () => {
    const flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    const three = encodeIrqSet({ flags, index: 2, count: 1, data: [5, 6, 7] });
    expect(three.length).toBe(32);
    expect(decodeIrqSet(three).data).toEqual([5]);
    const one = encodeIrqSet({ flags, index: 2, count: 3, data: [5] });
    expect(one.length).toBe(24);
    expect(decodeIrqSet(one).data).toEqual([5]);
    // No data given: the header alone, argsz 20.
    const none = encodeIrqSet({ flags, index: 2, count: 0 });
    expect(none.length).toBe(20);
    expect(vfio_irq_set.decode(none).argsz).toBe(20);
  });

  it("bools: `count` bytes when the payload holds more, the payload's when it holds fewer", () => {
    const flags = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
    expect(decodeIrqSet(encodeIrqSet({ flags, index: 0, count: 1, data: [1, 0, 1] })).data).toEqual(
      [1],
    );
    expect(decodeIrqSet(encodeIrqSet({ flags, index: 0, count: 3, data: [1, 0] })).data).toEqual([
      1, 0,
    ]);
  });

  it("DATA_NONE carries no data even when bytes follow the header", () => {
    const b = new Uint8Array(24).fill(1);
    vfio_irq_set.encode(
      {
        argsz: 24,
        flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
        index: 0,
        start: 0,
        count: 4,
      },
      b,
    );
    expect(decodeIrqSet(b).data).toEqual([]);
  });
});

describe("VFIO_DEVICE_PCI_HOT_RESET and GET_PCI_HOT_RESET_INFO buffers", () => {
  it("the flags given are encoded", () => {
    expect(new DataView(encodePciHotReset({ flags: 1 }).buffer).getUint32(4, true)).toBe(1);
  });

  it("vfio_pci_hot_reset_info: devices at 12 + 8 i, as many as both count and the buffer allow", () => {
    const b = new Uint8Array(12 + 3 * 8);
    const v = new DataView(b.buffer);
    v.setUint32(0, b.length, true);
    v.setUint32(4, 1, true);
    v.setUint32(8, 3, true);
    for (let i = 0; i < 3; i++) {
      v.setUint32(12 + 8 * i, 10 + i, true);
      b[18 + 8 * i] = i + 1;
      b[19 + 8 * i] = 8 * i;
    }
    const all = [0, 1, 2].map((i) => ({ devid: 10 + i, segment: 0, bus: i + 1, devfn: 8 * i }));
    expect(decodeHotResetInfo(b)).toEqual({ flags: 1, count: 3, devices: all });
    // count 3 with room for two (the caller's argsz was too small): two read, count kept.
    expect(decodeHotResetInfo(b.subarray(0, 28))).toEqual({
      flags: 1,
      count: 3,
      devices: all.slice(0, 2),
    });
    // count 1 in a buffer with room for three: one read.
    v.setUint32(8, 1, true);
    expect(decodeHotResetInfo(b).devices).toEqual(all.slice(0, 1));
  });
});
