/**
 * Linux asm-generic errno values (include/uapi/asm-generic/errno-base.h, errno.h) and the
 * kernel-internal ones that can reach a caller of the model (include/linux/errno.h).
 */
export const EPERM = 1;
export const ENOENT = 2;
const ESRCH = 3;
const EINTR = 4;
export const EIO = 5;
export const ENXIO = 6;
export const E2BIG = 7;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const EEXIST = 17;
const EXDEV = 18;
export const ENODEV = 19;
const ENOTDIR = 20;
const EISDIR = 21;
export const EINVAL = 22;
const ENFILE = 23;
export const EMFILE = 24;
export const ENOTTY = 25;
export const EFBIG = 27;
export const ENOSPC = 28;
const ESPIPE = 29;
const EROFS = 30;
export const ERANGE = 34;
export const EDEADLK = 35;
const ENOSYS = 38;
export const EBADE = 52;
const ENODATA = 61;
const EBADMSG = 74;
export const EOVERFLOW = 75;
export const EBADFD = 77;
export const EMSGSIZE = 90;
export const EOPNOTSUPP = 95;
export const EADDRINUSE = 98;
export const ENOTCONN = 107;
const ETIMEDOUT = 110;
export const EALREADY = 114;
const ERESTARTSYS = 512;
const ENOTSUPP = 524;

export const ERRNO_NAMES: Readonly<Record<number, string>> = {
  [EPERM]: "EPERM",
  [ENOENT]: "ENOENT",
  [ESRCH]: "ESRCH",
  [EINTR]: "EINTR",
  [EIO]: "EIO",
  [ENXIO]: "ENXIO",
  [E2BIG]: "E2BIG",
  [EBADF]: "EBADF",
  [EAGAIN]: "EAGAIN",
  [ENOMEM]: "ENOMEM",
  [EACCES]: "EACCES",
  [EFAULT]: "EFAULT",
  [EBUSY]: "EBUSY",
  [EEXIST]: "EEXIST",
  [EXDEV]: "EXDEV",
  [ENODEV]: "ENODEV",
  [ENOTDIR]: "ENOTDIR",
  [EISDIR]: "EISDIR",
  [EINVAL]: "EINVAL",
  [ENFILE]: "ENFILE",
  [EMFILE]: "EMFILE",
  [ENOTTY]: "ENOTTY",
  [EFBIG]: "EFBIG",
  [ENOSPC]: "ENOSPC",
  [ESPIPE]: "ESPIPE",
  [EROFS]: "EROFS",
  [ERANGE]: "ERANGE",
  [EDEADLK]: "EDEADLK",
  [ENOSYS]: "ENOSYS",
  [EBADE]: "EBADE",
  [ENODATA]: "ENODATA",
  [EBADMSG]: "EBADMSG",
  [EOVERFLOW]: "EOVERFLOW",
  [EBADFD]: "EBADFD",
  [EMSGSIZE]: "EMSGSIZE",
  [EOPNOTSUPP]: "EOPNOTSUPP",
  [ENOTCONN]: "ENOTCONN",
  [EADDRINUSE]: "EADDRINUSE",
  [ETIMEDOUT]: "ETIMEDOUT",
  [EALREADY]: "EALREADY",
  [ERESTARTSYS]: "ERESTARTSYS",
  [ENOTSUPP]: "ENOTSUPP",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}
