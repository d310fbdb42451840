#!/usr/bin/env node
/**
 * `iommufd-selftest [-h] [-l] [filter...]`: the ported iommufd selftests as one kselftest TAP
 * stream; see selftest-cli.ts for the options and the exit status.
 */
import { writeSync } from "node:fs";
import { selftestMain } from "./selftest-cli.js";
import { selftestBinaries } from "./suites/index.js";

/**
 * Writes go straight to fd 1, so a reader that went away (`| head`) is seen at the write that
 * fails, and ends the run quietly as SIGPIPE ends a C binary (process.stdout would report it
 * only after the whole synchronous run, as an 'error' event with a stack).
 */
function writeLine(line: string): void {
  const buf = Buffer.from(`${line}\n`);
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(1, buf, off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EPIPE") process.exit(process.exitCode ?? 0);
      if (code !== "EAGAIN") throw e;
    }
  }
}

// `pnpm selftest -- -l` hands the script its `--` too; what follows it is still options.
const argv = process.argv.slice(2);
process.exitCode = selftestMain(argv[0] === "--" ? argv.slice(1) : argv, selftestBinaries(), {
  out: writeLine,
  err: (line) => console.error(line),
});
