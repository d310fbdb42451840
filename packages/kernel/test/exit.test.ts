/**
 * Process exit (kernel/exit.c do_exit): exit_mm, then exit_files; a file whose last reference
 * goes in either step is released afterwards (____fput from task_work), outside mmap_lock and
 * with both the address space and the descriptor table already gone.
 */
import { describe, expect, it } from "vitest";
import {
  File,
  type FileOperations,
  Kernel,
  Libc,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "../src/index.js";

interface Seen {
  name: string;
  held: number;
  vmas: number;
  fds: number;
}

function mappableDevice(k: Kernel, path: string, seen: Seen[], libc: () => Libc): void {
  const bar = k.mem.addMmioRegion(path, 1n << 16n);
  const fops: FileOperations = {
    name: path,
    mmap: (_f, vma) => vma.remapPfnRange(bar.basePfn + vma.pgoff),
    release: () => {
      const p = libc().process;
      seen.push({
        name: path,
        held: k.lockdep.heldBy(k.current).length,
        vmas: p.mm.vmaList().length,
        fds: p.files.openCount,
      });
    },
  };
  k.registerDevice(path, (_k, flags) => new File(fops, null, flags));
}

describe("exit", () => {
  it("releases mapped and open files once each, after the mm and the fd table are gone", () => {
    const k = new Kernel();
    const seen: Seen[] = [];
    const libc = new Libc(k);
    mappableDevice(k, "/dev/mapped", seen, () => libc);
    mappableDevice(k, "/dev/open", seen, () => libc);
    const mapped = libc.open("/dev/mapped", O_RDWR);
    const open = libc.open("/dev/open", O_RDWR);
    expect(libc.mmap(0n, 4096n, PROT_READ | PROT_WRITE, MAP_SHARED, mapped, 0)).toBeGreaterThan(0n);
    // The mapping keeps the file: closing the descriptor releases nothing.
    expect(libc.close(mapped)).toBe(0);
    expect(seen).toEqual([]);
    expect(open).toBeGreaterThanOrEqual(0);
    libc.exit();
    expect(seen).toEqual([
      { name: "/dev/mapped", held: 0, vmas: 0, fds: 0 },
      { name: "/dev/open", held: 0, vmas: 0, fds: 0 },
    ]);
  });
});
