import { describe, expect, it, vi } from "vitest";
import {
  CAP_IPC_LOCK,
  CAP_SYS_ADMIN,
  ENOENT,
  EPERM,
  Kernel,
  Libc,
  O_RDONLY,
  updatePinnedVm,
} from "../src/index.js";

function statusOf(libc: Libc, path: string): string {
  const fd = libc.open(path, O_RDONLY);
  expect(fd).toBeGreaterThanOrEqual(0);
  const buf = new Uint8Array(256);
  const n = libc.pread(fd, buf, 0);
  libc.close(fd);
  return new TextDecoder().decode(buf.subarray(0, n));
}

describe("/proc/<pid>/status", () => {
  it("prints VmLck and VmPin of the pid's mm in kB, read at each open", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const libc = new Libc(k);
    const pid = libc.getpid();
    expect(statusOf(libc, `/proc/${pid}/status`)).toBe(
      `Tgid:\t${pid}\nPid:\t${pid}\nVmLck:\t       0 kB\nVmPin:\t       0 kB\n`,
    );
    libc.process.mm.lockedVm = 3;
    updatePinnedVm(libc.process.mm, 2, true);
    expect(statusOf(libc, "/proc/self/status")).toContain(
      "VmLck:\t      12 kB\nVmPin:\t       8 kB\n",
    );
  });

  it("a child's pid resolves until waitpid reaps it, then ENOENT", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const libc = new Libc(k);
    const child = libc.fork();
    const cpid = child.getpid();
    expect(cpid).not.toBe(libc.getpid());
    expect(statusOf(libc, `/proc/${cpid}/status`)).toContain(`Pid:\t${cpid}\n`);
    child.exit(0);
    expect(statusOf(libc, `/proc/${cpid}/status`)).toContain("VmPin:\t       0 kB");
    expect(libc.waitpid(cpid)).toBe(cpid);
    expect(libc.open(`/proc/${cpid}/status`, O_RDONLY)).toBe(-1);
    expect(libc.errno).toBe(ENOENT);
  });
});

describe("/proc/<pid>/status, evaluated per test", () => {
  it("opens only /proc/self/status and /proc/<digits>/status; a read returns what was asked; a write is EINVAL", async () => {
    // Evaluated here: the path pattern and the file operations are constants of the module.
    vi.resetModules();
    const kernel = await import("../src/index.js");
    const k = new kernel.Kernel({ ramBytes: 1n << 30n });
    const libc = new kernel.Libc(k);
    let p = k.newProcess(1000);
    while (p.pid < 10) {
      k.newTask(p);
      p = k.newProcess(1000);
    }
    const fd = libc.open(`/proc/${p.pid}/status`, kernel.O_RDONLY);
    expect(fd).toBeGreaterThanOrEqual(0);
    expect(libc.process.files.lookup(fd).fops.name).toBe("proc_pid_status");
    const five = new Uint8Array(5);
    expect(libc.read(fd, five)).toBe(5);
    expect(new TextDecoder().decode(five)).toBe("Tgid:");
    // The read operation itself returns at most `len` bytes, whatever buffer is behind it.
    const file = libc.process.files.lookup(fd);
    expect(new TextDecoder().decode(file.fops.read?.(file, 3, 2n))).toBe("id:");
    for (const bad of ["/proc/self/statusx", "x/proc/self/status", "/proc/1x/status"]) {
      expect(libc.open(bad, kernel.O_RDONLY)).toBe(-1);
      expect(libc.errno).toBe(ENOENT);
    }
    // No write operation: vfs_write is EINVAL for a file without FMODE_CAN_WRITE.
    const rw = libc.open("/proc/self/status", kernel.O_RDWR);
    expect(libc.write(rw, Uint8Array.of(1))).toBe(-1);
    expect(libc.errno).toBe(kernel.EINVAL);
  });
});

describe("capget/capset", () => {
  it("dropping an effective capability keeps it permitted; raising past permitted is EPERM", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const libc = new Libc(k);
    const { effective, permitted } = libc.capget();
    expect(libc.process.capable(CAP_IPC_LOCK)).toBe(true);
    expect(
      libc.capset(
        effective.filter((c) => c !== CAP_IPC_LOCK),
        permitted,
      ),
    ).toBe(0);
    expect(libc.process.capable(CAP_IPC_LOCK)).toBe(false);
    expect(libc.capset(effective, permitted)).toBe(0);
    expect(libc.process.capable(CAP_IPC_LOCK)).toBe(true);
    expect(libc.capset([CAP_SYS_ADMIN], [CAP_SYS_ADMIN])).toBe(0);
    expect(libc.capset([CAP_IPC_LOCK], [CAP_SYS_ADMIN, CAP_IPC_LOCK])).toBe(-1);
    expect(libc.errno).toBe(EPERM);
    expect(libc.capset([CAP_IPC_LOCK], [CAP_SYS_ADMIN])).toBe(-1);
    expect(libc.errno).toBe(EPERM);
    expect(libc.process.capable(CAP_SYS_ADMIN)).toBe(true);
  });

  it("fork copies both sets; the child's capset does not reach the parent", () => {
    const k = new Kernel({ ramBytes: 1n << 30n });
    const libc = new Libc(k);
    const child = libc.fork();
    expect(child.capset([], child.capget().permitted)).toBe(0);
    expect(child.process.capable(CAP_IPC_LOCK)).toBe(false);
    expect(libc.process.capable(CAP_IPC_LOCK)).toBe(true);
  });
});
