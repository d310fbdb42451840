/**
 * File sealing of memfds through fcntl(F_ADD_SEALS / F_GET_SEALS). The seals live on the shmem
 * or hugetlbfs inode; their effects are enforced where the inode changes (memfd.ts: size,
 * write, shared mappings).
 *
 * @see mm/memfd.c (memfd_fcntl, memfd_add_seals, memfd_get_seals)
 */
import { EBUSY, EINVAL, EPERM } from "./errno.js";
import { fail } from "./error.js";
import {
  F_ADD_SEALS,
  F_ALL_SEALS,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
} from "./fcntl.js";
import { FMODE_WRITE, type File } from "./file.js";
import { shmemInode } from "./memfd.js";

/**
 * @see memfd_add_seals: EPERM unless open for writing, EINVAL for unknown bits or a file that
 * is not a memfd, EPERM once F_SEAL_SEAL is set, EBUSY for F_SEAL_WRITE while a shared mapping
 * may write or a page is pinned. Adding F_SEAL_EXEC to an executable file also seals writes
 * and size changes.
 */
function memfdAddSeals(file: File, seals: number): void {
  if (!(file.fMode & FMODE_WRITE)) fail(EPERM, "F_ADD_SEALS on a file not open for writing");
  const add = seals >>> 0;
  if (add & ~F_ALL_SEALS) fail(EINVAL, "unknown seal bits");
  const inode = shmemInode(file);
  if (!inode) fail(EINVAL, `${file.fops.name} cannot be sealed`);
  if (inode.seals & F_SEAL_SEAL) fail(EPERM, "F_SEAL_SEAL is set");
  if (add & F_SEAL_WRITE && !(inode.seals & F_SEAL_WRITE)) {
    // mapping_deny_writable, then memfd_wait_for_pins.
    if (inode.mmapWritable > 0) fail(EBUSY, "shared writable mapping exists");
    if (inode.hasPinnedPages()) fail(EBUSY, "pages are pinned");
  }
  let all = add;
  if (add & F_SEAL_EXEC && inode.mode & 0o111)
    all |= F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
  inode.seals |= all;
}

/** @see memfd_get_seals: EINVAL for a file that is not a memfd. */
function memfdGetSeals(file: File): number {
  const inode = shmemInode(file);
  if (!inode) fail(EINVAL, `${file.fops.name} has no seals`);
  return inode.seals;
}

/** @see memfd_fcntl */
export function memfdFcntl(file: File, cmd: number, arg: number): number {
  switch (cmd) {
    case F_ADD_SEALS:
      memfdAddSeals(file, arg);
      return 0;
    case F_GET_SEALS:
      return memfdGetSeals(file);
    default:
      return fail(EINVAL, `memfd fcntl ${cmd}`);
  }
}
