/**
 * VFIO type1 container emulation on /dev/iommu (vfio_compat.c): the container ioctls a legacy
 * VMM issues, answered against one designated IOAS of the context (the "compat IOAS", chosen with
 * IOMMU_VFIO_IOAS or created when vfio attaches a group/device without naming one).
 *
 * The VFIO structures carry `argsz`: each ioctl copies its fixed minimum, rejects argsz below it
 * with EINVAL (VFIO's rule, not iommufd's E2BIG scheme) and unknown flags with EINVAL. Without a
 * compat IOAS every container ioctl but the two queries answers ENODEV.
 *
 * TYPE1 (v1) may unmap any sub-range of a mapping: it is emulated by disabling large pages on the
 * IOAS (SET_IOMMU) and cutting areas at the unmap bounds before unmapping whole areas.
 */
import {
  EINVAL,
  ENODEV,
  ENOTTY,
  EOPNOTSUPP,
  PAGE_SIZE,
  copyFromUser,
  copyToUser,
  fail,
  U64_MAX,
} from "@x/kernel";
import { type IommufdIoas, getIoas, iommufdIoasAlloc } from "./ioas.js";
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from "./iommu-domain.js";
import { IOMMUFD_OBJ_IOAS, type IommufdCtx, type IommufdUcmd, ucmdRespond } from "./main.js";
import {
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  U32_MAX,
  VFIO_API_VERSION,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  VFIO_UNMAP_ALL,
  type iommu_vfio_ioas,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_dma_avail,
  vfio_iova_range,
} from "./uapi.js";

/**
 * get_compat_ioas: the compat IOAS with a reference the caller puts, or ENODEV. The IOAS is
 * looked up by id so a concurrently destroyed one is not returned.
 */
function getCompatIoas(ctx: IommufdCtx): IommufdIoas {
  const cur = ctx.vfioIoas;
  if (!cur) fail(ENODEV, "no compat IOAS");
  return getIoas(ctx, cur.id);
}

function withCompatIoas<R>(ctx: IommufdCtx, fn: (ioas: IommufdIoas) => R): R {
  const ioas = getCompatIoas(ctx);
  try {
    return fn(ioas);
  } finally {
    ctx.putObject(ioas);
  }
}

/**
 * iommufd_vfio_compat_ioas_id (for vfio): the compat IOAS id. A new IOAS is allocated first
 * (so ENOMEM can happen either way) and becomes the compat one, published like a user-created
 * IOAS, unless one already exists — then the new one is aborted.
 */
export function iommufdVfioCompatIoasId(ctx: IommufdCtx): number {
  const ioas = iommufdIoasAlloc(ctx);
  const cur = ctx.vfioIoas;
  if (cur) {
    ioas.iopt.destroyTable();
    ctx.objectAbort(ioas);
    return cur.id;
  }
  ctx.vfioIoas = ioas;
  ctx.objectFinalize(ioas);
  return ioas.id;
}

/** IOMMU_VFIO_IOAS: GET / SET / CLEAR the compat IOAS. */
export function iommufdVfioIoas(ucmd: IommufdUcmd<(typeof iommu_vfio_ioas)["fields"]>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  switch (cmd.op) {
    case IOMMU_VFIO_IOAS_GET:
      withCompatIoas(ctx, (ioas) => {
        cmd.ioas_id = ioas.id;
      });
      ucmdRespond(ucmd);
      return 0;
    case IOMMU_VFIO_IOAS_SET:
      ctx.withObject<IommufdIoas, void>(cmd.ioas_id, IOMMUFD_OBJ_IOAS, (ioas) => {
        ctx.vfioIoas = ioas;
      });
      return 0;
    case IOMMU_VFIO_IOAS_CLEAR:
      ctx.vfioIoas = undefined;
      return 0;
    default:
      return fail(EOPNOTSUPP, `op ${cmd.op}`);
  }
}

/** VFIO_IOMMU_MAP_DMA: always a fixed IOVA; READ/WRITE are the only flags. */
function vfioMapDma(ctx: IommufdCtx, arg: bigint): number {
  const minsz = vfio_iommu_type1_dma_map.size;
  const map = vfio_iommu_type1_dma_map.decode(copyFromUser(ctx.kernel, arg, minsz));
  if (map.argsz < minsz || map.flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE))
    fail(EINVAL, "argsz/flags");
  let prot = IOMMU_CACHE;
  if (map.flags & VFIO_DMA_MAP_FLAG_READ) prot |= IOMMU_READ;
  if (map.flags & VFIO_DMA_MAP_FLAG_WRITE) prot |= IOMMU_WRITE;
  withCompatIoas(ctx, (ioas) =>
    ioas.iopt.mapUserPages(ctx, map.iova, map.vaddr, map.size, prot, 0),
  );
  return 0;
}

/**
 * VFIO_IOMMU_UNMAP_DMA: UNMAP_ALL needs iova = size = 0; otherwise a TYPE1 IOAS is first cut at
 * the range bounds so whole areas cover it exactly. The unmapped size is written back even when
 * the unmap stopped with an error part way (areas already removed stay removed).
 */
function vfioUnmapDma(ctx: IommufdCtx, arg: bigint): number {
  const minsz = vfio_iommu_type1_dma_unmap.size;
  const raw = copyFromUser(ctx.kernel, arg, minsz);
  const unmap = vfio_iommu_type1_dma_unmap.decode(raw);
  if (unmap.argsz < minsz || unmap.flags & ~VFIO_DMA_UNMAP_FLAG_ALL) fail(EINVAL, "argsz/flags");
  return withCompatIoas(ctx, (ioas) => {
    const iopt = ioas.iopt;
    const all = (unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL) !== 0;
    if (all && (unmap.iova !== 0n || unmap.size !== 0n)) fail(EINVAL, "UNMAP_ALL with a range");
    if (!all && iopt.largePagesDisabled) {
      const last = BigInt.asUintN(64, unmap.iova + unmap.size - 1n);
      iopt.cutIova(unmap.iova ? [last, unmap.iova - 1n] : [last]);
    }
    const progress = { unmapped: 0n };
    let error: unknown;
    try {
      if (all) iopt.unmapAll(progress);
      else iopt.unmapIova(unmap.iova, unmap.size, progress);
    } catch (e) {
      error = e;
    }
    const unmapped = progress.unmapped;
    unmap.size = unmapped;
    copyToUser(ctx.kernel, arg, vfio_iommu_type1_dma_unmap.encode(unmap));
    if (error) throw error;
    return 0;
  });
}

/** VFIO_CHECK_EXTENSION */
function vfioCheckExtension(ctx: IommufdCtx, type: bigint): number {
  switch (type) {
    case BigInt(VFIO_TYPE1_IOMMU):
    case BigInt(VFIO_TYPE1v2_IOMMU):
    case BigInt(VFIO_UNMAP_ALL):
      return 1;
    case BigInt(VFIO_DMA_CC_IOMMU):
      // Coherent only if every domain of the compat IOAS enforces cache coherency.
      return withCompatIoas(ctx, (ioas) =>
        ioas.mutex.with(() => (ioas.hwptList.every((h) => h.enforceCacheCoherency) ? 1 : 0)),
      );
    default:
      // TYPE1_NESTING is obsolete and UPDATE_VADDR cannot be done safely: both unsupported.
      return 0;
  }
}

/** VFIO_SET_IOMMU: TYPE1 or TYPE1v2 on an existing compat IOAS; TYPE1 turns off large pages. */
function vfioSetIommu(ctx: IommufdCtx, type: bigint): number {
  if (type !== BigInt(VFIO_TYPE1_IOMMU) && type !== BigInt(VFIO_TYPE1v2_IOMMU))
    fail(EINVAL, "iommu type");
  withCompatIoas(ctx, (ioas) => {
    if (type === BigInt(VFIO_TYPE1_IOMMU)) ioas.iopt.disableLargePages();
  });
  return 0;
}

/**
 * iommufd_get_pagesizes: the page sizes every domain supports, never below PAGE_SIZE nor below
 * the IOAS alignment (vfio_update_pgsize_bitmap's rule).
 */
function compatPageSizes(ioas: IommufdIoas): bigint {
  const page = BigInt(PAGE_SIZE);
  const pageMask = U64_MAX ^ (page - 1n);
  let bitmap = U64_MAX;
  ioas.iopt.domainsRwsem.withRead(() => {
    for (const d of ioas.iopt.domainList) bitmap &= d.pgsizeBitmap;
  });
  if (bitmap & ~pageMask) bitmap = (bitmap & pageMask) | page;
  const align = ioas.iopt.iovaAlignment;
  // biome-ignore lint/complexity/useMathMinMax: bigint operands
  return bitmap > align ? bitmap : align;
}

type CapFill = (ctx: IommufdCtx, ioas: IommufdIoas, at: bigint, avail: number) => number;

/** The DMA_AVAIL capability: iommufd reports U32_MAX (its limit is the memory cgroup). */
const fillCapDmaAvail: CapFill = (ctx, _ioas, at, avail) => {
  const size = vfio_iommu_type1_info_dma_avail.size;
  if (avail >= size) {
    const cap = vfio_iommu_type1_info_dma_avail.encode({
      id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
      version: 1,
      next: 0,
      avail: U32_MAX,
    });
    copyToUser(ctx.kernel, at, cap);
  }
  return size;
};

/** The IOVA_RANGE capability: the holes of the reserved ranges, as many as fit. */
const fillCapIova: CapFill = (ctx, ioas, at, avail) => {
  const head = vfio_iommu_type1_info_cap_iova_range.size;
  const elm = vfio_iova_range.size;
  let nr = 0;
  for (const [start, end] of ioas.iopt.reservedHoles()) {
    if (avail >= head + elm * (nr + 1))
      copyToUser(ctx.kernel, at + BigInt(head + elm * nr), vfio_iova_range.encode({ start, end }));
    nr++;
  }
  if (avail >= head + elm * nr) {
    const cap = vfio_iommu_type1_info_cap_iova_range.encode({
      id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
      version: 1,
      next: 0,
      nr_iovas: nr,
      reserved: 0,
    });
    copyToUser(ctx.kernel, at, cap);
  }
  return head + elm * nr;
};

const CAP_FILLS: readonly CapFill[] = [fillCapDmaAvail, fillCapIova];

/**
 * VFIO_IOMMU_GET_INFO: page sizes plus the capability chain after the 24-byte info struct. When
 * argsz is too small the chain is cut, cap_offset stays 0 and argsz reports the size needed.
 */
function vfioIommuGetInfo(ctx: IommufdCtx, arg: bigint): number {
  const s = vfio_iommu_type1_info;
  const info = s.decode(copyFromUser(ctx.kernel, arg, s.minSize));
  if (info.argsz < s.minSize) fail(EINVAL, "argsz");
  const copyBack = Math.min(info.argsz, s.size);
  return withCompatIoas(ctx, (ioas) => {
    info.flags = VFIO_IOMMU_INFO_PGSIZES;
    info.iova_pgsizes = compatPageSizes(ioas);
    info.cap_offset = 0;
    let total = s.size;
    let lastCap: bigint | undefined;
    for (const fill of CAP_FILLS) {
      const filled =
        info.argsz > total
          ? fill(ctx, ioas, arg + BigInt(total), info.argsz - total)
          : fill(ctx, ioas, 0n, 0);
      // Each capability starts 8-byte aligned (ALIGN(cap_size, sizeof(u64)) in the kernel).
      const capSize = (filled + 7) & ~7;
      if (lastCap !== undefined && info.argsz >= total) {
        const next = new Uint8Array(4);
        new DataView(next.buffer).setUint32(0, total, true);
        copyToUser(ctx.kernel, lastCap + 4n, next);
      }
      lastCap = arg + BigInt(total);
      total += capSize;
    }
    if (info.argsz >= total) info.cap_offset = s.size;
    info.argsz = total;
    info.flags |= VFIO_IOMMU_INFO_CAPS;
    copyToUser(ctx.kernel, arg, s.encode(info).subarray(0, copyBack));
    return 0;
  });
}

/** iommufd_vfio_ioctl: command numbers outside the iommufd table. */
export function iommufdVfioIoctl(ctx: IommufdCtx, cmd: number, arg: bigint): number {
  switch (cmd) {
    case VFIO_GET_API_VERSION:
      return VFIO_API_VERSION;
    case VFIO_SET_IOMMU:
      return vfioSetIommu(ctx, arg);
    case VFIO_CHECK_EXTENSION:
      return vfioCheckExtension(ctx, arg);
    case VFIO_IOMMU_GET_INFO:
      return vfioIommuGetInfo(ctx, arg);
    case VFIO_IOMMU_MAP_DMA:
      return vfioMapDma(ctx, arg);
    case VFIO_IOMMU_UNMAP_DMA:
      return vfioUnmapDma(ctx, arg);
    // Type1 dirty logging is not emulated: a VMM migrates through IOMMU_HWPT_GET_DIRTY_BITMAP
    // on the iommufd itself, so GET_INFO offers no migration capability either.
    case VFIO_IOMMU_DIRTY_PAGES:
    default:
      return fail(ENOTTY, `ioctl 0x${cmd.toString(16)}`);
  }
}
