/**
 * /proc/<pid>/status: the identity lines and the task_mem lines the model keeps counters for
 * (VmLck = mm->locked_vm, VmPin = mm->pinned_vm), rendered at every read as seq_file does, in
 * the kernel's order and format ("VmLck:\t%8lu kB"). A reaped or unknown pid is ENOENT at
 * open; a process that has exited but is not reaped yet still reads, with zero Vm counters
 * since exit_mm dropped its address space.
 * @see proc_pid_status
 * @see task_mem
 */
import { EINVAL, ENOENT } from "./errno.js";
import { fail } from "./error.js";
import { File, type FileOperations } from "./file.js";
import { PAGE_SHIFT } from "./physmem.js";
import type { Process } from "./process.js";

const PROC_STATUS = /^\/proc\/(self|\d+)\/status$/;

/** kB as task_mem prints page counts: pages << (PAGE_SHIFT - 10), right-aligned in 8. */
function kb(pages: number): string {
  return `${(pages * (1 << (PAGE_SHIFT - 10))).toString().padStart(8)} kB`;
}

function render(p: Process): Uint8Array {
  const mm = p.exited ? undefined : p.mm;
  const text =
    `Tgid:\t${p.pid}\nPid:\t${p.pid}\n` +
    `VmLck:\t${kb(mm?.lockedVm ?? 0)}\nVmPin:\t${kb(mm?.pinnedVm ?? 0)}\n`;
  return new TextEncoder().encode(text);
}

const procPidStatusFops: FileOperations = {
  name: "proc_pid_status",
  read(file, len, pos) {
    const all = render(file.priv as Process);
    const start = Number(pos);
    return all.subarray(Math.min(start, all.length), Math.min(start + len, all.length));
  },
  write() {
    return fail(EINVAL, "/proc/<pid>/status is read-only");
  },
};

/** True when `path` names a /proc/<pid>/status file (`self` or a number). */
export function isProcPidStatus(path: string): boolean {
  return PROC_STATUS.test(path);
}

/**
 * Open /proc/<pid>/status: `self` is `current`, a number is looked up with `findProcess`
 * (ENOENT once reaped).
 */
export function openProcPidStatus(
  path: string,
  flags: number,
  current: Process,
  findProcess: (pid: number) => Process | undefined,
): File {
  const who = PROC_STATUS.exec(path)?.[1];
  const p = who === "self" ? current : findProcess(Number(who));
  if (!p) return fail(ENOENT, path);
  return new File(procPidStatusFops, p, flags);
}
