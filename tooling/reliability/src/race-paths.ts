/**
 * The concurrent kernel paths the race explorer interleaves, and the machine they race on.
 *
 * `raceSetup(opts)` builds a `Machine` (two PCI functions behind two IOMMUs, bound to
 * vfio-pci) as a VMM would through the public APIs: one /dev/iommu, IOAS 1 with device 0
 * attached (one domain), a dma-buf over 4 pages of device 0's BAR (memory decode on) mapped at
 * DMABUF_IOVA, 4 pages of the memfd mapped at MEMFD_IOVA; optionally device 1 attached too
 * (`secondDomain`) or attached to a second IOAS (`secondIoas`, the target of a copy), and the
 * tracker mutant. Every path is one system call (or one in-kernel access call) issued on its
 * own task of the same process, with the descriptors set up here.
 *
 * After a schedule `check` runs the whole reliability checker (I1–I11 through @x/iommufd's
 * `checkInvariants`, lockdep clean, pins, IOPTEs vs live MMIO, exporter states) and
 * `fingerprint` summarises what the paths change: areas, fills, tracker sizes, revoked flags,
 * pins, exporter states.
 */
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IOMMUFD_ACCESS_RW_WRITE,
  IommufdClient,
  type IommufdAccess,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessPinPages,
  iommufdAccessUnpinPages,
  iommufdCtxFromFile,
  iommu_hwpt_invalidate,
  iommu_vdevice_alloc,
  iommu_viommu_alloc,
} from "@x/iommufd";
import { setTrackerMutant } from "@x/iommufd/testing";
import { type IommuDomain, iommuIovaToPhys } from "@x/iommu-pgtable";
import { EFD_NONBLOCK, KernelError, Libc, Mutex, O_RDWR, type Task } from "@x/kernel";
import {
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  iommuTestCmd,
  iommu_test_cmd,
  iommu_viommu_invalidate_selftest,
} from "@x/selftest";
import {
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_MSIX_IRQ_INDEX,
  encodeDmaBufFeature,
  encodeIrqSet,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
} from "@x/vfio-pci";
import { Checker, gatherIommufd } from "./checker.js";
import { Machine, PAGE } from "./machine.js";
import type { RaceMachine, RacePath } from "./race-explorer.js";

const DMABUF_IOVA = 1n << 20n;
const DMABUF2_IOVA = 3n << 20n;
const MEMFD_IOVA = 2n << 20n;
const AREA_PAGES = 4n;
const AREA_LEN = AREA_PAGES * PAGE;
/** File offset of VFIO's config-space region (index 7, 40-bit region offsets). */
const CONFIG_REGION = 7n << 40n;

export interface RaceSetupOptions {
  /** Device 1 attached to IOAS 1 too: two domains. */
  readonly secondDomain?: boolean;
  /** A second IOAS with device 1 attached (destination of copies). */
  readonly secondIoas?: boolean;
  /** The deliberate fault of @x/iommufd: tracker updated outside the fill's section. */
  readonly trackerMutant?: boolean;
  /**
   * A selftest mock device on IOAS 1 too: "dirty", attached to a dirty-tracking HWPT with
   * tracking on; "viommu", behind a vIOMMU (over a nest-parent HWPT) with a vDEVICE, attached
   * to a nested HWPT of that vIOMMU.
   */
  readonly mock?: "dirty" | "viommu";
  /** Device 0's MSI-X vectors 0 and 1 wired to eventfds (VFIO_DEVICE_SET_IRQS). */
  readonly irqs?: boolean;
}

/** The mock device's objects (zero when the setup has none). */
interface MockIds {
  readonly stdev: number;
  readonly idev: number;
  /** The IOAS the mock device is on: the memfd's 4 pages mapped at MOCK_APERTURE_START. */
  readonly ioas: number;
  /** The dirty-tracking HWPT, or the nested one. */
  readonly hwpt: number;
  readonly viommu: number;
  readonly vdevice: number;
}

/** The virtual id the vIOMMU knows the mock device by. */
const MOCK_VIRT_ID = 0x99n;

export class RaceMachineImpl implements RaceMachine {
  readonly machine = new Machine();
  readonly kernel = this.machine.kernel;
  readonly fd: IommufdClient;
  readonly ioas: number;
  readonly ioas2: number;
  readonly devFds: number[] = [];
  readonly dmabufFd: number;
  readonly mockIds: MockIds;
  /** Every paging domain the machine's IOMMUs allocated (one being added is not in an IOAS yet). */
  readonly domains: IommuDomain[] = [];

  constructor(opts: RaceSetupOptions) {
    const { machine } = this;
    for (const vdev of machine.devices) {
      const iommu = vdev.pdev.iommuDev?.iommu;
      if (!iommu) continue;
      const alloc = iommu.domainAllocPaging.bind(iommu);
      iommu.domainAllocPaging = (dev, flags) => {
        const d = alloc(dev, flags);
        this.domains.push(d);
        return d;
      };
    }
    const libc = machine.libc;
    this.fd = IommufdClient.open(libc);
    this.ioas = this.fd.ioasAlloc();
    this.ioas2 = opts.secondIoas ? this.fd.ioasAlloc() : 0;
    for (let i = 0; i < machine.devices.length; i++) {
      const dfd = ok(libc, libc.open(machine.cdev(i), O_RDWR));
      ok(
        libc,
        libc.ioctl(
          dfd,
          VFIO_DEVICE_BIND_IOMMUFD,
          vfio_device_bind_iommufd.encode({
            argsz: vfio_device_bind_iommufd.size,
            iommufd: this.fd.fd,
          }),
        ),
      );
      this.devFds.push(dfd);
    }
    this.attach(libc, 0, this.ioas);
    if (opts.secondDomain) this.attach(libc, 1, this.ioas);
    if (opts.secondIoas) this.attach(libc, 1, this.ioas2);
    configWrite(libc, this.devFd(0), PCI_COMMAND, PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY);
    const feature = encodeDmaBufFeature({
      regionIndex: 0,
      openFlags: O_RDWR,
      ranges: [{ offset: 0n, length: 2n * AREA_LEN }],
    });
    this.dmabufFd = ok(libc, libc.ioctl(this.devFd(0), VFIO_DEVICE_FEATURE, feature));
    const fd = this.dmabufFd;
    this.fd.ioasMapFile({ ioasId: this.ioas, fd, start: 0n, length: AREA_LEN, iova: DMABUF_IOVA });
    this.fd.ioasMap({
      ioasId: this.ioas,
      userVa: machine.memfdVa,
      length: AREA_LEN,
      iova: MEMFD_IOVA,
    });
    this.mockIds = opts.mock ? this.mockDevice(libc, opts.mock) : NO_MOCK;
    if (opts.irqs) {
      const efds = [0, 1].map(() => ok(libc, libc.eventfd(0, EFD_NONBLOCK)));
      const flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
      const arg = encodeIrqSet({ flags, index: VFIO_PCI_MSIX_IRQ_INDEX, count: 2, data: efds });
      ok(libc, libc.ioctl(this.devFd(0), VFIO_DEVICE_SET_IRQS, arg));
    }
    if (opts.trackerMutant) setTrackerMutant(this.kernel, true);
  }

  /**
   * An IOAS of its own (the mock's aperture starts above this machine's IOVAs) with the memfd
   * mapped, IOMMU_TEST_OP_MOCK_DOMAIN on it, then the HWPTs and vIOMMU objects `kind` asks for.
   */
  private mockDevice(libc: Libc, kind: "dirty" | "viommu"): MockIds {
    const ioas = this.fd.ioasAlloc();
    const { memfdVa } = this.machine;
    this.fd.ioasMap({ ioasId: ioas, userVa: memfdVa, length: AREA_LEN, iova: MOCK_APERTURE_START });
    const cmd = iommuTestCmd(iommu_test_cmd.mock_domain_flags, IOMMU_TEST_OP_MOCK_DOMAIN, ioas);
    ok(libc, libc.ioctl(this.fd.fd, IOMMU_TEST_CMD, cmd.$));
    const stdev = cmd.out_stdev_id;
    const idev = cmd.out_idev_id;
    let viommu = 0;
    let vdevice = 0;
    let hwpt: number;
    if (kind === "dirty") {
      hwpt = this.fd.hwptAlloc({
        devId: idev,
        ptId: ioas,
        flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      });
    } else {
      const parent = this.fd.hwptAlloc({
        devId: idev,
        ptId: ioas,
        flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      });
      viommu = this.fd.call(IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, {
        dev_id: idev,
        hwpt_id: parent,
        type: IOMMU_VIOMMU_TYPE_SELFTEST,
      }).out.out_viommu_id;
      vdevice = this.fd.call(IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, {
        viommu_id: viommu,
        dev_id: idev,
        virt_id: MOCK_VIRT_ID,
      }).out.out_vdevice_id;
      hwpt = this.fd.hwptAlloc({
        devId: idev,
        ptId: viommu,
        dataType: IOMMU_HWPT_DATA_SELFTEST,
        data: new Uint8Array(8),
      });
    }
    const replace = iommuTestCmd(
      iommu_test_cmd.mock_domain_replace,
      IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
      stdev,
      { pt_id: hwpt },
    );
    ok(libc, libc.ioctl(this.fd.fd, IOMMU_TEST_CMD, replace.$));
    if (kind === "dirty") this.fd.hwptSetDirtyTracking(hwpt, true);
    return { ioas, stdev, idev, hwpt, viommu, vdevice };
  }

  devFd(i: number): number {
    const dfd = this.devFds[i];
    if (dfd === undefined) throw new Error(`no device ${i}`);
    return dfd;
  }

  attach(libc: Libc, dev: number, ptId: number): void {
    ok(
      libc,
      libc.ioctl(
        this.devFd(dev),
        VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        vfio_device_attach_iommufd_pt.encode({
          argsz: vfio_device_attach_iommufd_pt.size,
          pt_id: ptId,
        }),
      ),
    );
  }

  newTask(): Task {
    return this.kernel.newTask(this.machine.libc.process);
  }

  private scope(tasks: readonly Task[]) {
    return {
      kernel: this.kernel,
      tasks: [this.machine.libc.task, ...tasks],
      devices: this.machine.devices,
    };
  }

  check(tasks: readonly Task[]): void {
    new Checker(this.scope(tasks)).check();
  }

  fingerprint(): string {
    const g = gatherIommufd(this.scope([]));
    const parts: string[] = [String(this.kernel.mem.totalPinned())];
    for (const iopt of g.iopts) {
      parts.push(`d${iopt.domainList.length}`);
      for (const area of iopt.areas())
        parts.push(`${area.iova}:${area.length}:${area.storageDomain ? 1 : 0}`);
    }
    for (const d of this.domains) {
      if (d.freed) continue;
      parts.push(
        [DMABUF_IOVA, DMABUF2_IOVA, MEMFD_IOVA]
          .map((iova) => (iommuIovaToPhys(d, iova) ? 1 : 0))
          .join(""),
      );
    }
    for (const p of g.pages) {
      parts.push(
        `p${p.npinned}:${p.dmabuf ? `${p.dmabuf.tracker.length}:${p.dmabuf.phys.len}` : ""}`,
      );
    }
    for (const vdev of this.machine.devices) {
      for (const buf of vdev.dmabufs) parts.push(buf.revoked ? "R" : "L");
    }
    return parts.join(" ");
  }
}

const NO_MOCK: MockIds = { ioas: 0, stdev: 0, idev: 0, hwpt: 0, viommu: 0, vdevice: 0 };

function ok(libc: Libc, ret: number): number {
  if (ret < 0) throw new KernelError(libc.errno, "race set-up");
  return ret;
}

function configWrite(libc: Libc, dfd: number, offset: number, value: number): void {
  const data = new Uint8Array([value & 0xff, (value >> 8) & 0xff]);
  ok(libc, libc.pwrite(dfd, data, CONFIG_REGION + BigInt(offset)));
}

/** A fresh machine for each schedule. */
export function raceSetup(opts: RaceSetupOptions = {}): () => RaceMachineImpl {
  return () => new RaceMachineImpl(opts);
}

/**
 * The path's own Libc, with its ioctl scratch buffer already faulted in (so the path itself
 * never takes mmap_lock for it).
 */
function pathLibc(m: RaceMachineImpl, task: Task): { libc: Libc; fd: IommufdClient } {
  const libc = new Libc(m.kernel, task);
  libc.ioctl(m.fd.fd, 0, new Uint8Array(Number(PAGE)));
  return { libc, fd: new IommufdClient(libc, m.fd.fd) };
}

type Path = RacePath<RaceMachineImpl>;

function path(name: string, prepare: Path["prepare"]): Path {
  return { name, prepare };
}

/** VFIO revoke: a config write clearing COMMAND.MEMORY on device 0 (move(true)). */
export const revokePath = path("revoke", (m, task) => {
  const { libc } = pathLibc(m, task);
  return () => configWrite(libc, m.devFd(0), PCI_COMMAND, PCI_COMMAND_MASTER);
});

/** VFIO_DEVICE_FEATURE DMA_BUF: export a second dma-buf over device 0's BAR 0. */
export const exportPath = path("export", (m, task) => {
  const { libc } = pathLibc(m, task);
  const feature = encodeDmaBufFeature({
    regionIndex: 0,
    openFlags: O_RDWR,
    ranges: [{ offset: 0n, length: AREA_LEN }],
  });
  return () => ok(libc, libc.ioctl(m.devFd(0), VFIO_DEVICE_FEATURE, feature));
});

/** VFIO revoke by function-level reset of device 0 (revoke, reset, un-revoke in one call). */
const flrPath = path("flr", (m, task) => {
  const { libc } = pathLibc(m, task);
  const cap = m.machine.devices[0]?.pdev.pcieCap ?? 0;
  return () => configWrite(libc, m.devFd(0), cap + PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR);
});

/** IOMMU_IOAS_MAP_FILE of the second half of the dma-buf at DMABUF2_IOVA. */
export const mapPath = path("map", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => {
    fd.ioasMapFile({
      ioasId: m.ioas,
      fd: m.dmabufFd,
      start: AREA_LEN,
      length: AREA_LEN,
      iova: DMABUF2_IOVA,
    });
  };
});

/** IOMMU_IOAS_MAP_FILE of the dma-buf over the IOVA the unmap path frees (DMABUF_IOVA). */
const remapPath = path("remap", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => {
    fd.ioasMapFile({
      ioasId: m.ioas,
      fd: m.dmabufFd,
      start: 0n,
      length: AREA_LEN,
      iova: DMABUF_IOVA,
    });
  };
});

/** Domain add: attach device 1 to IOAS 1 (iopt_table_add_domain fills every area). */
export const domainAddPath = path("domain-add", (m, task) => {
  const { libc } = pathLibc(m, task);
  return () => m.attach(libc, 1, m.ioas);
});

/** Domain remove: detach device 1 (set up attached with `secondDomain`). */
const domainRemovePath = path("domain-remove", (m, task) => {
  const { libc } = pathLibc(m, task);
  return () => {
    ok(
      libc,
      libc.ioctl(
        m.devFd(1),
        VFIO_DEVICE_DETACH_IOMMUFD_PT,
        vfio_device_detach_iommufd_pt.encode({ argsz: vfio_device_detach_iommufd_pt.size }),
      ),
    );
  };
});

/** IOMMU_IOAS_UNMAP of the dma-buf area. */
const unmapPath = path("unmap", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => {
    fd.ioasUnmap({ ioasId: m.ioas, iova: DMABUF_IOVA, length: AREA_LEN });
  };
});

/** IOMMU_IOAS_UNMAP of the memfd area (ends any access pin over it). */
export const unmapMemfdPath = path("unmap-memfd", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => {
    fd.ioasUnmap({ ioasId: m.ioas, iova: MEMFD_IOVA, length: AREA_LEN });
  };
});

/** IOMMU_IOAS_COPY of the dma-buf area into the second IOAS (set up with `secondIoas`). */
const copyPath = path("copy", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => {
    fd.ioasCopy({
      dstIoasId: m.ioas2,
      srcIoasId: m.ioas,
      srcIova: DMABUF_IOVA,
      length: AREA_LEN,
      dstIova: DMABUF_IOVA,
    });
  };
});

/**
 * An in-kernel access (an mdev-like driver) pinning 2 pages of the memfd area. Like the
 * kernel's drivers (and the selftest's mock access), it holds its own lock across a pin and
 * its record of it, and its unmap callback takes that lock to unpin what it recorded.
 */
export const accessPinPath = path("access-pin", (m) => {
  const file = m.machine.libc.process.files.lookup(m.fd.fd);
  const ctx = iommufdCtxFromFile(m.kernel, file);
  const lock = new Mutex(m.kernel.lockdep, "race_access_driver.lock");
  const pinned: Array<[bigint, bigint]> = [];
  const holder: { access?: IommufdAccess } = {};
  const access = iommufdAccessCreate(ctx, {
    needsPinPages: true,
    unmap(iova, length) {
      const last = iova + length - 1n;
      lock.with(() => {
        for (let i = pinned.length - 1; i >= 0; i--) {
          const [at, len] = pinned[i] as [bigint, bigint];
          if (at > last || at + len - 1n < iova || !holder.access) continue;
          iommufdAccessUnpinPages(holder.access, at, len);
          pinned.splice(i, 1);
        }
      });
    },
  });
  holder.access = access;
  iommufdAccessAttach(access, m.ioas);
  return () =>
    lock.with(() => {
      iommufdAccessPinPages(access, MEMFD_IOVA, 2n * PAGE, IOMMUFD_ACCESS_RW_WRITE);
      pinned.push([MEMFD_IOVA, 2n * PAGE]);
    });
});

/** IOMMU_HWPT_GET_DIRTY_BITMAP of the memfd area through the mock's dirty-tracking HWPT. */
const dirtyReadPath = path("dirty-read", (m, task) => {
  const { libc, fd } = pathLibc(m, task);
  const bitmap = libc.malloc(8);
  return () =>
    fd.hwptGetDirtyBitmap({
      hwptId: m.mockIds.hwpt,
      iova: MOCK_APERTURE_START,
      length: AREA_LEN,
      pageSize: PAGE,
      data: bitmap,
    });
});

/** IOMMU_IOAS_UNMAP of the mock IOAS's memfd area. */
const unmapMockPath = path("unmap", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => {
    fd.ioasUnmap({ ioasId: m.mockIds.ioas, iova: MOCK_APERTURE_START, length: AREA_LEN });
  };
});

/** IOMMU_HWPT_INVALIDATE through the vIOMMU: one selftest entry for the mock's vDEVICE. */
const viommuInvalidatePath = path("viommu-invalidate", (m, task) => {
  const { libc, fd } = pathLibc(m, task);
  const entry = iommu_viommu_invalidate_selftest.encode({ vdev_id: Number(MOCK_VIRT_ID) });
  const reqs = libc.malloc(entry.length);
  libc.poke(reqs, entry);
  return () => {
    fd.call(IOMMU_HWPT_INVALIDATE, iommu_hwpt_invalidate, {
      hwpt_id: m.mockIds.viommu,
      data_type: IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
      data_uptr: reqs,
      entry_len: entry.length,
      entry_num: 1,
    });
  };
});

/** IOMMU_DESTROY of the mock device's vDEVICE. */
const vdeviceDestroyPath = path("vdevice-destroy", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => fd.destroy(m.mockIds.vdevice);
});

/** IOMMU_DESTROY of the mock device: unbinds it, detaching it from the nested HWPT. */
const mockDetachPath = path("mock-detach", (m, task) => {
  const { fd } = pathLibc(m, task);
  return () => fd.destroy(m.mockIds.stdev);
});

/** VFIO_DEVICE_SET_IRQS DATA_NONE | ACTION_TRIGGER, count 0: tear device 0's MSI-X down. */
const irqTeardownPath = path("irq-teardown", (m, task) => {
  const { libc } = pathLibc(m, task);
  const flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  const arg = encodeIrqSet({ flags, index: VFIO_PCI_MSIX_IRQ_INDEX, count: 0 });
  return () => ok(libc, libc.ioctl(m.devFd(0), VFIO_DEVICE_SET_IRQS, arg));
});

/** VFIO_DEVICE_RESET of device 0 (its FLR: revokes the dma-buf around the reset). */
const resetPath = path("reset", (m, task) => {
  const { libc } = pathLibc(m, task);
  return () => ok(libc, libc.ioctl(m.devFd(0), VFIO_DEVICE_RESET, new Uint8Array(0)));
});

/** A named set of racing paths on a setup. */
export interface RaceScenario {
  readonly name: string;
  readonly setup: () => RaceMachineImpl;
  readonly paths: readonly Path[];
}

/** The standard scenarios: every revoke race the design argues about, and the others. */
export function standardRaceScenarios(opts: { trackerMutant?: boolean } = {}): RaceScenario[] {
  const mutant = opts.trackerMutant ? { trackerMutant: true } : {};
  return [
    { name: "revoke×map", setup: raceSetup(mutant), paths: [revokePath, mapPath] },
    { name: "revoke×domain-add", setup: raceSetup(mutant), paths: [revokePath, domainAddPath] },
    { name: "revoke×export", setup: raceSetup(mutant), paths: [revokePath, exportPath] },
    { name: "flr×domain-add", setup: raceSetup(mutant), paths: [flrPath, domainAddPath] },
    {
      name: "revoke×domain-remove",
      setup: raceSetup({ ...mutant, secondDomain: true }),
      paths: [revokePath, domainRemovePath],
    },
    { name: "map×unmap", setup: raceSetup(mutant), paths: [remapPath, unmapPath] },
    {
      name: "copy×revoke",
      setup: raceSetup({ ...mutant, secondIoas: true }),
      paths: [copyPath, revokePath],
    },
    {
      name: "access-pin×unmap",
      setup: raceSetup(mutant),
      paths: [accessPinPath, unmapMemfdPath],
    },
    {
      name: "dirty-read×unmap",
      setup: raceSetup({ ...mutant, mock: "dirty" }),
      paths: [dirtyReadPath, unmapMockPath],
    },
    {
      name: "viommu-invalidate×vdevice-destroy",
      setup: raceSetup({ ...mutant, mock: "viommu" }),
      paths: [viommuInvalidatePath, vdeviceDestroyPath],
    },
    {
      name: "viommu-invalidate×mock-detach",
      setup: raceSetup({ ...mutant, mock: "viommu" }),
      paths: [viommuInvalidatePath, mockDetachPath],
    },
    {
      name: "irq-teardown×reset",
      setup: raceSetup({ ...mutant, irqs: true }),
      paths: [irqTeardownPath, resetPath],
    },
    {
      name: "revoke×map×domain-add",
      setup: raceSetup(mutant),
      paths: [revokePath, mapPath, domainAddPath],
    },
  ];
}
