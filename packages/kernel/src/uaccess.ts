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

/** Walk a copy page by page: (pfn, offset in the page, position in the buffer, length). */
function eachChunk(
  pfns: number[],
  uaddr: bigint,
  len: number,
  fn: (pfn: number, off: number, pos: number, n: number) => void,
): void {
  let pos = 0;
  let off = Number(uaddr & BigInt(PAGE_SIZE - 1));
  for (const pfn of pfns) {
    const n = Math.min(PAGE_SIZE - off, len - pos);
    fn(pfn, off, pos, n);
    pos += n;
    off = 0;
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
  eachChunk(pfns, uaddr, len, (pfn, off, pos, n) => kernel.mem.readPfn(pfn, off, out, pos, n));
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
  eachChunk(pfns, uaddr, data.length, (pfn, off, pos, n) =>
    kernel.mem.writePfn(pfn, off, data, pos, n),
  );
}
