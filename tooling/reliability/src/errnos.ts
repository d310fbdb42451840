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
  EFBIG,
  ENOTCONN,
  ERANGE,
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
  /** vfio_pci_ioctl_get_irq_info: the struct (EFAULT), argsz or index (EINVAL). */
  VFIO_DEVICE_GET_IRQ_INFO: [EFAULT, EINVAL],
  /**
   * vfio_pci_ioctl_set_irqs: header and data checks (EINVAL), the data copy (EFAULT,
   * ENOMEM), no handler for the index / action (ENOTTY), an eventfd that is none (EBADF,
   * EINVAL), an unmask eventfd already set (EBUSY), vectors or IRQs the host cannot give
   * (ENOMEM, ENOSPC, ERANGE, ENODEV, ENOTCONN for an unconnected INTx line).
   */
  VFIO_DEVICE_SET_IRQS: [
    EINVAL,
    EFAULT,
    ENOMEM,
    ENOTTY,
    EBADF,
    EBUSY,
    ENOSPC,
    ERANGE,
    ENODEV,
    ENOTCONN,
  ],
  /** vfio_pci_ioctl_get_pci_hot_reset_info: too small an array is ENOSPC with count set. */
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: [EFAULT, EINVAL, ENODEV, ENOSPC, ENOMEM, EAGAIN, EPERM],
  /** vfio_pci_ioctl_pci_hot_reset / vfio_pci_dev_set_hot_reset (cdev form: count must be 0). */
  VFIO_DEVICE_PCI_HOT_RESET: [EFAULT, EINVAL, ENODEV, EBUSY, ENOMEM, ENOTTY, EIO],
  /** vfio_get_region_info: argsz or index (EINVAL), the cap chain (ENOMEM), copies (EFAULT). */
  VFIO_DEVICE_GET_REGION_INFO: [EFAULT, EINVAL, ENOMEM],
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
  /** A guest STE the SMMUv3 refuses is EIO (arm_smmu_validate_vste). */
  IOMMU_HWPT_ALLOC: [...DISPATCH, EOPNOTSUPP, ENOENT, EIO],
  IOMMU_GET_HW_INFO: [...DISPATCH, EOPNOTSUPP, ENOENT],
  /** Nesting and the vIOMMU family (hw_pagetable.c, viommu.c, eventq.c). */
  /** A guest command the SMMUv3 does not take, or an unknown vSID, is EIO. */
  IOMMU_HWPT_INVALIDATE: [...DISPATCH, EOPNOTSUPP, ENOENT, EIO],
  IOMMU_VIOMMU_ALLOC: [...DISPATCH, EOPNOTSUPP, ENOENT],
  IOMMU_VDEVICE_ALLOC: [...DISPATCH, ENOENT, EEXIST],
  IOMMU_VEVENTQ_ALLOC: [...DISPATCH, EOPNOTSUPP, ENOENT, EEXIST, EMFILE],
  /** Pinning the queue's IOVA range: holes (ENOENT), protection (EPERM), contiguity (EFAULT). */
  IOMMU_HW_QUEUE_ALLOC: [...DISPATCH, EOPNOTSUPP, EOVERFLOW, ENOENT, EPERM, EEXIST, EIO],
  /**
   * hw_pagetable.c: unknown flags or no dirty ops (EOPNOTSUPP), not a paging HWPT (ENOENT),
   * the driver's refusal (EINVAL).
   */
  IOMMU_HWPT_SET_DIRTY_TRACKING: [...DISPATCH, EOPNOTSUPP, ENOENT],
  /**
   * Unknown flags or a reserved word, no dirty ops (EOPNOTSUPP), not a paging HWPT (ENOENT),
   * iommufd_check_iova_range (EOVERFLOW, EINVAL), the bitmap's pages not writable (EFAULT).
   */
  IOMMU_HWPT_GET_DIRTY_BITMAP: [...DISPATCH, EOPNOTSUPP, ENOENT, EOVERFLOW],
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
  /** eventfd2: flags (EINVAL), descriptors (EMFILE), the context and file (ENOMEM). */
  EVENTFD: [EINVAL, EMFILE, ENOMEM],
  /** eventfd_write: short buffer or ULLONG_MAX (EINVAL), would overflow (EAGAIN). */
  EVENTFD_WRITE: [EINVAL, EAGAIN, EBADF],
  /** eventfd_read: short buffer (EINVAL), count 0 on a non-blocking eventfd (EAGAIN). */
  EVENTFD_READ: [EINVAL, EAGAIN, EBADF],
  MEMFD_CREATE: [EINVAL, EMFILE, ENOMEM],
  /** memfd_add_seals: not writable or F_SEAL_SEAL (EPERM), bits (EINVAL), mapped (EBUSY). */
  FCNTL_SEALS: [EBADF, EINVAL, EPERM, EBUSY],
  /** ftruncate on a memfd: a size seal (EPERM), the size limit (EFBIG, EINVAL). */
  FTRUNCATE: [EBADF, EINVAL, EPERM, EFBIG, ENOMEM],
  /** pwrite on a memfd: a write seal or F_SEAL_GROW past EOF (EPERM). */
  WRITE: [EBADF, EINVAL, EPERM, EFBIG, EFAULT, ENOMEM, ENOSPC],
  /** shared mmap of a memfd: writable against a write seal (EPERM). */
  MMAP: [EBADF, EINVAL, EPERM, ENOMEM, ENODEV],
} as const satisfies Record<string, readonly number[]>;

export type SyscallName = keyof typeof DOCUMENTED_ERRNOS;

/** Whether `errno` is documented for `call`. */
export function errnoDocumented(call: SyscallName, errno: number): boolean {
  return (DOCUMENTED_ERRNOS[call] as readonly number[]).includes(errno);
}
