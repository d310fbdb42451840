/**
 * The machine a VM scenario runs on: a host kernel with iommufd and vfio-pci loaded, IOMMU
 * units, PCI functions bound to vfio-pci, and one VMM process (the QEMU-like client) driving
 * them through system calls. The world also holds what a scenario looks at after every step:
 *
 * - DMA probes: a device reads at an IOVA through its attached domain (vfio-pci's DMA master);
 *   the verdict says whether it reached RAM, a BAR, or faulted.
 * - Checks: iommufd's invariant checker (I1–I11) and its pin count against the machine's, plus
 *   the end-to-end invariants the playground reads from the page tables themselves — no IOPTE of
 *   a revoked dma-buf area in any domain (I1), every live area fully mapped in every domain of
 *   its IOAS (I2), no IOPTE outside an area.
 * - A snapshot for the views, read from the packages' objects.
 */
import {
  IOMMUFD_OBJ_HWPT_PAGING,
  IOMMUFD_OBJ_IOAS,
  type IommufdCtx,
  type IommufdHwptPaging,
  type IommufdIoas,
  type IoptPages,
  type IommufdModule,
  iommufdInit,
} from "@x/iommufd";
import { checkInvariants, totalNpinned } from "@x/iommufd/testing";
import { type IommuDomain, iommuIovaToPhys } from "@x/iommu-pgtable";
import { EFAULT, Kernel, KernelError, Libc } from "@x/kernel";
import {
  type PciBarSpec,
  type PciBus,
  type PciDev,
  type PciDevSpec,
  type VfioPciCoreDevice,
  type VfioPciDmaBuf,
  type VfioPciModule,
  loadVfioPci,
  pciRoot,
  vfioPciDmaRead,
} from "@x/vfio-pci";
import { HwIommu, type HwIommuOptions, type IommuKind, domainBytes, mappedIn } from "./iommu-hw.js";
import type { LogKind, ProbeResult, World } from "./scenario.js";
import {
  type AreaView,
  type DeviceView,
  type DmabufView,
  type DomainView,
  type IoasView,
  type Snapshot,
  bytes,
  hex,
} from "./snapshot.js";
import { Vmm, type VmmOptions } from "./vmm.js";

export const KiB = 1n << 10n;
export const MiB = 1n << 20n;
export const GiB = 1n << 30n;
export const TiB = 1n << 40n;

interface BarSpec {
  readonly index: number;
  readonly size: bigint;
  /** Where the guest firmware places it. */
  readonly gpa: bigint;
  readonly type?: "mem32" | "mem64";
}

export interface DeviceSpec {
  readonly name: string;
  readonly vendor: number;
  readonly device: number;
  readonly classCode: number;
  /** The IOMMU unit in front of it. */
  readonly iommu: string;
  readonly bars: readonly BarSpec[];
  /** PCIe FLR (DEVCAP.FLR); on unless false. Without it QEMU resets the function another way. */
  readonly flr?: boolean;
  /** Alone on its own bus (a secondary-bus reset then affects no other function). */
  readonly ownBus?: boolean;
  /** An MSI-X capability: table size and where the table lives. */
  readonly msix?: PciDevSpec["msix"];
}

interface IommuSpec extends HwIommuOptions {
  readonly name: string;
  readonly kind: IommuKind;
}

/** A DMA the world issues after every step: `from` reads 8 bytes at `to`. */
export interface ProbeSpec {
  readonly name: string;
  readonly from: string;
  readonly to: { readonly ram: bigint } | { readonly device: string; readonly bar: number };
}

export interface VmWorldSpec {
  readonly ramBytes?: bigint;
  readonly iommus: readonly IommuSpec[];
  readonly devices: readonly DeviceSpec[];
  readonly probes?: readonly ProbeSpec[];
  readonly vmm?: Omit<VmmOptions, "log">;
}

/** A GPU: 16 MiB of registers (BAR0) and a 64-bit prefetchable aperture (BAR2). */
export function gpuSpec(
  name: string,
  iommu: string,
  bar0: bigint,
  bar2: bigint,
  bar2Size = GiB,
): DeviceSpec {
  return {
    name,
    vendor: 0x10de,
    device: 0x2330,
    classCode: 0x030200,
    iommu,
    bars: [
      { index: 0, size: 16n * MiB, gpa: bar0, type: "mem32" },
      { index: 2, size: bar2Size, gpa: bar2, type: "mem64" },
    ],
  };
}

/** A NIC with one 1 MiB register BAR. */
export function nicSpec(name: string, iommu: string, bar0: bigint): DeviceSpec {
  return {
    name,
    vendor: 0x15b3,
    device: 0x101d,
    classCode: 0x020000,
    iommu,
    bars: [{ index: 0, size: MiB, gpa: bar0, type: "mem32" }],
  };
}

export interface HostDevice {
  readonly spec: DeviceSpec;
  readonly pdev: PciDev;
  readonly vdev: VfioPciCoreDevice;
}

/** The host side: kernel, modules, IOMMU units, PCI functions bound to vfio-pci. */
export class Host {
  readonly kernel: Kernel;
  readonly iommufd: IommufdModule;
  readonly vfio: VfioPciModule;
  readonly bus: PciBus;
  readonly iommus = new Map<string, HwIommu>();
  readonly devices = new Map<string, HostDevice>();

  constructor(spec: Pick<VmWorldSpec, "ramBytes" | "iommus">) {
    this.kernel = new Kernel(spec.ramBytes === undefined ? {} : { ramBytes: spec.ramBytes });
    this.iommufd = iommufdInit(this.kernel, { vfioContainer: true });
    this.vfio = loadVfioPci(this.kernel);
    this.bus = pciRoot(this.kernel).newBus();
    for (const u of spec.iommus)
      this.iommus.set(u.name, new HwIommu(this.kernel, u.name, u.kind, u));
  }

  /** Plug a function in and bind it to vfio-pci (hot-add when the VM runs). */
  addDevice(spec: DeviceSpec): HostDevice {
    const unit = this.iommus.get(spec.iommu);
    if (!unit) throw new Error(`no IOMMU ${spec.iommu}`);
    const bars: Array<PciBarSpec | undefined> = [];
    for (const b of spec.bars)
      bars[b.index] = { type: b.type ?? "mem64", size: b.size, prefetchable: b.type === "mem64" };
    const bus = spec.ownBus ? pciRoot(this.kernel).newBus() : this.bus;
    const pdev = bus.addDevice({
      vendor: spec.vendor,
      device: spec.device,
      classCode: spec.classCode,
      bars,
      pm: true,
      pcie: { flr: spec.flr ?? true },
      ...(spec.msix ? { msix: spec.msix } : {}),
      iommu: unit.driver,
    });
    const vdev = this.vfio.probe(pdev);
    const dev = { spec, pdev, vdev };
    this.devices.set(spec.name, dev);
    return dev;
  }

  /** The IOMMU unit that allocated `domain`, if it is one of the hardware units. */
  unitOf(domain: IommuDomain | undefined): HwIommu | undefined {
    if (!domain) return undefined;
    for (const u of this.iommus.values()) if (u.owns(domain)) return u;
    return undefined;
  }

  device(name: string): HostDevice {
    const d = this.devices.get(name);
    if (!d) throw new Error(`no device ${name}`);
    return d;
  }

  /** The host device whose BAR holds `paddr`, as "gpu1 BAR2 +0x40". */
  describePhys(paddr: bigint): string | undefined {
    const hit = pciRoot(this.kernel).barAt(paddr);
    if (!hit) return undefined;
    const name =
      [...this.devices.values()].find((d) => d.pdev === hit.dev)?.spec.name ?? hit.dev.name;
    const start = hit.dev.resource(hit.bar).start;
    return `${name} BAR${hit.bar} +${hex(paddr - start)}`;
  }
}

/** A DMABUF area whose pages were revoked (phys.len 0); read without the pages mutex, for views. */
function isRevoked(pages: IoptPages | undefined): boolean {
  return pages?.dmabuf !== undefined && pages.dmabuf.phys.len === 0n;
}

/** A host, a VMM process and the probes of one scenario. */
export class VmWorld implements World {
  readonly host: Host;
  readonly kernel: Kernel;
  readonly libc: Libc;
  readonly vmm: Vmm;
  readonly probes: ProbeSpec[];
  /** Every dma-buf the world has seen, with the device and BAR it slices (zombies leave the device list). */
  private readonly seen = new Map<VfioPciDmaBuf, { device: string; bar: number }>();
  private log: (text: string, kind: LogKind) => void = () => {};

  constructor(readonly spec: VmWorldSpec) {
    this.host = new Host(spec);
    this.kernel = this.host.kernel;
    for (const d of spec.devices) this.host.addDevice(d);
    this.libc = new Libc(this.kernel, this.kernel.newProcess(0));
    this.vmm = new Vmm(this.libc, { ...spec.vmm, log: (t, k) => this.log(t, k) });
    this.probes = [...(spec.probes ?? [])];
  }

  attachLog(log: (text: string, kind: LogKind) => void): void {
    this.log = log;
  }

  /** The VMM's iommufd context (undefined before boot or after close). */
  ctx(): IommufdCtx | undefined {
    const fd = this.vmm.iommufd;
    if (fd < 0 || !this.libc.process.files.isOpen(fd)) return undefined;
    return this.host.iommufd.ctxFromFile(this.libc.process.files.lookup(fd));
  }

  ioases(): IommufdIoas[] {
    const ctx = this.ctx();
    return ctx
      ? ([...ctx.objectsInOrder()].filter((o) => o.type === IOMMUFD_OBJ_IOAS) as IommufdIoas[])
      : [];
  }

  hwpts(): IommufdHwptPaging[] {
    const ctx = this.ctx();
    return ctx
      ? ([...ctx.objectsInOrder()].filter(
          (o) => o.type === IOMMUFD_OBJ_HWPT_PAGING,
        ) as IommufdHwptPaging[])
      : [];
  }

  /** What the VMM placed at `iova` (a RAM block or a device BAR), for labels. */
  labelAt(iova: bigint): string {
    for (const r of this.vmm.ram) if (iova >= r.gpa && iova < r.gpa + r.size) return r.name;
    for (const d of this.vmm.devices)
      for (const b of d.bars)
        if (iova >= b.gpa && iova < b.gpa + b.size) return `${d.name} BAR${b.index}`;
    return hex(iova);
  }

  /**
   * What a VMM that exited should have left behind: nothing. Pinned pages, live dma-bufs,
   * open or bound devices and iommufd objects, each as a message; empty when all are gone.
   */
  leftovers(): string[] {
    const out: string[] = [];
    const pinned = this.kernel.mem.totalPinned();
    if (pinned) out.push(`${pinned} pages still pinned`);
    for (const [name, d] of this.host.devices) {
      if (d.vdev.openCount) out.push(`${name} still open`);
      if (d.vdev.binding) out.push(`${name} still bound to an iommufd`);
      const bufs = d.vdev.dmabufs.size;
      if (bufs) out.push(`${name} still has ${bufs} dma-buf(s)`);
    }
    const objs = this.ctx() ? [...(this.ctx()?.objectsInOrder() ?? [])].length : 0;
    if (objs) out.push(`${objs} iommufd object(s) left`);
    return out;
  }

  check(): string[] {
    const out: string[] = [];
    try {
      const pages = checkInvariants(this.ioases().map((i) => i.iopt));
      const held = totalNpinned(pages);
      const pinned = this.kernel.mem.totalPinned();
      if (held !== pinned)
        out.push(`pins: iommufd holds ${held} pages, the machine has ${pinned} pinned`);
    } catch (e) {
      out.push(e instanceof Error ? e.message : String(e));
    }
    for (const ioas of this.ioases()) {
      const domains = this.hwpts().flatMap((h) =>
        h.ioas === ioas && h.domain ? [{ id: h.id, d: h.domain }] : [],
      );
      const inAreas = new Map<number, bigint>(domains.map((x) => [x.id, 0n]));
      for (const area of ioas.iopt.areas()) {
        const pages = area.pages;
        if (!pages) continue;
        const what = `${this.labelAt(area.iova)} [${hex(area.iova)} +${bytes(area.length)}]`;
        for (const { id, d } of domains) {
          const mapped = mappedIn(d, area.iova, area.length);
          inAreas.set(id, (inAreas.get(id) ?? 0n) + mapped);
          if (isRevoked(pages) && mapped !== 0n)
            out.push(`I1: revoked ${what} still has ${bytes(mapped)} of IOPTEs in HWPT ${id}`);
          if (!isRevoked(pages) && mapped !== area.length)
            out.push(
              `I2: live ${what} has ${bytes(mapped)} of ${bytes(area.length)} mapped in HWPT ${id}`,
            );
        }
      }
      for (const { id, d } of domains) {
        const total = domainBytes(d);
        const inside = inAreas.get(id) ?? 0n;
        if (total !== inside) out.push(`HWPT ${id} maps ${bytes(total - inside)} outside any area`);
      }
    }
    return out;
  }

  private runProbe(p: ProbeSpec): ProbeResult {
    const to = p.to;
    const iova =
      "ram" in to
        ? to.ram
        : (this.host.device(to.device).spec.bars.find((b) => b.index === to.bar)?.gpa ?? 0n);
    const from = this.host.device(p.from).vdev;
    try {
      vfioPciDmaRead(from, iova, 8);
    } catch (e) {
      if (e instanceof KernelError) {
        // vfio-pci says "DMA read at <iova>: <reason>"; the reason is what matters here.
        const reason = (e.context ?? "").split(": ").slice(1).join(": ") || e.errnoName;
        const kind = e.errno === EFAULT ? "IOMMU fault" : "no completion";
        return { name: p.name, iova, verdict: "fault", detail: `${kind}: ${reason}` };
      }
      throw e;
    }
    const domain = from.binding?.hwpt?.domain;
    const paddr = domain ? iommuIovaToPhys(domain, iova) : 0n;
    const bar = this.host.describePhys(paddr);
    return bar
      ? { name: p.name, iova, verdict: "mmio", detail: bar }
      : { name: p.name, iova, verdict: "ram", detail: `RAM ${hex(paddr)}` };
  }

  probe(): ProbeResult[] {
    return this.probes.map((p) => this.runProbe(p));
  }

  private dmabufViews(): DmabufView[] {
    for (const [name, d] of this.host.devices)
      for (const buf of d.vdev.dmabufs) {
        if (this.seen.has(buf)) continue;
        const hit = pciRoot(this.kernel).barAt(buf.paddr[0] ?? 0n);
        this.seen.set(buf, { device: name, bar: hit?.bar ?? -1 });
      }
    const out: DmabufView[] = [];
    for (const [buf, where] of this.seen) {
      const state = buf.state;
      if (state === "freed") continue;
      const vbar = this.vmm.devices
        .find((d) => d.name === where.device)
        ?.bars.find((b) => b.index === where.bar);
      const mapped = this.ioases().some((i) =>
        i.iopt.areas().some((a) => a.pages?.dmabuf?.attach?.dmabuf === buf.dmabuf),
      );
      out.push({
        device: where.device,
        bar: where.bar,
        size: buf.size,
        state,
        iova: mapped ? vbar?.gpa : undefined,
      });
    }
    return out;
  }

  snapshot(): Snapshot {
    const hwpts = this.hwpts();
    const ioas: IoasView[] = this.ioases().map((i) => ({
      id: i.id,
      label: `IOAS ${i.id}`,
      areas: i.iopt.areas().map((a): AreaView => {
        const mapped: Record<string, bigint> = {};
        for (const h of hwpts)
          if (h.ioas === i && h.domain)
            mapped[`HWPT ${h.id}`] = mappedIn(h.domain, a.iova, a.length);
        return {
          iova: a.iova,
          length: a.length,
          kind: a.pages?.isDmabuf ? "mmio" : "ram",
          live: !isRevoked(a.pages),
          label: this.labelAt(a.iova),
          mapped,
        };
      }),
    }));
    const domains: DomainView[] = hwpts.flatMap((h) => {
      const d = h.domain;
      if (!d) return [];
      const devices = [...this.host.devices.values()]
        .filter((x) => x.vdev.binding?.hwpt === h)
        .map((x) => x.spec.name);
      return [
        {
          label: `HWPT ${h.id}`,
          format: `${this.host.unitOf(d)?.name ?? "?"} (${d.pt?.format.name ?? "classic"})`,
          devices,
          levels: (d.pt?.occupancy() ?? []).map((l) => ({
            level: l.level,
            tables: l.tables,
            leaves: Object.fromEntries(
              Object.entries(l.leavesBySizeLg2).map(([lg2, n]) => [String(1n << BigInt(lg2)), n]),
            ),
          })),
          mappedBytes: domainBytes(d),
        },
      ];
    });
    const devices: DeviceView[] = [...this.host.devices.values()].map((d) => ({
      name: d.spec.name,
      memoryEnabled: d.vdev.vconfig ? d.vdev.memoryEnabled() : d.pdev.decodesMemory,
      power: `D${d.pdev.powerState}`,
      attachedTo: d.vdev.binding?.hwpt ? `HWPT ${d.vdev.binding.hwpt.id}` : undefined,
      open: d.vdev.openCount > 0,
    }));
    const notes: string[] = [];
    if (this.vmm.p2pWarned) notes.push(`${this.vmm.name} printed the P2P warning`);
    return { ioas, domains, dmabufs: this.dmabufViews(), devices, notes };
  }
}
