/**
 * fail-nth sweeps (iommufd_fail_nth.c): arm the N-th injectable point of the calling task for
 * N = 1, 2, … until an operation runs past all of them; every injected failure must leave the
 * machine exactly as before (objects, areas, IOPTEs, pins, accounting), and closing everything
 * afterwards must leave nothing pinned.
 */
import { IommuDevice } from "@x/iommu-pgtable";
import { KernelError } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_ACCESS_RW_WRITE,
  IommufdAccess,
  IommufdDevice,
  IommufdIoas,
  iommufdAccessDestroy,
  iommufdDeviceDetach,
  iommufdDeviceUnbind,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessPinPages,
  iommufdAccessUnpinPages,
  iommufdDeviceAttach,
  iommufdDeviceBind,
} from "../src/index.js";
import { checkInvariants, totalNpinned } from "../src/testing.js";
import {
  MOCK_APERTURE,
  PAGE,
  type TestSystem,
  anonBuffer,
  attachTestDevice,
  createSystem,
  memfdBuffer,
  snapshot,
} from "./ioctl-helpers.js";

interface Case {
  sys: TestSystem;
  op: () => void;
}

function ioasesOf(sys: TestSystem): IommufdIoas[] {
  return [...sys.ctx.objectsInOrder()].filter((o): o is IommufdIoas => o instanceof IommufdIoas);
}

/** Unbind devices, destroy accesses, close the file: nothing may stay pinned or allocated. */
function release(sys: TestSystem): void {
  for (const obj of [...sys.ctx.objectsInOrder()]) {
    if (obj instanceof IommufdDevice) {
      if (obj.hwpt) iommufdDeviceDetach(obj);
      iommufdDeviceUnbind(obj);
    } else if (obj instanceof IommufdAccess) iommufdAccessDestroy(obj);
  }
  sys.fd.close();
  expect(sys.ctx.objectCount).toBe(0);
  expect(sys.kernel.mem.totalPinned()).toBe(0);
  expect(sys.libc.process.cred.user.lockedVm).toBe(0);
}

/** Run `make` fresh for each N; returns how many injection points the operation has. */
function sweep(make: () => Case): number {
  for (let n = 1; n < 500; n++) {
    const { sys, op } = make();
    const before = snapshot(sys);
    const fault = sys.kernel.current.fault;
    fault.arm(n);
    let failed = false;
    try {
      op();
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      failed = true;
    } finally {
      fault.disarm();
    }
    const pages = checkInvariants(ioasesOf(sys).map((i) => i.iopt));
    expect(totalNpinned(pages)).toBe(sys.kernel.mem.totalPinned());
    if (failed) expect(snapshot(sys)).toBe(before);
    release(sys);
    if (!failed) return n - 1;
  }
  throw new Error("operation never completed");
}

/** An IOAS with a device attached (a filled mock domain) and user memory. */
function withDomain() {
  const sys = createSystem();
  const ioas = sys.fd.ioasAlloc();
  attachTestDevice(sys, ioas);
  const buf = anonBuffer(sys.libc, 64n * PAGE);
  return { sys, ioas, buf };
}

describe("fail-nth sweeps", () => {
  it("IOMMU_IOAS_MAP into a domain", () => {
    const points = sweep(() => {
      const { sys, ioas, buf } = withDomain();
      return { sys, op: () => sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 16n * PAGE }) };
    });
    expect(points).toBeGreaterThan(2);
  });

  it("IOMMU_IOAS_MAP_FILE of a memfd into a domain", () => {
    const points = sweep(() => {
      const { sys, ioas } = withDomain();
      const { mfd } = memfdBuffer(sys.libc, 16n * PAGE);
      return {
        sys,
        op: () => sys.fd.ioasMapFile({ ioasId: ioas, fd: mfd, start: 0n, length: 16n * PAGE }),
      };
    });
    expect(points).toBeGreaterThan(2);
  });

  it("IOMMU_IOAS_COPY into an IOAS with a domain", () => {
    const points = sweep(() => {
      const sys = createSystem();
      const src = sys.fd.ioasAlloc();
      const buf = anonBuffer(sys.libc, 8n * PAGE);
      const iova = sys.fd.ioasMap({ ioasId: src, userVa: buf, length: 8n * PAGE });
      const dst = sys.fd.ioasAlloc();
      attachTestDevice(sys, dst);
      return {
        sys,
        op: () =>
          sys.fd.ioasCopy({ srcIoasId: src, dstIoasId: dst, srcIova: iova, length: 8n * PAGE }),
      };
    });
    expect(points).toBeGreaterThan(2);
  });

  it("device attach to an IOAS with areas (domain alloc and fill)", () => {
    const points = sweep(() => {
      const sys = createSystem();
      const ioas = sys.fd.ioasAlloc();
      const buf = anonBuffer(sys.libc, 16n * PAGE);
      sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 8n * PAGE, iova: MOCK_APERTURE[0] });
      sys.fd.ioasMap({
        ioasId: ioas,
        userVa: buf,
        length: 8n * PAGE,
        iova: MOCK_APERTURE[0] + 0x100000n,
      });
      const idev = iommufdDeviceBind(sys.ctx, new IommuDevice("d", sys.iommu));
      return { sys, op: () => iommufdDeviceAttach(idev, ioas) };
    });
    expect(points).toBeGreaterThan(2);
  });

  it("IOMMU_HWPT_ALLOC on an IOAS with areas", () => {
    sweep(() => {
      const { sys, ioas, buf } = withDomain();
      sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 8n * PAGE });
      const devId = [...sys.ctx.objectsInOrder()].find((o) => o.type === 1)!.id;
      return { sys, op: () => sys.fd.hwptAlloc({ devId, ptId: ioas }) };
    });
  });

  it("access pin, with and without a domain holding the pages", () => {
    for (const domain of [false, true]) {
      const points = sweep(() => {
        const sys = createSystem();
        const ioas = sys.fd.ioasAlloc();
        if (domain) attachTestDevice(sys, ioas);
        const buf = anonBuffer(sys.libc, 16n * PAGE);
        const iova = sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 16n * PAGE });
        // The driver drops its one pin when asked to, as a driver must.
        let pinned = false;
        const access = iommufdAccessCreate(sys.ctx, {
          needsPinPages: true,
          unmap: () => {
            if (pinned) iommufdAccessUnpinPages(access, iova, 16n * PAGE);
            pinned = false;
          },
        });
        iommufdAccessAttach(access, ioas);
        const op = () => {
          iommufdAccessPinPages(access, iova, 16n * PAGE, IOMMUFD_ACCESS_RW_WRITE);
          pinned = true;
        };
        return { sys, op };
      });
      expect(points).toBeGreaterThan(0);
    }
  });

  it("IOMMU_IOAS_ALLOC", () => {
    expect(
      sweep(() => {
        const sys = createSystem();
        return { sys, op: () => sys.fd.ioasAlloc() };
      }),
    ).toBeGreaterThan(0);
  });
});
