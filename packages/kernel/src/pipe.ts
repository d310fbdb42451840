/**
 * Pipes (fs/pipe.c): one buffer shared by a read-only and a write-only file. A read takes
 * what is buffered, or returns 0 (end of file) once no writer is left; a write with no
 * reader left is EPIPE. The buffer holds PIPE_DEF_BUFFERS pages.
 *
 * Decision: as with eventfd (eventfd.ts), a task the kernel would put to sleep (a read of an
 * empty pipe that still has a writer, a write into a full one) throws `TaskWouldSleepForever`:
 * nothing else runs while it would wait. SIGPIPE is not modelled; the write returns EPIPE, as
 * it does for a task that ignores the signal.
 */
import { EAGAIN, EINVAL, EPIPE } from "./errno.js";
import { fail } from "./error.js";
import { POLLERR, POLLHUP, POLLIN, POLLOUT, TaskWouldSleepForever } from "./eventfd.js";
import { File, type FileOperations, O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_WRONLY } from "./file.js";
import { PAGE_SIZE } from "./physmem.js";

/** PIPE_DEF_BUFFERS pages of buffer (include/linux/pipe_fs_i.h). */
const PIPE_BUF_SIZE = 16 * PAGE_SIZE;

/** struct pipe_inode_info: the buffered bytes and how many files of each end are open. */
class PipeInodeInfo {
  readers = 1;
  writers = 1;
  private chunks: Uint8Array[] = [];
  size = 0;

  take(len: number): Uint8Array {
    const out = new Uint8Array(Math.min(len, this.size));
    let off = 0;
    while (off < out.length) {
      const c = this.chunks[0]!;
      const n = Math.min(c.length, out.length - off);
      out.set(c.subarray(0, n), off);
      off += n;
      if (n === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(n);
    }
    this.size -= out.length;
    return out;
  }

  put(data: Uint8Array): void {
    this.chunks.push(data.slice());
    this.size += data.length;
  }
}

function pipeOf(file: File): PipeInodeInfo {
  return file.priv as PipeInodeInfo;
}

/** @see pipe_read */
function pipeRead(file: File, len: number): Uint8Array {
  const pipe = pipeOf(file);
  if (len === 0 || pipe.size > 0) return pipe.take(len);
  if (!pipe.writers) return new Uint8Array(0);
  if (file.fFlags & O_NONBLOCK) fail(EAGAIN, "pipe is empty");
  // Stryker disable next-line StringLiteral: the exception's text only
  throw new TaskWouldSleepForever("read of an empty pipe that still has a writer");
}

/** @see pipe_write */
function pipeWrite(file: File, data: Uint8Array): number {
  const pipe = pipeOf(file);
  if (data.length === 0) return 0;
  if (!pipe.readers) fail(EPIPE, "pipe has no reader");
  const n = Math.min(data.length, PIPE_BUF_SIZE - pipe.size);
  pipe.put(data.subarray(0, n));
  if (n === data.length) return n;
  if (file.fFlags & O_NONBLOCK) return n || fail(EAGAIN, "pipe is full");
  // Stryker disable next-line StringLiteral: the exception's text only
  throw new TaskWouldSleepForever("write into a full pipe");
}

const readFops: FileOperations = {
  name: "pipe:[read]",
  read: pipeRead,
  release(file) {
    pipeOf(file).readers--;
  },
  /** @see pipe_poll */
  poll(file) {
    const pipe = pipeOf(file);
    return (pipe.size ? POLLIN : 0) | (pipe.writers ? 0 : POLLHUP);
  },
};

const writeFops: FileOperations = {
  name: "pipe:[write]",
  write: pipeWrite,
  release(file) {
    pipeOf(file).writers--;
  },
  poll(file) {
    const pipe = pipeOf(file);
    return (pipe.size < PIPE_BUF_SIZE ? POLLOUT : 0) | (pipe.readers ? 0 : POLLERR);
  },
};

/** The checks of pipe2(2) before any descriptor is reserved (O_DIRECT packet mode is not modelled). */
export function pipe2CheckFlags(flags: number): void {
  if (!Number.isInteger(flags) || flags & ~(O_CLOEXEC | O_NONBLOCK))
    fail(EINVAL, "unknown pipe2 flags");
}

/** @see create_pipe_files: the read and the write file over one new pipe. */
export function createPipeFiles(flags: number): [File, File] {
  const pipe = new PipeInodeInfo();
  const nonblock = flags & O_NONBLOCK;
  return [
    new File(readFops, pipe, O_RDONLY | nonblock),
    new File(writeFops, pipe, O_WRONLY | nonblock),
  ];
}
