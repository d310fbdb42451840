/**
 * The errnos each system call may fail with, as include/uapi/linux/iommufd.h, drivers/iommu/iommufd/ and
 * drivers/vfio/pci/vfio_pci_dmabuf.c give them. A fuzzer outcome outside its call's row is a failure: the model answered
 * with an errno the kernel never gives for that call.
 *
 * Every /dev/iommu ioctl may also fail in the dispatcher (EFAULT reading `size`, ENOTTY for a
 * wrong command number, EINVAL below min_size, E2BIG for a non-zero tail) and wherever memory
 * is allocated (ENOMEM); those are added to each iommufd row.
 *
 * Decision: EFAULT is allowed wherever a call reads or writes a user pointer (the struct, an
 * embedded pointer, pinned user memory); EOVERFLOW wherever the kernel has an IOVA or length
 * overflow check on the path (including the io_pagetable checks MAP and COPY share).
 */
import {
  E2BIG,
  EADDRINUSE,
  EAGAIN,
  EBADF,
  EBUSY,
  EDEADLK,
  EEXIST,
  EFAULT,
  EINVAL,
  EIO,
  EMFILE,
  EMSGSIZE,
  ENODEV,
  ENOENT,
  ENOMEM,
  ENOSPC,
  ENOTTY,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
  EBADE,
  EBADFD,
} from "@x/kernel";

const DISPATCH = [EFAULT, ENOTTY, EINVAL, E2BIG, ENOMEM];
/** The io_pagetable's map checks (iopt_map_common / iopt_map_pages). */
const IOPT_MAP = [EOPNOTSUPP, EOVERFLOW, EINVAL, ENOENT, EEXIST, ENOSPC, EPERM, EFAULT, ENOMEM];

/** The VFIO device cdev ioctls (drivers/vfio/vfio_main.c, drivers/vfio/pci/vfio_pci_core.c). */
const VFIO_DEVICE_ROWS = {
  VFIO_DEVICE_BIND_IOMMUFD: [EINVAL, E2BIG, EFAULT, EBADF, EBADFD, EBUSY, ENOMEM, ENODEV],
  VFIO_DEVICE_ATTACH_IOMMUFD_PT: [EINVAL, EFAULT, EOPNOTSUPP, ENOENT, EADDRINUSE, EBUSY, ENOMEM],
  VFIO_DEVICE_DETACH_IOMMUFD_PT: [EINVAL, EFAULT, EOPNOTSUPP],
  VFIO_DEVICE_FEATURE: [EINVAL, E2BIG, EFAULT, ENOTTY, EOPNOTSUPP, ENOMEM, ENODEV, EMFILE, EBADF],
  VFIO_DEVICE_RESET: [EINVAL, EAGAIN, EBUSY, ENOMEM, ENOTTY],
} as const;

/** System call → errnos it may set. Keys name the call as the fuzzers issue it. */
export const DOCUMENTED_ERRNOS = {
  IOMMU_DESTROY: [...DISPATCH, ENOENT, EBUSY],
  IOMMU_IOAS_ALLOC: [...DISPATCH, EOPNOTSUPP, EBUSY],
  IOMMU_IOAS_IOVA_RANGES: [...DISPATCH, EOPNOTSUPP, ENOENT, EMSGSIZE],
  IOMMU_IOAS_ALLOW_IOVAS: [...DISPATCH, EOPNOTSUPP, ENOENT, EADDRINUSE],
  IOMMU_IOAS_MAP: [...DISPATCH, ...IOPT_MAP],
  // The dma-buf path adds the exporter's answers: not P2P / not single range (EOPNOTSUPP),
  // revoked (ENODEV); the file path EBADF.
  IOMMU_IOAS_MAP_FILE: [...DISPATCH, ...IOPT_MAP, EBADF, ENODEV],
  IOMMU_IOAS_COPY: [...DISPATCH, ...IOPT_MAP],
  IOMMU_IOAS_UNMAP: [...DISPATCH, ENOENT, EOVERFLOW, EBUSY, EDEADLK],
  IOMMU_OPTION: [...DISPATCH, EOPNOTSUPP, ENOENT, EPERM, EBUSY],
  IOMMU_VFIO_IOAS: [...DISPATCH, EOPNOTSUPP, ENOENT, ENODEV],
  IOMMU_HWPT_ALLOC: [...DISPATCH, EOPNOTSUPP, ENOENT],
  IOMMU_GET_HW_INFO: [...DISPATCH, EOPNOTSUPP, ENOENT],
  /**
   * The selftest access ops (CREATE_ACCESS, ACCESS_PAGES, DESTROY_ACCESS_PAGES, ACCESS_RW):
   * not an access fd (EBADFD), unknown item (ENOENT), range not mapped or DMABUF (EINVAL,
   * I10), write to read-only (EPERM), length above the mock's limit (ENOMEM), pinned pages
   * not those behind `uptr` (EBADE).
   */
  IOMMU_TEST_CMD: [...DISPATCH, ...IOPT_MAP, EBADF, EBADFD, EBUSY, EMFILE, EBADE],
  /** Other numbers on /dev/iommu: holes, empty slots (CHANGE_PROCESS), TEST_CMD unregistered. */
  IOMMU_OTHER: [...DISPATCH, ENOENT, ENODEV, EPERM, EBUSY, EOPNOTSUPP],
  ...VFIO_DEVICE_ROWS,
  /** A number picked at random lands on any VFIO device ioctl (SET_IRQS, BIND, …). */
  VFIO_DEVICE_OTHER: [...new Set(Object.values(VFIO_DEVICE_ROWS).flat()), EBADF],
  /** Config-space pwrite through region 7 (COMMAND, PMCSR, DEVCTL). */
  VFIO_CONFIG_WRITE: [EINVAL, EFAULT, EIO, EAGAIN, EBUSY, ENOMEM],
  OPEN_VFIO_CDEV: [ENODEV, ENOMEM, EMFILE, EBUSY],
  CLOSE: [EBADF],
  SETRLIMIT: [EINVAL, EPERM],
} as const satisfies Record<string, readonly number[]>;

export type SyscallName = keyof typeof DOCUMENTED_ERRNOS;

/** Whether `errno` is documented for `call`. */
export function errnoDocumented(call: SyscallName, errno: number): boolean {
  return (DOCUMENTED_ERRNOS[call] as readonly number[]).includes(errno);
}
