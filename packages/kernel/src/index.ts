/**
 * @x/kernel: the simulated machine every other package runs on: errno and WARN, physical
 * memory, mm and GUP, memfd, files and fds, lockdep, fail-nth, the module symbol table, the
 * trace bus, and the libc facade user-space tests call. Only what the other packages, the apps
 * and the tooling use is exported. Fault injection is per task (`kernel.shouldFail`), so there is
 * no separate testing entry.
 */
export {
  E2BIG,
  EACCES,
  EADDRINUSE,
  EAGAIN,
  ECHILD,
  EBADE,
  EBADF,
  EBADFD,
  EBUSY,
  EDEADLK,
  EEXIST,
  EFAULT,
  EFBIG,
  EINVAL,
  EPIPE,
  ESPIPE,
  EIO,
  EMFILE,
  EMSGSIZE,
  ENODEV,
  ENOENT,
  ENOMEM,
  ENOSPC,
  ENOTCONN,
  ENOTTY,
  ENXIO,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
  ERANGE,
  ERRNO_NAMES,
  errnoName,
} from "./errno.js";
export {
  type FailDetails,
  KernelError,
  KernelWarning,
  WARN_ON,
  fail,
  isKernelError,
  withoutErrorStacks,
} from "./error.js";
export { FaultInjector } from "./fault.js";
export {
  FMODE_READ,
  FMODE_WRITE,
  File,
  type FileOperations,
  ioctlErrno,
  O_ACCMODE,
  O_APPEND,
  O_CLOEXEC,
  O_DIRECT,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
} from "./file.js";
export {
  FOLL_GET,
  FOLL_LONGTERM,
  FOLL_PIN,
  FOLL_WRITE,
  pinUserPages,
  pinUserPagesFast,
  unpinUserPageRuns,
} from "./gup.js";
export {
  Kernel,
  ModuleKey,
  Task,
  type KernelOptions,
} from "./kernel.js";
export {
  FD_CLOEXEC,
  F_DUPFD,
  F_DUPFD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  F_SETFD,
  Libc,
  MAP_FAILED,
  type PollFd,
  SIGABRT,
} from "./libc.js";
export { U64_MAX } from "./limits.js";
export {
  LockBase,
  LockdepError,
  Mutex,
  RwSem,
  WwAcquireCtx,
  WwMutex,
} from "./lockdep.js";
export {
  accountLockedVm,
  accountLockedVmLocked,
  decrUserLockedVm,
  incrUserLockedVm,
  memlockLimitPages,
  updatePinnedVm,
} from "./locked-vm.js";
export {
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  MFD_HUGE_1GB,
  MFD_HUGE_2MB,
  MFD_NOEXEC_SEAL,
  fileSize,
  isMemfd,
  memfdCreate,
  memfdPinFolios,
  type ShmemInode,
  shmemInode,
  vfsTruncate,
} from "./memfd.js";
export {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_HUGE_1GB,
  MAP_HUGE_2MB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MMAP_BASE,
  MmStruct,
  PROT_READ,
  PROT_WRITE,
  Vma,
} from "./mm.js";
export {
  VM_DONTDUMP,
  VM_DONTEXPAND,
  VM_EXEC,
  VM_HUGETLB,
  VM_IO,
  VM_PFNMAP,
  VM_SHARED,
} from "./mm-flags.js";
export { KmemCache } from "./kmem-cache.js";
export { PfnRuns } from "./pfn-runs.js";
export {
  MmioRegion,
  PAGE_SHIFT,
  PAGE_SIZE,
  PMD_ORDER,
  PhysMem,
  RESERVED_LOW_PAGES,
  type PhysMemOptions,
} from "./physmem.js";
export {
  CAP_IPC_LOCK,
  CAP_SYS_ADMIN,
  CAP_SYS_RESOURCE,
  FdTable,
  Process,
  RLIMIT_MEMLOCK,
  RLIMIT_NOFILE,
  UserStruct,
} from "./process.js";
export {
  type SymbolKey,
  SymbolTable,
  defineSymbol,
} from "./symbols.js";
export {
  TraceBus,
  type TraceRecord,
  type TraceEvents,
  type TraceName,
} from "./trace.js";
export {
  copyFromUser,
  copyFromUserInto,
  copyStructFromUser,
  copyToUser,
  memdupArrayUser,
} from "./uaccess.js";
export {
  XA_STOP,
  XArray,
} from "./xarray.js";
export {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  EventfdCtx,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  POLLPRI,
  TaskWouldSleepForever,
  type EventfdWaiter,
  eventfdCtxDoRead,
  eventfdCtxFdget,
  eventfdPollWait,
  eventfdRemoveWait,
  eventfdSignal,
} from "./eventfd.js";
export {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  F_SETFL,
} from "./fcntl.js";
export { LockOrder, STACK_LOCK_ORDER } from "./lockdep-order.js";
