/**
 * IOMMU_IOAS_MAP_FILE's EINVAL causes are told apart by their messages (the errno and the order
 * of the checks are the kernel's: drivers/iommu/iommufd/io_pagetable.c, pages.c).
 */
import { EINVAL, Kernel, isKernelError } from "@x/kernel";
import { expect, it } from "vitest";
import { IoPagetable } from "../src/io-pagetable.js";
import { iommufdInit } from "../src/ioctls.js";
import { PAGE, RW, TestExporter, ctx, testDomain } from "./pages-helpers.js";

function einvalMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e, EINVAL)) return e.message;
    throw e;
  }
  throw new Error("no EINVAL");
}

it("each EINVAL of a dma-buf MAP_FILE names its cause and the values in hex", () => {
  const kernel = new Kernel();
  iommufdInit(kernel);
  const iopt = new IoPagetable(kernel);
  iopt.tableAddDomain(testDomain(kernel));
  const fd = new TestExporter(kernel, 16n * PAGE).fd();
  const messages = [
    einvalMessage(() => iopt.mapFilePages(ctx, 0n, fd, 0n, 0n, RW, 0)),
    einvalMessage(() => iopt.mapFilePages(ctx, 0x800n, fd, 0n, PAGE, RW, 0)),
    einvalMessage(() => iopt.mapFilePages(ctx, 0n, fd, 0n, 17n * PAGE, RW, 0)),
  ];
  expect(messages).toEqual([
    "EINVAL (22): MAP_FILE length 0",
    "EINVAL (22): iova not aligned to iova_alignment: iova=0x800 iova_alignment=0x1000",
    "EINVAL (22): range beyond the end of the dma-buf: start=0x0 length=0x11000 size=0x10000",
  ]);
  expect(iopt.areas()).toHaveLength(0);
});
