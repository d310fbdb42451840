import {
  EINVAL,
  ENOENT,
  ENOMEM,
  type File,
  type FileOperations,
  type Kernel,
  LockdepError,
  ModuleKey,
  Mutex,
  O_ACCMODE,
  O_NONBLOCK,
  PAGE_SHIFT,
  SEEK_END,
  SEEK_SET,
  type Vma,
  WARN_ON,
  fail,
} from "@x/kernel";
import type { DmaDataDirection } from "./dma-direction.js";
import { type DmaResv, dmaResvInit } from "./dma-resv.js";
import type { SgTable } from "./scatterlist.js";

/**
 * The dma-buf core: one exporter's buffer shared with any number of importing devices.
 *
 * Lifetime. A dma-buf is an anonymous file; the file's refcount is the buffer's refcount. Export
 * returns the buffer holding one reference, which `dmaBufFd` hands over to a descriptor (or the
 * exporter drops with `dmaBufPut`). Every `dmaBufGet`/`getDmaBuf` adds one. The last put runs
 * the release path: unlink from the per-machine list, the exporter's `release`, the reservation
 * teardown, a WARN if attachments are left, exactly once. The kernel defers the release to the
 * end of the syscall; here it runs inside the last put (the file layer is synchronous).
 *
 * Attachments. An importer attaches its device: statically (`dmaBufAttach`, no callbacks, never
 * notified, never peer-to-peer) or dynamically (`dmaBufDynamicAttach` with `moveNotify` and
 * `allowPeer2peer`). The list is linked and walked only under the reservation lock.
 *
 * Locking convention (enforced; a breach throws `LockdepError`):
 * - called WITHOUT the reservation lock, and calling the exporter without it: export, fd, get,
 *   put (and so `release`), attach / detach (and the exporter's `attach` / `detach`), mmap;
 * - called WITH the reservation lock held by the caller, and calling the exporter with it:
 *   pin / unpin, map / unmap attachment (`pin`, `unpin`, `map_dma_buf`, `unmap_dma_buf`) and
 *   `dmaBufMoveNotify`, which the exporter calls with the lock held; exporter ops and importer
 *   `moveNotify` callbacks must not take it again (the lock reports a self-deadlock).
 *
 * Lock order: `dmabuf_list_mutex` is a leaf; `dma_resv -> importer locks` (see dma-resv.ts).
 */

/** A device as the dma-buf layer sees it: an identity the exporter may inspect. */
export type DmaBufDevice = object;

/**
 * The exporter's callbacks (struct dma_buf_ops). Errors are thrown KernelErrors. `pin`/`unpin`
 * come as a pair or not at all; the mandatory three are checked at export.
 */
export interface DmaBufOps {
  /** Called without resv; a throw fails the attach. */
  attach?(dmabuf: DmaBuf, attach: DmaBufAttachment): void;
  /** Called without resv. */
  detach?(dmabuf: DmaBuf, attach: DmaBufAttachment): void;
  /** Called with resv held. */
  pin?(attach: DmaBufAttachment): void;
  /** Called with resv held. */
  unpin?(attach: DmaBufAttachment): void;
  /** Called with resv held; `null` means the allocation failed (ENOMEM). @see map_dma_buf */
  mapDmaBuf(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable | null;
  /** Called with resv held. @see unmap_dma_buf */
  unmapDmaBuf(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void;
  /** Called without resv, once, when the last reference goes. */
  release(dmabuf: DmaBuf): void;
  /** Called without resv; absent means the buffer cannot be mmapped (EINVAL). */
  mmap?(dmabuf: DmaBuf, vma: Vma): void;
}

/** The importer's callbacks of a dynamic attachment (struct dma_buf_attach_ops). */
export interface DmaBufAttachOps {
  /** The importer can handle memory without struct page (peer-to-peer MMIO). */
  readonly allowPeer2peer?: boolean;
  /**
   * Called with the reservation lock held when the exporter moves (for VFIO: revokes or
   * restores) the buffer; the importer must drop its mappings. Must not take the resv lock.
   */
  moveNotify(attach: DmaBufAttachment): void;
}

/** struct dma_buf_export_info */
export interface DmaBufExportInfo {
  /** Exporter name (KBUILD_MODNAME in the kernel's DEFINE_DMA_BUF_EXPORT_INFO). */
  readonly expName: string;
  /** Owning module, referenced for the buffer's lifetime; defaults to `expName`. */
  readonly owner?: string;
  readonly ops: DmaBufOps;
  readonly size: bigint;
  /** File flags; only the access mode and O_NONBLOCK are kept. */
  readonly flags?: number;
  /** A reservation object the exporter shares; by default the buffer gets its own. */
  readonly resv?: DmaResv;
  readonly priv: unknown;
}

/** Per-machine dma-buf state: the global buffer list (db_list) and the build options. */
interface DmaBufCore {
  readonly lock: Mutex;
  readonly bufs: Set<DmaBuf>;
  moveNotify: boolean;
}

const DMA_BUF_CORE = new ModuleKey<DmaBufCore>("dma-buf");

/**
 * Decision: CONFIG_DMABUF_MOVE_NOTIFY follows its Kconfig default (off), so a map through a
 * dynamic attachment also pins when the exporter has `pin`. Tests may switch it on.
 */
function newCore(kernel: Kernel): DmaBufCore {
  return {
    lock: new Mutex(kernel.lockdep, "dmabuf_list_mutex"),
    bufs: new Set(),
    moveNotify: false,
  };
}

function core(kernel: Kernel): DmaBufCore {
  return kernel.moduleState(DMA_BUF_CORE, newCore);
}

/** The buffers alive on `kernel`, oldest first (the debugfs bufinfo list). */
export function dmaBufList(kernel: Kernel): DmaBuf[] {
  const c = core(kernel);
  // Copying a set cannot throw: no unlock on an error path is needed (nor a closure).
  c.lock.lock();
  const bufs = [...c.bufs];
  c.lock.unlock();
  return bufs;
}

/** Build option CONFIG_DMABUF_MOVE_NOTIFY; fixed while any buffer exists, like a build option. */
export function dmaBufSetMoveNotify(kernel: Kernel, enabled: boolean): void {
  const c = core(kernel);
  WARN_ON(c.bufs.size !== 0, "CONFIG_DMABUF_MOVE_NOTIFY changed with dma-bufs alive");
  c.moveNotify = enabled;
}

export function dmaBufMoveNotifyEnabled(kernel: Kernel): boolean {
  return core(kernel).moveNotify;
}

/** struct dma_buf. Made only by `dmaBufExport`. */
export class DmaBuf {
  readonly size: bigint;
  readonly ops: DmaBufOps;
  readonly priv: unknown;
  readonly expName: string;
  readonly file: File<DmaBuf>;
  readonly resv: DmaResv;
  readonly owner: string;
  /** The reservation object was allocated with the buffer (not supplied by the exporter). */
  private readonly ownResv: boolean;
  /** Insertion order; walks go newest first, like list_add + list_for_each. */
  private readonly attachList = new Set<DmaBufAttachment>();
  private dead = false;

  /** @internal */
  constructor(
    readonly kernel: Kernel,
    info: DmaBufExportInfo,
    fileFlags: number,
  ) {
    this.size = info.size;
    this.ops = info.ops;
    this.priv = info.priv;
    this.expName = info.expName;
    this.owner = info.owner ?? info.expName;
    this.ownResv = info.resv === undefined;
    this.resv = info.resv ?? dmaResvInit(kernel);
    this.file = kernel.anonFile(dmaBufFops, this, fileFlags);
  }

  /** The release path ran (the last reference is gone). */
  get released(): boolean {
    return this.dead;
  }

  /** The attachments, newest first; the reservation lock must be held. */
  get attachments(): DmaBufAttachment[] {
    this.resv.assertHeld();
    return [...this.attachList].reverse();
  }

  /** @internal list_add under resv */
  link(attach: DmaBufAttachment): void {
    this.resv.with(() => this.attachList.add(attach));
  }

  /** @internal list_del under resv; an attachment not on the list is a caller bug. */
  unlink(attach: DmaBufAttachment): void {
    this.resv.with(() => {
      WARN_ON(!this.attachList.delete(attach), "dma_buf_detach of an attachment not attached");
    });
  }

  /** @internal dentry release: the buffer's last reference is gone. @see dma_buf_release */
  destroy(): void {
    // Stryker disable next-line StringLiteral: the call named in a lockdep report is text only
    assertResvNotHeld(this, "dma_buf_release");
    this.ops.release(this);
    this.dead = true;
    if (this.ownResv) WARN_ON(this.resv.locked, "dma_resv_fini on a locked reservation");
    WARN_ON(this.attachList.size !== 0, "dma-buf released with attachments");
  }
}

/** struct dma_buf_attachment. Made only by `dmaBufDynamicAttach`. */
export class DmaBufAttachment {
  /** Copied from the importer's `allowPeer2peer`; false for a static attachment. */
  readonly peer2peer: boolean;
  /** The exporter's per-attachment data, set by its `attach` op. */
  priv: unknown = undefined;

  /** @internal */
  constructor(
    readonly dmabuf: DmaBuf,
    readonly dev: DmaBufDevice,
    readonly importerOps: DmaBufAttachOps | undefined,
    readonly importerPriv: unknown,
  ) {
    this.peer2peer = importerOps?.allowPeer2peer ?? false;
  }

  /** The importer handles move notifications. @see dma_buf_attachment_is_dynamic */
  get isDynamic(): boolean {
    return this.importerOps !== undefined;
  }
}

function assertResvNotHeld(dmabuf: DmaBuf, call: string): void {
  if (dmabuf.resv.isHeld)
    throw new LockdepError(`${call} called with the dma-buf reservation lock held`);
}

function dmaBufLlseek(file: File, offset: bigint, whence: number): bigint {
  const dmabuf = file.priv as DmaBuf;
  // Only the size can be discovered; SEEK_SET(0) is allowed so SEEK_END(0)/SEEK_SET(0) works.
  let base: bigint;
  if (whence === SEEK_END) base = dmabuf.size;
  else if (whence === SEEK_SET) base = 0n;
  else fail(EINVAL, "dma-buf lseek supports SEEK_SET and SEEK_END only");
  if (offset !== 0n) fail(EINVAL, "dma-buf lseek offset must be 0");
  return base + offset;
}

/** @see dma_buf_file_release */
function dmaBufFileRelease(file: File): void {
  const dmabuf = file.priv as DmaBuf;
  const c = core(dmabuf.kernel);
  c.lock.with(() => c.bufs.delete(dmabuf));
  dmabuf.destroy();
}

/** @see dma_buf_mmap_internal */
function dmaBufMmapInternal(file: File, vma: Vma): void {
  const dmabuf = file.priv as DmaBuf;
  if (!dmabuf.ops.mmap) fail(EINVAL, `${dmabuf.expName} does not support mmap`);
  const bufPages = dmabuf.size >> BigInt(PAGE_SHIFT);
  if (BigInt(vma.pgoff + vma.npages) > bufPages) fail(EINVAL, "mmap beyond the dma-buf");
  // Stryker disable next-line StringLiteral: the call named in a lockdep report is text only
  assertResvNotHeld(dmabuf, "mmap");
  dmabuf.ops.mmap(dmabuf, vma);
}

/** The file operations of every dma-buf (dma_buf_fops); identity marks a dma-buf file. */
const dmaBufFops: FileOperations = {
  name: "dmabuf",
  release: dmaBufFileRelease,
  llseek: dmaBufLlseek,
  mmap: dmaBufMmapInternal,
};

/** @see is_dma_buf_file */
export function isDmaBufFile(file: File): file is File<DmaBuf> {
  return file.fops === dmaBufFops;
}

/**
 * Wrap an exporter's buffer in a dma-buf holding one reference. Missing mandatory ops or priv,
 * or a lone pin/unpin, is an exporter bug (WARN, EINVAL). @see dma_buf_export
 */
export function dmaBufExport(kernel: Kernel, info: DmaBufExportInfo): DmaBuf {
  const ops = info.ops as Partial<DmaBufOps> | undefined;
  const incomplete =
    info.priv === undefined || info.priv === null || !ops?.mapDmaBuf || !ops.unmapDmaBuf;
  WARN_ON(incomplete || !ops?.release, "dma_buf_export: priv or a mandatory op is missing");
  WARN_ON(!ops?.pin !== !ops?.unpin, "dma_buf_export: pin and unpin come as a pair");
  // try_module_get on the owner, then the anon file, then the object: each can fail, and all
  // fail before anything is created.
  if (kernel.shouldFail("try_module_get")) fail(ENOENT, `module ${info.owner ?? info.expName}`);
  if (kernel.shouldFail("dma_buf_getfile")) fail(ENOMEM, "dma-buf file");
  if (kernel.shouldFail("dma_buf_export")) fail(ENOMEM, "dma-buf object");
  const dmabuf = new DmaBuf(kernel, info, (info.flags ?? 0) & (O_ACCMODE | O_NONBLOCK));
  const c = core(kernel);
  c.lock.with(() => c.bufs.add(dmabuf));
  return dmabuf;
}

/**
 * Install the buffer's file in the current process's descriptor table, consuming the caller's
 * reference on success; on failure (EMFILE) the reference stays the caller's. Only O_CLOEXEC of
 * `flags` matters here. @see dma_buf_fd
 */
export function dmaBufFd(kernel: Kernel, dmabuf: DmaBuf, flags = 0): number {
  if (!dmabuf?.file) fail(EINVAL);
  WARN_ON(dmabuf.released, "dma_buf_fd on a released dma-buf");
  return kernel.current.process.files.install(dmabuf.file, flags);
}

/** A new reference on the dma-buf behind `fd`: EBADF, or EINVAL if it is another file. */
export function dmaBufGet(kernel: Kernel, fd: number): DmaBuf {
  const file = kernel.current.process.files.fget(fd);
  if (!isDmaBufFile(file)) {
    file.put();
    fail(EINVAL, `fd ${fd} is not a dma-buf`);
  }
  return file.priv;
}

/** One more reference. @see get_dma_buf */
export function getDmaBuf(dmabuf: DmaBuf): void {
  dmabuf.file.get();
}

/** Drop a reference; the last one releases the buffer. @see dma_buf_put */
export function dmaBufPut(dmabuf: DmaBuf): void {
  WARN_ON(!dmabuf?.file, "dma_buf_put of nothing");
  dmabuf.file.put();
}

/**
 * Attach `dev` as an importer. With `importerOps` the attachment is dynamic (notified through
 * `moveNotify`, peer-to-peer if the importer allows it); without, static. Nothing is pinned or
 * mapped here. @see dma_buf_dynamic_attach
 */
export function dmaBufDynamicAttach(
  kernel: Kernel,
  dmabuf: DmaBuf,
  dev: DmaBufDevice,
  importerOps?: DmaBufAttachOps,
  importerPriv?: unknown,
): DmaBufAttachment {
  WARN_ON(!dmabuf || !dev, "dma_buf_attach: no buffer or device");
  WARN_ON(importerOps !== undefined && !importerOps.moveNotify, "importer ops without move_notify");
  // Stryker disable next-line StringLiteral: the call named in a lockdep report is text only
  assertResvNotHeld(dmabuf, "dma_buf_attach");
  if (kernel.shouldFail("dma_buf_dynamic_attach")) fail(ENOMEM, "dma-buf attachment");
  const attach = new DmaBufAttachment(dmabuf, dev, importerOps, importerPriv);
  dmabuf.ops.attach?.(dmabuf, attach);
  dmabuf.link(attach);
  return attach;
}

/** A static attachment: no notifications, no peer-to-peer. @see dma_buf_attach */
export function dmaBufAttach(kernel: Kernel, dmabuf: DmaBuf, dev: DmaBufDevice): DmaBufAttachment {
  return dmaBufDynamicAttach(kernel, dmabuf, dev);
}

/** Unlink and forget an attachment; the importer has unmapped and unpinned. @see dma_buf_detach */
export function dmaBufDetach(dmabuf: DmaBuf, attach: DmaBufAttachment): void {
  WARN_ON(!dmabuf || !attach || attach.dmabuf !== dmabuf, "dma_buf_detach: bad arguments");
  // Stryker disable next-line StringLiteral: the call named in a lockdep report is text only
  assertResvNotHeld(dmabuf, "dma_buf_detach");
  dmabuf.unlink(attach);
  dmabuf.ops.detach?.(dmabuf, attach);
}

/**
 * Ask the exporter to keep the buffer where it is; dynamic attachments only, resv held.
 * An exporter without `pin` accepts silently. @see dma_buf_pin
 */
export function dmaBufPin(attach: DmaBufAttachment): void {
  WARN_ON(!attach.isDynamic, "dma_buf_pin on a static attachment");
  attach.dmabuf.resv.assertHeld();
  attach.dmabuf.ops.pin?.(attach);
}

/** @see dma_buf_unpin */
export function dmaBufUnpin(attach: DmaBufAttachment): void {
  WARN_ON(!attach.isDynamic, "dma_buf_unpin on a static attachment");
  attach.dmabuf.resv.assertHeld();
  attach.dmabuf.ops.unpin?.(attach);
}

/** Map/unmap pin implicitly when the importer cannot follow moves. @see dma_buf_pin_on_map */
function pinOnMap(attach: DmaBufAttachment): boolean {
  const { dmabuf } = attach;
  return dmabuf.ops.pin !== undefined && (!attach.isDynamic || !core(dmabuf.kernel).moveNotify);
}

/**
 * Map the buffer for the attachment's device, resv held. Pins first when `pinOnMap`; a failed
 * map undoes that pin. Decision: fences are not modelled, so the wait a static importer does
 * for kernel fences after mapping always finds none. @see dma_buf_map_attachment
 */
export function dmaBufMapAttachment(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable {
  WARN_ON(!attach?.dmabuf, "dma_buf_map_attachment: no attachment");
  const { dmabuf } = attach;
  dmabuf.resv.assertHeld();
  const pin = pinOnMap(attach);
  if (pin) dmabuf.ops.pin?.(attach);
  try {
    const sgt = dmabuf.ops.mapDmaBuf(attach, dir);
    if (!sgt) fail(ENOMEM, "map_dma_buf returned no table");
    return sgt;
  } catch (e) {
    if (pin) dmabuf.ops.unpin?.(attach);
    throw e;
  }
}

/** Undo `dmaBufMapAttachment`, resv held. @see dma_buf_unmap_attachment */
export function dmaBufUnmapAttachment(
  attach: DmaBufAttachment,
  sgt: SgTable,
  dir: DmaDataDirection,
): void {
  WARN_ON(!attach?.dmabuf || !sgt, "dma_buf_unmap_attachment: bad arguments");
  const { dmabuf } = attach;
  dmabuf.resv.assertHeld();
  dmabuf.ops.unmapDmaBuf(attach, sgt, dir);
  if (pinOnMap(attach)) dmabuf.ops.unpin?.(attach);
}

/** `dmaBufMapAttachment` taking and dropping resv. @see dma_buf_map_attachment_unlocked */
export function dmaBufMapAttachmentUnlocked(
  attach: DmaBufAttachment,
  dir: DmaDataDirection,
): SgTable {
  WARN_ON(!attach?.dmabuf, "dma_buf_map_attachment_unlocked: no attachment");
  return attach.dmabuf.resv.with(() => dmaBufMapAttachment(attach, dir));
}

/** @see dma_buf_unmap_attachment_unlocked */
export function dmaBufUnmapAttachmentUnlocked(
  attach: DmaBufAttachment,
  sgt: SgTable,
  dir: DmaDataDirection,
): void {
  WARN_ON(!attach?.dmabuf || !sgt, "dma_buf_unmap_attachment_unlocked: bad arguments");
  attach.dmabuf.resv.with(() => dmaBufUnmapAttachment(attach, sgt, dir));
}

/**
 * Tell every dynamic importer the buffer moved (for VFIO: was revoked or restored). The
 * exporter holds resv; static attachments are skipped. @see dma_buf_move_notify
 */
export function dmaBufMoveNotify(dmabuf: DmaBuf): void {
  dmabuf.resv.assertHeld();
  for (const attach of dmabuf.attachments) attach.importerOps?.moveNotify(attach);
}
