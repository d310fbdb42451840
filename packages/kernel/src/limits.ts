/** include/linux/limits.h: the largest u64, the top of every IOVA space. */
export const U64_MAX = (1n << 64n) - 1n;
