/**
 * The vm_area_struct flag bits a VMA carries, with the values of include/linux/mm.h. Kept apart
 * from mm.ts so that files mm.ts builds on (memfd, shmem) can test them without importing mm.ts.
 */
export const VM_READ = 0x1;
export const VM_WRITE = 0x2;
export const VM_EXEC = 0x4;
export const VM_SHARED = 0x8;
export const VM_MAYREAD = 0x10;
export const VM_MAYWRITE = 0x20;
export const VM_MAYEXEC = 0x40;
export const VM_MAYSHARE = 0x80;
export const VM_PFNMAP = 0x400;
export const VM_IO = 0x4000;
export const VM_DONTEXPAND = 0x40000;
export const VM_HUGETLB = 0x400000;
export const VM_DONTDUMP = 0x4000000;
