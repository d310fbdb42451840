/**
 * An area that starts part way into its first page: only that first index carries the
 * page_offset; every later batch of the same fill starts on a page boundary
 * (drivers/iommu/iommufd/pages.c batch_to_domain: page_offset is taken when start_index equals
 * iopt_area_index, then zeroed). With a temp memory limit of one batch entry, a fill of
 * scattered pages takes one batch per page, so each IOPTE is checked against the physical
 * address its source gives for that IOVA.
 */
import { iommuIovaToPhys } from "@x/iommu-pgtable";
import type { Kernel } from "@x/kernel";
import { afterEach, describe, expect, it } from "vitest";
import { IOMMUFD_OBJ_HWPT_PAGING, type IommufdHwptPaging } from "../src/index.js";
import { setTempMemoryLimit } from "../src/testing.js";
import {
  MOCK_APERTURE,
  PAGE,
  TestIommu,
  type TestSystem,
  anonBuffer,
  attachTestDevice,
  createSystem,
} from "./ioctl-helpers.js";
import { TestExporter } from "./pages-helpers.js";

/** MOCK_PAGE_SIZE: the mock domain's IOPTE granule and so the IOAS's IOVA alignment. */
const GRANULE = 2048n;
const OFFSET = 0x800n;
const NPAGES = 6n;

let kernel: Kernel | undefined;
afterEach(() => {
  if (kernel) setTempMemoryLimit(kernel, 0);
});

function domainOf(sys: TestSystem, hwptId: number) {
  return sys.ctx.withObject(
    hwptId,
    IOMMUFD_OBJ_HWPT_PAGING,
    (h) => (h as IommufdHwptPaging).domain!,
  );
}

/** Every granule of [iova, iova + length) translates to `expect(iova)`. */
function checkEveryIopte(
  sys: TestSystem,
  hwptId: number,
  iova: bigint,
  length: bigint,
  want: (iova: bigint) => bigint,
) {
  const domain = domainOf(sys, hwptId);
  const bad: string[] = [];
  for (let at = iova; at < iova + length; at += GRANULE) {
    const got = iommuIovaToPhys(domain, at);
    if (got !== want(at)) bad.push(`iova 0x${at.toString(16)}: 0x${got.toString(16)}`);
  }
  expect(bad).toEqual([]);
}

describe("page_offset applies to the area's first index only, across batches", () => {
  it("user memory: scattered pages, one batch per page, map and a later domain fill", () => {
    const sys = createSystem();
    kernel = sys.kernel;
    const { libc } = sys;
    const ioas = sys.fd.ioasAlloc();
    const a = attachTestDevice(sys, ioas);
    const va = anonBuffer(libc, NPAGES * PAGE);
    // Fault the pages in out of order so neighbouring virtual pages are not neighbouring PFNs.
    for (const k of [3n, 0n, 5n, 1n, 4n, 2n]) libc.poke(va + k * PAGE, new Uint8Array([1]));
    setTempMemoryLimit(sys.kernel, 12);
    const iova = MOCK_APERTURE[0] + OFFSET;
    const length = NPAGES * PAGE - OFFSET;
    sys.fd.ioasMap({ ioasId: ioas, userVa: va + OFFSET, length, iova });
    const mm = libc.process.mm;
    const want = (at: bigint) => {
      const uva = va + OFFSET + (at - iova);
      return BigInt(mm.lookup(Number(uva >> 12n))) * PAGE + (uva % PAGE);
    };
    checkEveryIopte(sys, a.hwptId, iova, length, want);
    // A second domain is filled from the first one's IOPTEs, again one page per batch.
    const b = attachTestDevice(sys, ioas, { iommu: new TestIommu(sys.kernel, "second") });
    expect(b.hwptId).not.toBe(a.hwptId);
    checkEveryIopte(sys, b.hwptId, iova, length, want);
  });

  it("dma-buf: a slice starting mid-page maps at the BAR address plus the slice start", () => {
    const sys = createSystem();
    kernel = sys.kernel;
    const ioas = sys.fd.ioasAlloc();
    const a = attachTestDevice(sys, ioas);
    const exp = new TestExporter(sys.kernel, NPAGES * PAGE);
    const dfd = sys.kernel.runAs(sys.libc.task, () => exp.fd());
    setTempMemoryLimit(sys.kernel, 12);
    const start = PAGE + OFFSET;
    const length = NPAGES * PAGE - start;
    const iova = MOCK_APERTURE[0] + OFFSET;
    sys.fd.ioasMapFile({ ioasId: ioas, fd: dfd, start, length, iova });
    const want = (at: bigint) => exp.base + start + (at - iova);
    checkEveryIopte(sys, a.hwptId, iova, length, want);
    const b = attachTestDevice(sys, ioas, { iommu: new TestIommu(sys.kernel, "second") });
    checkEveryIopte(sys, b.hwptId, iova, length, want);
  });
});
