/**
 * IOMMU_IOAS_CHANGE_PROCESS charges the new process mode by mode before anything moves; when a
 * later mode is refused (ENOMEM), the charges already taken under the earlier modes are given
 * back, so both processes' locked_vm and pinned_vm are exactly as before
 * (drivers/iommu/iommufd/ioas.c iommufd_ioas_change_process: the per-mode charge of the new mm
 * unwinds on failure before any pages object is switched).
 */
import { IommuDevice } from "@x/iommu-pgtable";
import { CAP_IPC_LOCK, ENOMEM, Kernel, Libc, RLIMIT_MEMLOCK } from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMUFD_OBJ_IOAS,
  IommufdClient,
  type IommufdIoas,
  iommu_ioas_change_process,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdInit,
} from "../src/index.js";
import { IOPT_PAGES_ACCOUNT_NONE } from "../src/accounting.js";
import { PAGE, TestIommu, memfdBuffer } from "./ioctl-helpers.js";

function charges(libc: Libc) {
  const p = libc.process;
  return { user: p.cred.user.lockedVm, locked: p.mm.lockedVm, pinned: p.mm.pinnedVm };
}

describe("IOMMU_IOAS_CHANGE_PROCESS refused part way", () => {
  for (const path of ["/dev/iommu", "/dev/vfio/vfio"] as const) {
    it(`${path}: pages of mode NONE and of the context's mode; the second charge fails, the first is returned`, () => {
      const kernel = new Kernel({ ramBytes: 1n << 34n });
      const module = iommufdInit(kernel, { vfioContainer: true });
      const libc = new Libc(kernel, kernel.newProcess(0));
      const fd = IommufdClient.open(libc, path);
      const ctx = module.ctxFromFile(libc.process.files.lookup(fd.fd));
      const iommu = new TestIommu(kernel);
      const privileged = fd.ioasAlloc();
      const plain = fd.ioasAlloc();
      for (const ioas of [privileged, plain])
        iommufdDeviceAttach(iommufdDeviceBind(ctx, new IommuDevice(`d${ioas}`, iommu)), ioas);

      // Mapped with CAP_IPC_LOCK: accounted as NONE (pinned_vm only).
      expect(libc.process.capable(CAP_IPC_LOCK)).toBe(true);
      const a = memfdBuffer(libc, 2n * PAGE);
      fd.ioasMapFile({ ioasId: privileged, fd: a.mfd, start: 0n, length: 2n * PAGE });
      libc.process.cred.caps.delete(CAP_IPC_LOCK);
      const b = memfdBuffer(libc, 8n * PAGE);
      fd.ioasMapFile({ ioasId: plain, fd: b.mfd, start: 0n, length: 8n * PAGE });
      const modes = [privileged, plain].map((id) =>
        ctx.withObject(id, IOMMUFD_OBJ_IOAS, (o) => (o as IommufdIoas).iopt.areas()[0]!.pages!),
      );
      expect(modes[0]!.accountMode).toBe(IOPT_PAGES_ACCOUNT_NONE);
      expect(modes[1]!.accountMode).not.toBe(IOPT_PAGES_ACCOUNT_NONE);

      const child = libc.fork();
      expect(child.process.capable(CAP_IPC_LOCK)).toBe(false);
      // Room for the NONE pages' pinned_vm but not for the eight charged ones.
      child.process.setRlimit(RLIMIT_MEMLOCK, 4 * 4096);
      const parentBefore = charges(libc);
      const childBefore = charges(child);
      expect(parentBefore.pinned).toBe(10);
      const r = child.ioctl(
        fd.fd,
        IOMMU_IOAS_CHANGE_PROCESS,
        iommu_ioas_change_process.encode({ size: 8 }),
      );
      expect(r).toBe(-1);
      expect(child.errno).toBe(ENOMEM);
      expect(charges(libc)).toEqual(parentBefore);
      expect(charges(child)).toEqual(childBefore);
      expect(modes.map((p) => p.sourceMm)).toEqual([libc.process.mm, libc.process.mm]);
    });
  }
});
