import {
  EEXIST,
  EINVAL,
  ENOENT,
  EOVERFLOW,
  EPERM,
  Kernel,
  Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import { IOMMU_READ } from "../src/iommu-domain.js";
import { IOPT_ALLOC_IOVA, IoPagetable } from "../src/io-pagetable.js";
import { mappedBytes, testDomain, RW, ctx, errno } from "./pages-helpers.js";

function setup() {
  const kernel = new Kernel();
  const libc = new Libc(kernel);
  const iopt = new IoPagetable(kernel);
  const anon = (len: number) =>
    libc.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return { kernel, libc, iopt, anon };
}

describe("io_pagetable basic map/unmap", () => {
  it("maps user memory lazily, pins on domain add, unpins on unmap", () => {
    const { kernel, iopt, anon, libc } = setup();
    const va = anon(16 * 4096);
    libc.poke(va, new Uint8Array([1, 2, 3]));
    kernel.runAs(libc.task, () => {
      const iova = iopt.mapUserPages(ctx, 0x100000n, va, 16n * 4096n, RW, 0);
      expect(iova).toBe(0x100000n);
      expect(kernel.mem.totalPinned()).toBe(0);
      const d = testDomain(kernel);
      iopt.tableAddDomain(d);
      expect(mappedBytes(d)).toBe(16n * 4096n);
      expect(kernel.mem.totalPinned()).toBe(16);
      expect(iopt.unmapIova(0x100000n, 16n * 4096n)).toBe(16n * 4096n);
      expect(mappedBytes(d)).toBe(0n);
      expect(kernel.mem.totalPinned()).toBe(0);
      iopt.tableRemoveDomain(d);
      iopt.destroyTable();
    });
  });

  it("fills every attached domain and moves storage on removal", () => {
    const { kernel, iopt, anon, libc } = setup();
    kernel.runAs(libc.task, () => {
      const d1 = testDomain(kernel);
      const d2 = testDomain(kernel);
      iopt.tableAddDomain(d1);
      iopt.tableAddDomain(d2);
      const va = anon(8 * 4096);
      const iova = iopt.mapUserPages(ctx, 0n, va, 8n * 4096n, RW, IOPT_ALLOC_IOVA);
      expect(mappedBytes(d1)).toBe(8n * 4096n);
      expect(mappedBytes(d2)).toBe(8n * 4096n);
      expect(kernel.mem.totalPinned()).toBe(8);
      iopt.tableRemoveDomain(d1);
      expect(mappedBytes(d1)).toBe(0n);
      expect(kernel.mem.totalPinned()).toBe(8);
      iopt.tableRemoveDomain(d2);
      expect(kernel.mem.totalPinned()).toBe(0);
      iopt.unmapIova(iova, 8n * 4096n);
    });
  });

  it("checks fixed IOVAs in the kernel's order", () => {
    const { kernel, iopt, anon, libc } = setup();
    kernel.runAs(libc.task, () => {
      const va = anon(4 * 4096);
      iopt.mapUserPages(ctx, 0x10000n, va, 4096n, RW, 0);
      expect(errno(() => iopt.mapUserPages(ctx, 0x10000n, va, 4096n, RW, 0))).toBe(EEXIST);
      expect(errno(() => iopt.mapUserPages(ctx, 0n, va, 0n, RW, 0))).toBe(EINVAL);
      expect(errno(() => iopt.mapUserPages(ctx, (1n << 64n) - 4096n, va, 8192n, RW, 0))).toBe(
        EOVERFLOW,
      );
      iopt.reserveIova(0x40000n, 0x4ffffn, "t");
      expect(errno(() => iopt.mapUserPages(ctx, 0x40000n, va, 4096n, RW, 0))).toBe(EINVAL);
      expect(errno(() => iopt.unmapIova(0x10000n, 100n))).toBe(ENOENT);
      expect(iopt.unmapIova(0x90000n, 4096n)).toBe(0n);
      expect(iopt.unmapAll()).toBe(4096n);
      iopt.removeReservedIova("t");
    });
  });

  it("refuses a writable map of read-only pages with EPERM", () => {
    const { kernel, iopt, libc, anon } = setup();
    kernel.runAs(libc.task, () => {
      const va = anon(4096);
      const iova = iopt.mapUserPages(ctx, 0n, va, 4096n, IOMMU_READ, IOPT_ALLOC_IOVA);
      const list = iopt.getPages(iova, 4096n);
      expect(errno(() => iopt.mapPages(list, 4096n, 0n, RW, IOPT_ALLOC_IOVA))).toBe(EPERM);
      iopt.freePagesList(list);
      expect(iopt.areas()).toHaveLength(1);
      expect(errno(() => iopt.getPages(iova + 4096n, 1n))).toBe(ENOENT);
      iopt.unmapAll();
    });
  });
});
