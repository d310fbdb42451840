import {
  ArmSmmuV3Driver,
  IommuDevice,
  type IommuDriver,
  amdIommuDriver,
  intelIommuDriver,
} from "@x/iommu-pgtable";
import { EADDRINUSE, EINVAL } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceUnbind,
} from "../src/index.js";
import { PAGE, anonBuffer, createSystem, errnoOf, snapshot } from "./ioctl-helpers.js";

const MSI_START = 0xfee00000n;
const MSI_LAST = 0xfeefffffn;

function setup(drv: (k: ReturnType<typeof createSystem>["kernel"]) => IommuDriver, name = "dev") {
  const sys = createSystem();
  const dev = new IommuDevice(name, drv(sys.kernel));
  const idev = iommufdDeviceBind(sys.ctx, dev);
  const ioas = sys.fd.ioasAlloc();
  return { sys, idev, ioas };
}

/** The holes between consecutive allowed ranges. */
function holes(ranges: { start: bigint; last: bigint }[]): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  for (let i = 1; i < ranges.length; i++)
    out.push([ranges[i - 1]!.last + 1n, ranges[i]!.start - 1n]);
  return out;
}

describe("driver reserved regions enforced by iommufd", () => {
  it("VT-d: the interrupt range is a hole in IOVA_RANGES while attached; MAP into it is EINVAL", () => {
    const { sys, idev, ioas } = setup((k) => intelIommuDriver(k));
    expect(holes(sys.fd.ioasIovaRanges(ioas).ranges)).toEqual([]);
    iommufdDeviceAttach(idev, ioas);
    expect(holes(sys.fd.ioasIovaRanges(ioas).ranges)).toEqual([[MSI_START, MSI_LAST]]);
    const buf = anonBuffer(sys.libc, 2n * PAGE);
    const before = snapshot(sys);
    for (const iova of [MSI_START, MSI_LAST + 1n - PAGE, MSI_START - PAGE]) {
      expect(
        errnoOf(() => sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 2n * PAGE, iova })),
      ).toBe(EINVAL);
    }
    expect(snapshot(sys)).toBe(before);
    // Automatic placement goes around the hole.
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: MSI_START - PAGE });
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: MSI_LAST + 1n });
    iommufdDeviceDetach(idev);
    expect(holes(sys.fd.ioasIovaRanges(ioas).ranges)).toEqual([]);
    iommufdDeviceUnbind(idev);
  });

  it("AMD-Vi: attach over a mapping in the MSI or HT range is EADDRINUSE and leaves nothing", () => {
    const { sys, idev, ioas } = setup((k) => amdIommuDriver(k));
    const buf = anonBuffer(sys.libc, PAGE);
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0xfd00001000n });
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdDeviceAttach(idev, ioas))).toBe(EADDRINUSE);
    expect(snapshot(sys)).toBe(before);
    expect(holes(sys.fd.ioasIovaRanges(ioas).ranges)).toEqual([]);
    sys.fd.unmapAll(ioas);
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: MSI_START + 0x10000n });
    expect(errnoOf(() => iommufdDeviceAttach(idev, ioas))).toBe(EADDRINUSE);
    sys.fd.unmapAll(ioas);
    iommufdDeviceAttach(idev, ioas);
    expect(holes(sys.fd.ioasIovaRanges(ioas).ranges)).toEqual([
      [MSI_START, MSI_LAST],
      [0xfd00000000n, 0xffffffffffn],
    ]);
    iommufdDeviceDetach(idev);
  });

  it("AMD-Vi without the HT range (FEATURE_HT_RANGE_IGNORE) reserves only the MSI window", () => {
    const { sys, idev, ioas } = setup((k) => amdIommuDriver(k, { htRangeIgnore: true }));
    iommufdDeviceAttach(idev, ioas);
    expect(holes(sys.fd.ioasIovaRanges(ioas).ranges)).toEqual([[MSI_START, MSI_LAST]]);
    iommufdDeviceDetach(idev);
  });

  it("an allowed range over a reserved region is EADDRINUSE either way round", () => {
    const { sys, idev, ioas } = setup((k) => intelIommuDriver(k));
    sys.fd.ioasAllowIovas(ioas, [{ start: 0xfe000000n, last: 0xfeffffffn }]);
    expect(errnoOf(() => iommufdDeviceAttach(idev, ioas))).toBe(EADDRINUSE);
    sys.fd.ioasAllowIovas(ioas, []);
    iommufdDeviceAttach(idev, ioas);
    expect(
      errnoOf(() => sys.fd.ioasAllowIovas(ioas, [{ start: 0xfe000000n, last: 0xfeffffffn }])),
    ).toBe(EADDRINUSE);
    iommufdDeviceDetach(idev);
  });

  it("VT-d RMRRs: DIRECT is reserved, DIRECT_RELAXABLE (USB) is not", () => {
    const rmrr = { start: 0x7a000000n, length: 0x20000n, devices: ["nic", "usb"] };
    const sys = createSystem();
    const drv = intelIommuDriver(sys.kernel, { rmrrs: [rmrr] });
    const nic = iommufdDeviceBind(sys.ctx, new IommuDevice("nic", drv, 0x020000));
    const usb = iommufdDeviceBind(sys.ctx, new IommuDevice("usb", drv, 0x0c0330));
    const a = sys.fd.ioasAlloc();
    const b = sys.fd.ioasAlloc();
    iommufdDeviceAttach(nic, a);
    iommufdDeviceAttach(usb, b);
    expect(holes(sys.fd.ioasIovaRanges(a).ranges)).toEqual([
      [0x7a000000n, 0x7a01ffffn],
      [MSI_START, MSI_LAST],
    ]);
    expect(holes(sys.fd.ioasIovaRanges(b).ranges)).toEqual([[MSI_START, MSI_LAST]]);
    iommufdDeviceDetach(nic);
    iommufdDeviceDetach(usb);
  });

  it("SMMUv3: the SW_MSI window 0x8000000..0x80fffff is reserved while attached", () => {
    const { sys, idev, ioas } = setup((k) => new ArmSmmuV3Driver(12, k));
    iommufdDeviceAttach(idev, ioas);
    expect(holes(sys.fd.ioasIovaRanges(ioas).ranges)).toEqual([[0x8000000n, 0x80fffffn]]);
    const buf = anonBuffer(sys.libc, PAGE);
    expect(
      errnoOf(() => sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0x80ff000n })),
    ).toBe(EINVAL);
    iommufdDeviceDetach(idev);
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: 0x80ff000n });
  });
});
