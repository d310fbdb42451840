/**
 * HW queues (IOMMU_HW_QUEUE_ALLOC): a queue the guest owns in its own memory — an IOVA range of
 * the vIOMMU's nest parent — which the IOMMU hardware reads directly (e.g. a command queue the
 * guest kernel writes to without trapping).
 *
 * The range is pinned through an internal access on the parent's IOAS with its areas locked:
 * while the queue exists, IOMMU_IOAS_UNMAP over it is EBUSY. The pages must be physically
 * contiguous (the hardware takes one base address). A driver may make a queue depend on
 * another (the mock: index n on n - 1), which then cannot be destroyed first (EBUSY).
 *
 * @see drivers/iommu/iommufd/viommu.c (iommufd_hw_queue_alloc_ioctl), driver.c
 */
import {
  EFAULT,
  EINVAL,
  EOPNOTSUPP,
  EOVERFLOW,
  PAGE_SIZE,
  PfnRuns,
  U64_MAX,
  fail,
} from "@x/kernel";
import { ioptAccessPinPages, ioptAccessUnpinPages } from "./access-core.js";
import { type IommufdAccess, iommufdAccessCreateInternal } from "./access.js";
import {
  IOMMUFD_OBJ_HW_QUEUE,
  IOMMUFD_OBJ_VIOMMU,
  type IommufdCtx,
  IommufdObject,
  type IommufdUcmd,
  ucmdRespond,
} from "./main.js";
import type { iommu_hw_queue_alloc } from "./uapi.js";
import type { IommufdViommu } from "./viommu.js";

export const IOMMU_HW_QUEUE_TYPE_DEFAULT = 0;

const BPAGE = BigInt(PAGE_SIZE);

export class IommufdHwQueue extends IommufdObject {
  readonly type = IOMMUFD_OBJ_HW_QUEUE;
  /** The internal access pinning the queue's pages, and the pinned (page-aligned) range. */
  access: IommufdAccess | undefined;
  private pinned: { iova: bigint; length: bigint } | undefined;
  /** Driver teardown, set by its hw_queue_init_phys (hw_queue->destroy). */
  driverDestroy: (() => void) | undefined;

  constructor(
    readonly ctx: IommufdCtx,
    readonly viommu: IommufdViommu,
    readonly queueType: number,
    /** The queue's IOVA (nesting_parent_iova) and length. */
    readonly baseAddr: bigint,
    readonly length: bigint,
  ) {
    super();
  }

  /**
   * iommufd_hw_queue_alloc_phys: pin the pages under the queue (areas locked) and return the
   * physical address of `baseAddr`. ENOENT for an unmapped range, EFAULT for pages that are not
   * physically contiguous.
   */
  allocPhys(): bigint {
    const aligned = this.baseAddr & ~(BPAGE - 1n);
    const offset = this.baseAddr - aligned;
    const npages = (offset + this.length + BPAGE - 1n) / BPAGE;
    const length = npages * BPAGE;
    const access = iommufdAccessCreateInternal(this.ctx, this.viommu.hwpt.ioas);
    this.access = access;
    const runs = new PfnRuns();
    ioptAccessPinPages(access.ioas!.iopt, aligned, length, runs, 0, true);
    this.pinned = { iova: aligned, length };
    if (runs.length !== 1) fail(EFAULT, "queue pages not physically contiguous");
    return BigInt(runs.pfn(0)) * BPAGE + offset;
  }

  /** iommufd_hw_queue_destroy */
  destroy(): void {
    this.driverDestroy?.();
    const { access, pinned } = this;
    if (access) {
      if (pinned) ioptAccessUnpinPages(access.ioasUnpin!.iopt, pinned.iova, pinned.length, true);
      access.destroy();
    }
    this.viommu.users--;
  }
}

/**
 * iommufd_hw_queue_depend: `queue` needs `depended` to outlive it (its destroy is EBUSY until
 * `iommufdHwQueueUndepend`).
 */
export function iommufdHwQueueDepend(queue: IommufdHwQueue, depended: IommufdHwQueue): void {
  if (queue.ctx !== depended.ctx) fail(EINVAL, "queues of different contexts");
  depended.users++;
}

/** iommufd_hw_queue_undepend */
export function iommufdHwQueueUndepend(depended: IommufdHwQueue): void {
  depended.users--;
}

/** iommufd_hw_queue_alloc_ioctl */
export function iommufdHwQueueAllocIoctl(
  ucmd: IommufdUcmd<(typeof iommu_hw_queue_alloc)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) fail(EOPNOTSUPP, "flags/type");
  if (!cmd.length) fail(EINVAL, "length 0");
  if (cmd.nesting_parent_iova + cmd.length - 1n > U64_MAX) fail(EOVERFLOW, "queue range wraps");
  return ctx.withObjectOrErrno<IommufdViommu>(cmd.viommu_id, IOMMUFD_OBJ_VIOMMU, (viommu) => {
    const ops = viommu.ops;
    if (!ops?.getHwQueueSize || !ops.hwQueueInitPhys || !ops.getHwQueueSize(cmd.type))
      fail(EOPNOTSUPP, "no HW queue of this type");
    const queue = ctx.objectAlloc(
      new IommufdHwQueue(ctx, viommu, cmd.type, cmd.nesting_parent_iova, cmd.length),
    );
    viommu.users++;
    try {
      const basePa = queue.allocPhys();
      ops.hwQueueInitPhys(queue, cmd.index, basePa);
      cmd.out_hw_queue_id = queue.id;
      ucmdRespond(ucmd);
    } catch (e) {
      ctx.objectAbortAndDestroy(queue);
      throw e;
    }
    ctx.objectFinalize(queue);
    return 0;
  });
}
