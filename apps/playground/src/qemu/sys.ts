/**
 * How the QEMU model issues a system call: through @x/kernel's Libc, logged like strace, with
 * QEMU's three answers to a failure — the errnos a caller expects and goes on from (logged as
 * tolerated), a warning (error_report / warn_report, the VM goes on), or fatal (realize fails
 * or hw_error: the scenario step fails with VmmFatal).
 */
import { type Libc, errnoName } from "@x/kernel";
import type { LogKind } from "../scenario.js";
import { VmmFatal } from "../vmm.js";

export type Log = (text: string, kind: LogKind) => void;

export class QemuSys {
  constructor(
    readonly libc: Libc,
    private readonly out: Log,
  ) {}

  log(text: string, kind: LogKind = "info"): void {
    this.out(`qemu: ${text}`, kind);
  }

  /**
   * Run one call; returns its result (≥ 0) or -errno. An errno in `tolerated` is logged as
   * tolerated with QEMU's reason; any other failure as a plain syscall line.
   */
  call(what: string, fn: () => number, tolerated: Readonly<Record<number, string>> = {}): number {
    const ret = fn();
    if (ret >= 0) {
      this.log(`${what} = ${ret}`, "ioctl");
      return ret;
    }
    const e = this.libc.errno;
    const why = tolerated[e];
    this.log(`${what} = -1 ${errnoName(e)}${why ? ` — ${why}` : ""}`, why ? "tolerated" : "ioctl");
    return -e;
  }

  /** A call whose failure QEMU treats as fatal (`where` is QEMU's function). */
  must(what: string, fn: () => number, where: string): number {
    const ret = this.call(what, fn);
    if (ret < 0) throw new VmmFatal(`${where}: ${what} failed: ${errnoName(-ret)}`, -ret);
    return ret;
  }

  /** A call whose failure QEMU reports and goes on from (error_report / warn_report). */
  warnOnError(what: string, fn: () => number, message: string): number {
    const ret = this.call(what, fn);
    if (ret < 0) this.log(`${message}: ${errnoName(-ret)}`, "warn");
    return ret;
  }
}
