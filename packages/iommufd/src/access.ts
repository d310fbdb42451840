/**
 * In-kernel accesses (struct iommufd_access): how a driver without its own IOMMU (an mdev,
 * the selftest's emulated device) reaches an IOAS through the CPU — pinning pages of an IOVA
 * range or copying bytes to and from it.
 *
 * For drivers:
 *
 *   const access = iommufdAccessCreate(ctx, { needsPinPages: true, unmap: (iova, len) => … })
 *   iommufdAccessAttach(access, ioasId)                    // ENOENT for an unknown IOAS
 *   const runs = iommufdAccessPinPages(access, iova, length, IOMMUFD_ACCESS_RW_WRITE)
 *   iommufdAccessUnpinPages(access, iova, length)          // exactly what was pinned
 *   iommufdAccessRw(access, iova, data, flags)             // read into / write from `data`
 *   iommufdAccessReplace(access, otherIoasId)              // the old IOAS's pins are dropped first
 *   iommufdAccessDetach(access); iommufdAccessDestroy(access)
 *
 * An access that pins must provide `unmap`: when user space unmaps a range it pinned, the
 * io_pagetable calls it and the driver must unpin everything it holds there (then the unmap is
 * retried). Pin and rw answer EINVAL for length 0, EOVERFLOW when the range wraps, ENOENT
 * while detached, then whatever the io_pagetable says (ENOENT for holes, EPERM for protection,
 * EINVAL for DMABUF areas and areas being unmapped). Pinning needs PAGE_SIZE IOVA alignment,
 * which the access imposes on its IOAS while attached.
 *
 * Lock order: access.ioas_lock -> iopt.domains_rwsem -> iopt.iova_rwsem -> pages.mutex; the
 * unmap callback runs without ioas_lock.
 */
import {
  EBUSY,
  EINVAL,
  ENOENT,
  EOVERFLOW,
  KernelWarning,
  Mutex,
  PfnRuns,
  PAGE_SIZE,
  WARN_ON,
  fail,
  U64_MAX,
} from "@x/kernel";
import { ioptAccessPinPages, ioptAccessRw, ioptAccessUnpinPages } from "./access-core.js";
import type { IoptAccess } from "./io-pagetable.js";
import { type IommufdIoas, getIoas } from "./ioas.js";
import { IOMMUFD_OBJ_ACCESS, type IommufdCtx, IommufdObject } from "./main.js";

/** struct iommufd_access_ops */
export interface IommufdAccessOps {
  /** The driver pins pages (so it must unpin on `unmap`). */
  readonly needsPinPages: boolean;
  /** Unpin everything pinned in [iova, iova + length); may not fail. */
  unmap?(iova: bigint, length: bigint): void;
}

export class IommufdAccess extends IommufdObject implements IoptAccess {
  readonly type = IOMMUFD_OBJ_ACCESS;
  readonly iovaAlignment: bigint;
  ioptAccessListId = 0;
  /** The IOAS pins and rw go to; undefined while detached or changing. */
  ioas: IommufdIoas | undefined;
  /** The IOAS unpins go to (stays set while `ioas` is cleared during a change). */
  ioasUnpin: IommufdIoas | undefined;
  readonly ioasLock: Mutex;

  constructor(
    readonly ctx: IommufdCtx,
    readonly ops: IommufdAccessOps,
    /** iommufd's own access: not in the object table, holds no file reference. */
    readonly internal = false,
  ) {
    super();
    this.iovaAlignment = ops.needsPinPages ? BigInt(PAGE_SIZE) : 1n;
    this.ioasLock = new Mutex(ctx.kernel.lockdep, "iommufd_access.ioas_lock");
  }

  /** iommufd_access_notify_unmap, per access. */
  notifyUnmap(iova: bigint, length: bigint): void {
    this.ops.unmap?.(iova, length);
  }

  /** iommufd_access_destroy_object */
  destroy(): void {
    if (this.ioas) this.ioasLock.with(() => accessChangeIoas(this, undefined));
    if (!this.internal) this.ctx.file.put();
  }
}

/**
 * iommufd_access_change_ioas: move to `next` (or detach). The new IOAS registers the access
 * first (its alignment may be refused); then the driver drops its pins of the old IOAS, with
 * ioas_lock released, and the old registration goes. Called with ioas_lock held.
 */
function accessChangeIoas(access: IommufdAccess, next: IommufdIoas | undefined): void {
  access.ioasLock.assertHeld();
  const cur = access.ioas;
  if (cur !== access.ioasUnpin) fail(EBUSY, "concurrent detach");
  if (cur === next) return;
  // Block new pins while the old IOAS's are dropped.
  access.ioas = undefined;
  const oldListId = access.ioptAccessListId;
  if (next) {
    try {
      next.iopt.addAccess(access);
    } catch (e) {
      access.ioas = cur;
      throw e;
    }
    next.users++;
  }
  if (cur) {
    const newListId = access.ioptAccessListId;
    if (access.ops.unmap) {
      access.ioasLock.unlock();
      try {
        access.ops.unmap(0n, U64_MAX);
      } finally {
        access.ioasLock.lock();
      }
    }
    // The access sits in both lists now; remove it from the old one by its old slot
    // (iopt_remove_access takes the id for this reason).
    access.ioptAccessListId = oldListId;
    cur.iopt.removeAccess(access);
    access.ioptAccessListId = newListId;
    cur.users--;
  }
  access.ioas = next;
  access.ioasUnpin = next;
}

/**
 * iommufd_access_create: the ACCESS object, held by the driver until `iommufdAccessDestroy`
 * (IOMMU_DESTROY of its id is EBUSY); it also holds the iommufd file.
 */
export function iommufdAccessCreate(ctx: IommufdCtx, ops: IommufdAccessOps): IommufdAccess {
  const access = ctx.objectAlloc(new IommufdAccess(ctx, ops));
  access.users++;
  ctx.file.get();
  ctx.objectFinalize(access);
  return access;
}

/**
 * iommufd_access_create_internal + iommufd_access_attach_internal: an access iommufd itself
 * pins `ioas` with (a HW queue's memory); `iommufdAccessDestroy`'s counterpart is `destroy()`.
 */
export function iommufdAccessCreateInternal(ctx: IommufdCtx, ioas: IommufdIoas): IommufdAccess {
  const access = new IommufdAccess(ctx, { needsPinPages: true }, true);
  access.ioasLock.with(() => accessChangeIoas(access, ioas));
  return access;
}

/** iommufd_access_destroy: detaches if needed and frees the id. */
export function iommufdAccessDestroy(access: IommufdAccess): void {
  access.ctx.objectDestroyUser(access);
}

function changeIoasId(access: IommufdAccess, ioasId: number): void {
  const ctx = access.ctx;
  const ioas = getIoas(ctx, ioasId);
  try {
    accessChangeIoas(access, ioas);
  } finally {
    ctx.putObject(ioas);
  }
}

/** iommufd_access_attach: attaching an attached access is a driver bug (WARN, EINVAL). */
export function iommufdAccessAttach(access: IommufdAccess, ioasId: number): void {
  access.ioasLock.with(() => {
    if (access.ioas) throw new KernelWarning("access attached twice");
    changeIoasId(access, ioasId);
  });
}

/** iommufd_access_replace: ENOENT when the access is not attached. */
export function iommufdAccessReplace(access: IommufdAccess, ioasId: number): void {
  access.ioasLock.with(() => {
    if (!access.ioas) fail(ENOENT, "access not attached");
    changeIoasId(access, ioasId);
  });
}

/** iommufd_access_detach */
export function iommufdAccessDetach(access: IommufdAccess): void {
  access.ioasLock.with(() => {
    WARN_ON(!access.ioas, "detach of a detached access");
    accessChangeIoas(access, undefined);
  });
}

function checkAccessRange(iova: bigint, length: bigint): void {
  if (length === 0n) fail(EINVAL, "length 0");
  if (iova + length - 1n > U64_MAX) fail(EOVERFLOW, "iova + length");
}

/** The attached IOAS under ioas_lock, or ENOENT. */
function withAttachedIoas<R>(access: IommufdAccess, fn: (ioas: IommufdIoas) => R): R {
  return access.ioasLock.with(() => {
    const ioas = access.ioas;
    if (!ioas) fail(ENOENT, "access not attached");
    return fn(ioas);
  });
}

/**
 * iommufd_access_pin_pages: pin [iova, iova + length) and return its PFNs as runs (page by page
 * in IOVA order). All or nothing. `flags`: IOMMUFD_ACCESS_RW_WRITE for a writable pin.
 */
export function iommufdAccessPinPages(
  access: IommufdAccess,
  iova: bigint,
  length: bigint,
  flags: number,
): PfnRuns {
  WARN_ON(!access.ops.needsPinPages || !access.ops.unmap, "access cannot pin");
  checkAccessRange(iova, length);
  return withAttachedIoas(access, (ioas) => {
    const out = new PfnRuns();
    ioptAccessPinPages(ioas.iopt, iova, length, out, flags);
    return out;
  });
}

/** iommufd_access_unpin_pages: undo one earlier pin of exactly this range. */
export function iommufdAccessUnpinPages(access: IommufdAccess, iova: bigint, length: bigint): void {
  WARN_ON(length === 0n, "unpin of 0 bytes");
  WARN_ON(iova + length - 1n > U64_MAX, "unpin range wraps");
  access.ioasLock.with(() => {
    const ioas = access.ioasUnpin;
    if (!ioas) throw new KernelWarning("unpin while detached");
    ioptAccessUnpinPages(ioas.iopt, iova, length);
  });
}

/**
 * iommufd_access_rw: copy `data.length` bytes at `iova` into `data` (read) or from it
 * (IOMMUFD_ACCESS_RW_WRITE).
 */
export function iommufdAccessRw(
  access: IommufdAccess,
  iova: bigint,
  data: Uint8Array,
  flags: number,
): void {
  checkAccessRange(iova, BigInt(data.length));
  withAttachedIoas(access, (ioas) => ioptAccessRw(ioas.iopt, iova, data, flags));
}
