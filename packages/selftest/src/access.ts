/**
 * The selftest's emulated in-kernel user of an IOAS (struct selftest_access): an iommufd access
 * behind a file descriptor, with the test ops that pin pages through it, copy bytes through it
 * and move it to another IOAS.
 *
 * CREATE_ACCESS returns the access's fd (O_CLOEXEC); closing it destroys the access after
 * unpinning whatever it still holds. Every ACCESS_PAGES pin is an item with an id counted from 0
 * per access; DESTROY_ACCESS_PAGES drops one, and an unmap of the IOAS drops (through the
 * access's unmap callback) every item it overlaps, so a later DESTROY_ACCESS_PAGES of it is
 * ENOENT. An fd that is not an access is EBADFD.
 *
 * Lock order: selftest_access.lock -> (iommufd) access.ioas_lock -> io_pagetable locks. The
 * unmap callback takes selftest_access.lock from inside the io_pagetable's unmap, which holds
 * none of the access's locks at that point.
 *
 * @see drivers/iommu/iommufd/selftest.c (iommufd_test_create_access and friends)
 */
import {
  type IommufdAccess,
  __IOMMUFD_ACCESS_RW_SLOW_PATH,
  IOMMUFD_ACCESS_RW_WRITE,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessDestroy,
  iommufdAccessPinPages,
  iommufdAccessReplace,
  iommufdAccessRw,
  iommufdAccessUnpinPages,
  ucmdRespond,
} from "@x/iommufd";
import {
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  type File,
  type FileOperations,
  type Kernel,
  Mutex,
  O_CLOEXEC,
  O_RDWR,
  PAGE_SIZE,
  copyFromUser,
  copyToUser,
  fail,
  EBADFD,
  EBADE,
} from "@x/kernel";
import {
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  MOCK_ACCESS_MAX_LENGTH,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_SYZ,
  MOCK_FLAGS_ACCESS_WRITE,
  iommu_test_cmd,
} from "./iommufd-test.js";
import { type TestOp, type TestUcmd, ucmdMember, userPagePfn } from "./test-cmd.js";

/** One ACCESS_PAGES pin (struct selftest_access_item). */
interface SelftestAccessItem {
  readonly iova: bigint;
  readonly length: bigint;
  readonly id: number;
}

/** struct selftest_access */
class SelftestAccess {
  access: IommufdAccess | undefined;
  readonly lock: Mutex;
  readonly items: SelftestAccessItem[] = [];
  nextId = 0;
  needsPinPages = false;

  constructor(readonly kernel: Kernel) {
    this.lock = new Mutex(kernel.lockdep, "selftest_access.lock");
  }

  /** The unmap callback: unpin and forget every item overlapping [iova, iova + length). */
  unmap(iova: bigint, length: bigint): void {
    const last = iova + length - 1n;
    this.lock.with(() => {
      for (let i = this.items.length - 1; i >= 0; i--) {
        const item = this.items[i]!;
        if (iova > item.iova + item.length - 1n || last < item.iova) continue;
        this.items.splice(i, 1);
        iommufdAccessUnpinPages(this.access!, item.iova, item.length);
      }
    });
  }
}

/** iommfd_test_staccess_fops: closing the fd destroys the access. */
const staccessFops: FileOperations = {
  name: "[iommufd_test_staccess]",
  release(file: File) {
    const staccess = (file as File<SelftestAccess>).priv;
    if (!staccess.access) return;
    staccess.unmap(0n, 1n << 64n);
    iommufdAccessDestroy(staccess.access);
  },
};

/** iommufd_access_get: the access behind `fd`, with a file reference, or EBADFD. */
function withAccess<R>(kernel: Kernel, fd: number, fn: (s: SelftestAccess) => R): R {
  const files = kernel.current.process.files;
  if (!files.isOpen(fd)) fail(EBADFD, `fd ${fd}`);
  const file = files.fget(fd);
  try {
    if (file.fops !== staccessFops) fail(EBADFD, `fd ${fd} is not an access`);
    return fn((file as File<SelftestAccess>).priv);
  } finally {
    file.put();
  }
}

/** CREATE_ACCESS. @see iommufd_test_create_access */
function createAccess(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.create_access);
  const { ctx } = ucmd;
  const kernel = ctx.kernel;
  if (u.cmd.flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) fail(EOPNOTSUPP, "access flags");
  if (kernel.shouldFail("iommufd_test_alloc_access")) fail(ENOMEM, "selftest access");
  const staccess = new SelftestAccess(kernel);
  const file = kernel.anonFile(staccessFops, staccess, O_RDWR);
  try {
    const files = kernel.current.process.files;
    const fdno = files.peekUnused();
    staccess.needsPinPages = (u.cmd.flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) !== 0;
    // The selftest access is its own ops (selftest_access_ops with staccess as data).
    const access = iommufdAccessCreate(ctx, staccess);
    try {
      iommufdAccessAttach(access, u.cmd.id);
      u.cmd.out_access_fd = fdno;
      ucmdRespond(u);
    } catch (e) {
      iommufdAccessDestroy(access);
      throw e;
    }
    staccess.access = access;
    files.install(file, O_CLOEXEC);
  } catch (e) {
    file.put();
    throw e;
  }
  return 0;
}

/** DESTROY_ACCESS_PAGES: ENOENT when the item is gone (e.g. dropped by an unmap). */
function destroyAccessPages(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.destroy_access_pages);
  withAccess(ucmd.ctx.kernel, u.cmd.id, (staccess) =>
    staccess.lock.with(() => {
      const i = staccess.items.findIndex((it) => it.id === u.cmd.access_pages_id);
      if (i < 0) fail(ENOENT, `access item ${u.cmd.access_pages_id}`);
      const [item] = staccess.items.splice(i, 1);
      iommufdAccessUnpinPages(staccess.access!, item!.iova, item!.length);
    }),
  );
  return 0;
}

/**
 * The pages pinned for [iova, iova + length) must be those behind `uptr` (EBADE otherwise);
 * `uptr` is at the same offset in its page as `iova`. @see iommufd_test_check_pages
 */
function checkPages(kernel: Kernel, uptr: bigint, pfns: readonly number[]): void {
  let va = uptr - (uptr % BigInt(PAGE_SIZE));
  for (const pfn of pfns) {
    if (userPagePfn(kernel, va) !== pfn) fail(EBADE, `page at 0x${va.toString(16)}`);
    va += BigInt(PAGE_SIZE);
  }
}

/** ACCESS_PAGES. @see iommufd_test_access_pages */
function accessPages(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.access_pages);
  const kernel = ucmd.ctx.kernel;
  const { flags, iova, length, uptr } = u.cmd;
  if (length > BigInt(MOCK_ACCESS_MAX_LENGTH)) fail(ENOMEM, "access length");
  if (flags & ~(MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ)) fail(EOPNOTSUPP, "access flags");
  withAccess(kernel, u.cmd.id, (staccess) => {
    if (!staccess.needsPinPages) fail(EOPNOTSUPP, "access cannot pin");
    if (kernel.shouldFail("iommufd_test_access_pages")) fail(ENOMEM, "page array");
    staccess.lock.with(() => {
      const access = staccess.access!;
      const runs = iommufdAccessPinPages(
        access,
        iova,
        length,
        flags & MOCK_FLAGS_ACCESS_WRITE ? IOMMUFD_ACCESS_RW_WRITE : 0,
      );
      try {
        // A null uptr skips the check (for syzkaller).
        if (uptr) {
          const pfns: number[] = [];
          runs.forEach((pfn, n) => {
            for (let i = 0; i < n; i++) pfns.push(pfn + i);
          });
          checkPages(kernel, uptr, pfns);
        }
        if (kernel.shouldFail("iommufd_test_access_item")) fail(ENOMEM, "access item");
        // Decision: a failed copy-back gives the item id back (the kernel keeps next_id
        // advanced), so that a failed call changes nothing, as the model's rules ask.
        const item = { iova, length, id: staccess.nextId++ };
        u.cmd.out_access_pages_id = item.id;
        try {
          ucmdRespond(u);
        } catch (e) {
          staccess.nextId--;
          throw e;
        }
        staccess.items.push(item);
      } catch (e) {
        iommufdAccessUnpinPages(access, iova, length);
        throw e;
      }
    });
  });
  return 0;
}

/** ACCESS_RW: copy between the user buffer and the IOVA through the access. */
function accessRw(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.access_rw);
  const kernel = ucmd.ctx.kernel;
  const { iova, length, uptr, flags } = u.cmd;
  if (length > BigInt(MOCK_ACCESS_MAX_LENGTH)) fail(ENOMEM, "access length");
  if (flags & ~(MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ))
    fail(EOPNOTSUPP, "rw flags");
  withAccess(kernel, u.cmd.id, (staccess) => {
    if (kernel.shouldFail("iommufd_test_access_rw_buf")) fail(ENOMEM, "rw buffer");
    const write = (flags & MOCK_ACCESS_RW_WRITE) !== 0;
    const tmp = write ? copyFromUser(kernel, uptr, Number(length)) : new Uint8Array(Number(length));
    const rwFlags =
      (write ? IOMMUFD_ACCESS_RW_WRITE : 0) |
      (flags & MOCK_ACCESS_RW_SLOW_PATH ? __IOMMUFD_ACCESS_RW_SLOW_PATH : 0);
    iommufdAccessRw(staccess.access!, iova, tmp, rwFlags);
    if (!write) copyToUser(kernel, uptr, tmp);
  });
  return 0;
}

/** ACCESS_REPLACE_IOAS */
function accessReplaceIoas(ucmd: TestUcmd): number {
  const u = ucmdMember(ucmd, iommu_test_cmd.access_replace_ioas);
  withAccess(ucmd.ctx.kernel, u.cmd.id, (staccess) =>
    iommufdAccessReplace(staccess.access!, u.cmd.ioas_id),
  );
  return 0;
}

export const accessOps: ReadonlyArray<readonly [number, TestOp]> = [
  [IOMMU_TEST_OP_CREATE_ACCESS, createAccess],
  [IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, destroyAccessPages],
  [IOMMU_TEST_OP_ACCESS_PAGES, accessPages],
  [IOMMU_TEST_OP_ACCESS_RW, accessRw],
  [IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, accessReplaceIoas],
];
