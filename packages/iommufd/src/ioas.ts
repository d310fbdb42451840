/**
 * The IOAS object and its ioctls: IOAS_ALLOC, IOVA_RANGES, ALLOW_IOVAS, MAP, MAP_FILE, COPY,
 * UNMAP, the per-IOAS HUGE_PAGES option and IOAS_CHANGE_PROCESS. Each handler checks its fields
 * in the kernel's order (flags/reserved -> overflow -> R/W -> object lookups -> io_pagetable) so
 * that the first failing check decides the errno; the io_pagetable does the work.
 *
 * MAP_FILE passes the fd down: `IoPagetable.mapFilePages` (iopt_map_file_pages, P7/P8 of the
 * DMABUF series) checks length 0 (EINVAL) and start + length overflow (EOVERFLOW) first, then
 * tries the fd as a dma-buf and otherwise as a file (EBADF when it is no open file at all).
 */
import {
  EINVAL,
  EMSGSIZE,
  ENOENT,
  EOPNOTSUPP,
  EOVERFLOW,
  KernelWarning,
  Mutex,
  type Process,
  copyFromUser,
  copyToUser,
  fail,
  U64_MAX,
} from "@x/kernel";
import {
  IOPT_PAGES_ACCOUNT_MM,
  IOPT_PAGES_ACCOUNT_NONE,
  type IoptPagesAccountMode,
  accountingSourceOf,
  updatePinnedAccounting,
} from "./accounting.js";
import { IOPT_ALLOC_IOVA, IoPagetable, type IoptPagesListElm } from "./io-pagetable.js";
import { IOPT_ADDRESS_FILE, type IoptPages } from "./pages.js";
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from "./iommu-domain.js";
import {
  IOMMUFD_OBJ_IOAS,
  type IommufdCtx,
  IommufdObject,
  type IommufdUcmd,
  type IoasOption,
  ucmdRespond,
} from "./main.js";
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_FLAGS_MASK,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  type Struct,
  ULONG_MAX,
  type iommu_ioas_alloc,
  type iommu_ioas_change_process,
  type iommu_ioas_allow_iovas,
  type iommu_ioas_copy,
  iommu_iova_range,
  type iommu_ioas_iova_ranges,
  type iommu_ioas_map,
  type iommu_ioas_map_file,
  type iommu_ioas_unmap,
} from "./uapi.js";
import type { IommufdHwptPaging } from "./hw-pagetable.js";

// biome-ignore lint/suspicious/noExplicitAny: any structure's field table
type Ucmd<T extends Struct<any>> = IommufdUcmd<T["fields"]>;

interface IovaRange {
  start: bigint;
  last: bigint;
}

/** struct iommufd_ioas */
export class IommufdIoas extends IommufdObject {
  readonly type = IOMMUFD_OBJ_IOAS;
  readonly iopt: IoPagetable;
  /** Protects `hwptList` (the auto domains reusable by device attach). */
  readonly mutex: Mutex;
  readonly hwptList: IommufdHwptPaging[] = [];

  constructor(readonly ctx: IommufdCtx) {
    super();
    this.iopt = new IoPagetable(ctx.kernel);
    this.mutex = new Mutex(ctx.kernel.lockdep, "iommufd_ioas.mutex");
  }

  /** iommufd_ioas_destroy: unmap everything, then drop the (now empty) table. */
  destroy(): void {
    this.iopt.unmapAll();
    this.iopt.destroyTable();
  }
}

/** iommufd_ioas_alloc: a reserved IOAS object (finalized by the caller). */
export function iommufdIoasAlloc(ctx: IommufdCtx): IommufdIoas {
  return ctx.objectAlloc(new IommufdIoas(ctx));
}

/** iommufd_get_ioas */
export function getIoas(ctx: IommufdCtx, id: number): IommufdIoas {
  return ctx.getObject<IommufdIoas>(id, IOMMUFD_OBJ_IOAS);
}

/** conv_iommu_prot: MAP/COPY flags to IOMMU prot; iommufd always maps cache-coherent. */
function convIommuProt(mapFlags: number): number {
  let prot = IOMMU_CACHE;
  if (mapFlags & IOMMU_IOAS_MAP_WRITEABLE) prot |= IOMMU_WRITE;
  if (mapFlags & IOMMU_IOAS_MAP_READABLE) prot |= IOMMU_READ;
  return prot;
}

/** Without FIXED_IOVA the io_pagetable picks the IOVA (IOPT_ALLOC_IOVA). */
function allocFlags(mapFlags: number): number {
  return mapFlags & IOMMU_IOAS_MAP_FIXED_IOVA ? 0 : IOPT_ALLOC_IOVA;
}

function checkMapFlags(flags: number): void {
  if (flags & ~IOMMU_IOAS_MAP_FLAGS_MASK) fail(EOPNOTSUPP, "map flags");
}

function checkReadWrite(flags: number): void {
  if (!(flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE)))
    fail(EINVAL, "map flags: neither READABLE nor WRITEABLE", { flags: `0x${flags.toString(16)}` });
}

// --- IOMMU_IOAS_ALLOC ------------------------------------------------------------------------

export function iommufdIoasAllocIoctl(ucmd: Ucmd<typeof iommu_ioas_alloc>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags) fail(EOPNOTSUPP, "flags");
  const ioas = iommufdIoasAlloc(ctx);
  cmd.out_ioas_id = ioas.id;
  try {
    ucmdRespond(ucmd);
  } catch (e) {
    ioas.iopt.destroyTable();
    ctx.objectAbort(ioas);
    throw e;
  }
  ctx.objectFinalize(ioas);
  return 0;
}

// --- IOMMU_IOAS_IOVA_RANGES ------------------------------------------------------------------

export function iommufdIoasIovaRanges(ucmd: Ucmd<typeof iommu_ioas_iova_ranges>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  const max = cmd.num_iovas;
  return ctx.withObjectOrErrno<IommufdIoas>(cmd.ioas_id, IOMMUFD_OBJ_IOAS, (ioas) => {
    // reservedHoles() reads the tree under iova_rwsem; the alignment is read next to it.
    cmd.num_iovas = 0;
    cmd.out_iova_alignment = ioas.iopt.iovaAlignment;
    for (const [start, last] of ioas.iopt.reservedHoles()) {
      if (cmd.num_iovas < max) {
        const at = cmd.allowed_iovas + BigInt(cmd.num_iovas * iommu_iova_range.size);
        copyToUser(ctx.kernel, at, iommu_iova_range.encode({ start, last }));
      }
      cmd.num_iovas++;
    }
    ucmdRespond(ucmd);
    if (cmd.num_iovas > max) fail(EMSGSIZE, `${cmd.num_iovas} ranges, room for ${max}`);
    return 0;
  });
}

// --- IOMMU_IOAS_ALLOW_IOVAS ------------------------------------------------------------------

/**
 * iommufd_ioas_load_iovas: read `count` ranges; start >= last and overlaps within the list are
 * EINVAL. Returns them in list order.
 */
function loadIovas(ctx: IommufdCtx, uptr: bigint, count: number): IovaRange[] {
  const out: IovaRange[] = [];
  for (let i = 0; i < count; i++) {
    const raw = copyFromUser(
      ctx.kernel,
      uptr + BigInt(i * iommu_iova_range.size),
      iommu_iova_range.size,
    );
    const { start, last } = iommu_iova_range.decode(raw);
    if (start >= last) fail(EINVAL, "empty or inverted range");
    if (out.some((r) => r.start <= last && start <= r.last)) fail(EINVAL, "overlapping ranges");
    out.push({ start, last });
  }
  return out;
}

export function iommufdIoasAllowIovas(ucmd: Ucmd<typeof iommu_ioas_allow_iovas>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  return ctx.withObjectOrErrno<IommufdIoas>(cmd.ioas_id, IOMMUFD_OBJ_IOAS, (ioas) => {
    const ranges = loadIovas(ctx, cmd.allowed_iovas, cmd.num_iovas);
    ioas.iopt.setAllowIova(ranges);
    return 0;
  });
}

// --- IOMMU_IOAS_MAP --------------------------------------------------------------------------

export function iommufdIoasMap(ucmd: Ucmd<typeof iommu_ioas_map>): number {
  const { ctx, cmd } = ucmd;
  checkMapFlags(cmd.flags);
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) fail(EOVERFLOW, "iova/length");
  checkReadWrite(cmd.flags);
  return ctx.withObjectOrErrno<IommufdIoas>(cmd.ioas_id, IOMMUFD_OBJ_IOAS, (ioas) => {
    cmd.iova = ioas.iopt.mapUserPages(
      ctx,
      cmd.iova,
      cmd.user_va,
      cmd.length,
      convIommuProt(cmd.flags),
      allocFlags(cmd.flags),
    );
    // A failed copy-back leaves the mapping in place, as in the kernel.
    ucmdRespond(ucmd);
    return 0;
  });
}

// --- IOMMU_IOAS_MAP_FILE ---------------------------------------------------------------------

export function iommufdIoasMapFile(ucmd: Ucmd<typeof iommu_ioas_map_file>): number {
  const { ctx, cmd } = ucmd;
  checkMapFlags(cmd.flags);
  if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) fail(EOVERFLOW, "iova/length");
  checkReadWrite(cmd.flags);
  return ctx.withObjectOrErrno<IommufdIoas>(cmd.ioas_id, IOMMUFD_OBJ_IOAS, (ioas) => {
    cmd.iova = ioas.iopt.mapFilePages(
      ctx,
      cmd.iova,
      cmd.fd,
      cmd.start,
      cmd.length,
      convIommuProt(cmd.flags),
      allocFlags(cmd.flags),
    );
    ucmdRespond(ucmd);
    return 0;
  });
}

// --- IOMMU_IOAS_COPY -------------------------------------------------------------------------

export function iommufdIoasCopy(ucmd: Ucmd<typeof iommu_ioas_copy>): number {
  const { ctx, cmd } = ucmd;
  checkMapFlags(cmd.flags);
  if (cmd.length >= ULONG_MAX || cmd.src_iova >= ULONG_MAX || cmd.dst_iova >= ULONG_MAX)
    fail(EOVERFLOW, "length/iova");
  checkReadWrite(cmd.flags);
  let srcIopt: IoPagetable | undefined;
  let list: IoptPagesListElm[] | undefined;
  const rc = ctx.withObjectOrErrno<IommufdIoas>(cmd.src_ioas_id, IOMMUFD_OBJ_IOAS, (src) => {
    srcIopt = src.iopt;
    list = src.iopt.getPages(cmd.src_iova, cmd.length);
    return 0;
  });
  if (rc) return rc;
  try {
    return ctx.withObjectOrErrno<IommufdIoas>(cmd.dst_ioas_id, IOMMUFD_OBJ_IOAS, (dst) => {
      cmd.dst_iova = dst.iopt.mapPages(
        list!,
        cmd.length,
        cmd.dst_iova,
        convIommuProt(cmd.flags),
        allocFlags(cmd.flags),
      );
      ucmdRespond(ucmd);
      return 0;
    });
  } finally {
    srcIopt!.freePagesList(list!);
  }
}

// --- IOMMU_IOAS_UNMAP ------------------------------------------------------------------------

export function iommufdIoasUnmap(ucmd: Ucmd<typeof iommu_ioas_unmap>): number {
  const { ctx, cmd } = ucmd;
  return ctx.withObjectOrErrno<IommufdIoas>(cmd.ioas_id, IOMMUFD_OBJ_IOAS, (ioas) => {
    let unmapped: bigint;
    if (cmd.iova === 0n && cmd.length === U64_MAX) {
      unmapped = ioas.iopt.unmapAll();
    } else {
      if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) fail(EOVERFLOW, "iova/length");
      unmapped = ioas.iopt.unmapIova(cmd.iova, cmd.length);
      if (unmapped === 0n) fail(ENOENT, "nothing mapped in the range");
    }
    cmd.length = unmapped;
    ucmdRespond(ucmd);
    return 0;
  });
}

// --- IOMMU_OPTION HUGE_PAGES -----------------------------------------------------------------

/** iommufd_ioas_option: the IOAS lookup comes before the op check. */
export const iommufdIoasOption: IoasOption = (ucmd) => {
  const { ctx, cmd } = ucmd;
  return ctx.withObjectOrErrno<IommufdIoas>(cmd.object_id, IOMMUFD_OBJ_IOAS, (ioas) => {
    if (cmd.op === IOMMU_OPTION_OP_GET) {
      cmd.val64 = ioas.iopt.largePagesDisabled ? 0n : 1n;
      return 0;
    }
    if (cmd.op !== IOMMU_OPTION_OP_SET) fail(EOPNOTSUPP, "option op");
    if (cmd.val64 === 0n) ioas.iopt.disableLargePages();
    else if (cmd.val64 === 1n) ioas.iopt.enableLargePages();
    else fail(EINVAL, "HUGE_PAGES value");
    return 0;
  });
};

// --- IOMMU_IOAS_CHANGE_PROCESS ---------------------------------------------------------------

/**
 * iommufd_ioas_change_process: move the pinned-page accounting of every mapping of the context
 * to the calling process (live update hands the guest memory to a new VMM process). Only FILE
 * mappings can move — a user-VA or DMABUF mapping anywhere is EINVAL with nothing changed. The
 * pins of every pages object whose charge would land elsewhere (`needChargeUpdate`) are charged
 * to the new process first (ENOMEM, nothing changed), then those return their old charge, and
 * every pages object takes the new process as its source.
 *
 * Every IOAS's iova_rwsem is held for write meanwhile, taken in id order. Decision: @x/kernel's
 * RwSem has no down_write_nest_lock, so the same-class acquisitions are trylocks (uncontended in
 * this synchronous model; a failure would be a WARN).
 */
export function iommufdIoasChangeProcess(ucmd: Ucmd<typeof iommu_ioas_change_process>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
  const process = ctx.kernel.current.process;
  const ioases = [...ctx.objectsInOrder()].filter(
    (o): o is IommufdIoas => o instanceof IommufdIoas,
  );
  const locked: IommufdIoas[] = [];
  try {
    for (const ioas of ioases) {
      if (!ioas.iopt.iovaRwsem.tryDownWrite()) throw new KernelWarning("iova_rwsem contended");
      locked.push(ioas);
    }
    const pagesSet = new Set<IoptPages>();
    for (const ioas of ioases) {
      for (const area of ioas.iopt.areas()) {
        if (area.pages?.type !== IOPT_ADDRESS_FILE) fail(EINVAL, "a mapping is not of a file");
        pagesSet.add(area.pages);
      }
    }
    const moving = [...pagesSet].filter((p) => needChargeUpdate(p, process));
    chargeAll(process, moving);
    for (const pages of pagesSet) pages.changeSource(process, moving.includes(pages));
  } finally {
    for (const ioas of locked.reverse()) ioas.iopt.iovaRwsem.upWrite();
  }
  return 0;
}

/**
 * Whether giving `pages` to `process` moves its charge: never without accounting, when the mm
 * differs in MM mode, and when the user or the mm differs in USER mode (which also counts in
 * mm->pinned_vm). @see need_charge_update
 */
function needChargeUpdate(pages: IoptPages, process: Process): boolean {
  if (pages.accountMode === IOPT_PAGES_ACCOUNT_NONE) return false;
  if (pages.accountMode === IOPT_PAGES_ACCOUNT_MM) return pages.sourceMm !== process.mm;
  return pages.sourceUser !== process.cred.user || pages.sourceMm !== process.mm;
}

/** Charge the pins of `pagesList` to `process`, per accounting mode; all or nothing. */
function chargeAll(process: Process, pagesList: readonly IoptPages[]): void {
  const perMode = new Map<IoptPagesAccountMode, number>();
  for (const p of pagesList)
    perMode.set(p.accountMode, (perMode.get(p.accountMode) ?? 0) + p.npinned);
  const done: Array<[IoptPagesAccountMode, number]> = [];
  try {
    for (const [mode, n] of perMode) {
      if (!n) continue;
      updatePinnedAccounting(accountingSourceOf(process, mode), n, true);
      done.push([mode, n]);
    }
  } catch (e) {
    for (const [mode, n] of done)
      updatePinnedAccounting(accountingSourceOf(process, mode), n, false);
    throw e;
  }
}
