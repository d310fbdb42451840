import { describe, expect, it } from "vitest";

describe("errno names", () => {
  // Imported inside the test: the table is built when errno.ts is evaluated, so this test is
  // the one that evaluates it (a top-level import would build it before any test runs).
  it("names each errno as include/uapi/asm-generic/errno-base.h, errno.h and include/linux/errno.h do", async () => {
    const { ERRNO_NAMES, errnoName } = await import("../src/errno.js");
    expect(ERRNO_NAMES).toEqual({
      1: "EPERM",
      2: "ENOENT",
      3: "ESRCH",
      4: "EINTR",
      5: "EIO",
      6: "ENXIO",
      7: "E2BIG",
      9: "EBADF",
      10: "ECHILD",
      11: "EAGAIN",
      12: "ENOMEM",
      13: "EACCES",
      14: "EFAULT",
      16: "EBUSY",
      17: "EEXIST",
      18: "EXDEV",
      19: "ENODEV",
      20: "ENOTDIR",
      21: "EISDIR",
      22: "EINVAL",
      23: "ENFILE",
      24: "EMFILE",
      25: "ENOTTY",
      27: "EFBIG",
      28: "ENOSPC",
      29: "ESPIPE",
      30: "EROFS",
      32: "EPIPE",
      34: "ERANGE",
      35: "EDEADLK",
      38: "ENOSYS",
      52: "EBADE",
      61: "ENODATA",
      74: "EBADMSG",
      75: "EOVERFLOW",
      77: "EBADFD",
      90: "EMSGSIZE",
      95: "EOPNOTSUPP",
      98: "EADDRINUSE",
      107: "ENOTCONN",
      110: "ETIMEDOUT",
      114: "EALREADY",
      512: "ERESTARTSYS",
      524: "ENOTSUPP",
    });
    expect(errnoName(22)).toBe("EINVAL");
    expect(errnoName(8)).toBe("E8");
  });
});
