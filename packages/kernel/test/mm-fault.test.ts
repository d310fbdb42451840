import { describe, expect, it } from "vitest";
import {
  EFAULT,
  ENOMEM,
  FOLL_LONGTERM,
  FOLL_WRITE,
  File,
  type FileOperations,
  type Kernel,
  KernelWarning,
  MAP_HUGETLB,
  MAP_HUGE_2MB,
  MAP_SHARED,
  MFD_HUGETLB,
  MFD_HUGE_2MB,
  O_RDWR,
  PfnRuns,
  VM_PFNMAP,
  pinUserPages,
} from "../src/index.js";
import { barDevice } from "./bar-device.js";
import { ANON, expectErrno, machine, memState, MiB, PAGE, RW } from "./helpers.js";

// mm/memory.c handle_mm_fault: do_anonymous_page, do_wp_page (reuse or wp_page_copy),
// do_fault for file and driver mappings (a VMA whose driver gave no fault handler is SIGBUS),
// follow_pfn over VM_PFNMAP; kernel/fork.c dup_mmap / copy_present_page; exit_mmap.

const vpnOf = (va: bigint): number => Number(va >> 12n);

describe("driver mappings without pages", () => {
  it("VM_PFNMAP without remap_pfn_range or a fault handler: every access is EFAULT", () => {
    const { k, libc } = machine();
    const fops: FileOperations = {
      name: "nofault",
      mmap(_f, vma) {
        vma.flags |= VM_PFNMAP;
      },
    };
    k.registerDevice("/dev/nofault", (_k, flags) => new File(fops, null, flags));
    const fd = libc.open("/dev/nofault", O_RDWR);
    const va = libc.mmap(0n, PAGE, RW, MAP_SHARED, fd, 0);
    expectErrno(() => libc.peek(va, 1), EFAULT);
    expectErrno(() => libc.process.mm.followPfn(va, false), EFAULT);
    expect(libc.process.mm.lookup(vpnOf(va))).toBe(-1);
  });

  it("a file mapping whose driver set nothing up is SIGBUS (no vm_ops->fault): EFAULT", () => {
    const { k, libc } = machine();
    const fops: FileOperations = { name: "plain", mmap() {} };
    k.registerDevice("/dev/plain", (_k, flags) => new File(fops, null, flags));
    const fd = libc.open("/dev/plain", O_RDWR);
    const va = libc.mmap(0n, PAGE, RW, MAP_SHARED, fd, 0);
    expectErrno(() => libc.peek(va, 1), EFAULT);
    expectErrno(() => libc.poke(va, new Uint8Array(1)), EFAULT);
  });

  it("a fault-handler mapping is asked on every access: no pfn is remembered", () => {
    const { k, libc } = machine();
    const { bar, live } = barDevice(k, "fault");
    const fd = libc.open("/dev/bar", O_RDWR);
    const va = libc.mmap(0n, 2n * PAGE, RW, MAP_SHARED, fd, 0);
    libc.poke(va + PAGE, new Uint8Array([0x77]));
    const out = new Uint8Array(1);
    k.mem.readPhys(bar.base + PAGE, out);
    expect(out[0]).toBe(0x77);
    expect(libc.process.mm.lookup(vpnOf(va + PAGE))).toBe(-1);
    live.on = false;
    expectErrno(() => libc.peek(va + PAGE, 1), EFAULT);
    expectErrno(() => libc.poke(va + PAGE, new Uint8Array(1)), EFAULT);
  });

  it("remap_pfn_range: each page of the VMA reaches its own BAR page", () => {
    const { k, libc } = machine();
    const { bar } = barDevice(k, "remap");
    const fd = libc.open("/dev/bar", O_RDWR);
    const va = libc.mmap(0n, 3n * PAGE, RW, MAP_SHARED, fd, 0);
    libc.poke(va + 2n * PAGE + 1n, new Uint8Array([0x42]));
    const out = new Uint8Array(1);
    k.mem.readPhys(bar.base + 2n * PAGE + 1n, out);
    expect(out[0]).toBe(0x42);
    expect(libc.process.mm.lookup(vpnOf(va + 2n * PAGE))).toBe(bar.basePfn + 2);
  });
});

describe("lookup (follow_page) and the PTE queries", () => {
  it("nothing mapped: no pfn, no private PTE, not exclusive", () => {
    const { libc } = machine();
    const mm = libc.process.mm;
    const vpn = vpnOf(0x1000_0000n);
    expect(mm.lookup(vpn)).toBe(-1);
    expect(mm.hasPrivatePte(vpn)).toBe(false);
    expect(mm.isExclusive(vpn)).toBe(false);
  });

  it("an untouched anonymous page has no pfn and no PTE; a touched one has both", () => {
    const { libc } = machine();
    const mm = libc.process.mm;
    const va = libc.mmap(0n, PAGE, RW, ANON, -1, 0);
    expect(mm.lookup(vpnOf(va))).toBe(-1);
    expect(mm.hasPrivatePte(vpnOf(va))).toBe(false);
    expect(mm.isExclusive(vpnOf(va))).toBe(false);
    libc.poke(va, new Uint8Array([1]));
    expect(mm.lookup(vpnOf(va))).toBeGreaterThan(0);
    expect(mm.hasPrivatePte(vpnOf(va))).toBe(true);
    expect(mm.isExclusive(vpnOf(va))).toBe(true);
  });

  it("two mappings of one file page at different offsets find the same frame", () => {
    const { libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 2n * PAGE);
    const whole = libc.mmap(0n, 2n * PAGE, RW, MAP_SHARED, fd, 0);
    const second = libc.mmap(0n, PAGE, RW, MAP_SHARED, fd, PAGE);
    libc.poke(whole, new Uint8Array(8192).fill(3));
    const mm = libc.process.mm;
    expect(mm.lookup(vpnOf(whole + PAGE))).toBe(mm.lookup(vpnOf(second)));
    expect(mm.lookup(vpnOf(whole + PAGE))).not.toBe(mm.lookup(vpnOf(whole)));
  });

  it("a shared hugetlb file mapping: the page inside the huge folio, or none before the fault", () => {
    const { libc } = machine();
    const fd = libc.memfdCreate("h", MFD_HUGETLB | MFD_HUGE_2MB);
    libc.ftruncate(fd, 2n * MiB);
    const va = libc.mmap(0n, 2n * MiB, RW, MAP_SHARED, fd, 0);
    const mm = libc.process.mm;
    expect(mm.lookup(vpnOf(va) + 5)).toBe(-1);
    libc.poke(va + 5n * PAGE, new Uint8Array([1]));
    const head = mm.lookup(vpnOf(va));
    expect(mm.lookup(vpnOf(va) + 5)).toBe(head + 5);
    expect(mm.lookup(vpnOf(va) + 511)).toBe(head + 511);
  });
});

describe("private hugetlb faults at an offset inside the huge page", () => {
  it("a present exclusive huge page is reached at its sub-page when a copy also faults", () => {
    const { libc } = machine();
    const va = libc.mmap(0n, 4n * MiB, RW, ANON | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    libc.poke(va + 300n * PAGE, new Uint8Array([1]));
    // a copy over page 511 (present) and page 512 (the next huge page, absent) faults both
    libc.poke(va + 511n * PAGE + 4095n, new Uint8Array([7, 8]));
    const mm = libc.process.mm;
    const head = mm.lookup(vpnOf(va));
    expect(libc.kernel.mem.refCount(head)).toBe(1);
    expect([...libc.peek(va + 511n * PAGE + 4095n, 2)]).toEqual([7, 8]);
    expect(libc.peek(va + 300n * PAGE, 1)[0]).toBe(1);
    expect(libc.peek(va + 211n * PAGE + 4095n, 1)[0]).toBe(0);
  });

  it("after the child exits, the parent's write reuses its huge page at the right sub-page", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 2n * MiB, RW, ANON | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    libc.poke(va, new Uint8Array([1]));
    const head = libc.process.mm.lookup(vpnOf(va));
    const child = libc.fork();
    child.exit();
    expect(libc.process.mm.isExclusive(vpnOf(va))).toBe(false);
    libc.poke(va + 301n * PAGE, new Uint8Array([9]));
    expect(libc.process.mm.lookup(vpnOf(va))).toBe(head);
    expect(libc.peek(va + 301n * PAGE, 1)[0]).toBe(9);
    expect(libc.peek(va + 299n * PAGE, 1)[0]).toBe(0);
    expect(k.mem.allocatedPages()).toBe(512);
  });
});

describe("fail-nth sites of the fault paths (the kernel function that allocates)", () => {
  function failedSite(k: Kernel, fn: () => void): string | undefined {
    const fault = k.current.fault;
    fault.arm(1);
    try {
      fn();
    } catch {
      // the injected ENOMEM, as EFAULT from the user copy
    }
    const site = fault.failedSite;
    fault.disarm();
    return site;
  }

  it("do_anonymous_page, wp_page_copy, shmem_fault", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, PAGE, RW, ANON, -1, 0);
    expect(failedSite(k, () => libc.poke(va, new Uint8Array([1])))).toBe("do_anonymous_page");
    libc.poke(va, new Uint8Array([1]));
    const child = libc.fork();
    expect(failedSite(k, () => libc.poke(va, new Uint8Array([2])))).toBe("wp_page_copy");
    child.exit();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, PAGE);
    const fva = libc.mmap(0n, PAGE, RW, MAP_SHARED, fd, 0);
    expect(failedSite(k, () => libc.peek(fva, 1))).toBe("shmem_fault");
  });

  it("copy_present_page: a fork that cannot copy a pinned page fails whole", () => {
    const { k, libc } = machine();
    const va = libc.mmap(0n, 2n * PAGE, RW, ANON, -1, 0);
    libc.poke(va, new Uint8Array(8192).fill(1));
    const runs = new PfnRuns();
    pinUserPages(k, libc.process.mm, va + PAGE, 1, FOLL_WRITE | FOLL_LONGTERM, runs);
    const before = memState(k);
    const fault = k.current.fault;
    fault.arm(2); // copy_process first, then the copy of the pinned page
    expectErrno(() => libc.fork(), ENOMEM);
    expect(fault.failedSite).toBe("copy_present_page");
    fault.disarm();
    expect(memState(k)).toEqual(before);
    // the shared page went back to one reference: the parent's write reuses it
    const pfn = libc.process.mm.lookup(vpnOf(va));
    expect(k.mem.refCount(pfn)).toBe(1);
    libc.poke(va, new Uint8Array([5]));
    expect(libc.process.mm.lookup(vpnOf(va))).toBe(pfn);
  });
});

describe("exit_mmap", () => {
  it("an mm torn down twice is a WARN", () => {
    const { libc } = machine();
    libc.mmap(0n, PAGE, RW, ANON, -1, 0);
    const mm = libc.process.mm;
    libc.exit();
    expect(mm.users).toBe(0);
    expect(mm.mapCount).toBe(0);
    expect(() => mm.exit()).toThrow(KernelWarning);
  });
});
