/**
 * /dev/iommu: one `IommufdCtx` per open file, its object table and the ioctl dispatcher.
 *
 * Objects. Every object (IOAS, HWPT, device, access, selftest objects) lives in the context's
 * table under an id: the lowest free one in [1, 0x7FFFFFFF], reused after destroy. An id is
 * first *reserved* (invisible: lookups answer ENOENT), and becomes visible only when the object
 * is *finalized*, after the creating ioctl has fully succeeded, including the copy of the new id
 * back to user space; a failure at any step aborts the object and frees the id. `users` is the
 * kernel's refcount: 1 for the table, +1 per long-term dependent (a HWPT on its IOAS, a device
 * on its driver, …) and +1 while an ioctl holds it after `getObject`. IOMMU_DESTROY succeeds only
 * at exactly 1 (EBUSY otherwise); closing the file destroys objects leaf first.
 *
 * Dispatch (`iommufd_fops_ioctl`): the nr outside the table goes to the VFIO type1 compat layer;
 * else the `size` word is read (EFAULT), the exact command number is checked (ENOTTY), then
 * `size` below the op's minimum is EINVAL, bytes past the kernel struct must be zero (E2BIG), and
 * the handler runs on a zero-extended kernel copy. `respond` writes min(size, sizeof) bytes back.
 *
 * IOMMU_TEST_CMD is present only once @x/selftest has called `registerTestCmd` (the kernel's
 * CONFIG_IOMMUFD_TEST): the table then grows from 21 to 33 entries, exactly like the C table.
 *
 * Lock order (this package): ioas.mutex -> iopt.domains_rwsem -> iopt.iova_rwsem -> pages.mutex.
 */
import {
  CAP_SYS_RESOURCE,
  EBUSY,
  EINVAL,
  ENOENT,
  ENOMEM,
  ENOTTY,
  EOPNOTSUPP,
  EPERM,
  type File,
  type FileOperations,
  type Kernel,
  KernelError,
  KernelWarning,
  ModuleKey,
  O_RDWR,
  PAGE_SHIFT,
  PAGE_SIZE,
  VM_EXEC,
  VM_SHARED,
  type Vma,
  WARN_ON,
  copyFromUserInto,
  copyStructFromUser,
  copyToUser,
  fail,
  ioctlErrno,
  EBADFD,
  ENXIO,
} from "@x/kernel";
import {
  type Decoded,
  type FieldSpec,
  IOMMUFD_CMD_BASE,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_TEST_CMD,
  type Struct,
  _IOC_NR,
  getU32,
  type iommu_destroy,
  iommu_option,
  iommu_test_cmd,
  setU64,
} from "./uapi.js";
import {
  IOPT_PAGES_ACCOUNT_MM,
  IOPT_PAGES_ACCOUNT_USER,
  type IoptPagesAccountMode,
} from "./accounting.js";
import {
  IOMMUFD_DEFAULT_OPTIONS,
  type IommufdOptions,
  defaultIommufdOptions,
} from "./iommufd-options.js";

/** Object types (enum iommufd_object_type; kernel-internal numbering by position). */
export const IOMMUFD_OBJ_ANY = 0;
export const IOMMUFD_OBJ_DEVICE = 1;
export const IOMMUFD_OBJ_HWPT_PAGING = 2;
export const IOMMUFD_OBJ_HWPT_NESTED = 3;
export const IOMMUFD_OBJ_IOAS = 4;
export const IOMMUFD_OBJ_ACCESS = 5;
export const IOMMUFD_OBJ_FAULT = 6;
export const IOMMUFD_OBJ_VIOMMU = 7;
export const IOMMUFD_OBJ_VDEVICE = 8;
export const IOMMUFD_OBJ_VEVENTQ = 9;
export const IOMMUFD_OBJ_HW_QUEUE = 10;
export const IOMMUFD_OBJ_SELFTEST = 11;

/** DESTROY (0x80) .. HW_QUEUE_ALLOC (0x94): ARRAY_SIZE of the table without the test command. */
const IOMMUFD_TABLE_LENGTH = 0x94 - 0x80 + 1;

/** Highest id xa_alloc may hand out (xa_limit_31b). */
const IOMMUFD_MAX_ID = 0x7fff_ffff;

/** Base of every iommufd object. Subclasses set `type` and release their resources in `destroy`. */
export abstract class IommufdObject {
  abstract readonly type: number;
  /** 0 until `objectAlloc` reserves an id. */
  id = 0;
  /** The kernel's `obj->users`. */
  users = 1;
  /** Type-specific teardown (iommufd_object_ops[type].destroy); runs once, never fails. */
  abstract destroy(): void;

  /**
   * Teardown of an object that was never published (iommufd_object_ops[type].abort), called
   * from the creating path, which may hold locks `destroy` would take. Defaults to `destroy`.
   */
  abort(): void {
    this.destroy();
  }
}

/** A user command in flight (struct iommufd_ucmd). */
export interface IommufdUcmd<S extends FieldSpec = FieldSpec> {
  readonly ctx: IommufdCtx;
  /** User address of the argument. */
  readonly ubuffer: bigint;
  /** The `size` the caller gave. */
  readonly userSize: number;
  readonly struct: Struct<S>;
  /** Kernel copy, zero-extended to sizeof; handlers read and update it in place. */
  readonly cmd: Decoded<S>;
}

export type IoctlHandler<S extends FieldSpec> = (ucmd: IommufdUcmd<S>) => number;

/** One row of the ioctl table (struct iommufd_ioctl_op). */
export interface IommufdIoctlOp<S extends FieldSpec = FieldSpec> {
  readonly ioctlNum: number;
  readonly struct: Struct<S>;
  readonly execute: IoctlHandler<S>;
}

/** Build a table row; the generic keeps the handler typed against its own structure. */
export function ioctlOp<S extends FieldSpec>(
  ioctlNum: number,
  struct: Struct<S>,
  execute: IoctlHandler<S>,
): IommufdIoctlOp {
  return { ioctlNum, struct, execute } as unknown as IommufdIoctlOp;
}

/** iommufd_ucmd_respond: copy min(size, sizeof) bytes of the kernel struct back over the user's. */
export function ucmdRespond<S extends FieldSpec>(ucmd: IommufdUcmd<S>): void {
  const bytes = ucmd.struct.encode(ucmd.cmd);
  const n = Math.min(ucmd.userSize, ucmd.struct.size);
  copyToUser(ucmd.ctx.kernel, ucmd.ubuffer, bytes.subarray(0, n));
}

/** The VFIO type1 container emulation that handles command numbers outside the table. */
export type CompatIoctl = (ctx: IommufdCtx, cmd: number, arg: bigint) => number;

/** What @x/selftest tells iommufd besides its command handler. */
export interface SelftestHooks {
  /** True for devices of the mock bus (they do not pin the iommufd file when bound). */
  isMockDev?(dev: unknown): boolean;
}

/** IOMMU_TEST_CMD handler installed by @x/selftest. */
export type TestCmdHandler = IoctlHandler<(typeof iommu_test_cmd)["fields"]>;

/**
 * iommufd_fops: one table for every /dev/iommu file of every machine, so `ctxFromFile` knows an
 * iommufd file by it, as the kernel compares f_op.
 */
const iommufdFops: FileOperations = {
  name: "iommufd",
  ioctl(file, cmd, arg) {
    return (file as File<IommufdCtx>).priv.ioctl(cmd, arg);
  },
  mmap(file, vma) {
    return (file as File<IommufdCtx>).priv.mmap(vma);
  },
  release(file) {
    (file as File<IommufdCtx>).priv.release();
  },
};

const noMockDevs = (_dev: unknown): boolean => false;

/**
 * One instance per Kernel: the misc devices, the ioctl table and the module-wide knobs.
 * Created by `iommufdInit(kernel)`.
 */
export class IommufdModule {
  private static readonly key = new ModuleKey<IommufdModule>("iommufd");
  /** Indexed by nr - IOMMUFD_CMD_BASE; unset entries are holes (ENOTTY after the size read). */
  private readonly ops: Array<IommufdIoctlOp | undefined> = new Array(IOMMUFD_TABLE_LENGTH);
  private testCmd: TestCmdHandler | undefined;
  /**
   * iommufd_selftest_is_mock_dev: devices of the selftest's mock bus are bound from inside the
   * context (IOMMU_TEST_OP_MOCK_DOMAIN), so they do not hold the iommufd file.
   */
  isSelftestMockDev: (dev: unknown) => boolean = noMockDevs;
  /** Contexts not yet released (a bound device or access can keep one alive after close). */
  private readonly live = new Set<IommufdCtx>();
  compat: CompatIoctl | undefined;
  /** The module's choices, set through @x/iommufd/testing. */
  readonly options: IommufdOptions = defaultIommufdOptions();
  /** The struct device of the /dev/iommu misc device (iommu_misc_dev.this_device). */
  readonly miscDevice: object = { name: "iommu" };

  constructor(
    readonly kernel: Kernel,
    options: { vfioContainer?: boolean } = {},
  ) {
    // Loading it twice on one machine WARNs here, before anything is registered.
    kernel.setModuleState(IommufdModule.key, this);
    kernel.registerDevice("/dev/iommu", (k, flags) => this.open(k, flags, false));
    // The VFIO container node served by iommufd (CONFIG_IOMMUFD_VFIO_CONTAINER): contexts opened
    // through it start in mm accounting, like VFIO type1.
    if (options.vfioContainer)
      kernel.registerDevice("/dev/vfio/vfio", (k, flags) => this.open(k, flags, true));
  }

  static of(kernel: Kernel): IommufdModule | undefined {
    return kernel.moduleState(IommufdModule.key);
  }

  /** Install the handlers of the ioctl table (index = nr - IOMMUFD_CMD_BASE). */
  addIoctls(ops: readonly IommufdIoctlOp[]): void {
    for (const op of ops) {
      const idx = _IOC_NR(op.ioctlNum) - IOMMUFD_CMD_BASE;
      if (this.ops[idx]) throw new KernelWarning(`ioctl ${op.struct.name} registered twice`);
      this.ops[idx] = op;
    }
  }

  /**
   * The IOMMU_TEST_CMD hook, for @x/selftest only (its mock driver and test ops). Once called,
   * 0x3BA0 is dispatched with the generic size rules (min 68, sizeof 72) to `handler`, which
   * receives the decoded header in `ucmd.cmd` and reads its op's union member from the user
   * buffer (`ucmd.ubuffer`, `ucmd.userSize`) with the same copy/respond helpers; its return
   * value is the ioctl's (DMABUF_GET returns an fd). `hooks.isMockDev` identifies the mock bus's
   * devices, which bind without holding the iommufd file (else closing the fd could never
   * release a context that has mock devices).
   */
  registerTestCmd(handler: TestCmdHandler, hooks: SelftestHooks = {}): void {
    if (this.testCmd) throw new KernelWarning("IOMMU_TEST_CMD registered twice");
    this.testCmd = handler;
    this.isSelftestMockDev = hooks.isMockDev ?? noMockDevs;
    this.addIoctls([ioctlOp(IOMMU_TEST_CMD, iommu_test_cmd, (ucmd) => this.testCmd!(ucmd))]);
  }

  /** The live contexts of this kernel, for inspection and invariant checks. */
  contexts(): IterableIterator<IommufdCtx> {
    return this.live.values();
  }

  /** @internal called by a context's release. */
  forget(ctx: IommufdCtx): void {
    this.live.delete(ctx);
  }

  /** Table length, as ARRAY_SIZE(iommufd_ioctl_ops). */
  get tableLength(): number {
    return this.ops.length;
  }

  op(nr: number): IommufdIoctlOp | undefined {
    return this.ops[nr - IOMMUFD_CMD_BASE];
  }

  /** iommufd_ctx_from_file: the context behind a /dev/iommu file, or EBADFD. */
  ctxFromFile(file: File): IommufdCtx {
    if (file.fops !== iommufdFops) fail(EBADFD, "not an iommufd file");
    return (file as File<IommufdCtx>).priv;
  }

  private open(kernel: Kernel, flags: number, vfioContainer: boolean): File {
    if (kernel.shouldFail("iommufd_fops_open")) fail(ENOMEM);
    const ctx = new IommufdCtx(
      this,
      vfioContainer ? IOPT_PAGES_ACCOUNT_MM : IOPT_PAGES_ACCOUNT_USER,
    );
    const file = kernel.anonFile(iommufdFops, ctx, flags || O_RDWR);
    ctx.file = file;
    this.live.add(ctx);
    return file;
  }
}

/** The options of the iommufd loaded into `kernel`; the defaults when none is. */
export function iommufdOptions(kernel: Kernel): Readonly<IommufdOptions> {
  return IommufdModule.of(kernel)?.options ?? IOMMUFD_DEFAULT_OPTIONS;
}

/** The device an io_pagetable used without a loaded module attaches dma-bufs with. */
const unloadedDevice: object = Object.freeze({ name: "iommu" });

/**
 * The dummy struct device DMABUF attachments are made with: /dev/iommu's own device.
 * @see iommufd_global_device
 */
export function iommufdGlobalDevice(kernel: Kernel): object {
  return IommufdModule.of(kernel)?.miscDevice ?? unloadedDevice;
}

/** A region of physical memory a driver offers for mmap of the iommufd file (struct iommufd_mmap). */
interface IommufdMmap {
  readonly owner: IommufdObject;
  /** The file offset in pages (vm_pgoff) user space must pass, and the region's size. */
  readonly pgoff: number;
  readonly length: bigint;
  readonly pfn: number;
}

/** The handle the IOAS module sets so contexts can clear the compat IOAS it points to. */
interface CompatIoasHolder {
  vfioIoas: IommufdObject | undefined;
}

/** struct iommufd_ctx: one per open of /dev/iommu. */
export class IommufdCtx implements CompatIoasHolder {
  readonly kernel: Kernel;
  /** Set right after the file is created; the file holds this context as its private data. */
  file!: File<IommufdCtx>;
  /** id -> object, or null while reserved (XA_ZERO_ENTRY). */
  private readonly objects = new Map<number, IommufdObject | null>();
  /** Ids of destroyed objects kept reserved until release (iommufd_object_tombstone_user). */
  private readonly tombstones = new Set<number>();
  /** Freed ids (all below `nextId`) as a min-heap: the lowest free id is its top, else nextId. */
  private readonly freeIds: number[] = [];
  private nextId = 1;
  /** IOPT_PAGES_ACCOUNT_USER or _MM; pages of a USER context may still drop to NONE. */
  accountMode: IoptPagesAccountMode;
  /** The IOAS the VFIO compat ioctls operate on. */
  vfioIoas: IommufdObject | undefined;
  /** Regions offered for mmap, by file page offset (ictx->mt_mmap). */
  private readonly mmaps = new Map<number, IommufdMmap>();
  private released = false;

  constructor(
    readonly module: IommufdModule,
    accountMode: IoptPagesAccountMode,
  ) {
    this.kernel = module.kernel;
    this.accountMode = accountMode;
  }

  // --- object table -------------------------------------------------------------------------

  /** iommufd_object_alloc: reserve the lowest free id for `obj` (ENOMEM by injection). */
  objectAlloc<T extends IommufdObject>(obj: T): T {
    if (this.kernel.shouldFail("iommufd_object_alloc")) fail(ENOMEM, "object alloc");
    obj.id = this.allocId();
    this.objects.set(obj.id, null);
    return obj;
  }

  /** iommufd_object_finalize: make a reserved object visible. */
  objectFinalize(obj: IommufdObject): void {
    WARN_ON(this.objects.get(obj.id) !== null, "finalize of an object that is not reserved");
    this.objects.set(obj.id, obj);
  }

  /** iommufd_object_abort: forget a reserved object whose constructor did not complete. */
  objectAbort(obj: IommufdObject): void {
    WARN_ON(this.objects.get(obj.id) !== null, "abort of an object that is not reserved");
    this.objects.delete(obj.id);
    this.freeId(obj.id);
  }

  /** iommufd_object_abort_and_destroy: abort after the type's constructor succeeded. */
  objectAbortAndDestroy(obj: IommufdObject): void {
    obj.abort();
    this.objectAbort(obj);
  }

  /**
   * iommufd_get_object: a visible object of `type` (or any with IOMMUFD_OBJ_ANY) with a
   * reference the caller drops by `putObject`; ENOENT when absent, reserved, of another type
   * or being destroyed.
   */
  getObject<T extends IommufdObject = IommufdObject>(id: number, type: number): T {
    const obj = this.findObject(id, type);
    if (!obj) fail(ENOENT, `object ${id}`);
    obj.users++;
    return obj as T;
  }

  /** The object `getObject` would hold, without taking a reference. */
  private findObject(id: number, type: number): IommufdObject | undefined {
    const obj = this.objects.get(id);
    if (!obj || (type !== IOMMUFD_OBJ_ANY && obj.type !== type) || obj.users === 0)
      return undefined;
    return obj;
  }

  putObject(obj: IommufdObject): void {
    WARN_ON(obj.users <= 1, "put of an object without a reference");
    obj.users--;
  }

  /** `getObject` for the lifetime of `fn` (the common lookup-use-put pattern). */
  withObject<T extends IommufdObject, R>(id: number, type: number, fn: (obj: T) => R): R {
    const obj = this.getObject<T>(id, type);
    try {
      return fn(obj);
    } finally {
      this.putObject(obj);
    }
  }

  /**
   * The lookup-use-put of an ioctl handler: `fn`'s result, or -ENOENT when `id` names no such
   * object, the handler returning the errno of iommufd_get_object's ERR_PTR as the kernel's do.
   *
   * Decision: this one failure is returned rather than thrown like the model's other errnos
   * (`ioctlErrno` keeps its reason). A stale or wrong id is the commonest failure of a
   * misbehaving VMM and of the uAPI fuzzer, and V8 never optimized handlers that most calls
   * left by a throw: it tiers a function up on its returns (PERFORMANCE.md, eleventh round).
   */
  withObjectOrErrno<T extends IommufdObject>(
    id: number,
    type: number,
    fn: (obj: T) => number,
  ): number {
    const obj = this.findObject(id, type);
    if (!obj) return ioctlErrno(this.kernel, new KernelError(ENOENT, `object ${id}`));
    obj.users++;
    try {
      return fn(obj as T);
    } finally {
      this.putObject(obj);
    }
  }

  /** Whether `id` names a visible object (for tests and invariant checks). */
  hasObject(id: number): boolean {
    return !!this.objects.get(id);
  }

  /** Every slot, reserved or visible (xa_empty is `objectCount === 0`). */
  get objectCount(): number {
    return this.objects.size;
  }

  /** The visible objects in id order. */
  objectsInOrder(): IommufdObject[] {
    const out: IommufdObject[] = [];
    for (const o of this.objects.values()) if (o) out.push(o);
    // Insertion sort: the table's order is allocation order, so ids are out of place only
    // where a freed id was reused; there this beats a comparator call per comparison.
    for (let i = 1; i < out.length; i++) {
      const o = out[i]!;
      let j = i - 1;
      for (; j >= 0 && out[j]!.id > o.id; j--) out[j + 1] = out[j]!;
      out[j + 1] = o;
    }
    return out;
  }

  /**
   * iommufd_object_remove for IOMMU_DESTROY: ENOENT for an absent or reserved id, EBUSY unless
   * the table holds the only reference; then unpublish, clear the compat IOAS and destroy.
   */
  objectRemove(id: number): void {
    const obj = this.objects.get(id);
    if (!obj) fail(ENOENT, `object ${id}`);
    if (obj.users !== 1) fail(EBUSY, `object ${id} in use`);
    this.removeAndDestroy(obj);
  }

  /**
   * iommufd_object_destroy_user: a kernel-side owner (a driver unbinding its device) drops its
   * reference and destroys the object. Every other reference must already be gone (a WARN).
   */
  objectDestroyUser(obj: IommufdObject): void {
    WARN_ON(this.objects.get(obj.id) !== obj, "destroy of an unpublished object");
    obj.users--;
    WARN_ON(obj.users !== 1, `object ${obj.id} still has users`);
    this.removeAndDestroy(obj);
  }

  /**
   * iommufd_object_tombstone_user: destroy a published object but keep its id reserved, so the
   * id answers ENOENT and is not handed out again until the context is released.
   */
  objectTombstone(obj: IommufdObject): void {
    WARN_ON(this.objects.get(obj.id) !== obj, "tombstone of an unpublished object");
    obj.users = 0;
    this.objects.set(obj.id, null);
    this.tombstones.add(obj.id);
    obj.destroy();
  }

  private removeAndDestroy(obj: IommufdObject): void {
    obj.users = 0;
    this.objects.delete(obj.id);
    this.freeId(obj.id);
    if (this.vfioIoas === obj) this.vfioIoas = undefined;
    obj.destroy();
  }

  private allocId(): number {
    const heap = this.freeIds;
    if (heap.length) return heapPop(heap);
    // xa_alloc reports a full 31-bit space as EBUSY.
    if (this.nextId > IOMMUFD_MAX_ID) fail(EBUSY, "object id space exhausted");
    return this.nextId++;
  }

  private freeId(id: number): void {
    heapPush(this.freeIds, id);
  }

  // --- mmap regions -------------------------------------------------------------------------

  /**
   * _iommufd_alloc_mmap: offer `length` bytes of physical memory at `pfn` for mmap on behalf of
   * `owner`; returns the file offset user space must map it at: the lowest free page-aligned
   * range from PAGE_SIZE on.
   */
  allocMmap(owner: IommufdObject, pfn: number, length: bigint): bigint {
    const pages = Number(length >> BigInt(PAGE_SHIFT));
    let pgoff = 1;
    for (const m of [...this.mmaps.values()].sort((a, b) => a.pgoff - b.pgoff)) {
      if (pgoff + pages <= m.pgoff) break;
      pgoff = Math.max(pgoff, m.pgoff + Number(m.length >> BigInt(PAGE_SHIFT)));
    }
    this.mmaps.set(pgoff, { owner, pgoff, length, pfn });
    return BigInt(pgoff) << BigInt(PAGE_SHIFT);
  }

  /** _iommufd_destroy_mmap: withdraw the region at `offset`. */
  destroyMmap(offset: bigint): void {
    WARN_ON(!this.mmaps.delete(Number(offset >> BigInt(PAGE_SHIFT))), "no mmap region there");
  }

  /**
   * iommufd_fops_mmap: only exactly a registered region, shared and not executable; the
   * mapping holds a reference on the region's owner (its IOMMU_DESTROY is EBUSY) until unmapped.
   */
  mmap(vma: Vma): void {
    const length = BigInt(vma.npages) << BigInt(PAGE_SHIFT);
    if (length % BigInt(PAGE_SIZE)) fail(EINVAL, "length not page aligned");
    if (!(vma.flags & VM_SHARED)) fail(EINVAL, "not a shared mapping");
    if (vma.flags & VM_EXEC) fail(EPERM, "executable mapping");
    const at = vma.pgoff;
    const immap = [...this.mmaps.values()].find(
      (m) => at >= m.pgoff && BigInt(at - m.pgoff) << BigInt(PAGE_SHIFT) < m.length,
    );
    if (!immap) fail(ENXIO, "no mmap region at this offset");
    if (at !== immap.pgoff || length !== immap.length) fail(ENXIO, "not the whole region");
    vma.pgoff = 0;
    vma.remapPfnRange(immap.pfn);
    const owner = immap.owner;
    vma.ops = { open: () => void owner.users++, close: () => void owner.users-- };
    owner.users++;
  }

  // --- file operations ----------------------------------------------------------------------

  /** iommufd_fops_ioctl: the command's result, or -errno (`ioctlErrno`). */
  ioctl(cmd: number, arg: bigint): number {
    try {
      const module = this.module;
      const nr = _IOC_NR(cmd);
      if (nr < IOMMUFD_CMD_BASE || nr - IOMMUFD_CMD_BASE >= module.tableLength) {
        const compat = module.compat;
        if (!compat) fail(ENOTTY, `ioctl 0x${cmd.toString(16)}`);
        return compat(this, cmd, arg);
      }
      const userSize = readU32(this.kernel, arg);
      const op = module.op(nr);
      if (!op || op.ioctlNum !== cmd) fail(ENOTTY, `ioctl 0x${cmd.toString(16)}`);
      const struct = op.struct;
      if (userSize < struct.minSize) fail(EINVAL, `${struct.name}: size ${userSize}`);
      if (structBuf.length < struct.size) structBuf = new Uint8Array(struct.size);
      const kbuf = copyStructFromUser(this.kernel, struct.size, arg, userSize, structBuf);
      const ucmd: IommufdUcmd = {
        ctx: this,
        ubuffer: arg,
        userSize,
        struct,
        cmd: struct.decode(kbuf),
      };
      return op.execute(ucmd);
    } catch (e) {
      return ioctlErrno(this.kernel, e);
    }
  }

  /** iommufd_fops_release: destroy objects leaf first until none is left. */
  release(): void {
    if (this.released) throw new KernelWarning("iommufd context released twice");
    this.released = true;
    while (this.objects.size) {
      let destroyed = 0;
      for (const [id, obj] of [...this.objects]) {
        if (obj === null && this.tombstones.delete(id)) {
          this.objects.delete(id);
          destroyed++;
          continue;
        }
        if (obj?.users !== 1) continue;
        this.removeAndDestroy(obj);
        destroyed++;
      }
      WARN_ON(destroyed === 0, "iommufd release: objects still referenced");
    }
    this.module.forget(this);
  }
}

/** The kernel copy of the leading u32 `size`; read right after it is filled, so one serves all. */
const sizeWord = new Uint8Array(4);

/**
 * The kernel copy of the struct, decoded right after it is filled and then dead, so one serves
 * every call (the copy's lock boundaries all come before its bytes move). Grown to the largest
 * struct; one over 64 bytes (IOMMU_TEST_CMD's) would otherwise cost V8 an off-heap buffer per call.
 */
let structBuf = new Uint8Array(64);

/** get_user of the leading u32 `size`. */
function readU32(kernel: Kernel, uaddr: bigint): number {
  copyFromUserInto(kernel, sizeWord, 0, uaddr, 4);
  return getU32(sizeWord, 0);
}

// --- IOMMU_DESTROY and IOMMU_OPTION (global part) -------------------------------------------

/** IOMMU_DESTROY */
export function iommufdDestroy(ucmd: IommufdUcmd<(typeof iommu_destroy)["fields"]>): number {
  ucmd.ctx.objectRemove(ucmd.cmd.id);
  return 0;
}

/** Per-IOAS options (HUGE_PAGES), provided by the IOAS module. */
export type IoasOption = (ucmd: IommufdUcmd<(typeof iommu_option)["fields"]>) => number;

function optionRlimitMode(ucmd: IommufdUcmd<(typeof iommu_option)["fields"]>): void {
  const { cmd, ctx } = ucmd;
  if (cmd.object_id !== 0) fail(EOPNOTSUPP, "RLIMIT_MODE is global");
  if (cmd.op === IOMMU_OPTION_OP_GET) {
    cmd.val64 = ctx.accountMode === IOPT_PAGES_ACCOUNT_MM ? 1n : 0n;
    return;
  }
  if (cmd.op !== IOMMU_OPTION_OP_SET) fail(EOPNOTSUPP, "option op");
  if (!ctx.kernel.current.process.capable(CAP_SYS_RESOURCE)) fail(EPERM, "CAP_SYS_RESOURCE");
  if (ctx.objectCount !== 0) fail(EBUSY, "objects exist");
  if (cmd.val64 === 0n) ctx.accountMode = IOPT_PAGES_ACCOUNT_USER;
  else if (cmd.val64 === 1n) ctx.accountMode = IOPT_PAGES_ACCOUNT_MM;
  else fail(EINVAL, "RLIMIT_MODE value");
}

/** iommufd_option; only val64 is copied back. */
export function iommufdOption(
  ioasOption: IoasOption,
): IoctlHandler<(typeof iommu_option)["fields"]> {
  return (ucmd) => {
    const { cmd } = ucmd;
    if (cmd.__reserved) fail(EOPNOTSUPP, "__reserved");
    switch (cmd.option_id) {
      case IOMMU_OPTION_RLIMIT_MODE:
        optionRlimitMode(ucmd);
        break;
      case IOMMU_OPTION_HUGE_PAGES: {
        const rc = ioasOption(ucmd);
        if (rc) return rc;
        break;
      }
      default:
        fail(EOPNOTSUPP, `option ${cmd.option_id}`);
    }
    const out = new Uint8Array(8);
    setU64(out, 0, cmd.val64);
    copyToUser(ucmd.ctx.kernel, ucmd.ubuffer + BigInt(iommu_option.offsetOf("val64")), out);
    return 0;
  };
}

// --- a small min-heap over plain arrays -----------------------------------------------------

function heapPush(h: number[], v: number): void {
  h.push(v);
  let i = h.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p]! <= v) break;
    h[i] = h[p]!;
    i = p;
  }
  h[i] = v;
}

function heapPop(h: number[]): number {
  const top = h[0]!;
  const last = h.pop()!;
  if (h.length) siftDown(h, 0, last);
  return top;
}

function siftDown(h: number[], i: number, v: number): void {
  const n = h.length;
  for (;;) {
    let c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1]! < h[c]!) c++;
    if (h[c]! >= v) break;
    h[i] = h[c]!;
    i = c;
  }
  h[i] = v;
}
