/** IOMMU_IOAS_CHANGE_PROCESS (kselftest change_process.basic, accounting moved to the caller). */
import { IommuDevice } from "@x/iommu-pgtable";
import { EINVAL, ENOMEM, EOPNOTSUPP, Kernel, Libc, RLIMIT_MEMLOCK } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_IOAS_CHANGE_PROCESS,
  IommufdClient,
  iommu_ioas_change_process,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdInit,
} from "../src/index.js";
import { PAGE, TestIommu, anonBuffer, memfdBuffer } from "./ioctl-helpers.js";

/** An unprivileged VMM process (uid 1000, no CAP_IPC_LOCK) with one IOAS behind a device. */
function vmm(path: "/dev/iommu" | "/dev/vfio/vfio") {
  const kernel = new Kernel({ ramBytes: 1n << 34n });
  const module = iommufdInit(kernel, { vfioContainer: true });
  const libc = new Libc(kernel, kernel.newProcess(1000));
  const fd = IommufdClient.open(libc, path);
  const ctx = module.ctxFromFile(libc.process.files.lookup(fd.fd));
  const ioas = fd.ioasAlloc();
  iommufdDeviceAttach(iommufdDeviceBind(ctx, new IommuDevice("d", new TestIommu(kernel))), ioas);
  return { kernel, libc, fd, ioas };
}

function changeProcess(libc: Libc, fd: number, reserved = 0): number {
  const r = libc.ioctl(
    fd,
    IOMMU_IOAS_CHANGE_PROCESS,
    iommu_ioas_change_process.encode({ size: 8, __reserved: reserved }),
  );
  return r < 0 ? libc.errno : 0;
}

describe("IOMMU_IOAS_CHANGE_PROCESS", () => {
  for (const [mode, path] of [
    ["user", "/dev/iommu"],
    ["mm", "/dev/vfio/vfio"],
  ] as const) {
    it(`${mode} accounting moves from the parent to the child that asks`, () => {
      const { libc, fd, ioas } = vmm(path);
      const { mfd } = memfdBuffer(libc, 8n * PAGE);
      fd.ioasMapFile({ ioasId: ioas, fd: mfd, start: 0n, length: 8n * PAGE });
      const parentMm = libc.process.mm;
      const user = libc.process.cred.user;
      expect(parentMm.pinnedVm).toBe(8);
      expect(mode === "mm" ? parentMm.lockedVm : user.lockedVm).toBe(8);
      const child = libc.fork();
      expect(changeProcess(child, fd.fd)).toBe(0);
      expect(parentMm.pinnedVm).toBe(0);
      expect(child.process.mm.pinnedVm).toBe(8);
      if (mode === "mm") {
        expect(parentMm.lockedVm).toBe(0);
        expect(child.process.mm.lockedVm).toBe(8);
      } else expect(user.lockedVm).toBe(8);
    });
  }

  it("a user-VA mapping anywhere is EINVAL, reserved EOPNOTSUPP; nothing moves", () => {
    const { libc, fd, ioas } = vmm("/dev/iommu");
    const { mfd } = memfdBuffer(libc, 4n * PAGE);
    fd.ioasMapFile({ ioasId: ioas, fd: mfd, start: 0n, length: 4n * PAGE });
    const other = fd.ioasAlloc();
    fd.ioasMap({ ioasId: other, userVa: anonBuffer(libc, PAGE), length: PAGE });
    const child = libc.fork();
    expect(changeProcess(child, fd.fd, 1)).toBe(EOPNOTSUPP);
    expect(changeProcess(child, fd.fd)).toBe(EINVAL);
    expect(libc.process.mm.pinnedVm).toBe(4);
    expect(child.process.mm.pinnedVm).toBe(0);
    fd.unmapAll(other);
    expect(changeProcess(child, fd.fd)).toBe(0);
  });

  it("a charge the new process cannot take is ENOMEM with nothing changed", () => {
    const { libc, fd, ioas } = vmm("/dev/vfio/vfio");
    const { mfd } = memfdBuffer(libc, 8n * PAGE);
    fd.ioasMapFile({ ioasId: ioas, fd: mfd, start: 0n, length: 8n * PAGE });
    const child = libc.fork();
    child.process.setRlimit(RLIMIT_MEMLOCK, 4 * 4096);
    expect(changeProcess(child, fd.fd)).toBe(ENOMEM);
    expect(libc.process.mm.pinnedVm).toBe(8);
    expect(libc.process.mm.lockedVm).toBe(8);
    expect(child.process.mm.pinnedVm).toBe(0);
    expect(child.process.mm.lockedVm).toBe(0);
    // The owner asking for itself: its pages need no charge update, so nothing moves.
    fd.ioasChangeProcess();
    expect(libc.process.mm.pinnedVm).toBe(8);
    expect(libc.process.mm.lockedVm).toBe(8);
  });

  for (const [mode, path] of [
    ["user", "/dev/iommu"],
    ["mm", "/dev/vfio/vfio"],
  ] as const) {
    it(`${mode} accounting: the process that already pays asks at its limit and succeeds (need_charge_update)`, () => {
      const { libc, fd, ioas } = vmm(path);
      libc.process.setRlimit(RLIMIT_MEMLOCK, 8 * 4096);
      const { mfd } = memfdBuffer(libc, 8n * PAGE);
      fd.ioasMapFile({ ioasId: ioas, fd: mfd, start: 0n, length: 8n * PAGE });
      const locked = () =>
        mode === "mm" ? libc.process.mm.lockedVm : libc.process.cred.user.lockedVm;
      expect([libc.process.mm.pinnedVm, locked()]).toEqual([8, 8]);
      // Charging the 8 pages again would pass RLIMIT_MEMLOCK; the kernel charges nothing here.
      expect(changeProcess(libc, fd.fd)).toBe(0);
      expect([libc.process.mm.pinnedVm, locked()]).toEqual([8, 8]);
      fd.unmapAll(ioas);
      expect([libc.process.mm.pinnedVm, locked()]).toEqual([0, 0]);
    });
  }
});
