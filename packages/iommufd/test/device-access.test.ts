import { EBUSY, EINVAL, ENOENT, ENOMEM, EOVERFLOW, EPERM, KernelWarning } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_ACCESS_RW_WRITE,
  IOMMU_IOAS_MAP_READABLE,
  type IommufdAccess,
  U64_MAX,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessDestroy,
  iommufdAccessDetach,
  iommufdAccessPinPages,
  iommufdAccessReplace,
  iommufdAccessRw,
  iommufdAccessUnpinPages,
} from "../src/index.js";
import { iommufdAccessCreateInternal } from "../src/access.js";
import { getIoas } from "../src/ioas.js";
import {
  PAGE,
  anonBuffer,
  attachTestDevice,
  createSystem,
  errnoOf,
  snapshot,
} from "./ioctl-helpers.js";

/** A driver that records its pins and drops them when asked to unmap. */
function pinningDriver() {
  const pins: Array<[bigint, bigint]> = [];
  let access: IommufdAccess | undefined;
  const ops = {
    needsPinPages: true,
    unmap(iova: bigint, length: bigint) {
      for (const [i, l] of [...pins]) {
        if (i + l - 1n < iova || i > iova + length - 1n) continue;
        iommufdAccessUnpinPages(access!, i, l);
        pins.splice(pins.indexOf(pins.find((p) => p[0] === i && p[1] === l)!), 1);
      }
    },
  };
  return {
    ops,
    pins,
    bind(a: IommufdAccess) {
      access = a;
    },
  };
}

function setup(withDevice = false) {
  const sys = createSystem();
  const ioas = sys.fd.ioasAlloc();
  if (withDevice) attachTestDevice(sys, ioas);
  const buf = anonBuffer(sys.libc, 16n * PAGE);
  const iova = sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 16n * PAGE, iova: 1n << 24n });
  const drv = pinningDriver();
  const access = iommufdAccessCreate(sys.ctx, drv.ops);
  drv.bind(access);
  iommufdAccessAttach(access, ioas);
  return { sys, ioas, buf, iova, drv, access };
}

describe("in-kernel access (kselftest access_pin / access_rw)", () => {
  for (const withDevice of [false, true]) {
    const v = withDevice ? "mock_domain" : "no_domain";

    it(`${v}: pin and unpin 1..15 pages, pinning each page once however often it is asked`, () => {
      const { sys, iova, access } = setup(withDevice);
      const base = withDevice ? 16 : 0;
      for (let n = 1n; n < 16n; n++) {
        const runs = iommufdAccessPinPages(access, iova, n * PAGE, IOMMUFD_ACCESS_RW_WRITE);
        expect(runs.totalPages).toBe(Number(n));
        iommufdAccessPinPages(access, iova, n * PAGE, 0);
        expect(sys.kernel.mem.totalPinned()).toBe(withDevice ? base : Number(n));
        iommufdAccessUnpinPages(access, iova, n * PAGE);
        iommufdAccessUnpinPages(access, iova, n * PAGE);
        expect(sys.kernel.mem.totalPinned()).toBe(base);
      }
    });

    it(`${v}: rw reaches the user's memory both ways, also unaligned`, () => {
      const { sys, buf, iova, access } = setup(withDevice);
      const data = new Uint8Array(3 * Number(PAGE)).map((_, i) => i & 0xff);
      iommufdAccessRw(access, iova + 100n, data, IOMMUFD_ACCESS_RW_WRITE);
      expect(sys.libc.peek(buf + 100n, data.length)).toEqual(data);
      const back = new Uint8Array(data.length);
      iommufdAccessRw(access, iova + 100n, back, 0);
      expect(back).toEqual(data);
    });
  }

  it("errnos in order, with nothing pinned after a failure", () => {
    const { sys, ioas, buf, iova, access } = setup();
    const before = snapshot(sys);
    expect(errnoOf(() => iommufdAccessPinPages(access, iova, 0n, 0))).toBe(EINVAL);
    expect(errnoOf(() => iommufdAccessPinPages(access, U64_MAX, 2n, 0))).toBe(EOVERFLOW);
    expect(errnoOf(() => iommufdAccessPinPages(access, iova + 16n * PAGE, PAGE, 0))).toBe(ENOENT);
    expect(errnoOf(() => iommufdAccessPinPages(access, iova + 15n * PAGE, 2n * PAGE, 0))).toBe(
      ENOENT,
    );
    expect(errnoOf(() => iommufdAccessRw(access, iova, new Uint8Array(0), 0))).toBe(EINVAL);
    const ro = sys.fd.ioasMap({
      ioasId: ioas,
      userVa: buf,
      length: PAGE,
      flags: IOMMU_IOAS_MAP_READABLE,
    });
    const withRo = snapshot(sys);
    expect(errnoOf(() => iommufdAccessPinPages(access, ro, PAGE, IOMMUFD_ACCESS_RW_WRITE))).toBe(
      EPERM,
    );
    expect(
      errnoOf(() => iommufdAccessRw(access, ro, new Uint8Array(8), IOMMUFD_ACCESS_RW_WRITE)),
    ).toBe(EPERM);
    expect(snapshot(sys)).toBe(withRo);
    iommufdAccessDetach(access);
    expect(errnoOf(() => iommufdAccessPinPages(access, iova, PAGE, 0))).toBe(ENOENT);
    expect(errnoOf(() => iommufdAccessRw(access, iova, new Uint8Array(1), 0))).toBe(ENOENT);
    expect(errnoOf(() => iommufdAccessPinPages(access, iova, 0n, 0))).toBe(EINVAL);
    expect(before).toBeDefined();
  });

  it("user unmap of a pinned range asks the driver to unpin first", () => {
    const { sys, ioas, iova, access, drv } = setup();
    iommufdAccessPinPages(access, iova + PAGE, 2n * PAGE, 0);
    drv.pins.push([iova + PAGE, 2n * PAGE]);
    expect(sys.kernel.mem.totalPinned()).toBe(2);
    expect(sys.fd.ioasUnmap({ ioasId: ioas, iova, length: 16n * PAGE })).toBe(16n * PAGE);
    expect(drv.pins).toEqual([]);
    expect(sys.kernel.mem.totalPinned()).toBe(0);
  });

  it("the access holds its IOAS and its own id; replace drops the old pins; destroy detaches", () => {
    const { sys, ioas, iova, access, drv } = setup();
    expect(errnoOf(() => sys.fd.destroy(ioas))).toBe(EBUSY);
    expect(errnoOf(() => sys.fd.destroy(access.id))).toBe(EBUSY);
    iommufdAccessPinPages(access, iova, PAGE, 0);
    drv.pins.push([iova, PAGE]);
    const other = sys.fd.ioasAlloc();
    iommufdAccessReplace(access, other);
    expect(drv.pins).toEqual([]);
    expect(sys.kernel.mem.totalPinned()).toBe(0);
    sys.fd.destroy(ioas);
    expect(errnoOf(() => iommufdAccessReplace(access, 99))).toBe(ENOENT);
    iommufdAccessDestroy(access);
    expect(sys.ctx.hasObject(access.id)).toBe(false);
    sys.fd.destroy(other);
  });

  it("a pinning access forces PAGE_SIZE alignment on its IOAS", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const buf = anonBuffer(sys.libc, PAGE);
    const access = iommufdAccessCreate(sys.ctx, { needsPinPages: true, unmap: () => {} });
    iommufdAccessAttach(access, ioas);
    expect(sys.fd.ioasIovaRanges(ioas).alignment).toBe(PAGE);
    expect(errnoOf(() => sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 100n }))).toBe(EINVAL);
    iommufdAccessDetach(access);
    expect(sys.fd.ioasIovaRanges(ioas).alignment).toBe(1n);
  });
});

describe("iommufd_access attach / replace / detach edges (drivers/iommu/iommufd/device.c)", () => {
  it("attach twice WARNs and keeps the first IOAS; replace onto its own IOAS asks the driver nothing", () => {
    const { sys, ioas, iova, access, drv } = setup();
    const other = sys.fd.ioasAlloc();
    expect(() => iommufdAccessAttach(access, other)).toThrow(KernelWarning);
    expect(access.ioas?.id).toBe(ioas);
    iommufdAccessPinPages(access, iova, PAGE, 0);
    drv.pins.push([iova, PAGE]);
    iommufdAccessReplace(access, ioas);
    expect(drv.pins).toEqual([[iova, PAGE]]);
    expect(sys.kernel.mem.totalPinned()).toBe(1);
    iommufdAccessDetach(access);
    expect(drv.pins).toEqual([]);
    expect(errnoOf(() => iommufdAccessReplace(access, other))).toBe(ENOENT);
    expect(access.ioas).toBeUndefined();
  });

  it("an attach from the driver's unmap callback during a replace is EBUSY", () => {
    // iommufd_access_change_ioas: ioas is cleared while ioas_unpin still names the old IOAS.
    const sys = createSystem();
    const [a, b, c] = [sys.fd.ioasAlloc(), sys.fd.ioasAlloc(), sys.fd.ioasAlloc()];
    let inner = -1;
    const access: IommufdAccess = iommufdAccessCreate(sys.ctx, {
      needsPinPages: true,
      unmap: () => {
        inner = errnoOf(() => iommufdAccessAttach(access, c));
      },
    });
    iommufdAccessAttach(access, a);
    iommufdAccessReplace(access, b);
    expect(inner).toBe(EBUSY);
    expect(access.ioas?.id).toBe(b);
  });

  it("a replace whose iopt_add_access fails leaves the access on its old IOAS", () => {
    const { sys, ioas, iova, access } = setup();
    const other = sys.fd.ioasAlloc();
    const fault = sys.kernel.current.fault;
    fault.arm(1);
    let err: number;
    try {
      err = errnoOf(() => iommufdAccessReplace(access, other));
    } finally {
      fault.disarm();
    }
    expect(err).toBe(ENOMEM);
    expect(fault.failedSite).toBe("iommufd:access_list");
    expect(access.ioas?.id).toBe(ioas);
    expect(iommufdAccessPinPages(access, iova, PAGE, 0).totalPages).toBe(1);
    iommufdAccessUnpinPages(access, iova, PAGE);
  });

  it("pin WARNs for an access that does not pin or has no unmap; one without unmap still moves", () => {
    const sys = createSystem();
    const [a, b] = [sys.fd.ioasAlloc(), sys.fd.ioasAlloc()];
    const buf = anonBuffer(sys.libc, PAGE);
    const iova = sys.fd.ioasMap({ ioasId: a, userVa: buf, length: PAGE });
    for (const ops of [
      { needsPinPages: false },
      { needsPinPages: false, unmap: () => {} },
      { needsPinPages: true },
    ]) {
      const access = iommufdAccessCreate(sys.ctx, ops);
      iommufdAccessAttach(access, a);
      expect(() => iommufdAccessPinPages(access, iova, PAGE, 0)).toThrow(KernelWarning);
      expect(sys.kernel.mem.totalPinned()).toBe(0);
      iommufdAccessReplace(access, b);
      expect(access.ioas?.id).toBe(b);
      iommufdAccessDetach(access);
      iommufdAccessDestroy(access);
    }
  });

  it("the range is checked before the attachment: EOVERFLOW detached, a range ending at the last IOVA is not an overflow", () => {
    const { access } = setup();
    iommufdAccessDetach(access);
    expect(errnoOf(() => iommufdAccessPinPages(access, U64_MAX, 2n, 0))).toBe(EOVERFLOW);
    expect(errnoOf(() => iommufdAccessRw(access, U64_MAX, new Uint8Array(2), 0))).toBe(EOVERFLOW);
    expect(errnoOf(() => iommufdAccessPinPages(access, U64_MAX - PAGE + 1n, PAGE, 0))).toBe(ENOENT);
    expect(errnoOf(() => iommufdAccessRw(access, U64_MAX, new Uint8Array(1), 0))).toBe(ENOENT);
    expect(() => iommufdAccessUnpinPages(access, 0n, PAGE)).toThrow(KernelWarning);
  });

  it("an internal access holds its IOAS, not the iommufd file, and pins with PAGE_SIZE alignment", () => {
    // iommufd_access_create_internal: no ctx reference; destroy gives back only the IOAS.
    const sys = createSystem();
    const id = sys.fd.ioasAlloc();
    const ioas = getIoas(sys.ctx, id);
    sys.ctx.putObject(ioas);
    const users = ioas.users;
    const refs = sys.ctx.file.refcount;
    const internal = iommufdAccessCreateInternal(sys.ctx, ioas);
    expect(internal.iovaAlignment).toBe(PAGE);
    expect(internal.ioas).toBe(ioas);
    expect(ioas.users).toBe(users + 1);
    expect(sys.ctx.file.refcount).toBe(refs);
    expect(sys.fd.ioasIovaRanges(id).alignment).toBe(PAGE);
    internal.destroy();
    expect(ioas.users).toBe(users);
    expect(sys.ctx.file.refcount).toBe(refs);
    sys.fd.destroy(id);
  });

  it("a pin of the last page of the IOVA space unpins without a WARN (iova + length - 1 == U64_MAX)", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const buf = anonBuffer(sys.libc, PAGE);
    const top = U64_MAX - PAGE + 1n;
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: PAGE, iova: top });
    const access = iommufdAccessCreate(sys.ctx, { needsPinPages: true, unmap: () => {} });
    iommufdAccessAttach(access, ioas);
    expect(iommufdAccessPinPages(access, top, PAGE, 0).totalPages).toBe(1);
    iommufdAccessUnpinPages(access, top, PAGE);
    expect(sys.kernel.mem.totalPinned()).toBe(0);
    iommufdAccessDetach(access);
  });
});
