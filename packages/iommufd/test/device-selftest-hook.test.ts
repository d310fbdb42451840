/**
 * The selftest hook: a mock device bound from inside the context (owned by a SELFTEST object,
 * like IOMMU_TEST_OP_MOCK_DOMAIN) must not keep the iommufd file alive, so closing the fd
 * destroys the selftest object, which detaches and unbinds the device.
 */
import { IommuDevice } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_OBJ_SELFTEST,
  IOMMU_TEST_CMD,
  type IommufdCtx,
  type IommufdDevice,
  IommufdObject,
  iommu_test_cmd,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceUnbind,
  ucmdRespond,
} from "../src/index.js";
import { anonBuffer, createSystem, rawIoctl } from "./ioctl-helpers.js";

class MockDev extends IommuDevice {}

class SelftestObj extends IommufdObject {
  readonly type = IOMMUFD_OBJ_SELFTEST;
  idev: IommufdDevice | undefined;
  constructor(readonly ctx: IommufdCtx) {
    super();
  }
  destroy(): void {
    if (!this.idev) return;
    iommufdDeviceDetach(this.idev);
    iommufdDeviceUnbind(this.idev);
  }
}

describe("registerTestCmd", () => {
  it("mock devices bound by a test op do not hold the file; close releases everything", () => {
    const sys = createSystem();
    sys.module.registerTestCmd(
      (ucmd) => {
        // A MOCK_DOMAIN-like op: a selftest object owning a bound, attached mock device.
        const sobj = ucmd.ctx.objectAlloc(new SelftestObj(ucmd.ctx));
        sobj.idev = iommufdDeviceBind(ucmd.ctx, new MockDev("mock", sys.iommu));
        iommufdDeviceAttach(sobj.idev, ucmd.cmd.id);
        ucmd.ctx.objectFinalize(sobj);
        ucmd.cmd.last = sobj.id;
        ucmdRespond(ucmd);
        return 0;
      },
      { isMockDev: (dev) => dev instanceof MockDev },
    );
    const ioas = sys.fd.ioasAlloc();
    const buf = anonBuffer(sys.libc, 4096n);
    sys.fd.ioasMap({ ioasId: ioas, userVa: buf, length: 4096n, iova: 1n << 24n });
    const r = rawIoctl(sys, IOMMU_TEST_CMD, iommu_test_cmd.encode({ size: 72, op: 2, id: ioas }));
    expect(r.ret).toBe(0);
    expect(sys.kernel.mem.totalPinned()).toBe(1);
    expect(sys.ctx.file.refcount).toBe(1); // only the fd table's
    sys.fd.close();
    expect(sys.ctx.objectCount).toBe(0);
    expect(sys.kernel.mem.totalPinned()).toBe(0);
    expect([...sys.module.contexts()]).toEqual([]);
  });

  it("other devices hold the file: the context lives on after close until unbind", () => {
    const sys = createSystem();
    const ioas = sys.fd.ioasAlloc();
    const idev = iommufdDeviceBind(sys.ctx, new IommuDevice("nic", sys.iommu));
    iommufdDeviceAttach(idev, ioas);
    sys.fd.close();
    expect([...sys.module.contexts()]).toEqual([sys.ctx]);
    iommufdDeviceDetach(idev);
    iommufdDeviceUnbind(idev);
    expect([...sys.module.contexts()]).toEqual([]);
    expect(sys.ctx.objectCount).toBe(0);
  });
});
