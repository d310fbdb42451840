import {
  EFAULT,
  EINVAL,
  EIO,
  ENOMEM,
  MAP_PRIVATE,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  VM_PFNMAP,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  PCI_BASE_ADDRESS_0,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_ROM_ADDRESS,
  PCI_VENDOR_ID,
} from "../src/pci-regs.js";
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from "../src/vfio-uapi.js";
import { MiB, PAGE, cfgRead, cfgWrite, gpu, machine } from "./helpers.js";

const RW = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;

function regionInfo(m: ReturnType<typeof machine>, fd: number, index: number, argsz = 32) {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setUint32(0, argsz, true);
  v.setUint32(8, index, true);
  const ret = m.libc.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, b);
  return {
    ret,
    flags: v.getUint32(4, true),
    size: v.getBigUint64(16, true),
    offset: v.getBigUint64(24, true),
  };
}

describe("VFIO device cdev", () => {
  it("open fails cleanly under fault injection; the registration is unchanged", () => {
    const m = machine();
    const { vdev } = gpu(m);
    const refs = vdev.registrationRefs;
    m.libc.task.fault.arm(1);
    expect(m.libc.open(vdev.cdevPath!, O_RDWR)).toBe(-1);
    expect(m.libc.errno).toBe(ENOMEM);
    expect(vdev.registrationRefs).toBe(refs);
  });

  it("GET_INFO: flags, regions, irqs; argsz < 16 EINVAL; copies back min(argsz, 24)", () => {
    const m = machine();
    const { fd } = gpu(m);
    const b = new Uint8Array(24).fill(0xee);
    new DataView(b.buffer).setUint32(0, 16, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_INFO, b)).toBe(0);
    const v = new DataView(b.buffer);
    expect(v.getUint32(4, true)).toBe(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    expect([v.getUint32(8, true), v.getUint32(12, true)]).toEqual([9, 5]);
    expect(b[16]).toBe(0xee);
    v.setUint32(0, 15, true);
    expect(m.libc.ioctl(fd, VFIO_DEVICE_GET_INFO, b)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
  });

  it("GET_REGION_INFO for BARs, the 64-bit upper half, I/O, sub-page BAR, ROM, config, VGA", () => {
    const m = machine();
    const { fd } = gpu(m);
    expect(regionInfo(m, fd, 0)).toEqual({
      ret: 0,
      flags: RW | VFIO_REGION_INFO_FLAG_MMAP,
      size: 16n * MiB,
      offset: 0n,
    });
    expect(regionInfo(m, fd, 1)).toMatchObject({ ret: 0, flags: 0, size: 0n, offset: 1n << 40n });
    expect(regionInfo(m, fd, 3)).toMatchObject({ flags: RW, size: 64n });
    // A 16-byte BAR starting a page can be mapped (vfio_pci_probe_mmaps reserves the rest of it).
    expect(regionInfo(m, fd, 4)).toMatchObject({
      flags: RW | VFIO_REGION_INFO_FLAG_MMAP,
      size: 16n,
    });
    expect(regionInfo(m, fd, 6)).toMatchObject({
      flags: VFIO_REGION_INFO_FLAG_READ,
      size: 0x10000n,
      offset: 6n << 40n,
    });
    expect(regionInfo(m, fd, 7)).toMatchObject({ flags: RW, size: 4096n, offset: 7n << 40n });
    for (const idx of [8, 9]) {
      expect(regionInfo(m, fd, idx).ret).toBe(-1);
      expect(m.libc.errno).toBe(EINVAL);
    }
    expect(regionInfo(m, fd, 0, 31).ret).toBe(-1);
  });

  it("BAR read / write through the fd; EIO while memory is disabled; ROM read-only; bounds", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const data = new TextEncoder().encode("bar!");
    expect(m.libc.pwrite(fd, data, 0x100n)).toBe(4);
    const back = new Uint8Array(4);
    expect(m.libc.pread(fd, back, 0x100n)).toBe(4);
    expect(back).toEqual(data);
    const phys = new Uint8Array(4);
    m.kernel.mem.readPhys(vdev.pdev.resource(0).start + 0x100n, phys);
    expect(phys).toEqual(data);
    // Short read at the end of the BAR.
    expect(m.libc.pread(fd, new Uint8Array(8), 16n * MiB - 4n)).toBe(4);
    expect(m.libc.pread(fd, back, 16n * MiB)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    // I/O BAR registers.
    expect(m.libc.pwrite(fd, data, (3n << 40n) + 4n)).toBe(4);
    expect(m.libc.pread(fd, back, (3n << 40n) + 4n)).toBe(4);
    expect(m.libc.pwrite(fd, data, 6n << 40n)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect(m.libc.pread(fd, back, 6n << 40n)).toBe(4);
    expect(m.libc.pread(fd, back, 8n << 40n)).toBe(-1);
    expect(m.libc.pread(fd, back, 9n << 40n)).toBe(-1);
    expect(m.libc.errno).toBe(EINVAL);
    expect(m.libc.pread(fd, back, (7n << 40n) + 4094n)).toBe(-1);
    expect(m.libc.errno).toBe(EFAULT);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(m.libc.pread(fd, back, 0x100n)).toBe(-1);
    expect(m.libc.errno).toBe(EIO);
  });

  it("vconfig: virtual BAR sizing, INTx disable kept virtual, FLR bit reads 0, ids read-only", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const p = vdev.pdev;
    const phys0 = p.readConfig(PCI_BASE_ADDRESS_0, 4);
    cfgWrite(m, fd, PCI_BASE_ADDRESS_0, 4, 0xffffffff);
    cfgWrite(m, fd, PCI_BASE_ADDRESS_0 + 4, 4, 0xffffffff);
    expect(cfgRead(m, fd, PCI_BASE_ADDRESS_0, 4) >>> 0).toBe(0xff00000c);
    expect(cfgRead(m, fd, PCI_BASE_ADDRESS_0 + 4, 4) >>> 0).toBe(0xffffffff);
    expect(p.readConfig(PCI_BASE_ADDRESS_0, 4)).toBe(phys0);
    cfgWrite(m, fd, PCI_BASE_ADDRESS_0 + 12, 4, 0xffffffff);
    expect(cfgRead(m, fd, PCI_BASE_ADDRESS_0 + 12, 4) >>> 0).toBe(0xffffffc1);
    cfgWrite(m, fd, PCI_BASE_ADDRESS_0 + 20, 4, 0xffffffff);
    expect(cfgRead(m, fd, PCI_BASE_ADDRESS_0 + 20, 4)).toBe(0);
    cfgWrite(m, fd, PCI_ROM_ADDRESS, 4, 0xffffffff);
    expect(cfgRead(m, fd, PCI_ROM_ADDRESS, 4) >>> 0).toBe(0xffff0001);
    cfgWrite(m, fd, PCI_COMMAND, 2, 0x2 | PCI_COMMAND_INTX_DISABLE);
    expect(cfgRead(m, fd, PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    // INTx is not in use: the physical DisINTx follows the virtual one (__vfio_pci_intx_mask).
    expect(p.command & PCI_COMMAND_INTX_DISABLE).toBeTruthy();
    cfgWrite(m, fd, PCI_VENDOR_ID, 2, 0x1234);
    expect(cfgRead(m, fd, PCI_VENDOR_ID, 2)).toBe(0x10de);
    cfgWrite(m, fd, p.pcieCap + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR | 0x10);
    expect(cfgRead(m, fd, p.pcieCap + PCI_EXP_DEVCTL, 2)).toBe(0x10);
  });

  it("a backdoor reset (device reset behind vfio) is repaired on the next MEM enable", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const bar = vdev.pdev.readConfig(PCI_BASE_ADDRESS_0, 4);
    vdev.pdev.hwReset();
    expect(vdev.pdev.readConfig(PCI_BASE_ADDRESS_0, 4) & ~0xf).toBe(0);
    cfgWrite(m, fd, PCI_COMMAND, 2, 2);
    expect(vdev.pdev.readConfig(PCI_BASE_ADDRESS_0, 4)).toBe(bar);
    expect(vdev.pdev.decodesMemory).toBe(true);
  });

  it("BAR mmap: VM_PFNMAP, shared only, inside a mappable BAR; access faults while memory is off", () => {
    const m = machine();
    const { vdev, fd } = gpu(m);
    const va = m.libc.mmap(0n, 2n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PAGE);
    expect(va).toBeGreaterThan(0n);
    const vma = [...vdev.barVmas][0]!;
    expect(vma.flags & VM_PFNMAP).toBeTruthy();
    m.libc.poke(va + 8n, new Uint8Array([1, 2, 3]));
    const phys = new Uint8Array(3);
    m.kernel.mem.readPhys(vdev.pdev.resource(0).start + PAGE + 8n, phys);
    expect([...phys]).toEqual([1, 2, 3]);
    const zaps = vdev.zapCount;
    cfgWrite(m, fd, PCI_COMMAND, 2, 0);
    expect(vdev.zapCount).toBe(zaps + 1);
    expect(() => m.libc.peek(va, 1)).toThrow(/SIGBUS|EFAULT/);
    cfgWrite(m, fd, PCI_COMMAND, 2, 2);
    expect([...m.libc.peek(va + 8n, 3)]).toEqual([1, 2, 3]);
    const bad = (len: bigint, flags: number, off: bigint) => {
      expect(m.libc.mmap(0n, len, PROT_READ, flags, fd, off)).toBe(-1n);
      return m.libc.errno;
    };
    expect(bad(PAGE, MAP_PRIVATE, 0n)).toBe(EINVAL);
    expect(bad(PAGE, MAP_SHARED, 3n << 40n)).toBe(EINVAL);
    // The 16-byte BAR maps its page (phys_len is PAGE_ALIGN of its length), not two.
    expect(bad(2n * PAGE, MAP_SHARED, 4n << 40n)).toBe(EINVAL);
    const sub = m.libc.mmap(0n, PAGE, PROT_READ, MAP_SHARED, fd, 4n << 40n);
    expect(sub).toBeGreaterThan(0n);
    expect(m.libc.munmap(sub, PAGE)).toBe(0);
    expect(bad(PAGE, MAP_SHARED, 6n << 40n)).toBe(EINVAL);
    expect(bad(2n * PAGE, MAP_SHARED, 16n * MiB - PAGE)).toBe(EINVAL);
    expect(m.libc.munmap(va, 2n * PAGE)).toBe(0);
    expect(vdev.barVmas.size).toBe(0);
  });
});
