import {
  E2BIG,
  EBUSY,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOTTY,
  EOPNOTSUPP,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
} from "@x/kernel";
import { describe, expect, it } from "vitest";
import {
  type FieldSpec,
  IOMMU_DESTROY,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_IOAS_ALLOC,
  IOMMU_TEST_CMD,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  type Struct,
  _IO,
  iommu_destroy,
  iommu_hwpt_invalidate,
  iommu_ioas_alloc,
  iommu_test_cmd,
  iommu_vdevice_alloc,
  iommu_viommu_alloc,
  IOMMUFD_IOCTL_OPS,
} from "../src/index.js";
import { createSystem, rawIoctl } from "./ioctl-helpers.js";

const IOCTLS = IOMMUFD_IOCTL_OPS.map((op) => [op.struct.name, op.ioctlNum, op.struct] as const);

function withSize<S extends FieldSpec>(s: Struct<S>, size: number, tail = 0): Uint8Array {
  const b = new Uint8Array(Math.max(size, s.size) + 8);
  s.set(b, "size" as keyof S & string, size as never);
  if (tail) b[size - 1] = tail;
  return b.subarray(0, Math.max(size, 4));
}

describe("dispatch (kselftest iommufd.cmd_fail)", () => {
  it("destroy of id 0 is ENOENT", () => {
    const sys = createSystem();
    const r = rawIoctl(sys, IOMMU_DESTROY, iommu_destroy.encode({ size: 8, id: 0 }));
    expect(r.errno).toBe(ENOENT);
  });

  it("the dispatcher returns -errno, and libc's lastError keeps the handler's reason", () => {
    const sys = createSystem();
    const file = sys.libc.process.files.lookup(sys.fd.fd);
    const va = sys.libc.malloc(8);
    sys.libc.poke(va, iommu_destroy.encode({ size: 8, id: 5 }));
    expect(file.fops.ioctl?.(file, IOMMU_DESTROY, va)).toBe(-ENOENT);
    expect(sys.kernel.current.returnedError?.message).toBe("ENOENT (2): object 5");
    const r = rawIoctl(sys, IOMMU_DESTROY, iommu_destroy.encode({ size: 8, id: 6 }));
    expect(r.errno).toBe(ENOENT);
    expect(sys.libc.lastError?.message).toBe("ENOENT (2): object 6");
  });

  it("a NULL argument is EFAULT (the size word is read first)", () => {
    const sys = createSystem();
    expect(sys.libc.ioctl(sys.fd.fd, IOMMU_DESTROY, 0n)).toBe(-1);
    expect(sys.libc.errno).toBe(EFAULT);
    // A hole inside the table also reads the size word before failing the number check.
    expect(sys.libc.ioctl(sys.fd.fd, _IO(0x3b, 0x8b), 0n)).toBe(-1);
    expect(sys.libc.errno).toBe(EFAULT);
  });

  it.each([
    ["just below the table", _IO(0x3b, 0x7f)],
    ["after the table", _IO(0x3b, 0x95)],
    ["the test command before registration", IOMMU_TEST_CMD],
    ["the right nr with direction and size bits", (3 << 30) | (8 << 16) | 0x3b80],
    ["another type byte", _IO(0x3c, 0x80)],
  ])("%s is ENOTTY", (_name, cmd) => {
    const sys = createSystem();
    const r = rawIoctl(sys, cmd, iommu_destroy.encode({ size: 8, id: 1 }));
    expect(r.errno).toBe(ENOTTY);
  });

  it("the test command is dispatched once registered", () => {
    const sys = createSystem();
    const seen: number[] = [];
    sys.module.registerTestCmd((ucmd) => {
      seen.push(ucmd.cmd.op);
      return 7;
    });
    const r = rawIoctl(sys, IOMMU_TEST_CMD, iommu_test_cmd.encode({ size: 72, op: 22 }));
    expect(r.ret).toBe(7);
    expect(seen).toEqual([22]);
    expect(rawIoctl(sys, IOMMU_TEST_CMD, iommu_test_cmd.encode({ size: 67 })).errno).toBe(EINVAL);
  });
});

describe("size rules (kselftest iommufd.cmd_length)", () => {
  it.each(IOCTLS)("%s: below the minimum is EINVAL", (_n, cmd, s) => {
    const sys = createSystem();
    const before = sys.ctx.objectCount;
    expect(rawIoctl(sys, cmd, withSize(s, s.minSize - 1)).errno).toBe(EINVAL);
    expect(sys.ctx.objectCount).toBe(before);
  });

  it.each(IOCTLS)("%s: a non-zero byte past sizeof is E2BIG", (_n, cmd, s) => {
    const sys = createSystem();
    expect(rawIoctl(sys, cmd, withSize(s, s.size + 8, 0xaa)).errno).toBe(E2BIG);
    expect(sys.ctx.objectCount).toBe(0);
  });

  it.each(IOCTLS)("%s: a zero tail answers like the exact size", (_n, cmd, s) => {
    const exact = rawIoctl(createSystem(), cmd, withSize(s, s.size));
    const longer = rawIoctl(createSystem(), cmd, withSize(s, s.size + 8));
    expect(longer.errno).toBe(exact.errno);
    expect(longer.ret).toBe(exact.ret);
    expect(longer.buf.subarray(4, s.size)).toEqual(exact.buf.subarray(4, s.size));
  });
});

describe("ioctls of features the drivers lack (nesting, vIOMMU)", () => {
  it("HWPT_INVALIDATE: reserved, entries without data, lookup, then EINVAL; entry_num written back", () => {
    const sys = createSystem();
    const id = sys.fd.ioasAlloc();
    const inv = (v: Record<string, number | bigint>) =>
      rawIoctl(sys, IOMMU_HWPT_INVALIDATE, iommu_hwpt_invalidate.encode({ size: 32, ...v }));
    expect(inv({ __reserved: 1, hwpt_id: 99 }).errno).toBe(EOPNOTSUPP);
    expect(inv({ entry_num: 2, hwpt_id: 99 }).errno).toBe(EINVAL);
    expect(inv({ hwpt_id: 99 }).errno).toBe(ENOENT);
    const r = inv({ hwpt_id: id, entry_num: 3, entry_len: 8, data_uptr: 0x1000n });
    expect(r.errno).toBe(EINVAL);
    expect(iommu_hwpt_invalidate.decode(r.buf).entry_num).toBe(0);
  });

  it("VIOMMU_ALLOC: flags or default type EOPNOTSUPP, unknown device ENOENT; VDEVICE_ALLOC ENOENT", () => {
    const sys = createSystem();
    const v = (f: Record<string, number>) =>
      rawIoctl(sys, IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc.encode({ size: 40, ...f })).errno;
    expect(v({ type: 1, flags: 1 })).toBe(EOPNOTSUPP);
    expect(v({ type: 0, dev_id: 5 })).toBe(EOPNOTSUPP);
    expect(v({ type: 1, dev_id: 5 })).toBe(ENOENT);
    const d = rawIoctl(
      sys,
      IOMMU_VDEVICE_ALLOC,
      iommu_vdevice_alloc.encode({ size: 24, viommu_id: 1 }),
    );
    expect(d.errno).toBe(ENOENT);
  });
});

describe("copy back", () => {
  it("writes min(size, sizeof) bytes and echoes the IN fields", () => {
    const sys = createSystem();
    const buf = new Uint8Array(20).fill(0);
    iommu_ioas_alloc.set(buf, "size", 20);
    const r = rawIoctl(sys, IOMMU_IOAS_ALLOC, buf);
    expect(r.ret).toBe(0);
    expect(iommu_ioas_alloc.decode(r.buf)).toEqual({ size: 20, flags: 0, out_ioas_id: 1 });
    expect([...r.buf.subarray(12)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("an object whose id cannot be copied back is destroyed and its id stays free", () => {
    const sys = createSystem();
    const { libc } = sys;
    const mfd = libc.memfdCreate("ro", 0);
    libc.ftruncate(mfd, 4096);
    const rw = libc.mmap(0n, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    const ro = libc.mmap(0n, 4096, PROT_READ, MAP_SHARED, mfd, 0);
    libc.poke(rw, iommu_ioas_alloc.encode({ size: 12 }));
    expect(libc.ioctl(sys.fd.fd, IOMMU_IOAS_ALLOC, ro)).toBe(-1);
    expect(libc.errno).toBe(EFAULT);
    expect(sys.ctx.objectCount).toBe(0);
    expect(sys.fd.ioasAlloc()).toBe(1);
  });
});

describe("object ids", () => {
  it("are the lowest free id, reused after destroy", () => {
    const { fd } = createSystem();
    expect([fd.ioasAlloc(), fd.ioasAlloc(), fd.ioasAlloc(), fd.ioasAlloc()]).toEqual([1, 2, 3, 4]);
    fd.destroy(3);
    fd.destroy(2);
    expect(fd.ioasAlloc()).toBe(2);
    expect(fd.ioasAlloc()).toBe(3);
    expect(fd.ioasAlloc()).toBe(5);
  });

  it("destroy: ENOENT twice, EBUSY while referenced", () => {
    const sys = createSystem();
    const id = sys.fd.ioasAlloc();
    const ioas = sys.ctx.getObject(id, 0);
    const busy = rawIoctl(sys, IOMMU_DESTROY, iommu_destroy.encode({ size: 8, id }));
    expect(busy.errno).toBe(EBUSY);
    sys.ctx.putObject(ioas);
    sys.fd.destroy(id);
    const again = rawIoctl(sys, IOMMU_DESTROY, iommu_destroy.encode({ size: 8, id }));
    expect(again.errno).toBe(ENOENT);
  });

  it("closing the file destroys every object", () => {
    const sys = createSystem();
    sys.fd.ioasAlloc();
    sys.fd.ioasAlloc();
    sys.fd.close();
    expect(sys.ctx.objectCount).toBe(0);
  });
});
