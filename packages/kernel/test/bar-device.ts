import {
  EFAULT,
  EINVAL,
  File,
  type FileOperations,
  type Kernel,
  VM_PFNMAP,
  fail,
} from "../src/index.js";

/**
 * A device node "/dev/bar" over a 1 MiB MMIO region whose mmap maps the BAR with
 * remap_pfn_range ("remap"), marks the VMA VM_PFNMAP and serves pfns from a fault handler
 * ("fault", refusing while `live.on` is false, as a driver does for a revoked BAR), or has no
 * mmap at all ("none").
 */
export function barDevice(
  k: Kernel,
  mode: "remap" | "fault" | "none",
): { bar: ReturnType<typeof k.mem.addMmioRegion>; live: { on: boolean } } {
  const bar = k.mem.addMmioRegion("bar0", 1n << 20n);
  const live = { on: true };
  const fops: FileOperations = {
    name: "bar",
    ...(mode === "none"
      ? {}
      : {
          mmap(_file, vma) {
            if (vma.endAddr - vma.startAddr + (BigInt(vma.pgoff) << 12n) > bar.size)
              fail(EINVAL, "beyond BAR");
            if (mode === "remap") vma.remapPfnRange(bar.basePfn + vma.pgoff);
            else {
              vma.flags |= VM_PFNMAP;
              vma.ops = {
                fault: (_v, pgoff) => (live.on ? bar.basePfn + pgoff : fail(EFAULT, "SIGBUS")),
              };
            }
          },
        }),
  };
  k.registerDevice("/dev/bar", (_k, flags) => new File(fops, null, flags));
  return { bar, live };
}

/**
 * A device node "/dev/x" whose mmap maps pfn 0 with remap_pfn_range and records its VMAs'
 * vm_ops->open / ->close calls (a split opens the new piece, an unmap closes each piece).
 */
export function vmaEventDevice(k: Kernel): string[] {
  const events: string[] = [];
  const fops: FileOperations = {
    name: "dev",
    mmap(_f, vma) {
      vma.remapPfnRange(0);
      vma.ops = { open: () => events.push("open"), close: () => events.push("close") };
    },
  };
  k.registerDevice("/dev/x", (_k, flags) => new File(fops, null, flags));
  return events;
}
