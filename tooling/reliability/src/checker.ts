/**
 * One invariant checker across the packages, callable between any two system calls.
 *
 * What it checks, each rule named in the violation it throws:
 * - `iommufd`: I1–I11 of every IOAS, by @x/iommufd's own checker (never restated here);
 * - `pins`: the machine's pin total equals the pins iommufd's pages account for (`npinned`
 *   covers domain fills and access pins alike), so a pin nobody owns is a leak;
 * - `accounting`: per user, `locked_vm` equals the pages charged in USER mode; per mm,
 *   `locked_vm` equals the MM-mode pages and `pinned_vm` all pinned pages of that mm;
 * - `iopte`: every IOPTE of every domain lies inside an area of the IOAS the domain belongs to;
 *   RAM targets are pinned and cacheable, MMIO targets carry IOMMU_MMIO and belong to a live
 *   VFIO dma-buf (no stale MMIO PTE); a domain maps exactly the frames of its IOAS's
 *   non-revoked areas and belongs to one IOAS only;
 * - `translation`: every IOPTE run points at the frames its area's source gives (the access's
 *   pinned PFNs, the user's pages, the memfd's folios, the dma-buf's range plus the slice
 *   start), with the area's read/write permission and MMIO exactly for dma-buf areas
 *   (translations.ts);
 * - `pinned`: a frame is pinned once per pages object holding it, and a pages object pins each
 *   index it holds once; `shared`: a range IOAS_COPY made still uses the source's pages objects;
 * - `dmabuf`: a buffer on the machine's list is alive; a buffer that left it was released
 *   exactly once and never while attached; every iommufd attachment belongs to live pages;
 * - `exporter`: VFIO dma-buf states match their device (LIVE/REVOKED on the list of an open
 *   device, ZOMBIE off every list and revoked, memory decode off ⇒ revoked, registration
 *   references = 1 + cdev files + listed buffers) and iommufd's view (exporter revoked ⇒
 *   importer revoked, same physical range otherwise);
 * - `lockdep`: no task of the scope holds a lock between system calls;
 * - `nesting`: a device on a nested domain reaches memory through a live stage-2 parent that
 *   is a domain of one of the IOASes (nesting-check.ts).
 *
 * A `Checker` remembers the buffers it has seen, so a release that happened between two checks
 * is verified too; `checkQuiesced` is the teardown check (nothing left). Contexts come from
 * iommufd's own list (`IommufdModule.contexts()`), so one kept alive only by an access or a
 * bound device after the user closed its fd is still checked.
 */
import { type DmaBuf, dmaBufList } from "@x/dmabuf";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOPT_PAGES_ACCOUNT_MM,
  IOPT_PAGES_ACCOUNT_USER,
  type IoPagetable,
  type IommufdCtx,
  IommufdIoas,
  IommufdModule,
  IoptPages,
} from "@x/iommufd";
import { checkInvariants } from "@x/iommufd/testing";
import type { IommuDomain } from "@x/iommu-pgtable";
import {
  PAGE_SHIFT as KERNEL_PAGE_SHIFT,
  type File,
  type Kernel,
  type MmStruct,
  type Task,
  type UserStruct,
} from "@x/kernel";
import {
  type VfioPciCoreDevice,
  type VfioPciDmaBuf,
  vfioDeviceFops,
  vfioDeviceFromFile,
  vfioPciDmaBufOps,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
} from "@x/vfio-pci";
import { forEachIopte } from "./iommu.js";
import { nestingProblem } from "./nesting-check.js";
import { ioptRunProblem, pinProblem } from "./translations.js";

/** A broken rule: `rule` is one of the names in the file comment. */
export class InvariantViolation extends Error {
  constructor(
    readonly rule: string,
    detail: string,
  ) {
    super(`[${rule}] ${detail}`);
    this.name = "InvariantViolation";
  }
}

function broken(rule: string, detail: string): never {
  throw new InvariantViolation(rule, detail);
}

/** A range IOAS_COPY mapped: while both ends are mapped, they use the same pages objects. */
export interface CopiedRange {
  readonly src: IoPagetable;
  readonly srcIova: bigint;
  readonly dst: IoPagetable;
  readonly dstIova: bigint;
  readonly length: bigint;
}

/**
 * What one check looks at: the machine, the user tasks, the VFIO devices, and the ranges the
 * program copied (the kernel keeps no record of a copy, so the program's own is used).
 */
export interface CheckScope {
  readonly kernel: Kernel;
  readonly tasks: readonly Task[];
  readonly devices: readonly VfioPciCoreDevice[];
  readonly copies?: () => Iterable<CopiedRange>;
}

const PAGE_SHIFT = BigInt(KERNEL_PAGE_SHIFT);

/** The iommufd state of a scope: contexts, IOASes and the pages their areas use. */
export interface Gathered {
  readonly ctxs: Set<IommufdCtx>;
  readonly iopts: IoPagetable[];
  readonly pages: Set<IoptPages>;
}

export class Checker {
  private readonly seenBufs = new Set<DmaBuf>();
  // Scratch structures of one check, cleared where each is filled (a check allocates none).
  private readonly pages = new Set<IoptPages>();
  private readonly alive = new Set<DmaBuf>();
  private readonly listed = new Set<VfioPciDmaBuf>();
  private readonly users = new Tally<UserStruct>();
  private readonly mmLocked = new Tally<MmStruct>();
  private readonly mmPinned = new Tally<MmStruct>();
  private readonly cdevFiles = new Tally<File>();
  private readonly cdevFilesOf = new Tally<unknown>();
  private readonly owner = new Map<IommuDomain, IoPagetable>();

  constructor(readonly scope: CheckScope) {}

  /** Run every rule; throws InvariantViolation on the first broken one. */
  check(): void {
    this.checkLockdep();
    // A fresh array costs less than truncating one (a runtime call).
    const iopts: IoPagetable[] = [];
    const pages = this.pages;
    pages.clear();
    gatherInto(this.scope.kernel, iopts, pages);
    this.checkIommufd(iopts);
    this.checkPins(pages);
    this.checkAccounting(pages);
    this.checkIoptes(iopts);
    this.checkPinnedAndShared(pages);
    // Nothing between the two rules touches the list: one copy of it serves both.
    const bufs = dmaBufList(this.scope.kernel);
    this.checkDmaBufs(pages, bufs);
    this.checkExporter(pages, bufs);
    for (const vdev of this.scope.devices) {
      checkIrqs(vdev);
      const nesting = nestingProblem(vdev, iopts);
      if (nesting) broken("nesting", nesting);
    }
  }

  /**
   * After the user closed every descriptor: `check()`, then nothing may be left — no pin,
   * no charge, no dma-buf, no iommufd context, no open or referenced VFIO device.
   */
  checkQuiesced(): void {
    this.check();
    const { kernel, devices } = this.scope;
    if (kernel.mem.totalPinned() !== 0) broken("leak", `${kernel.mem.totalPinned()} pages pinned`);
    const bufs = dmaBufList(kernel);
    if (bufs.length) broken("leak", `${bufs.length} dma-bufs alive`);
    const ctxs = [...(IommufdModule.of(kernel)?.contexts() ?? [])];
    if (ctxs.length) broken("leak", `${ctxs.length} iommufd contexts outlived their descriptors`);
    for (const vdev of devices) {
      if (vdev.openCount !== 0 || vdev.registrationRefs !== 1) {
        broken(
          "leak",
          `${vdev.name}: open ${vdev.openCount}, registration ${vdev.registrationRefs}`,
        );
      }
      const host = vdev.pdev.hostIrq;
      const irqs =
        vdev.irqCtx.size +
        (vdev.errTrigger ? 1 : 0) +
        (vdev.reqTrigger ? 1 : 0) +
        (host.intxHandler ? 1 : 0) +
        host.vectors.filter((v) => v !== undefined).length;
      if (irqs || host.msiType)
        broken("leak", `${vdev.name}: ${irqs} interrupt contexts, vectors or handlers`);
    }
    for (const t of this.scope.tasks) {
      const { mm, cred } = t.process;
      if (cred.user.lockedVm || mm.lockedVm || mm.pinnedVm) {
        broken(
          "leak",
          `charges left: user ${cred.user.lockedVm}, mm ${mm.lockedVm}/${mm.pinnedVm}`,
        );
      }
    }
  }

  private checkLockdep(): void {
    const { kernel, tasks } = this.scope;
    heldNothing(kernel, kernel.current);
    for (const task of tasks) heldNothing(kernel, task);
  }

  private checkIommufd(iopts: readonly IoPagetable[]): void {
    try {
      checkInvariants(iopts);
    } catch (e) {
      broken("iommufd", e instanceof Error ? e.message : String(e));
    }
  }

  private checkPins(pages: ReadonlySet<IoptPages>): void {
    let owned = 0;
    for (const p of pages) owned += p.npinned;
    const total = this.scope.kernel.mem.totalPinned();
    if (total !== owned) broken("pins", `machine has ${total} pinned pages, iommufd owns ${owned}`);
  }

  private checkAccounting(pages: ReadonlySet<IoptPages>): void {
    const { users, mmLocked, mmPinned } = this;
    users.reset();
    mmLocked.reset();
    mmPinned.reset();
    for (const t of this.scope.tasks) {
      users.add(t.process.cred.user, 0);
      mmLocked.add(t.process.mm, 0);
      mmPinned.add(t.process.mm, 0);
    }
    for (const p of pages) {
      if (p.accountMode === IOPT_PAGES_ACCOUNT_USER) users.add(p.sourceUser, p.lastNpinned);
      if (p.accountMode === IOPT_PAGES_ACCOUNT_MM) mmLocked.add(p.sourceMm, p.lastNpinned);
      mmPinned.add(p.sourceMm, p.lastNpinned);
    }
    for (let i = 0; i < users.size; i++) {
      const user = users.key(i);
      const n = users.sum(i);
      if (user.lockedVm !== n)
        broken("accounting", `uid ${user.uid}: locked_vm ${user.lockedVm}, charged ${n}`);
    }
    for (let i = 0; i < mmLocked.size; i++) {
      const mm = mmLocked.key(i);
      const n = mmLocked.sum(i);
      if (mm.lockedVm !== n) broken("accounting", `mm locked_vm ${mm.lockedVm}, charged ${n}`);
    }
    for (let i = 0; i < mmPinned.size; i++) {
      const mm = mmPinned.key(i);
      const n = mmPinned.sum(i);
      if (mm.pinnedVm !== n) broken("accounting", `mm pinned_vm ${mm.pinnedVm}, pinned ${n}`);
    }
  }

  /**
   * The `iopte` rules and the `translation` rule in one walk of each domain: a translation
   * problem is kept and thrown once every domain passed the `iopte` rules, so the violation
   * reported is the one the rules' order gives.
   */
  private checkIoptes(iopts: readonly IoPagetable[]): void {
    const { kernel, devices } = this.scope;
    const mem = kernel.mem;
    // Filled on the first MMIO IOPTE: most checks meet none.
    let live: Array<[bigint, bigint]> | undefined;
    const owner = this.owner;
    owner.clear();
    let translation: string | undefined;
    for (const iopt of iopts) {
      // Every rule below is per domain: an IOAS without one has nothing to count.
      if (iopt.domainList.length === 0) continue;
      let expected = 0;
      for (const area of iopt.areas()) {
        if (area.pages && !isRevoked(area.pages)) expected += frames(area.iova, area.lastIova);
      }
      for (const domain of iopt.domainList) {
        if (owner.has(domain)) broken("iopte", `domain ${domain.id} belongs to two IOASes`);
        owner.set(domain, iopt);
        let mapped = 0;
        forEachIopte(domain, (iovaPfn, pfn, n, prot) => {
          mapped += n;
          const start = BigInt(iovaPfn) << PAGE_SHIFT;
          const last = ((BigInt(iovaPfn) + BigInt(n)) << PAGE_SHIFT) - 1n;
          // One query of the IOAS's areas serves both rules.
          const areas = iopt.areas(start, last);
          if (translation === undefined) {
            const problem = ioptRunProblem(areas, iovaPfn, pfn, n, prot);
            if (problem) translation = `domain ${domain.id}: ${problem}`;
          }
          if (!coveredByAreas(areas, start, last)) {
            broken(
              "iopte",
              `domain ${domain.id}: IOPTE ${hex(start)}..${hex(last)} outside every area`,
            );
          }
          const paddr = BigInt(pfn) << PAGE_SHIFT;
          // MMIO regions lie above RAM: a RAM frame needs no region search.
          if (pfn >= mem.ramPages && mem.mmioRegionAt(paddr)) {
            if (!(prot & IOMMU_MMIO) || prot & IOMMU_CACHE) {
              broken(
                "iopte",
                `domain ${domain.id}: MMIO IOPTE at ${hex(start)} with prot 0x${prot.toString(16)}`,
              );
            }
            const end = paddr + (BigInt(n) << PAGE_SHIFT);
            live ??= liveMmioRanges(devices);
            if (!live.some(([s, e]) => paddr >= s && end <= e)) {
              broken(
                "iopte",
                `domain ${domain.id}: IOPTE ${hex(start)} -> ${hex(paddr)} is no live dma-buf (stale MMIO)`,
              );
            }
            return;
          }
          if (prot & IOMMU_MMIO)
            broken("iopte", `domain ${domain.id}: RAM IOPTE at ${hex(start)} marked MMIO`);
          for (let k = 0; k < n; k++) {
            if (!mem.isAllocated(pfn + k) || mem.pinCount(pfn + k) === 0) {
              broken(
                "iopte",
                `domain ${domain.id}: IOPTE ${hex(start)} -> pfn ${pfn + k} not pinned`,
              );
            }
          }
        });
        if (mapped !== expected) {
          broken("iopte", `domain ${domain.id} maps ${mapped} frames, its areas need ${expected}`);
        }
      }
    }
    if (translation) broken("translation", translation);
  }

  private checkPinnedAndShared(pages: ReadonlySet<IoptPages>): void {
    const pinned = pinProblem(pages, this.scope.kernel.mem);
    if (pinned) broken("pinned", pinned);
    const copies = this.scope.copies;
    if (!copies) return;
    for (const c of copies()) {
      const src = c.src.areas(c.srcIova, c.srcIova + c.length - 1n);
      const dst = c.dst.areas(c.dstIova, c.dstIova + c.length - 1n);
      if (!src.length || src.length !== dst.length) continue;
      for (let i = 0; i < src.length; i++) {
        const s = src[i]!;
        const d = dst[i]!;
        if (d.pages !== s.pages || d.index !== s.index || d.lastIndex !== s.lastIndex) {
          broken("shared", `copy at 0x${d.iova.toString(16)} does not use its source's pages`);
        }
      }
    }
  }

  private checkDmaBufs(pages: ReadonlySet<IoptPages>, bufs: readonly DmaBuf[]): void {
    const alive = this.alive;
    alive.clear();
    for (const buf of bufs) alive.add(buf);
    for (const buf of alive) {
      if (buf.released || buf.file.refcount === 0)
        broken("dmabuf", `${buf.expName}: on the list but released`);
      this.seenBufs.add(buf);
      const attachments = buf.resv.with(() => buf.attachments);
      for (const a of attachments) {
        const p = a.importerPriv;
        if (isIoptPages(p) && (!pages.has(p) || p.released)) {
          broken("dmabuf", `${buf.expName}: iommufd attachment of pages no area uses`);
        }
      }
    }
    for (const buf of this.seenBufs) {
      if (alive.has(buf)) continue;
      if (!buf.released) broken("dmabuf", `${buf.expName}: off the list but not released`);
      if (buf.resv.with(() => buf.attachments.length))
        broken("dmabuf", `${buf.expName}: released while attached`);
      const priv = vfioPriv(buf);
      if (priv && !priv.freed) broken("dmabuf", `${buf.expName}: exporter release did not run`);
      this.seenBufs.delete(buf);
    }
    for (const p of pages) {
      const attach = p.dmabuf?.attach;
      if (!p.dmabuf) continue;
      if (!attach) broken("dmabuf", "DMABUF pages without an attachment");
      const buf = attach.dmabuf;
      if (!alive.has(buf)) broken("dmabuf", "DMABUF pages hold a released dma-buf");
      if (!buf.resv.with(() => buf.attachments.includes(attach))) {
        broken("dmabuf", "DMABUF pages' attachment is not on its dma-buf");
      }
    }
  }

  private checkExporter(pages: ReadonlySet<IoptPages>, bufs: readonly DmaBuf[]): void {
    const { devices, tasks } = this.scope;
    const listed = this.listed;
    listed.clear();
    const cdevFilesOf = this.cdevFilesOf;
    countCdevFiles(tasks, this.cdevFiles, cdevFilesOf);
    for (const vdev of devices) {
      const enabled = vdev.vconfig ? vdev.memoryEnabled() : false;
      for (const priv of vdev.dmabufs) {
        listed.add(priv);
        const st = priv.state;
        if (priv.vdev !== vdev || (st !== "live" && st !== "revoked")) {
          broken("exporter", `${vdev.name}: listed dma-buf in state ${st}`);
        }
        if (vdev.openCount === 0)
          broken("exporter", `${vdev.name}: dma-buf listed on a closed device`);
        if (!enabled && !priv.revoked)
          broken("exporter", `${vdev.name}: memory decode off, dma-buf live`);
      }
      const cdevFiles = cdevFilesOf.get(vdev);
      const want = 1 + cdevFiles + vdev.dmabufs.size;
      if (vdev.registrationRefs !== want) {
        broken(
          "exporter",
          `${vdev.name}: ${vdev.registrationRefs} registration refs, expected ${want}`,
        );
      }
    }
    for (const buf of bufs) {
      const priv = vfioPriv(buf);
      if (!priv) continue;
      const st = priv.state;
      if ((st === "live" || st === "revoked") !== listed.has(priv)) {
        broken(
          "exporter",
          `dma-buf in state ${st} ${listed.has(priv) ? "on" : "off"} its device list`,
        );
      }
      if (st === "zombie" && !priv.revoked) broken("exporter", "zombie dma-buf not revoked");
    }
    for (const p of pages) {
      const d = p.dmabuf;
      const priv = d?.attach ? vfioPriv(d.attach.dmabuf) : undefined;
      if (!d || !priv) continue;
      const importerRevoked = d.phys.len === 0n;
      if (priv.revoked && !importerRevoked)
        broken("exporter", "exporter revoked, iommufd pages are not");
      if (!importerRevoked && (d.phys.paddr !== priv.paddr[0] || d.phys.len !== priv.len[0])) {
        broken("exporter", "iommufd pages map another range than the exporter's");
      }
    }
  }
}

/** Every live iommufd context of the machine, with its IOASes and the pages their areas use. */
export function gatherIommufd(scope: CheckScope): Gathered {
  const ctxs = new Set<IommufdCtx>(IommufdModule.of(scope.kernel)?.contexts() ?? []);
  const iopts: IoPagetable[] = [];
  const pages = new Set<IoptPages>();
  gatherInto(scope.kernel, iopts, pages);
  return { ctxs, iopts, pages };
}

/** Append the IOASes of every live context (contexts in list order, objects in id order). */
function gatherInto(kernel: Kernel, iopts: IoPagetable[], pages: Set<IoptPages>): void {
  const mod = IommufdModule.of(kernel);
  if (!mod) return;
  for (const ctx of mod.contexts()) {
    for (const obj of ctx.objectsInOrder()) {
      if (!(obj instanceof IommufdIoas)) continue;
      iopts.push(obj.iopt);
      for (const area of obj.iopt.areas()) if (area.pages) pages.add(area.pages);
    }
  }
}

/** The CPU-physical ranges [start, end) of every LIVE VFIO dma-buf. */
/**
 * A device's interrupt state is one mode: INTx owns the line's handler and context 0, MSI /
 * MSI-X own the allocated vectors (a handler on each signalled one), none owns nothing; every
 * trigger and unmask eventfd the device holds is a live reference.
 * @see vfio_pci_set_irqs_ioctl
 */
function checkIrqs(vdev: VfioPciCoreDevice): void {
  const host = vdev.pdev.hostIrq;
  const mode = vdev.irqType;
  const name = vdev.name;
  if (mode === VFIO_PCI_INTX_IRQ_INDEX) {
    if (!host.intxHandler || host.msiType) broken("irq", `${name}: INTx without its handler`);
  } else if (mode === VFIO_PCI_MSI_IRQ_INDEX || mode === VFIO_PCI_MSIX_IRQ_INDEX) {
    if (!host.msiType || host.intxHandler) broken("irq", `${name}: MSI mode without vectors`);
  } else if (vdev.irqCtx.size || host.intxHandler || host.msiType) {
    broken("irq", `${name}: interrupt contexts with no mode enabled`);
  }
  for (const [nr, ctx] of vdev.irqCtx) {
    if (ctx.trigger && ctx.trigger.refcount < 1)
      broken("irq", `${name}: vector ${nr} trigger released`);
    if (ctx.trigger && mode !== VFIO_PCI_INTX_IRQ_INDEX && !host.handlers[nr])
      broken("irq", `${name}: vector ${nr} signalled without a handler`);
  }
  const err = vdev.errTrigger;
  const req = vdev.reqTrigger;
  if ((err && err.refcount < 1) || (req && req.refcount < 1))
    broken("irq", `${name}: ERR / REQ trigger released`);
}

function heldNothing(kernel: Kernel, task: Task): void {
  const held = kernel.lockdep.heldBy(task);
  if (held.length) broken("lockdep", `task ${task.tid} holds ${held.map((h) => h.key).join(", ")}`);
}

function liveMmioRanges(devices: readonly VfioPciCoreDevice[]): Array<[bigint, bigint]> {
  const out: Array<[bigint, bigint]> = [];
  for (const vdev of devices) {
    for (const priv of vdev.dmabufs) {
      if (priv.revoked) continue;
      for (let i = 0; i < priv.nrRanges; i++)
        out.push([priv.paddr[i]!, priv.paddr[i]! + priv.len[i]!]);
    }
  }
  return out;
}

function vfioPriv(buf: DmaBuf): VfioPciDmaBuf | undefined {
  return buf.ops === vfioPciDmaBufOps ? (buf.priv as VfioPciDmaBuf) : undefined;
}

function isIoptPages(p: unknown): p is IoptPages {
  return p instanceof IoptPages;
}

function isRevoked(pages: IoptPages): boolean {
  return pages.dmabuf !== undefined && pages.dmabuf.phys.len === 0n;
}

/**
 * Distinct open cdev files per device in the scope's processes (each holds a registration),
 * into `out`; `files` is scratch. Both are reset first.
 */
function countCdevFiles(tasks: readonly Task[], files: Tally<File>, out: Tally<unknown>): void {
  files.reset();
  out.reset();
  for (const t of tasks) {
    const table = t.process.files;
    // Descriptor by descriptor up to the last open one: entries() allocates a pair for each.
    for (let fd = 0, left = table.openCount; left > 0; fd++) {
      if (!table.isOpen(fd)) continue;
      left--;
      const file = table.lookup(fd);
      if (file.fops !== vfioDeviceFops || files.has(file)) continue;
      files.add(file, 1);
      out.add(vfioDeviceFromFile(file).device, 1);
    }
  }
}

/** Whether `areas` (those overlapping [start, last], in IOVA order) cover it without a gap. */
function coveredByAreas(
  areas: ReturnType<IoPagetable["areas"]>,
  start: bigint,
  last: bigint,
): boolean {
  let at = start;
  for (const area of areas) {
    if (area.iova > at) return false;
    if (area.lastIova >= at) at = area.lastIova + 1n;
    if (at > last) return true;
  }
  return at > last;
}

/**
 * Sums per key in first-added order, for the handful of keys one check meets (users, mms,
 * devices, files): slots are overwritten from the start after `reset`, so a check allocates
 * neither a map nor its entries.
 */
class Tally<K> {
  private readonly keys: K[] = [];
  private readonly sums: number[] = [];
  size = 0;

  reset(): void {
    this.size = 0;
  }

  add(k: K, n: number): void {
    const i = this.indexOf(k);
    if (i >= 0) {
      this.sums[i]! += n;
      return;
    }
    this.keys[this.size] = k;
    this.sums[this.size++] = n;
  }

  has(k: K): boolean {
    return this.indexOf(k) >= 0;
  }

  /** The sum of `k`, 0 when never added. */
  get(k: K): number {
    const i = this.indexOf(k);
    return i < 0 ? 0 : this.sums[i]!;
  }

  key(i: number): K {
    return this.keys[i]!;
  }

  sum(i: number): number {
    return this.sums[i]!;
  }

  private indexOf(k: K): number {
    for (let i = 0; i < this.size; i++) if (this.keys[i] === k) return i;
    return -1;
  }
}

/** 4 KiB frames spanned by [iova, last]. */
function frames(iova: bigint, last: bigint): number {
  return Number((last >> PAGE_SHIFT) - (iova >> PAGE_SHIFT) + 1n);
}

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}
