import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDriver,
  amdIommuDriver,
  intelIommuDriver,
  iommuMap,
} from "@x/iommu-pgtable";
import {
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_IOAS_MAP_READABLE,
  IommufdClient,
  iommufdInit,
} from "@x/iommufd";
import type { DmaBuf } from "@x/dmabuf";
import {
  E2BIG,
  EEXIST,
  EFAULT,
  EINVAL,
  EIO,
  ENODEV,
  ENOENT,
  EOPNOTSUPP,
  type File,
  Kernel,
  KernelError,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  O_RDWR,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  isKernelError,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import { pciRoot } from "../src/pci.js";
import { vfioPciDmaRead, vfioPciDmaWrite } from "../src/pci-dma.js";
import { PCI_COMMAND } from "../src/pci-regs.js";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_PASID,
  VFIO_DEVICE_BIND_FLAG_TOKEN,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_DETACH_PASID,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_PCI_DEVID_NOT_OWNED,
  VFIO_PCI_DEVID_OWNED,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED,
  decodeHotResetInfo,
  vfio_pci_hot_reset_info,
  VFIO_DEVICE_RESET,
  encodeDmaBufFeature,
} from "../src/vfio-uapi.js";
import { loadVfioPci } from "../src/vfio-pci.js";
import type { VfioPciCoreDevice } from "../src/vfio-pci-core.js";
import type { VfioPciDmaBuf } from "../src/vfio-pci-dmabuf.js";
import { MiB, cfgWrite, catchErr } from "./helpers.js";

const BAR = 16n * MiB;
const IOVA = 1n << 32n;

function bind(libc: Libc, fd: number, iommufd: number, argsz = 24): { ret: number; devid: number } {
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setUint32(0, argsz, true);
  v.setInt32(8, iommufd, true);
  const ret = libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, b);
  return { ret, devid: v.getUint32(12, true) };
}

function attach(libc: Libc, fd: number, ptId: number): number {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, 12, true);
  v.setUint32(8, ptId, true);
  if (libc.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, b) < 0)
    throw new KernelError(libc.errno, "attach");
  return v.getUint32(8, true);
}

/** `pasid`: the driver of A's IOMMU also has set_dev_pasid; `ramBytes`: the machine's RAM. */
function vmm(o: { pasid?: boolean; ramBytes?: bigint } = {}) {
  const kernel = new Kernel(o.ramBytes === undefined ? {} : { ramBytes: o.ramBytes });
  iommufdInit(kernel);
  const mod = loadVfioPci(kernel);
  const libc = new Libc(kernel);
  const bus = pciRoot(kernel).newBus();
  const spec = (device: number, iommu: IommuDriver) => ({
    vendor: 0x10de,
    device,
    bars: [{ type: "mem64" as const, size: BAR, prefetchable: true }],
    pm: true,
    pcie: { flr: true },
    iommu,
  });
  const amd = amdIommuDriver(kernel);
  const a = mod.probe(bus.addDevice(spec(0x1, o.pasid ? withSetDevPasid(amd) : amd)));
  const b = mod.probe(bus.addDevice(spec(0x2, intelIommuDriver(kernel))));
  const iommufd = IommufdClient.open(libc);
  const ioas = iommufd.ioasAlloc();
  const open = (vdev: VfioPciCoreDevice) => {
    const fd = libc.open(vdev.cdevPath!, O_RDWR);
    const { ret } = bind(libc, fd, iommufd.fd);
    if (ret < 0) throw new KernelError(libc.errno, "bind");
    const hwpt = attach(libc, fd, ioas);
    cfgWrite({ kernel, libc, mod, bus }, fd, PCI_COMMAND, 2, 0x6); // MEMORY | MASTER
    return { fd, hwpt };
  };
  const A = open(a);
  const B = open(b);
  return { kernel, libc, mod, bus, a, b, A, B, iommufd, ioas };
}

/**
 * `driver` with a set_dev_pasid that programs nothing (as intel_iommu_set_dev_pasid would for a
 * paging domain; the model's DMA does not carry a PASID, so there is no table to fill).
 */
function withSetDevPasid(driver: IommuDriver): IommuDriver {
  return Object.assign(Object.create(driver) as IommuDriver, { setDevPasid() {} });
}

/** `bytes` placed to end exactly at a page boundary whose next page is unmapped. */
function atPageEnd(libc: Libc, bytes: Uint8Array): bigint {
  const base = libc.mmap(
    0n,
    2 * PAGE_SIZE,
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0,
  );
  expect(libc.munmap(base + BigInt(PAGE_SIZE), PAGE_SIZE)).toBe(0);
  const at = base + BigInt(PAGE_SIZE - bytes.length);
  libc.poke(at, bytes);
  return at;
}
/** `bytes` in a read-only shared mapping of a memfd: copy_from_user works, copy_to_user faults. */
function readOnly(libc: Libc, bytes: Uint8Array): bigint {
  const mfd = libc.memfdCreate("ro-struct", 0);
  expect(libc.ftruncate(mfd, PAGE_SIZE)).toBe(0);
  expect(libc.pwrite(mfd, bytes, 0)).toBe(bytes.length);
  const at = libc.mmap(0n, PAGE_SIZE, PROT_READ, MAP_SHARED, mfd, 0);
  libc.close(mfd);
  return at;
}

function bufOf(v: ReturnType<typeof vmm>, dfd: number): VfioPciDmaBuf {
  const file = v.libc.process.files.lookup(dfd) as File<DmaBuf>;
  return file.priv.priv as VfioPciDmaBuf;
}

function exportBar(v: ReturnType<typeof vmm>, fd: number): number {
  const dfd = v.libc.ioctl(
    fd,
    VFIO_DEVICE_FEATURE,
    encodeDmaBufFeature({
      regionIndex: 0,
      openFlags: O_RDWR,
      ranges: [{ offset: 0n, length: BAR }],
    }),
  );
  if (dfd < 0) throw new KernelError(v.libc.errno, "DMA_BUF");
  return dfd;
}

const bytes = (s: string) => new TextEncoder().encode(s);

describe("end to end with iommufd: P2P through a dma-buf of B's BAR mapped into the IOAS", () => {
  it("binds, attaches two domains, and A's DMA lands in B's BAR", () => {
    const v = vmm();
    expect(v.A.hwpt).not.toBe(v.B.hwpt);
    const dfd = exportBar(v, v.B.fd);
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    vfioPciDmaWrite(v.a, IOVA + 0x1234n, bytes("hello peer"));
    const seen = new Uint8Array(10);
    v.kernel.mem.readPhys(v.b.pdev.resource(0).start + 0x1234n, seen);
    expect(new TextDecoder().decode(seen)).toBe("hello peer");
    // B reads it back through its own domain too.
    expect(new TextDecoder().decode(vfioPciDmaRead(v.b, IOVA + 0x1234n, 10))).toBe("hello peer");
  });

  it("FLR of B revokes: A's DMA faults; unmap and map again: DMA lands (the protocol)", () => {
    const v = vmm();
    const dfd = exportBar(v, v.B.fd);
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    expect(v.libc.ioctl(v.B.fd, VFIO_DEVICE_RESET, 0)).toBe(0);
    expect(bufOf(v, dfd).state).toBe("live");
    let err: unknown;
    try {
      vfioPciDmaWrite(v.a, IOVA, bytes("x"));
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, EFAULT)).toBe(true);
    expect(v.a.dmaFaults.at(-1)?.reason).toBe("not-present");
    v.iommufd.ioasUnmap({ ioasId: v.ioas, iova: IOVA, length: BAR });
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    vfioPciDmaWrite(v.a, IOVA, bytes("again"));
    expect(new TextDecoder().decode(vfioPciDmaRead(v.b, IOVA, 5))).toBe("again");
  });

  it("without the unmap the area stays dead: EEXIST at the same IOVA until it is unmapped", () => {
    const v = vmm();
    const dfd = exportBar(v, v.B.fd);
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    cfgWrite(v, v.B.fd, PCI_COMMAND, 2, 0x4);
    cfgWrite(v, v.B.fd, PCI_COMMAND, 2, 0x6);
    expect(bufOf(v, dfd).state).toBe("live");
    expect(() => vfioPciDmaRead(v.a, IOVA, 4)).toThrow(KernelError);
    let err: unknown;
    try {
      v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, EEXIST)).toBe(true);
    v.iommufd.ioasUnmap({ ioasId: v.ioas, iova: IOVA, length: BAR });
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    expect(() => vfioPciDmaRead(v.a, IOVA, 4)).not.toThrow();
  });

  it("a revoked buffer cannot be mapped (ENODEV); device close makes it a zombie for good", () => {
    const v = vmm();
    const dfd = exportBar(v, v.B.fd);
    cfgWrite(v, v.B.fd, PCI_COMMAND, 2, 0x4);
    let err: unknown;
    try {
      v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, ENODEV)).toBe(true);
    cfgWrite(v, v.B.fd, PCI_COMMAND, 2, 0x6);
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    v.libc.close(v.B.fd);
    expect(bufOf(v, dfd).state).toBe("zombie");
    expect(() => vfioPciDmaRead(v.a, IOVA, 4)).toThrow(KernelError);
    // Reopen B: the old buffer stays dead; a new one works.
    const fd = v.libc.open(v.b.cdevPath!, O_RDWR);
    expect(bind(v.libc, fd, v.iommufd.fd).ret).toBe(0);
    attach(v.libc, fd, v.ioas);
    v.iommufd.ioasUnmap({ ioasId: v.ioas, iova: IOVA, length: BAR });
    err = undefined;
    try {
      v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, ENODEV)).toBe(true);
    const fresh = exportBar(v, fd);
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: fresh, start: 0n, length: BAR, iova: IOVA });
    vfioPciDmaWrite(v.a, IOVA, bytes("new"));
  });

  it("BIND / ATTACH / DETACH checks", () => {
    const v = vmm();
    const fd = v.libc.open(v.a.cdevPath!, O_RDWR);
    // Only one cdev opener: the device is bound through A.fd already.
    expect(bind(v.libc, fd, v.iommufd.fd).ret).toBe(-1);
    expect(v.libc.errno).toBe(22);
    // Unbound fd: every other ioctl is EINVAL.
    expect(v.libc.ioctl(fd, VFIO_DEVICE_RESET, 0)).toBe(-1);
    expect(v.libc.errno).toBe(22);
    expect(bind(v.libc, v.A.fd, v.iommufd.fd, 15).ret).toBe(-1);
    expect(v.libc.errno).toBe(22);
    expect(bind(v.libc, v.A.fd, v.iommufd.fd).ret).toBe(-1); // already bound
    expect(bind(v.libc, fd, 999).ret).toBe(-1);
    const det = new Uint8Array(12);
    new DataView(det.buffer).setUint32(0, 8, true);
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, det)).toBe(0);
    expect(() => vfioPciDmaRead(v.a, IOVA, 4)).toThrow(KernelError);
    expect(v.a.dmaFaults.at(-1)?.reason).toBe("blocked");
  });

  it("DETACH clears the attachment: ATTACH again attaches, a second DETACH does nothing (vfio_iommufd_physical_attach_ioas / _detach_ioas on iommufd_attached)", () => {
    const v = vmm();
    const det = new Uint8Array(12);
    new DataView(det.buffer).setUint32(0, 8, true);
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, det)).toBe(0);
    expect(v.a.binding!.hwpt).toBeUndefined();
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, det)).toBe(0);
    // Not attached any more, so this is iommufd_device_attach, not a replace (EINVAL when
    // nothing is attached).
    expect(attach(v.libc, v.A.fd, v.ioas)).toBe(v.A.hwpt);
    expect(v.a.binding!.hwpt?.id).toBe(v.A.hwpt);
  });

  it("closing the device fd detaches and unbinds: the DEVICE object is gone, the IOAS is free (vfio_iommufd_physical_unbind)", () => {
    const v = vmm();
    const devid = v.a.binding!.devid;
    v.libc.close(v.A.fd);
    v.libc.close(v.B.fd);
    let err: unknown;
    try {
      v.iommufd.destroy(devid);
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, ENOENT)).toBe(true);
    // Both automatic domains went with their last device, so nothing holds the IOAS.
    v.iommufd.destroy(v.ioas);
  });

  it("BIND of a function without an IOMMU: ENODEV (iommufd_device_bind finds no iommu_group)", () => {
    const v = vmm();
    const vdev = v.mod.probe(
      v.bus.addDevice({ vendor: 0x10de, device: 0x3, bars: [{ type: "mem64", size: BAR }] }),
    );
    const fd = v.libc.open(vdev.cdevPath!, O_RDWR);
    expect(bind(v.libc, fd, v.iommufd.fd).ret).toBe(-1);
    expect(v.libc.errno).toBe(ENODEV);
  });

  it("BIND's struct checks, in vfio_df_ioctl_bind_iommufd's order, on a fd that has not bound", () => {
    const v = vmm();
    v.libc.close(v.A.fd);
    const raw = (argsz: number, flags: number, iommufd: number, size = 24, tail = 0) => {
      const b = new Uint8Array(size);
      const d = new DataView(b.buffer);
      d.setUint32(0, argsz, true);
      d.setUint32(4, flags, true);
      d.setInt32(8, iommufd, true);
      if (tail) b[size - 1] = tail;
      const fd = v.libc.open(v.a.cdevPath!, O_RDWR);
      const ret = v.libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, b) < 0 ? v.libc.errno : 0;
      v.libc.close(fd);
      return ret;
    };
    // minsz is offsetofend(out_devid) = 16.
    expect(raw(15, 0, v.iommufd.fd)).toBe(EINVAL);
    expect(raw(16, 0, v.iommufd.fd)).toBe(0);
    expect(raw(24, 0, -1)).toBe(EINVAL);
    expect(raw(24, 2, v.iommufd.fd)).toBe(EINVAL);
    // copy_struct_from_user: a larger struct is fine while the bytes past ours are zero.
    expect(raw(32, 0, v.iommufd.fd, 32)).toBe(0);
    expect(raw(32, 0, v.iommufd.fd, 32, 1)).toBe(E2BIG);
    // A VF token for a function that is neither PF nor VF (vfio_pci_core_match_token): EINVAL.
    const uuid = v.libc.malloc(16);
    const b = new Uint8Array(24);
    const d = new DataView(b.buffer);
    d.setUint32(0, 24, true);
    d.setUint32(4, VFIO_DEVICE_BIND_FLAG_TOKEN, true);
    d.setInt32(8, v.iommufd.fd, true);
    d.setBigUint64(16, uuid, true);
    const fd = v.libc.open(v.a.cdevPath!, O_RDWR);
    expect(v.libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, b)).toBe(-1);
    expect(v.libc.errno).toBe(EINVAL);
    expect(v.a.openCount).toBe(0);
  });

  it("ATTACH and DETACH_IOMMUFD_PT refuse an argsz below their minsz (12 and 8)", () => {
    const v = vmm();
    const b = new Uint8Array(16);
    const d = new DataView(b.buffer);
    d.setUint32(0, 11, true);
    d.setUint32(8, v.ioas, true);
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, b)).toBe(-1);
    expect(v.libc.errno).toBe(EINVAL);
    d.setUint32(0, 7, true);
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, b)).toBe(-1);
    expect(v.libc.errno).toBe(EINVAL);
    expect(v.a.binding!.hwpt?.id).toBe(v.A.hwpt);
  });

  it("BIND under fail-nth: every failure leaves the device closed and unbound, then it binds", () => {
    const v = vmm();
    const c = v.mod.probe(
      v.bus.addDevice({
        vendor: 1,
        device: 3,
        bars: [{ type: "mem32", size: MiB }],
        pcie: { flr: true },
        iommu: amdIommuDriver(v.kernel),
      }),
    );
    const fd = v.libc.open(c.cdevPath!, O_RDWR);
    bind(v.libc, fd, 999); // warm the scratch buffer
    const fault = v.libc.task.fault;
    const sites: string[] = [];
    for (let n = 1; n < 40; n++) {
      const before = [c.openCount, c.binding, c.vconfig, c.registrationRefs, c.pdev.enableCount];
      fault.arm(n);
      const { ret } = bind(v.libc, fd, v.iommufd.fd);
      const site = fault.failedSite;
      fault.disarm();
      if (site === undefined) {
        expect(ret).toBe(0);
        break;
      }
      sites.push(site);
      expect(ret).toBe(-1);
      expect([c.openCount, c.binding, c.vconfig, c.registrationRefs, c.pdev.enableCount]).toEqual(
        before,
      );
    }
    expect(sites).toContain("vfio_config_init");
    expect(c.openCount).toBe(1);
  });

  it("hot reset info: both functions bound to the caller's iommufd report their devids and DEV_ID_OWNED", () => {
    const v = vmm();
    const info = new Uint8Array(12 + 2 * 8);
    vfio_pci_hot_reset_info.encode({ argsz: info.length }, info);
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, info)).toBe(0);
    const got = decodeHotResetInfo(info);
    expect(got.flags).toBe(VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED);
    const ids = got.devices.map((d) => d.devid);
    expect(ids).toEqual([v.a.binding!.devid, v.b.binding!.devid]);
    expect(ids).not.toContain(VFIO_PCI_DEVID_OWNED);
    // B closed: NOT_OWNED, and the set is no longer the caller's.
    v.libc.close(v.B.fd);
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, info)).toBe(0);
    const after = decodeHotResetInfo(info);
    expect(after.flags).toBe(VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
    expect(after.devices.map((d) => d.devid)).toEqual([
      v.a.binding!.devid,
      VFIO_PCI_DEVID_NOT_OWNED,
    ]);
  });

  it("hot reset needs every device of the set bound to the caller's iommufd (vfio_pci_dev_set_hot_reset)", () => {
    const v = vmm();
    const other = IommufdClient.open(v.libc);
    v.libc.close(v.B.fd);
    const fd = v.libc.open(v.b.cdevPath!, O_RDWR);
    expect(bind(v.libc, fd, other.fd).ret).toBe(0);
    const hr = new Uint8Array(12);
    new DataView(hr.buffer).setUint32(0, 12, true);
    const resets = v.a.pdev.resetCount;
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(-1);
    expect(v.libc.errno).toBe(22);
    expect(v.a.pdev.resetCount).toBe(resets);
    v.libc.close(fd);
    // Unopened, B is still not the caller's: vfio_iommufd_get_dev_id finds neither a binding
    // to this iommufd nor its iommu group held by it (each function is alone in its group).
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(-1);
    expect(v.libc.errno).toBe(22);
    expect(v.a.pdev.resetCount).toBe(resets);
    const again = v.libc.open(v.b.cdevPath!, O_RDWR);
    expect(bind(v.libc, again, v.iommufd.fd).ret).toBe(0);
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_PCI_HOT_RESET, hr)).toBe(0);
    expect(v.a.pdev.resetCount).toBe(resets + 1);
  });

  it("DMA to RAM through a user mapping, READ / WRITE permission enforced", () => {
    const v = vmm();
    const va = v.libc.malloc(2 * 4096);
    v.libc.poke(va, bytes("guest ram"));
    v.iommufd.ioasMap({
      ioasId: v.ioas,
      userVa: va,
      length: 8192n,
      iova: 0x10000n,
      flags: IOMMU_IOAS_MAP_READABLE,
    });
    expect(new TextDecoder().decode(vfioPciDmaRead(v.a, 0x10000n, 9))).toBe("guest ram");
    expect(() => vfioPciDmaWrite(v.a, 0x10000n, bytes("no"))).toThrow(KernelError);
    expect(v.a.dmaFaults.at(-1)).toMatchObject({
      iova: 0x10000n,
      write: true,
      errno: EFAULT,
      reason: "permission",
    });
    v.iommufd.ioasMap({ ioasId: v.ioas, userVa: va, length: 8192n, iova: 0x20000n });
    vfioPciDmaWrite(v.a, 0x20000n + 4090n, bytes("crossing"));
    expect(new TextDecoder().decode(v.libc.peek(va + 4090n, 8))).toBe("crossing");
  });

  it("DMA reads across pages, and the checks before any translation: empty, no IOMMU, an IOVA range past u64", () => {
    const v = vmm();
    const va = v.libc.malloc(3 * 4096);
    const data = Uint8Array.from({ length: 3 * 4096 }, (_, i) => (i * 7) & 0xff);
    v.libc.poke(va, data);
    v.iommufd.ioasMap({ ioasId: v.ioas, userVa: va, length: 3n * 4096n, iova: 0x40000n });
    expect(vfioPciDmaRead(v.a, 0x40000n + 100n, 2 * 4096)).toEqual(
      data.subarray(100, 100 + 2 * 4096),
    );
    const faults: string[] = [];
    const off = v.kernel.trace.on((r) => {
      if (r.name === "vfio-pci:dma-fault") {
        const d = r.data as { dev: string; iova: bigint; write: boolean; reason: string };
        faults.push(`${d.dev} ${d.iova.toString(16)} ${d.write} ${d.reason}`);
      }
    });
    // An empty transfer is refused before anything is looked at, and records no fault.
    expect(
      isKernelError(
        catchErr(() => vfioPciDmaRead(v.a, 0x40000n, 0)),
        EINVAL,
      ),
    ).toBe(true);
    // The IOMMU refuses a range that wraps u64: its EINVAL is passed on, not turned into a fault.
    expect(
      isKernelError(
        catchErr(() => vfioPciDmaRead(v.a, (1n << 64n) - 4n, 8)),
        EINVAL,
      ),
    ).toBe(true);
    expect(v.a.dmaFaults).toEqual([]);
    vfioPciDmaWrite(v.a, 0x40000n, bytes("x"));
    expect(() => vfioPciDmaWrite(v.a, 0x90000n, bytes("x"))).toThrow(KernelError);
    off();
    expect(faults).toEqual([`${v.a.name} 90000 true not-present`]);
    // A function with no IOMMU in front of it: nothing translates its DMA.
    const bare = v.mod.probe(
      v.bus.addDevice({ vendor: 0x10de, device: 0x3, bars: [{ type: "mem64", size: BAR }] }),
    );
    // The empty transfer is refused first, even with bus mastering off.
    expect(
      isKernelError(
        catchErr(() => vfioPciDmaRead(bare, 0n, 0)),
        EINVAL,
      ),
    ).toBe(true);
    bare.pdev.writeConfig(PCI_COMMAND, 2, 0x4);
    expect(
      isKernelError(
        catchErr(() => vfioPciDmaRead(bare, 0n, 4)),
        EFAULT,
      ),
    ).toBe(true);
    expect(bare.dmaFaults).toEqual([{ iova: 0n, write: false, errno: EFAULT, reason: "no IOMMU" }]);
  });

  it("each 4 KiB of a DMA is routed on its own (a PCIe request never crosses a 4 KiB boundary)", () => {
    const v = vmm();
    // A's BAR and B's BAR are adjacent in the physical address space.
    const aBar = v.a.pdev.resource(0).start;
    expect(v.b.pdev.resource(0).start).toBe(aBar + BAR);
    // A mapping that runs from the last page of A's BAR into B's, and one to an address nothing
    // answers at (past RAM, after the last MMIO region), put straight into A's domain.
    const domain = v.a.pdev.iommuDev!.domain!;
    iommuMap(domain, 0x100000n, aBar + BAR - 4096n, 8192n, IOMMU_READ | IOMMU_WRITE);
    const hole = aBar + 2n * BAR;
    expect(hole >= BigInt(v.kernel.mem.ramPages) << 12n).toBe(true);
    expect(v.kernel.mem.mmioRegionAt(hole)).toBeUndefined();
    iommuMap(domain, 0x200000n, hole - 4096n, 8192n, IOMMU_READ | IOMMU_WRITE);
    expect(vfioPciDmaRead(v.a, 0x100000n + 4000n, 200).length).toBe(200);
    expect(() => vfioPciDmaWrite(v.a, 0x200000n + 4000n, new Uint8Array(200))).toThrow(KernelError);
    expect(v.a.dmaFaults.at(-1)).toEqual({
      iova: 0x201000n,
      write: true,
      errno: EIO,
      reason: "nothing at the address",
    });
    const m = { kernel: v.kernel, libc: v.libc, mod: v.mod, bus: v.bus };
    cfgWrite(m, v.B.fd, PCI_COMMAND, 2, 0x4);
    expect(() => vfioPciDmaRead(v.a, 0x100000n + 4000n, 200)).toThrow(KernelError);
    expect(v.a.dmaFaults.at(-1)).toEqual({
      iova: 0x101000n,
      write: false,
      errno: EIO,
      reason: `${v.b.pdev.name} does not decode memory`,
    });
  });

  it("the first byte past RAM answers nothing when the MMIO window starts higher (EIO)", () => {
    // RAM of 1 GiB + 4 KiB: the MMIO window starts at the next GiB, past a hole.
    const v = vmm({ ramBytes: (1n << 30n) + 4096n });
    const ramEnd = BigInt(v.kernel.mem.ramPages) << 12n;
    expect(v.kernel.mem.mmioBase).toBeGreaterThan(ramEnd);
    iommuMap(v.a.pdev.iommuDev!.domain!, 0x300000n, ramEnd, 4096n, IOMMU_READ);
    expect(() => vfioPciDmaRead(v.a, 0x300000n, 4)).toThrow(KernelError);
    expect(v.a.dmaFaults.at(-1)).toMatchObject({ iova: 0x300000n, errno: EIO });
  });

  it("P2P to a peer that stopped decoding behind vfio's back is an unsupported request (EIO)", () => {
    const v = vmm();
    const dfd = exportBar(v, v.B.fd);
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    v.b.pdev.writeConfig(PCI_COMMAND, 2, 0);
    let err: unknown;
    try {
      vfioPciDmaWrite(v.a, IOVA, bytes("lost"));
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, EIO)).toBe(true);
    // Bus mastering off: the device issues nothing.
    v.a.pdev.setMaster(false);
    expect(() => vfioPciDmaRead(v.a, 0n, 1)).toThrow(/bus mastering/);
  });

  it("closing the dma-buf fd after the map changes nothing; the unmap's put releases it", () => {
    const v = vmm();
    const dfd = exportBar(v, v.B.fd);
    const priv = bufOf(v, dfd);
    const refs = v.b.registrationRefs;
    v.iommufd.ioasMapFile({ ioasId: v.ioas, fd: dfd, start: 0n, length: BAR, iova: IOVA });
    v.libc.close(dfd);
    vfioPciDmaWrite(v.a, IOVA, bytes("still"));
    expect(priv.state).toBe("live");
    v.iommufd.ioasUnmap({ ioasId: v.ioas, iova: IOVA, length: BAR });
    expect([priv.state, v.b.registrationRefs, v.b.dmabufs.size]).toEqual(["freed", refs - 1, 0]);
  });
});

describe("ATTACH / DETACH_IOMMUFD_PT with VFIO_DEVICE_ATTACH_PASID (drivers/vfio/device_cdev.c)", () => {
  /** struct vfio_device_attach_iommufd_pt { argsz, flags, pt_id, pasid } */
  const attachPt = (argsz: number, flags: number, ptId: number, pasid: number) => {
    const b = new Uint8Array(16);
    const d = new DataView(b.buffer);
    d.setUint32(0, argsz, true);
    d.setUint32(4, flags, true);
    d.setUint32(8, ptId, true);
    d.setUint32(12, pasid, true);
    return b;
  };
  /** struct vfio_device_detach_iommufd_pt { argsz, flags, pasid } */
  const detachPt = (argsz: number, flags: number, pasid: number) => {
    const b = new Uint8Array(12);
    const d = new DataView(b.buffer);
    d.setUint32(0, argsz, true);
    d.setUint32(4, flags, true);
    d.setUint32(8, pasid, true);
    return b;
  };

  it("argsz and flags first; then iommufd's PASID rules; the model's IOMMU drivers have no set_dev_pasid", () => {
    const v = vmm();
    const errno = (cmd: number, arg: Uint8Array) =>
      v.libc.ioctl(v.A.fd, cmd, arg) < 0 ? v.libc.errno : 0;
    const ATTACH = VFIO_DEVICE_ATTACH_IOMMUFD_PT;
    const DETACH = VFIO_DEVICE_DETACH_IOMMUFD_PT;
    // The pasid is read only with the flag, so the struct must then reach past it.
    expect(errno(ATTACH, attachPt(12, VFIO_DEVICE_ATTACH_PASID, v.ioas, 5))).toBe(EINVAL);
    expect(errno(ATTACH, attachPt(16, 2, v.ioas, 5))).toBe(EINVAL);
    expect(errno(DETACH, detachPt(8, VFIO_DEVICE_DETACH_PASID, 5))).toBe(EINVAL);
    expect(errno(DETACH, detachPt(12, 2, 5))).toBe(EINVAL);
    // An IOAS gives an automatic domain, which is not PASID-compatible.
    expect(errno(ATTACH, attachPt(16, VFIO_DEVICE_ATTACH_PASID, v.ioas, 5))).toBe(EINVAL);
    const devId = v.a.binding!.devid;
    const s2 = v.iommufd.hwptAlloc({ devId, ptId: v.ioas, flags: IOMMU_HWPT_ALLOC_PASID });
    // The RID is still on the automatic domain, which is not PASID-compatible either.
    expect(errno(ATTACH, attachPt(16, VFIO_DEVICE_ATTACH_PASID, s2, 5))).toBe(EINVAL);
    expect(errno(ATTACH, attachPt(12, 0, s2, 0))).toBe(0);
    // Past iommufd's rules the iommu core asks the driver, which cannot attach a PASID.
    expect(errno(ATTACH, attachPt(16, VFIO_DEVICE_ATTACH_PASID, s2, 5))).toBe(EOPNOTSUPP);
    // Detaching a PASID that was never attached does nothing.
    expect(errno(DETACH, detachPt(12, VFIO_DEVICE_DETACH_PASID, 5))).toBe(0);
    expect(v.a.binding!.hwpt?.id).toBe(s2);
  });

  it("with a driver that has set_dev_pasid: attach, replace, detach, and unbind detaches the PASID (vfio_iommufd_physical_pasid_attach_ioas / _detach_ioas)", () => {
    const v = vmm({ pasid: true });
    const errno = (cmd: number, arg: Uint8Array) =>
      v.libc.ioctl(v.A.fd, cmd, arg) < 0 ? v.libc.errno : 0;
    const ATTACH = VFIO_DEVICE_ATTACH_IOMMUFD_PT;
    const DETACH = VFIO_DEVICE_DETACH_IOMMUFD_PT;
    const devId = v.a.binding!.devid;
    const s2 = v.iommufd.hwptAlloc({ devId, ptId: v.ioas, flags: IOMMU_HWPT_ALLOC_PASID });
    const s2b = v.iommufd.hwptAlloc({ devId, ptId: v.ioas, flags: IOMMU_HWPT_ALLOC_PASID });
    expect(errno(ATTACH, attachPt(12, 0, s2, 0))).toBe(0);
    const idev = v.a.pdev.iommuDev!;
    expect(errno(ATTACH, attachPt(16, VFIO_DEVICE_ATTACH_PASID, s2, 5))).toBe(0);
    const first = idev.pasidArray.get(5);
    expect(first).toBeDefined();
    // Attached already through this device: a replace (an attach would be EBUSY).
    expect(errno(ATTACH, attachPt(16, VFIO_DEVICE_ATTACH_PASID, s2b, 5))).toBe(0);
    expect(idev.pasidArray.get(5)).not.toBe(first);
    expect(errno(DETACH, detachPt(12, VFIO_DEVICE_DETACH_PASID, 5))).toBe(0);
    expect(idev.pasidArray.has(5)).toBe(false);
    // Attached again, then left attached when the device fd closes.
    expect(errno(ATTACH, attachPt(16, VFIO_DEVICE_ATTACH_PASID, s2, 7))).toBe(0);
    v.libc.close(v.A.fd);
    expect(idev.pasidArray.size).toBe(0);
    expect(idev.domain).toBeUndefined();
  });

  it("the PASID of ATTACH / DETACH: only the bytes up to offsetofend(pasid) are copied", () => {
    const v = vmm({ pasid: true });
    const devId = v.a.binding!.devid;
    const s2 = v.iommufd.hwptAlloc({ devId, ptId: v.ioas, flags: IOMMU_HWPT_ALLOC_PASID });
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attachPt(12, 0, s2, 0))).toBe(0);
    const idev = v.a.pdev.iommuDev!;
    // attach: pasid at 12, offsetofend 16; detach: pasid at 8, offsetofend 12. Each struct ends
    // at an unmapped page.
    const att = atPageEnd(v.libc, attachPt(16, VFIO_DEVICE_ATTACH_PASID, s2, 5));
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, att)).toBe(0);
    expect(idev.pasidArray.has(5)).toBe(true);
    const det = atPageEnd(v.libc, detachPt(12, VFIO_DEVICE_DETACH_PASID, 5));
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, det)).toBe(0);
    expect(idev.pasidArray.has(5)).toBe(false);
    // pt_id not written back (read-only struct): EFAULT, and vfio_df_ioctl_attach_pt's
    // out_detach calls detach_ioas even after a PASID attach: the RID is detached, PASID 6 stays.
    const ro = readOnly(v.libc, attachPt(16, VFIO_DEVICE_ATTACH_PASID, s2, 6));
    expect(v.libc.ioctl(v.A.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, ro)).toBe(-1);
    expect(v.libc.errno).toBe(EFAULT);
    expect(idev.pasidArray.has(6)).toBe(true);
    expect(v.a.binding!.hwpt).toBeUndefined();
  });
});

describe("user memory at the edges of BIND / ATTACH / DETACH (vfio_main.c, device_cdev.c)", () => {
  const bindStruct = (argsz: number, iommufd: number, size = argsz): Uint8Array => {
    const b = new Uint8Array(size);
    const d = new DataView(b.buffer);
    d.setUint32(0, argsz, true);
    d.setInt32(8, iommufd, true);
    return b;
  };

  it("copy_struct_from_user reads the zero tail of a longer BIND struct up to its end, not past it", () => {
    const v = vmm();
    v.libc.close(v.A.fd);
    const fd = v.libc.open(v.a.cdevPath!, O_RDWR);
    // 32 bytes (24 known + 8 zero) ending at an unmapped page: the kernel binds.
    const at = atPageEnd(v.libc, bindStruct(32, v.iommufd.fd));
    expect(v.libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, at)).toBe(0);
    expect(v.libc.peek(at + 12n, 4)).toEqual(
      new Uint8Array(new Uint32Array([v.a.binding!.devid]).buffer),
    );
  });

  it("BIND drops the file reference it took on the iommufd (iommufd_ctx_from_fd's fget / fput)", () => {
    const v = vmm();
    const files = v.kernel.current.process.files;
    const f = files.fget(v.iommufd.fd);
    v.libc.close(v.A.fd);
    v.libc.close(v.B.fd);
    v.libc.close(v.iommufd.fd);
    // Two binds, both closed: only the reference taken here is left.
    expect(f.refcount).toBe(1);
    f.put();
  });

  it("a failed write-back of out_devid closes the device again; of pt_id, detaches it: EFAULT", () => {
    const v = vmm();
    v.libc.close(v.A.fd);
    const fd = v.libc.open(v.a.cdevPath!, O_RDWR);
    expect(
      v.libc.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, readOnly(v.libc, bindStruct(24, v.iommufd.fd))),
    ).toBe(-1);
    expect(v.libc.errno).toBe(EFAULT);
    expect([v.a.openCount, v.a.binding]).toEqual([0, undefined]);
    // The fd did not bind, so a BIND from writable memory now succeeds.
    expect(bind(v.libc, fd, v.iommufd.fd).ret).toBe(0);
    const at = new Uint8Array(12);
    const d = new DataView(at.buffer);
    d.setUint32(0, 12, true);
    d.setUint32(8, v.ioas, true);
    expect(v.libc.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, readOnly(v.libc, at))).toBe(-1);
    expect(v.libc.errno).toBe(EFAULT);
    expect(v.a.binding!.hwpt).toBeUndefined();
  });
});
