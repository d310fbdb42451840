/**
 * fcntl(2) commands and file seals beyond the descriptor ones (include/uapi/linux/fcntl.h,
 * include/uapi/asm-generic/fcntl.h).
 */
export const F_SETFL = 4;
/** F_LINUX_SPECIFIC_BASE + 9 / + 10 */
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;

/** Prevent further seals from being set. */
export const F_SEAL_SEAL = 0x0001;
/** Prevent the file from shrinking. */
export const F_SEAL_SHRINK = 0x0002;
/** Prevent the file from growing. */
export const F_SEAL_GROW = 0x0004;
/** Prevent writes, and any shared writable mapping. */
export const F_SEAL_WRITE = 0x0008;
/** Prevent new writes and new shared writable mappings; existing ones stay. */
export const F_SEAL_FUTURE_WRITE = 0x0010;
/** Prevent chmod of the exec bits (Linux 6.3). */
export const F_SEAL_EXEC = 0x0020;
/** mm/memfd.c F_ALL_SEALS */
export const F_ALL_SEALS =
  F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;
