import { EFAULT } from "./errno.js";
import { fail, isKernelError } from "./error.js";
import type { Kernel } from "./kernel.js";
import type { MmStruct } from "./mm.js";
import { PAGE_SHIFT, PAGE_SIZE } from "./physmem.js";

/**
 * copy_from_user / copy_to_user against the current task's address space. Every page is
 * faulted in (and for a write made private and writable) before the first byte moves, so a
 * copy that would fault part-way is EFAULT with nothing copied.
 */
function userPages(mm: MmStruct, uaddr: bigint, len: number, write: boolean): number[] {
  if (uaddr < 0n) fail(EFAULT, "negative user address");
  const pfns: number[] = [];
  if (len === 0) return pfns;
  const first = Number(uaddr >> BigInt(PAGE_SHIFT));
  const last = Number((uaddr + BigInt(len) - 1n) >> BigInt(PAGE_SHIFT));
  try {
    mm.mmapLock.withRead(() => {
      for (let vpn = first; vpn <= last; vpn++) pfns.push(mm.fault(vpn, write, false));
    });
  } catch (e) {
    if (isKernelError(e)) fail(EFAULT, `user access at ${uaddr}+${len}: ${e.message}`);
    throw e;
  }
  return pfns;
}

function physOf(pfns: number[], uaddr: bigint, i: number): bigint {
  const off = i === 0 ? uaddr & BigInt(PAGE_SIZE - 1) : 0n;
  return (BigInt(pfns[i]!) << BigInt(PAGE_SHIFT)) + off;
}

/** Walk the copy page by page: (physical address, position in the buffer, length). */
function eachChunk(
  pfns: number[],
  uaddr: bigint,
  len: number,
  fn: (paddr: bigint, pos: number, n: number) => void,
): void {
  let pos = 0;
  for (let i = 0; i < pfns.length; i++) {
    const off = i === 0 ? Number(uaddr & BigInt(PAGE_SIZE - 1)) : 0;
    const n = Math.min(PAGE_SIZE - off, len - pos);
    fn(physOf(pfns, uaddr, i), pos, n);
    pos += n;
  }
}

/** copy_from_user on `mm` (the current task's by default). EFAULT on any unmapped byte. */
export function copyFromUser(
  kernel: Kernel,
  uaddr: bigint,
  len: number,
  mm: MmStruct = kernel.current.process.mm,
): Uint8Array {
  const out = new Uint8Array(len);
  const pfns = userPages(mm, uaddr, len, false);
  eachChunk(pfns, uaddr, len, (paddr, pos, n) =>
    kernel.mem.readPhys(paddr, out.subarray(pos, pos + n)),
  );
  return out;
}

/** copy_to_user on `mm` (the current task's by default). EFAULT with nothing written. */
export function copyToUser(
  kernel: Kernel,
  uaddr: bigint,
  data: Uint8Array,
  mm: MmStruct = kernel.current.process.mm,
): void {
  const pfns = userPages(mm, uaddr, data.length, true);
  eachChunk(pfns, uaddr, data.length, (paddr, pos, n) =>
    kernel.mem.writePhys(paddr, data.subarray(pos, pos + n)),
  );
}
