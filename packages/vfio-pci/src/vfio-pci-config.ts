import {
  IORESOURCE_IO,
  IORESOURCE_MEM,
  IORESOURCE_MEM_64,
  PCI_AF_CAP,
  PCI_AF_CAP_FLR,
  PCI_AF_CAP_TP,
  PCI_AF_CTRL,
  PCI_AF_CTRL_FLR,
  PCI_AF_SIZEOF,
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_5,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_D3hot,
  PCI_EXP_DEVCAP,
  PCI_EXP_DEVCAP_FLR,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_EXP_SIZEOF,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  PCI_PM_SIZEOF,
  PCI_ROM_ADDRESS,
  PCI_ROM_ADDRESS_ENABLE,
  PCI_ROM_RESOURCE,
  PCI_STD_HEADER_SIZEOF,
  PCI_STD_NUM_BARS,
} from "./pci-regs.js";
import { IRQ_NOTCONNECTED } from "./pci-irq.js";
import type { VfioPciCoreDevice } from "./vfio-pci-core.js";
import { vfioPciDmaBufMove } from "./vfio-pci-dmabuf.js";
import { vfioPciIntxMask, vfioPciIntxUnmask } from "./vfio-pci-intrs.js";
import { VFIO_PCI_MSI_IRQ_INDEX } from "./vfio-uapi.js";

/**
 * Config-space virtualisation (vconfig) for the config region. A user access is split into
 * naturally aligned chunks of 4, 2 or 1 bytes; each chunk goes to the handler of the structure
 * containing its first byte:
 *
 * - header: BARs and ROM are fully virtual (sizing emulated against the resource length);
 *   COMMAND writes pass IO / MEMORY / MASTER through to the device while INTX_DISABLE is kept
 *   virtual; a chunk that *starts* at PCI_COMMAND is the memory-enable trigger (revoke on clear,
 *   un-revoke when memory ends enabled); INTERRUPT_LINE is virtual; the rest reads the device.
 * - PM capability: the PMCSR state field is virtual and a write performs the power transition.
 * - PCIe capability: DEVCTL.BCR_FLR is virtual, always reads 0, and resets the function when
 *   DEVCAP.FLR is set; other DEVCTL bits pass through.
 * - AF capability: AF_CTRL.FLR likewise, honoured when AF_CAP has both FLR and TP.
 * - MSI capability: Message Control, address and data are virtual (the host programs its own
 *   messages); Multiple Message Capable reads as the vectors enabled through SET_IRQS, and a
 *   write of Message Control keeps ENABLE only while MSI is enabled through SET_IRQS and clamps
 *   Multiple Message Enable to them, then goes to the device; the mask bits are the device's.
 * - MSI-X capability: read from the device, writes ignored (MSI-X is enabled by SET_IRQS only).
 * - INTERRUPT_PIN reads 0 when the pin is not connected; COMMAND.INTX_DISABLE masks and
 *   unmasks INTx (vfio_basic_config_write's INTx emulation).
 *
 * Decision: bytes outside the header and the capabilities above read from the device and
 * ignore writes.
 */

type Handler = "header" | "pm" | "exp" | "af" | "msi" | "raw";

function le(buf: Uint8Array, off: number, size: number): number {
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + buf[off + i]!;
  return v;
}

function putLe(buf: Uint8Array, off: number, size: number, v: number): void {
  for (let i = 0; i < size; i++) buf[off + i] = Math.floor(v / 256 ** i) & 0xff;
}

function handlerFor(vdev: VfioPciCoreDevice, pos: number): { h: Handler; base: number } {
  const p = vdev.pdev;
  if (pos < PCI_STD_HEADER_SIZEOF) return { h: "header", base: 0 };
  if (p.pmCap && pos >= p.pmCap && pos < p.pmCap + PCI_PM_SIZEOF) return { h: "pm", base: p.pmCap };
  if (p.pcieCap && pos >= p.pcieCap && pos < p.pcieCap + PCI_EXP_SIZEOF)
    return { h: "exp", base: p.pcieCap };
  if (p.afCap && pos >= p.afCap && pos < p.afCap + PCI_AF_SIZEOF) return { h: "af", base: p.afCap };
  if (p.msiCap && pos >= p.msiCap && pos < p.msiCap + msiCapLen(vdev))
    return { h: "msi", base: p.msiCap };
  return { h: "raw", base: 0 };
}

function msiFlags(vdev: VfioPciCoreDevice): number {
  return vdev.pdev.readConfig(vdev.pdev.msiCap + PCI_MSI_FLAGS, 2);
}

/** @see vfio_msi_cap_len */
function msiCapLen(vdev: VfioPciCoreDevice): number {
  const flags = msiFlags(vdev);
  return 10 + (flags & PCI_MSI_FLAGS_64BIT ? 4 : 0) + (flags & PCI_MSI_FLAGS_MASKBIT ? 10 : 0);
}

/** MSI permission bits by offset in the capability. @see vfio_msi_cap_len, init_pci_cap_msi_perm */
function msiPerm(vdev: VfioPciCoreDevice): (rel: number) => readonly [number, number] {
  const flags = msiFlags(vdev);
  const is64 = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
  const data = is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32;
  const mask = is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32;
  return (rel) => {
    // Message Control's upper byte is reserved: read from the device, not writable.
    if (rel === PCI_MSI_FLAGS) return ALL;
    if (rel >= PCI_MSI_ADDRESS_LO && rel < PCI_MSI_ADDRESS_LO + 4) return ALL;
    if (is64 && rel >= PCI_MSI_ADDRESS_HI && rel < PCI_MSI_ADDRESS_HI + 4) return ALL;
    if (rel >= data && rel < data + 2) return ALL;
    if (flags & PCI_MSI_FLAGS_MASKBIT && rel >= mask && rel < mask + 4) return [0, 0xff];
    return NONE;
  };
}

function isBar(off: number): boolean {
  return (
    (off >= PCI_BASE_ADDRESS_0 && off < PCI_BASE_ADDRESS_5 + 4) ||
    (off >= PCI_ROM_ADDRESS && off < PCI_ROM_ADDRESS + 4)
  );
}

/** vconfig at open: a copy of the device's config, MEMORY forced on for no_command_memory. */
export function vfioConfigInit(vdev: VfioPciCoreDevice): Uint8Array {
  const p = vdev.pdev;
  const v = p.config.slice();
  for (let i = 0; i < PCI_STD_NUM_BARS; i++)
    vdev.rbar[i] = le(p.config, PCI_BASE_ADDRESS_0 + 4 * i, 4);
  vdev.rbar[PCI_ROM_RESOURCE] = le(p.config, PCI_ROM_ADDRESS, 4);
  if (p.noCommandMemory) v[PCI_COMMAND] = v[PCI_COMMAND]! | PCI_COMMAND_MEMORY;
  if (p.irq === IRQ_NOTCONNECTED) v[PCI_INTERRUPT_PIN] = 0;
  vdev.barDirty = true;
  return v;
}

/** Virtual BAR registers re-derived from the resources after writes (sizing emulation). */
function vfioBarFixup(vdev: VfioPciCoreDevice, vconfig: Uint8Array): void {
  const p = vdev.pdev;
  for (let i = 0; i < PCI_STD_NUM_BARS; i++) {
    const off = PCI_BASE_ADDRESS_0 + 4 * i;
    const r = p.resource(i);
    if (!(r.flags & (IORESOURCE_MEM | IORESOURCE_IO))) {
      // The upper half of a 64-bit BAR is fixed up with its lower half below.
      if (i === 0 || !(p.resource(i - 1).flags & IORESOURCE_MEM_64)) putLe(vconfig, off, 4, 0);
      continue;
    }
    const keep = r.flags & IORESOURCE_IO ? 0x3 : 0xf;
    const mask = Number(~(r.len - 1n) & 0xffffffffn) & ~keep;
    const val = ((le(vconfig, off, 4) & mask) | (p.config[off]! & keep)) >>> 0;
    putLe(vconfig, off, 4, val);
    if (r.flags & IORESOURCE_MEM_64) {
      const hi = Number((~(r.len - 1n) >> 32n) & 0xffffffffn);
      putLe(vconfig, off + 4, 4, (le(vconfig, off + 4, 4) & hi) >>> 0);
    }
  }
  const rom = p.resource(PCI_ROM_RESOURCE);
  const romMask = rom.len
    ? (Number(~(rom.len - 1n) & 0xfffff800n) | PCI_ROM_ADDRESS_ENABLE) >>> 0
    : 0;
  putLe(vconfig, PCI_ROM_ADDRESS, 4, (le(vconfig, PCI_ROM_ADDRESS, 4) & romMask) >>> 0);
  vdev.barDirty = false;
}

/** BAR registers that no longer hold the addresses saved at open (a reset behind our back). */
function vfioNeedBarRestore(vdev: VfioPciCoreDevice): boolean {
  const c = vdev.pdev.config;
  for (let i = 0; i < PCI_STD_NUM_BARS; i++)
    if (le(c, PCI_BASE_ADDRESS_0 + 4 * i, 4) !== vdev.rbar[i]) return true;
  return false;
}

function vfioBarRestore(vdev: VfioPciCoreDevice): void {
  const p = vdev.pdev;
  for (let i = 0; i < PCI_STD_NUM_BARS; i++)
    p.writeConfig(PCI_BASE_ADDRESS_0 + 4 * i, 4, vdev.rbar[i]!);
  p.writeConfig(PCI_ROM_ADDRESS, 4, vdev.rbar[PCI_ROM_RESOURCE]!);
}

/** Physical-or-virtual read of one chunk. */
function readChunk(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array,
  pos: number,
  size: 1 | 2 | 4,
): number {
  const p = vdev.pdev;
  const { h, base } = handlerFor(vdev, pos);
  const phys = p.readConfig(pos, size);
  if (h === "header") {
    if (isBar(pos)) {
      if (vdev.barDirty) vfioBarFixup(vdev, vconfig);
      return le(vconfig, pos, size);
    }
    // Virtual bytes: INTX_DISABLE, INTERRUPT_LINE, and MEMORY for no_command_memory functions.
    const out = new Uint8Array(4);
    putLe(out, 0, size, phys);
    for (let i = 0; i < size; i++) {
      const at = pos + i;
      let virt = 0;
      if (at === PCI_COMMAND + 1) virt = PCI_COMMAND_INTX_DISABLE >> 8;
      if (at === PCI_COMMAND && p.noCommandMemory) virt = PCI_COMMAND_MEMORY;
      if (at === PCI_INTERRUPT_LINE || at === PCI_INTERRUPT_PIN) virt = 0xff;
      out[i] = (out[i]! & ~virt) | (vconfig[at]! & virt);
    }
    return le(out, 0, size);
  }
  if (h === "msi") {
    // vfio_msi_config_read stores msi_qmax into bits 1–3 of the byte at the capability's start
    // (its ID, not Message Control). The ID byte is not virtualized for MSI, so no read ever
    // shows that store and the model leaves it out: the user reads Multiple Message Capable as
    // vfio_config_init copied it from the device, or as the user last wrote it.
    const perm = msiPerm(vdev);
    const out = new Uint8Array(4);
    putLe(out, 0, size, phys);
    for (let i = 0; i < size; i++) {
      const virt = perm(pos + i - base)[0];
      out[i] = (out[i]! & ~virt) | (vconfig[pos + i]! & virt);
    }
    return le(out, 0, size);
  }
  const out = new Uint8Array(4);
  putLe(out, 0, size, phys);
  for (let i = 0; i < size; i++) {
    const at = pos + i;
    let virt = 0;
    if (h === "exp" && at === base + PCI_EXP_DEVCTL + 1) virt = PCI_EXP_DEVCTL_BCR_FLR >> 8;
    if (h === "af" && at === base + PCI_AF_CTRL) virt = PCI_AF_CTRL_FLR;
    out[i] = (out[i]! & ~virt) | (vconfig[at]! & virt);
  }
  return le(out, 0, size);
}

/** Per byte: [virtual bits, user-writable bits]; writable non-virtual bits reach the device. */
type Perm = (at: number) => readonly [number, number];

/** Apply a chunk write under `perm`: virtual bits to vconfig, the other writable bits to the device. */
function defaultWrite(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array,
  pos: number,
  size: 1 | 2 | 4,
  val: number,
  perm: Perm,
): void {
  const p = vdev.pdev;
  const cur = new Uint8Array(4);
  putLe(cur, 0, size, p.readConfig(pos, size));
  const inb = new Uint8Array(4);
  putLe(inb, 0, size, val);
  let physChanged = false;
  for (let i = 0; i < size; i++) {
    const [virt, write] = perm(pos + i);
    vconfig[pos + i] = (vconfig[pos + i]! & ~(virt & write)) | (inb[i]! & virt & write);
    const phys = write & ~virt;
    const nb = (cur[i]! & ~phys) | (inb[i]! & phys);
    if (nb !== cur[i]) physChanged = true;
    cur[i] = nb;
  }
  if (physChanged) p.writeConfig(pos, size, le(cur, 0, size));
}

const NONE = [0, 0] as const;
const ALL = [0xff, 0xff] as const;

function headerPerm(at: number): readonly [number, number] {
  if (at === PCI_COMMAND) return [0, 0xff];
  if (at === PCI_COMMAND + 1) return [PCI_COMMAND_INTX_DISABLE >> 8, 0xff];
  if (at === PCI_INTERRUPT_LINE) return [0xff, 0xff];
  return NONE;
}

function writeChunk(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array,
  pos: number,
  size: 1 | 2 | 4,
  val: number,
): void {
  const p = vdev.pdev;
  const { h, base } = handlerFor(vdev, pos);
  switch (h) {
    case "header": {
      if (isBar(pos)) {
        putLe(vconfig, pos, size, val);
        vdev.barDirty = true;
        return;
      }
      if (pos === PCI_COMMAND) vfioCommandWrite(vdev, vconfig, size, val);
      else defaultWrite(vdev, vconfig, pos, size, val, headerPerm);
      if (pos === PCI_COMMAND || pos === PCI_COMMAND + 1) vfioIntxDisableEmulate(vdev, vconfig);
      return;
    }
    case "msi": {
      const perm = msiPerm(vdev);
      defaultWrite(vdev, vconfig, pos, size, val, (at) => perm(at - base));
      vfioMsiFlagsFixup(vdev, vconfig, base, pos - base, size);
      return;
    }
    case "pm": {
      // The state field is not writable through: the power transition is done by vfio itself.
      defaultWrite(vdev, vconfig, pos, size, val, (at) =>
        at === base + PCI_PM_CTRL ? [0, ~PCI_PM_CTRL_STATE_MASK & 0xff] : NONE,
      );
      if (pos === base + PCI_PM_CTRL) vdev.lockAndSetPowerState(val & PCI_PM_CTRL_STATE_MASK);
      return;
    }
    case "exp": {
      const devctl = base + PCI_EXP_DEVCTL;
      defaultWrite(vdev, vconfig, pos, size, val, (at) =>
        at === devctl ? [0, 0xff] : at === devctl + 1 ? [PCI_EXP_DEVCTL_BCR_FLR >> 8, 0xff] : NONE,
      );
      if (vconfig[devctl + 1]! & (PCI_EXP_DEVCTL_BCR_FLR >> 8)) {
        vconfig[devctl + 1] = vconfig[devctl + 1]! & ~(PCI_EXP_DEVCTL_BCR_FLR >> 8);
        if (p.readConfig(base + PCI_EXP_DEVCAP, 4) & PCI_EXP_DEVCAP_FLR) vdev.resetFunctionLocked();
      }
      return;
    }
    case "af": {
      const ctrl = base + PCI_AF_CTRL;
      defaultWrite(vdev, vconfig, pos, size, val, (at) =>
        at === ctrl ? [PCI_AF_CTRL_FLR, PCI_AF_CTRL_FLR] : NONE,
      );
      if (vconfig[ctrl]! & PCI_AF_CTRL_FLR) {
        vconfig[ctrl] = vconfig[ctrl]! & ~PCI_AF_CTRL_FLR;
        const cap = p.config[base + PCI_AF_CAP]!;
        if (cap & PCI_AF_CAP_FLR && cap & PCI_AF_CAP_TP) vdev.resetFunctionLocked();
      }
      return;
    }
    case "raw":
      return;
  }
}

/**
 * A write whose chunk starts at PCI_COMMAND (trigger #1 / #2): revoke first when MEMORY is being
 * cleared; restore the BARs after a backdoor reset; write; record MEMORY / IO in vconfig; un-revoke
 * if memory ends enabled.
 * @see vfio_basic_config_write
 */
function vfioCommandWrite(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array,
  size: 1 | 2 | 4,
  val: number,
): void {
  const p = vdev.pdev;
  const physCmd = p.command;
  const virtCmd = le(vconfig, PCI_COMMAND, 2);
  const newCmd = val & 0xffff;
  const newMem = (newCmd & PCI_COMMAND_MEMORY) !== 0;
  const newIo = (newCmd & PCI_COMMAND_IO) !== 0;
  if (!newMem) {
    vdev.zapAndDownWriteMemoryLock();
    vfioPciDmaBufMove(vdev, true);
  } else {
    vdev.memoryLock.downWrite();
  }
  try {
    const backdoor =
      (newMem &&
        virtCmd & PCI_COMMAND_MEMORY &&
        !(physCmd & PCI_COMMAND_MEMORY) &&
        !p.noCommandMemory) ||
      (newIo && virtCmd & PCI_COMMAND_IO && !(physCmd & PCI_COMMAND_IO)) ||
      vfioNeedBarRestore(vdev);
    if (backdoor) vfioBarRestore(vdev);
    defaultWrite(vdev, vconfig, PCI_COMMAND, size, val, headerPerm);
    const mask = PCI_COMMAND_MEMORY | PCI_COMMAND_IO;
    // Recorded as written, also for a no_command_memory function (whose memory stays enabled).
    vconfig[PCI_COMMAND] = (vconfig[PCI_COMMAND]! & ~mask) | (newCmd & mask);
    if (vdev.memoryEnabled()) vfioPciDmaBufMove(vdev, false);
  } finally {
    vdev.memoryLock.upWrite();
  }
}

/** The user's INTX_DISABLE masks or unmasks INTx. @see vfio_basic_config_write */
function vfioIntxDisableEmulate(vdev: VfioPciCoreDevice, vconfig: Uint8Array): void {
  const virtIntxDisable = (le(vconfig, PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE) !== 0;
  if (virtIntxDisable && !vdev.virqDisabled) {
    vdev.virqDisabled = true;
    vfioPciIntxMask(vdev);
  } else if (!virtIntxDisable && vdev.virqDisabled) {
    vdev.virqDisabled = false;
    vfioPciIntxUnmask(vdev);
  }
}

/**
 * After a write covering Message Control: ENABLE only while MSI is on through SET_IRQS,
 * Multiple Message Enable at most the vectors enabled; the result is written to the device.
 * @see vfio_msi_config_write
 */
function vfioMsiFlagsFixup(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array,
  base: number,
  offset: number,
  count: number,
): void {
  if (!(offset <= PCI_MSI_FLAGS && offset + count >= PCI_MSI_FLAGS)) return;
  const at = base + PCI_MSI_FLAGS;
  let flags = le(vconfig, at, 2);
  if (vdev.irqType !== VFIO_PCI_MSI_IRQ_INDEX) flags &= ~PCI_MSI_FLAGS_ENABLE;
  if ((flags & PCI_MSI_FLAGS_QSIZE) >> 4 > vdev.msiQmax)
    flags = (flags & ~PCI_MSI_FLAGS_QSIZE) | (vdev.msiQmax << 4);
  putLe(vconfig, at, 2, flags);
  vdev.pdev.writeConfig(at, 2, flags);
}

function chunkSize(pos: number, count: number): 1 | 2 | 4 {
  if (count >= 4 && pos % 4 === 0) return 4;
  if (count >= 2 && pos % 2 === 0) return 2;
  return 1;
}

/** Read `count` bytes of virtual config space at `pos` (caller checked the bounds). */
export function vfioConfigRead(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array,
  pos: number,
  count: number,
): Uint8Array {
  const out = new Uint8Array(count);
  let done = 0;
  while (done < count) {
    const size = chunkSize(pos + done, count - done);
    putLe(out, done, size, readChunk(vdev, vconfig, pos + done, size));
    done += size;
  }
  return out;
}

/** Write `data` to virtual config space at `pos` (caller checked the bounds). */
export function vfioConfigWrite(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array,
  pos: number,
  data: Uint8Array,
): void {
  let done = 0;
  while (done < data.length) {
    const size = chunkSize(pos + done, data.length - done);
    writeChunk(vdev, vconfig, pos + done, size, le(data, done, size));
    done += size;
  }
}

/** Memory enabled as vfio sees it: not in D3hot and MEMORY set in vconfig (or hard-wired). */
export function vfioPciMemoryEnabled(
  vdev: VfioPciCoreDevice,
  vconfig: Uint8Array | undefined,
): boolean {
  const p = vdev.pdev;
  if (p.powerState >= PCI_D3hot) return false;
  return (
    p.noCommandMemory ||
    (vconfig !== undefined && (vconfig[PCI_COMMAND]! & PCI_COMMAND_MEMORY) !== 0)
  );
}
