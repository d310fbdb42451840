/**
 * Scenario 12: In-kernel accesses and IOAS_COPY on a dma-buf area: an mdev-like access can read and
 * write guest RAM through the IOAS, but is refused on MMIO (rw: EINVAL, pin: EINVAL); copying the
 * BAR's area into a second IOAS is allowed, the copy shares the pages, and one revoke kills both.
 */
import { EINVAL } from "@x/kernel";
import {
  IOMMUFD_ACCESS_RW_WRITE,
  type IommufdAccess,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessPinPages,
  iommufdAccessRw,
} from "@x/iommufd";
import { type ScenarioDef, expect, expectErrno } from "../scenario.js";
import { VmWorld } from "../world.js";
import { GPA, RAM_PROBE, bringUp, device, twoGpusAndNic } from "./common.js";

class AccessWorld extends VmWorld {
  access: IommufdAccess | undefined;
  copyIoas = 0;
}

const COPY_IOVA = 0x1000_0000n;

export const accessCopy: ScenarioDef<AccessWorld> = {
  id: "access-copy",
  number: 12,
  title: "In-kernel access refused on MMIO; IOAS_COPY shares the revoke",
  summary:
    "An mdev-like driver attaches an in-kernel access to the VM's IOAS: it can read and write guest " +
    "RAM, but reading a dma-buf area is EINVAL and pinning it is EINVAL. The VMM copies gpu1's BAR2 " +
    "area into a second IOAS (allowed: the copy shares the pages); when gpu1 is reset without the " +
    "protocol, both IOASes' areas go dead together.",
  setup: () => new AccessWorld(twoGpusAndNic({ vmm: { forgetsRemap: true } })),
  steps: [
    ...bringUp,
    {
      name: "An mdev-like driver attaches an access to the IOAS and writes guest RAM",
      actor: "kernel",
      run: ({ world, log }) => {
        const ctx = world.ctx();
        if (!ctx) throw new Error("no iommufd context");
        const access = iommufdAccessCreate(ctx, { needsPinPages: true, unmap: () => {} });
        iommufdAccessAttach(access, world.vmm.ioasId);
        world.access = access;
        const data = new TextEncoder().encode("mdev");
        iommufdAccessRw(access, RAM_PROBE, data, IOMMUFD_ACCESS_RW_WRITE);
        const back = new Uint8Array(4);
        iommufdAccessRw(access, RAM_PROBE, back, 0);
        expect(new TextDecoder().decode(back) === "mdev", "RAM read back differs");
        log(`access ${access.id} wrote and read guest RAM at ${RAM_PROBE}`);
      },
    },
    {
      name: "The access reads gpu1's BAR2 area: EINVAL; pins it: EINVAL",
      actor: "kernel",
      run: ({ world, log }) => {
        const access = world.access!;
        log(
          expectErrno(
            () => iommufdAccessRw(access, GPA.gpu1Bar2, new Uint8Array(8), 0),
            EINVAL,
            "rw on MMIO",
          ),
        );
        log(
          expectErrno(
            () => iommufdAccessPinPages(access, GPA.gpu1Bar2, 4096n, 0),
            EINVAL,
            "pin on MMIO",
          ),
        );
        log("dma-buf areas have no struct page to copy through or pin");
      },
    },
    {
      name: "VMM copies gpu1's BAR2 area into a second IOAS (IOAS_COPY)",
      actor: "vmm",
      run: ({ world }) => {
        world.copyIoas = world.vmm.allocIoas();
        const bar = device(world, "gpu1").bars.find((b) => b.index === 2)!;
        const ret = world.vmm.copy(world.copyIoas, bar.gpa, bar.size, COPY_IOVA);
        expect(ret === 0, `IOAS_COPY returned ${ret}`);
        const areas = world.snapshot().ioas.find((i) => i.id === world.copyIoas)?.areas ?? [];
        expect(areas.length === 1 && areas[0]!.live, "the copy is not a live area");
      },
    },
    {
      name: "Forgetful reset of gpu1: the area and its copy die together",
      actor: "vmm",
      run: ({ world, log }) => {
        world.vmm.reset(device(world, "gpu1"));
        const copy = world.snapshot().ioas.find((i) => i.id === world.copyIoas)?.areas ?? [];
        expect(copy.length === 1 && !copy[0]!.live, "the copied area is not dead");
        log("one revoke, two dead areas: the copy shares the pages and their tracker");
      },
      expectProbes: { "gpu0→gpu1.bar2": "fault" },
    },
  ],
};
