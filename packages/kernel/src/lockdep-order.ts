/**
 * The lock order of the whole stack, declared once: lock classes from the outermost (taken
 * first) to the innermost. Lockdep checks every new dependency against it, so an order that
 * contradicts the table is reported the first time it is taken, even when no run ever takes
 * the reverse order; and every class that nests with another must be in the table.
 *
 * The order is the kernel's, as documented and taken by:
 * - drivers/vfio/vfio_main.c, drivers/vfio/pci/vfio_pci_core.c: the device set's lock is the
 *   outermost; close releases the ERR / REQ eventfds under igate, and SET_IRQS holds igate
 *   while MSI vectors are allocated under memory_lock (vfio_pci_intrs.c); memory_lock is taken inside the fault handler (under mmap_lock) and around
 *   BAR revocation, which takes the dma-buf's reservation lock (vfio_pci_dmabuf.c);
 * - drivers/iommu/iommufd/io_pagetable.c (the locking notes at the top, and iopt_map_pages):
 *   domains_rwsem, then iova_rwsem, then the iopt_pages mutex;
 * - drivers/iommu/iommufd/pages.c: the pages mutex is held across pin_user_pages (mmap_lock);
 *   DMABUF pages get their own class (lockdep_set_class) because their mutex is taken under
 *   the exporter's dma_resv_lock when it revokes, the reverse of USER pages and mmap_lock;
 * - drivers/dma-buf/dma-buf.c, dma-resv.c: reservation_ww_class_mutex, then db_list mutex;
 * - mm/gup.c: mmap_lock is taken by GUP and by faults under the locks above it.
 * Test drivers' locks (the selftest access driver, the race explorer's) sit where the kernel
 * selftest's mock driver takes its own: before the access's ioas_lock.
 */
const STACK_CLASSES = [
  "vfio_device_set.lock",
  "vfio_pci.igate",
  "selftest_access.lock",
  "race_access_driver.lock",
  "iommufd_ioas.mutex",
  "iommufd_access.ioas_lock",
  "iopt.domains_rwsem",
  "iopt.iova_rwsem",
  "iopt_pages.mutex",
  "mmap_lock",
  "vfio_pci.memory_lock",
  "pci_dev.lock",
  "reservation_ww_class_mutex",
  "iopt_pages.mutex/dmabuf",
  "dmabuf_list_mutex",
] as const;

/** A total order of lock classes; a class key's rank is its position. */
export class LockOrder {
  private readonly ranks: ReadonlyMap<string, number>;

  constructor(readonly classes: readonly string[]) {
    this.ranks = new Map(classes.map((c, i) => [c, i]));
  }

  /**
   * The rank of a class key: the class itself, else its longest tabled prefix before a "/"
   * (a subclass `name/1`, or one class per instance such as `vfio_pci.memory_lock/<pci name>`).
   */
  rankOf(key: string): number | undefined {
    for (let k = key; ; ) {
      const r = this.ranks.get(k);
      if (r !== undefined) return r;
      const slash = k.lastIndexOf("/");
      if (slash < 0) return undefined;
      k = k.slice(0, slash);
    }
  }

  /**
   * Why taking `next` while holding `held` breaks the table, or undefined when it does not.
   * Two keys of the same rank (subclasses, instances) are left to lockdep's graph.
   */
  violation(held: string, next: string): string | undefined {
    const a = this.rankOf(held);
    const b = this.rankOf(next);
    if (a === undefined || b === undefined) {
      const missing = a === undefined ? held : next;
      return `lock class ${missing} is not in the lock order table (taking ${next} under ${held})`;
    }
    if (a > b)
      return `lock order violation: acquiring ${next} while holding ${held}, but the table orders ${next} before ${held}`;
    return undefined;
  }
}

/** The stack's order: every Kernel's lockdep checks it unless made with `lockOrder: null`. */
export const STACK_LOCK_ORDER = new LockOrder(STACK_CLASSES);
