import { describe, expect, it } from "vitest";
import {
  FOLL_LONGTERM,
  FOLL_WRITE,
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_HUGETLB,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  isKernelError,
  pinUserPages,
  unpinUserPageRuns,
} from "../src/index.js";

/** Everything a failed call must leave as it was. */
function snapshot(k: Kernel, libc: Libc) {
  return {
    allocated: k.mem.allocatedPages(),
    pinned: k.mem.totalPinned(),
    fds: libc.process.files.openCount,
    vmas: libc.process.mm.mapCount,
    resident: libc.process.mm.residentPrivatePages,
  };
}

/**
 * One scenario through the facade; every step either succeeds or fails with nothing changed.
 * Returns the sites the armed run went through.
 */
function scenario(nth: number): { consumed: boolean; sites: string[] } {
  const k = new Kernel({ ramBytes: 1n << 30n });
  const libc = new Libc(k);
  k.current.fault.arm(nth);
  const step = (name: string, call: () => number | bigint) => {
    const before = snapshot(k, libc);
    const r = call();
    if (r === -1 || r === -1n)
      expect(snapshot(k, libc), `${name} failed at nth=${nth}`).toEqual(before);
    return r;
  };
  const fd = step("memfd_create", () => libc.memfdCreate("m", 0)) as number;
  const hfd = step("memfd_create huge", () => libc.memfdCreate("h", MFD_HUGETLB)) as number;
  if (fd >= 0) step("ftruncate", () => libc.ftruncate(fd, 16384));
  if (hfd >= 0) step("ftruncate huge", () => libc.ftruncate(hfd, 2 << 20));
  const rw = PROT_READ | PROT_WRITE;
  const shared =
    fd >= 0 ? step("mmap shared", () => libc.mmap(0n, 16384n, rw, MAP_SHARED, fd, 0)) : -1n;
  const anon = step("mmap anon", () =>
    libc.mmap(0n, 16384n, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
  ) as bigint;
  for (const va of [shared, anon]) {
    if (va === -1n) continue;
    const before = snapshot(k, libc);
    const runs = new PfnRuns();
    try {
      pinUserPages(k, libc.process.mm, va as bigint, 4, FOLL_LONGTERM | FOLL_WRITE, runs);
      unpinUserPageRuns(k, runs, false);
    } catch (e) {
      if (!isKernelError(e)) throw e;
      // gup may have faulted pages in before failing; nothing may stay pinned
      expect(k.mem.totalPinned()).toBe(before.pinned);
    }
  }
  try {
    libc.fork().exit();
  } catch (e) {
    if (!isKernelError(e)) throw e;
  }
  const consumed = k.current.fault.read() === 0;
  const sites = [...k.current.fault.sitesHit];
  k.current.fault.disarm();
  libc.exit();
  expect(k.mem.allocatedPages()).toBe(0);
  expect(k.mem.totalPinned()).toBe(0);
  return { consumed, sites };
}

describe("fail-nth sweep", () => {
  it("every injectable point of a memfd/mmap/pin/fork scenario fails cleanly", () => {
    let n = 1;
    let last: string[] = [];
    for (; n < 200; n++) {
      const r = scenario(n);
      if (!r.consumed) {
        last = r.sites;
        break;
      }
    }
    expect(n).toBeGreaterThan(5);
    expect(n).toBeLessThan(200);
    expect(last).toContain("alloc_file");
    expect(last).toContain("do_anonymous_page");
    expect(last).toContain("copy_process");
  });
});
