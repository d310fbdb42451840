/**
 * End-to-end @x/kernel demo: a VMM-like process backs 4 GiB of guest RAM with a 1 GiB-hugetlb
 * memfd, maps it, pins it long-term the way iommufd does, charges the pin to its user's
 * RLIMIT_MEMLOCK, lets a "device" write through the pinned physical pages, and prints what
 * happened. Run: node --conditions=@x/source --import tsx packages/kernel/examples/demo.ts
 */
import {
  FOLL_LONGTERM,
  FOLL_WRITE,
  Kernel,
  Libc,
  MAP_SHARED,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  MFD_HUGE_1GB,
  PAGE_SHIFT,
  PROT_READ,
  PROT_WRITE,
  PfnRuns,
  RLIMIT_MEMLOCK,
  decrUserLockedVm,
  errnoName,
  incrUserLockedVm,
  isKernelError,
  pinUserPages,
  unpinUserPageRuns,
  updatePinnedVm,
} from "../src/index.js";

const GiB = 1n << 30n;
const kernel = new Kernel({ ramBytes: 2n << 40n });
const vmm = new Libc(kernel, kernel.newProcess(1000)); // an unprivileged user: no CAP_IPC_LOCK
vmm.setrlimit(RLIMIT_MEMLOCK, 6 * 2 ** 30);

const events: string[] = [];
kernel.trace.on((r) => events.push(`${r.seq}. ${r.name} ${fmt(r.data)}`));

const fd = vmm.memfdCreate("guest-ram", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_1GB);
vmm.ftruncate(fd, 4n * GiB);
const ram = vmm.mmap(0n, 4n * GiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
vmm.poke(ram + 0x1000n, new TextEncoder().encode("hello from the guest"));

// iommufd's USER accounting: charge the user, then pin, as IOMMU_IOAS_MAP would.
const npages = Number((4n * GiB) >> BigInt(PAGE_SHIFT));
const { process } = vmm;
incrUserLockedVm(process.cred.user, process, npages);
const runs = new PfnRuns();
const pinned = pinUserPages(kernel, process.mm, ram, npages, FOLL_LONGTERM | FOLL_WRITE, runs);
updatePinnedVm(process.mm, pinned, true);

// A device writes guest memory through the physical address of the pinned page.
const paddr = (BigInt(runs.pfn(0)) << BigInt(PAGE_SHIFT)) + 0x1000n;
kernel.mem.writePhys(paddr, new TextEncoder().encode("HELLO"));

// A second 4 GiB charge would pass the 6 GiB limit.
let refused = "";
try {
  incrUserLockedVm(process.cred.user, process, npages);
} catch (e) {
  if (!isKernelError(e)) throw e;
  refused = errnoName(e.errno);
}

console.log("@x/kernel demo");
console.log(`  memfd fd ${fd}, mapped at 0x${ram.toString(16)}`);
console.log(`  pinned ${pinned} pages in ${runs.length} physical runs (1 GiB folios)`);
console.log(
  `  folio pincount ${kernel.mem.pinCount(runs.pfn(0))}, RAM in use ${kernel.mem.allocatedPages()} pages`,
);
console.log(
  `  user locked_vm ${process.cred.user.lockedVm} pages, mm pinned_vm ${process.mm.pinnedVm}`,
);
console.log(`  second 4 GiB charge: ${refused} (RLIMIT_MEMLOCK 6 GiB)`);
console.log(`  guest reads: "${new TextDecoder().decode(vmm.peek(ram + 0x1000n, 20))}"`);

unpinUserPageRuns(kernel, runs, true);
updatePinnedVm(process.mm, pinned, false);
decrUserLockedVm(process.cred.user, npages);
vmm.exit();
console.log(
  `  after exit: ${kernel.mem.allocatedPages()} pages in use, ${kernel.mem.totalPinned()} pinned`,
);
console.log("trace:");
for (const e of events) console.log(`  ${e}`);

function fmt(data: unknown): string {
  return JSON.stringify(data, (_k, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v));
}
