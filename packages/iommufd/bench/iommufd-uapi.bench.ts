/**
 * IOAS_MAP + IOAS_UNMAP of one 4 KiB page (fixed IOVA, one mock domain attached, so each round
 * trip pins, maps an IOPTE, unmaps and unpins) through:
 *   - the byte layer: libc.ioctl on pre-encoded iommu_ioas_map / iommu_ioas_unmap buffers
 *     (copy in, dispatch, size rules, decode, handler, copy back);
 *   - the typed layer: IommufdClient.ioasMap / ioasUnmap (encode + the same ioctl);
 *   - iommufd's own dispatch: the file's ioctl on a struct already in user memory (what the
 *     byte layer costs without libc's copy of the caller's buffer in and out);
 *   - the baseline: the io_pagetable calls the handlers end in, without the uAPI.
 * Targets: the byte layer costs at most 3x the io_pagetable work it dispatches to, and at most
 * 150x one page-table map + unmap pair of the same page on a domain of the same driver (64
 * pairs per call, so the loop's own cost does not pad the pair). Process CPU time, best of
 * interleaved rounds.
 */
import { IommuDevice } from "@x/iommu-pgtable";
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "@x/kernel";
import { SMOKE, cpuNsPerOp, record, report } from "@x/bench";
import {
  IOMMU_CACHE,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommufdIoas,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommufdDeviceAttach,
  iommufdDeviceBind,
} from "../src/index.js";
import { createSystem } from "../test/ioctl-helpers.js";

const sys = createSystem();
const { libc, fd, ctx } = sys;
const ioasId = fd.ioasAlloc();
iommufdDeviceAttach(iommufdDeviceBind(ctx, new IommuDevice("bench", sys.iommu)), ioasId);
const va = libc.mmap(0n, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
libc.poke(va, new Uint8Array([1]));
const IOVA = 1n << 24n;
const PAGE = 4096n;

const mapBuf = iommu_ioas_map.encode({
  size: iommu_ioas_map.size,
  flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
  ioas_id: ioasId,
  user_va: va,
  length: PAGE,
  iova: IOVA,
});
const unmapBuf = iommu_ioas_unmap.encode({
  size: iommu_ioas_unmap.size,
  ioas_id: ioasId,
  iova: IOVA,
  length: PAGE,
});
// The same structs placed once in user memory, for dispatch without libc's per-call copies.
const mapUser = libc.malloc(mapBuf.length);
const unmapUser = libc.malloc(unmapBuf.length);
libc.poke(mapUser, mapBuf);
libc.poke(unmapUser, unmapBuf);
const iopt = ctx.withObject(ioasId, 4, (o) => (o as IommufdIoas).iopt);
const prot = IOMMU_CACHE | IOMMU_READ | IOMMU_WRITE;
const ptDomain = sys.iommu.domainAllocPaging(new IommuDevice("pt", sys.iommu), 0);
const PT_PAIRS = 64;
const ptIovaPfn = Number(IOVA / PAGE);

function check(ok: boolean): void {
  if (!ok) throw new Error(`ioctl failed: errno ${libc.errno}`);
}

const r = cpuNsPerOp(
  {
    bytes: () => {
      check(libc.ioctl(fd.fd, IOMMU_IOAS_MAP, mapBuf) === 0);
      check(libc.ioctl(fd.fd, IOMMU_IOAS_UNMAP, unmapBuf) === 0);
    },
    dispatch: () => {
      sys.kernel.runAs(libc.task, () => {
        ctx.ioctl(IOMMU_IOAS_MAP, mapUser);
        ctx.ioctl(IOMMU_IOAS_UNMAP, unmapUser);
      });
    },
    typed: () => {
      fd.ioasMap({ ioasId, userVa: va, length: PAGE, iova: IOVA });
      fd.ioasUnmap({ ioasId, iova: IOVA, length: PAGE });
    },
    pt: () => {
      for (let i = 0; i < PT_PAIRS; i++) {
        ptDomain.mapPfns(ptIovaPfn, 0x1234, 1, prot);
        ptDomain.unmapPfns(ptIovaPfn, 1);
      }
    },
    iopt: () => {
      sys.kernel.runAs(libc.task, () => {
        iopt.mapUserPages(ctx, IOVA, va, PAGE, prot, 0);
        iopt.unmapIova(IOVA, PAGE);
      });
    },
  },
  SMOKE ? 200 : 4000,
);

const base = r.iopt!;
for (const [name, label] of [
  ["bytes", "IOAS_MAP+UNMAP 1 page, byte layer (libc.ioctl)"],
  ["typed", "IOAS_MAP+UNMAP 1 page, typed layer (IommufdClient)"],
  ["dispatch", "IOAS_MAP+UNMAP 1 page, iommufd dispatch only (struct already in user memory)"],
] as const) {
  const value = r[name]!;
  record({
    pkg: "iommufd",
    workload: label,
    value,
    unit: "ns/op",
    baseline: base,
    ratio: value / base,
    target: "<= 3x io_pagetable",
    met: value / base <= 3,
    note: "baseline: IoPagetable.mapUserPages + unmapIova of the same page",
  });
}
const pair = r.pt! / PT_PAIRS;
record({
  pkg: "iommufd",
  workload: "IOAS_MAP+UNMAP 1 page, byte layer (libc.ioctl) vs one page-table map+unmap pair",
  value: r.bytes!,
  unit: "ns/op",
  baseline: pair,
  ratio: r.bytes! / pair,
  target: "<= 150x page-table pair",
  met: r.bytes! / pair <= 150,
  note: "baseline: mapPfns + unmapPfns of one page on a mock domain, no uAPI, no pinning",
});
if (sys.kernel.mem.totalPinned() !== 0) throw new Error("bench leaked pins");
report();
