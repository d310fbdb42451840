import { describe, expect, it } from "vitest";
import {
  EFAULT,
  EINVAL,
  File,
  type FileOperations,
  type Libc,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_HUGE_2MB,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
} from "../src/index.js";
import { TASK_SIZE } from "../src/mm.js";
import { barDevice, vmaEventDevice } from "./bar-device.js";
import { ANON, expectErrno, machine, MiB, PAGE, RW } from "./helpers.js";

// mm/vma.c do_vmi_munmap / do_vmi_align_munmap: the argument checks, splitting a VMA
// (__split_vma: the new piece's vm_pgoff and the driver's vm_ops->open), hugetlb's
// huge-page-aligned cuts (hugetlb_split), and VMAs outside the range left untouched.

function spans(libc: Libc): Array<[bigint, bigint]> {
  return libc.process.mm.vmaList().map((v) => [v.startAddr, v.endAddr]);
}

describe("munmap argument checks", () => {
  it("a negative address is EINVAL (above TASK_SIZE as an unsigned long)", () => {
    const { libc } = machine();
    expect(libc.munmap(-PAGE, PAGE)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
  });

  it("address 0 with nothing mapped is success", () => {
    const { libc } = machine();
    expect(libc.munmap(0n, PAGE)).toBe(0);
  });

  it("a range past TASK_SIZE is EINVAL; one ending exactly at TASK_SIZE unmaps everything", () => {
    const { libc } = machine();
    const va = libc.mmap(0n, PAGE, RW, ANON, -1, 0);
    expect(libc.munmap(0x10000n, 1n << 47n)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.munmap(TASK_SIZE, PAGE)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.process.mm.mapCount).toBe(1);
    expect(libc.munmap(0x10000n, TASK_SIZE - 0x10000n)).toBe(0);
    expect(libc.process.mm.mapCount).toBe(0);
    expectErrno(() => libc.peek(va, 1), EFAULT);
  });
});

describe("splitting (__split_vma)", () => {
  it("the upper piece of a split file mapping keeps reaching its own file pages", () => {
    const { libc } = machine();
    const fd = libc.memfdCreate("m", 0);
    libc.ftruncate(fd, 4n * PAGE);
    const va = libc.mmap(0n, 3n * PAGE, RW, MAP_SHARED, fd, PAGE);
    for (let i = 0n; i < 3n; i++) libc.poke(va + i * PAGE, new Uint8Array([Number(i) + 10]));
    libc.munmap(va + PAGE, PAGE);
    expect(libc.process.mm.vmaAt(va + 2n * PAGE)!.pgoff).toBe(3);
    expect(libc.peek(va + 2n * PAGE, 1)[0]).toBe(12);
    const again = libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, 3n * PAGE);
    expect(libc.process.mm.lookup(Number(again >> 12n))).toBe(
      libc.process.mm.lookup(Number((va + 2n * PAGE) >> 12n)),
    );
  });

  it("a split remap_pfn_range mapping keeps each page on its own BAR pfn", () => {
    const { k, libc } = machine();
    const { bar } = barDevice(k, "remap");
    const fd = libc.open("/dev/bar", O_RDWR);
    const va = libc.mmap(0n, 3n * PAGE, RW, MAP_SHARED, fd, PAGE);
    libc.munmap(va + PAGE, PAGE);
    const mm = libc.process.mm;
    expect(mm.lookup(Number(va >> 12n))).toBe(bar.basePfn + 1);
    expect(mm.lookup(Number((va + 2n * PAGE) >> 12n))).toBe(bar.basePfn + 3);
    expect(mm.followPfn(va + 2n * PAGE, true)).toBe(bar.basePfn + 3);
    libc.poke(va + 2n * PAGE + 5n, new Uint8Array([0x5a]));
    const out = new Uint8Array(1);
    k.mem.readPhys(bar.base + 3n * PAGE + 5n, out);
    expect(out[0]).toBe(0x5a);
  });

  it("a split remap_pfn_range mapping of pfn 0 keeps pfn 0 + offset", () => {
    const { k, libc } = machine();
    const fops: FileOperations = { name: "low", mmap: (_f, vma) => vma.remapPfnRange(0) };
    k.registerDevice("/dev/low", (_k, flags) => new File(fops, null, flags));
    const fd = libc.open("/dev/low", O_RDWR);
    const va = libc.mmap(0n, 3n * PAGE, PROT_READ, MAP_SHARED, fd, 0);
    const mm = libc.process.mm;
    expect(mm.followPfn(va, false)).toBe(0);
    expect(mm.lookup(Number(va >> 12n))).toBe(0);
    libc.munmap(va, PAGE);
    expect(mm.lookup(Number((va + 2n * PAGE) >> 12n))).toBe(2);
    expect(mm.followPfn(va + PAGE, false)).toBe(1);
  });

  it("a split fault-handler mapping keeps asking its driver, which has no open or close", () => {
    const { k, libc } = machine();
    const { bar, live } = barDevice(k, "fault");
    const fd = libc.open("/dev/bar", O_RDWR);
    const va = libc.mmap(0n, 3n * PAGE, RW, MAP_SHARED, fd, 0);
    libc.munmap(va + PAGE, PAGE);
    const mm = libc.process.mm;
    expect(mm.lookup(Number((va + 2n * PAGE) >> 12n))).toBe(-1);
    expect(mm.followPfn(va + 2n * PAGE, false)).toBe(bar.basePfn + 2);
    live.on = false;
    expectErrno(() => libc.peek(va + 2n * PAGE, 1), EFAULT);
    expect(libc.munmap(va, 3n * PAGE)).toBe(0);
    expect(mm.mapCount).toBe(0);
  });

  it("a munmap next to a driver's mapping neither splits nor closes it", () => {
    const { k, libc } = machine();
    const events = vmaEventDevice(k);
    const fd = libc.open("/dev/x", O_RDWR);
    const base = 0x1000_0000n;
    libc.mmap(base - PAGE, PAGE, RW, ANON | MAP_FIXED, -1, 0);
    libc.mmap(base, 2n * PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    libc.mmap(base + 2n * PAGE, PAGE, RW, ANON | MAP_FIXED, -1, 0);
    const file = libc.process.files.lookup(fd);
    expect(file.refcount).toBe(2);
    libc.munmap(base - PAGE, PAGE);
    libc.munmap(base + 2n * PAGE, PAGE);
    expect(events).toEqual([]);
    expect(file.refcount).toBe(2);
    expect(spans(libc)).toEqual([[base, base + 2n * PAGE]]);
  });
});

describe("hugetlb cuts (hugetlb_split: only at huge page boundaries)", () => {
  function hugeMapping(libc: Libc, at: bigint): bigint {
    const flags = ANON | MAP_HUGETLB | MAP_HUGE_2MB | MAP_FIXED;
    return libc.mmap(at, 4n * MiB, RW, flags, -1, 0);
  }
  const at = 0x4000_0000n;

  it("the first page of a hugetlb VMA alone is EINVAL: the cut inside is not aligned", () => {
    const { libc } = machine();
    hugeMapping(libc, at);
    expect(libc.munmap(at, PAGE)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(libc.munmap(at - PAGE, 2n * PAGE)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    expect(spans(libc)).toEqual([[at, at + 4n * MiB]]);
  });

  it("from an unaligned address inside to the end is EINVAL", () => {
    const { libc } = machine();
    hugeMapping(libc, at);
    expect(libc.munmap(at + PAGE, 4n * MiB - PAGE)).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
  });

  it("cuts at huge page boundaries succeed, whatever the range's ends outside the VMA", () => {
    const { libc } = machine();
    hugeMapping(libc, at);
    expect(libc.munmap(at, 2n * MiB)).toBe(0);
    expect(spans(libc)).toEqual([[at + 2n * MiB, at + 4n * MiB]]);
    hugeMapping(libc, at);
    expect(libc.munmap(at + 2n * MiB, 2n * MiB + PAGE)).toBe(0);
    expect(spans(libc)).toEqual([[at, at + 2n * MiB]]);
    hugeMapping(libc, at);
    expect(libc.munmap(at - PAGE, 2n * MiB + PAGE)).toBe(0);
    expect(spans(libc)).toEqual([[at + 2n * MiB, at + 4n * MiB]]);
  });

  it("unaligned ranges that miss the hugetlb VMA are fine", () => {
    const { libc } = machine();
    hugeMapping(libc, at);
    const below = libc.mmap(at - 3n * PAGE, 3n * PAGE, RW, ANON | MAP_FIXED, -1, 0);
    const above = libc.mmap(at + 4n * MiB, 3n * PAGE, RW, ANON | MAP_FIXED, -1, 0);
    expect(libc.munmap(below + PAGE, PAGE)).toBe(0);
    expect(libc.munmap(above + PAGE, PAGE)).toBe(0);
    expect(libc.process.mm.mapCount).toBe(5);
  });
});
