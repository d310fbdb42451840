/**
 * The machine every reliability tool runs on: a fresh Kernel with iommufd and vfio-pci loaded,
 * the selftest module (IOMMU_TEST_CMD: in-kernel accesses), two PCI functions (a 1 MiB 64-bit
 * BAR, PM, PCIe FLR, INTx, MSI and MSI-X) behind two different IOMMUs (a VT-d-like one and an
 * ARM SMMUv3 that nests), bound to
 * vfio-pci, and one unprivileged user process (no CAP_IPC_LOCK, so pins are charged) owning a
 * memfd and an anonymous buffer it maps into IOASes; when that process dies, `spawn` starts the
 * next one. Built only from the packages' public
 * APIs, exactly as a VMM sets itself up.
 *
 * Decision: DMABUF areas read back from a storage domain are given MMIO attributes
 * (`setDmabufReadbackKind(kernel, "mmio")`), so the checker's "MMIO attributes on MMIO" rule
 * holds for every IOPTE; the merged kernel's CPU-kind readback is @x/iommufd's own test.
 */
import { ArmSmmuV3IommufdDriver, type IommufdModule, iommufdInit } from "@x/iommufd";
import { setDmabufReadbackKind } from "@x/iommufd/testing";
import {
  CAP_SYS_RESOURCE,
  Kernel,
  KernelError,
  Libc,
  MAP_PRIVATE,
  MAP_ANONYMOUS,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  type Task,
} from "@x/kernel";
import { type VfioPciCoreDevice, type VfioPciModule, loadVfioPci, pciRoot } from "@x/vfio-pci";
import { iommufdTestInit } from "@x/selftest";
import { ptIommuDriver } from "./iommu.js";

/** Pages of each user buffer (memfd and anonymous). */
export const BUFFER_PAGES = 64;
export const PAGE = 4096n;
/** Size of BAR 0 of each function. */
export const BAR_SIZE = 1n << 20n;
export const NUM_DEVICES = 2;
/** The device behind an ARM SMMUv3 that nests (vIOMMUs, nested HWPTs); the other is VT-d-like. */
export const NESTING_DEVICE = 1;
/** Interrupts of each function: an INTx pin, 4 MSI vectors, 16 MSI-X vectors in BAR 2. */
const MSI_VECTORS = 4;
const MSIX_VECTORS = 16;
const MSIX_BAR_SIZE = 0x2000n;
/** The unprivileged user the fuzzers run as. */
export const FUZZ_UID = 1000;

export class Machine {
  readonly kernel: Kernel;
  readonly iommufd: IommufdModule;
  readonly vfio: VfioPciModule;
  readonly devices: VfioPciCoreDevice[] = [];
  /** The live user process (its own task: fail-nth arming counts only its system calls). */
  libc!: Libc;
  memfd!: number;
  memfdVa!: bigint;
  anonVa!: bigint;
  /** The task of every user process the machine has run, the live one last. */
  readonly tasks: Task[] = [];

  constructor() {
    const kernel = new Kernel({ ramBytes: 1n << 32n });
    this.kernel = kernel;
    this.iommufd = iommufdInit(kernel);
    // CONFIG_IOMMUFD_TEST: IOMMU_TEST_CMD, for the in-kernel access ops (pin, rw) it offers.
    iommufdTestInit(kernel);
    setDmabufReadbackKind(kernel, "mmio");
    this.vfio = loadVfioPci(kernel);
    const bus = pciRoot(kernel).newBus();
    for (let i = 0; i < NUM_DEVICES; i++) {
      const pdev = bus.addDevice({
        vendor: 0x10de,
        device: 0x2330 + i,
        bars: [
          { type: "mem64", size: BAR_SIZE, prefetchable: true },
          undefined,
          { type: "mem64", size: MSIX_BAR_SIZE },
        ],
        pm: true,
        pcie: { flr: true },
        msi: { vectors: MSI_VECTORS, is64: true, maskbit: true },
        msix: { vectors: MSIX_VECTORS, tableBar: 2, tableOffset: 0, pbaBar: 2, pbaOffset: 0x1000 },
        iommu:
          i === NESTING_DEVICE
            ? new ArmSmmuV3IommufdDriver(kernel)
            : ptIommuDriver(kernel, `iommu${i}`),
      });
      this.devices.push(this.vfio.probe(pdev));
    }
    this.spawn();
  }

  /** Start a user process with its memfd and anonymous buffer (again, after one died). */
  spawn(): void {
    const { kernel } = this;
    const libc = new Libc(kernel, kernel.newProcess(FUZZ_UID, [CAP_SYS_RESOURCE]));
    const len = BigInt(BUFFER_PAGES) * PAGE;
    this.libc = libc;
    this.tasks.push(libc.task);
    this.memfd = check(libc, libc.memfdCreate("guest-ram", 0));
    check(libc, libc.ftruncate(this.memfd, len));
    this.memfdVa = checkVa(
      libc,
      libc.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_SHARED, this.memfd, 0),
    );
    this.anonVa = checkVa(
      libc,
      libc.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
    );
  }

  /** The cdev node of device `i`. */
  cdev(i: number): string {
    const path = this.devices[i]?.cdevPath;
    if (!path) throw new Error(`device ${i} has no cdev`);
    return path;
  }
}

function check(libc: Libc, ret: number): number {
  if (ret < 0) throw new KernelError(libc.errno, "machine set-up");
  return ret;
}

function checkVa(libc: Libc, va: bigint): bigint {
  if (va < 0n) throw new KernelError(libc.errno, "machine set-up mmap");
  return va;
}
