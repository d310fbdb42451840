/**
 * vEVENTQs (drivers/iommu/iommufd/eventq.c: iommufd_veventq_alloc, iommufd_vevent_handler,
 * iommufd_veventq_fops_read / poll / release) on an SMMUv3 vIOMMU: the allocation checks in
 * the kernel's order, the LOST_EVENTS record of a full queue, sequence numbers, and the
 * references the queue's file holds.
 */
import {
  EBUSY,
  EEXIST,
  EFAULT,
  EINVAL,
  EMFILE,
  ENOENT,
  EOPNOTSUPP,
  F_GETFD,
  FD_CLOEXEC,
  type Libc,
  MAP_SHARED,
  PAGE_SIZE,
  POLLIN,
  POLLOUT,
  PROT_READ,
} from "@x/kernel";
import { IOMMU_HWPT_ALLOC_NEST_PARENT, IommuDevice } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  ArmSmmuV3IommufdDriver,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VEVENTQ_MAX_DEPTH,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  type IommufdViommu,
  iommu_veventq_alloc,
  iommufdDeviceBind,
  iommufdViommuReportEvent,
} from "../src/index.js";
import { IOMMUFD_OBJ_VIOMMU } from "../src/main.js";
import { createSystem, errnoOf, rawIoctl, snapshot } from "./ioctl-helpers.js";

const TYPE = IOMMU_VEVENTQ_TYPE_ARM_SMMUV3;

/** `bytes` in a read-only shared mapping of a memfd: copy_from_user works, copy_to_user faults. */
function readOnly(libc: Libc, bytes: Uint8Array): bigint {
  const mfd = libc.memfdCreate("ro-struct", 0);
  expect(libc.ftruncate(mfd, PAGE_SIZE)).toBe(0);
  expect(libc.pwrite(mfd, bytes, 0)).toBe(bytes.length);
  const at = libc.mmap(0n, PAGE_SIZE, PROT_READ, MAP_SHARED, mfd, 0);
  libc.close(mfd);
  return at;
}

function setup() {
  const sys = createSystem();
  const smmu = new ArmSmmuV3IommufdDriver(sys.kernel);
  const idev = iommufdDeviceBind(sys.ctx, new IommuDevice("nic", smmu));
  const ioas = sys.fd.ioasAlloc();
  const s2 = sys.fd.hwptAlloc({ devId: idev.id, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const viommuId = sys.fd.viommuAlloc({
    devId: idev.id,
    hwptId: s2,
    type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  });
  const viommu = sys.ctx.getObject<IommufdViommu>(viommuId, IOMMUFD_OBJ_VIOMMU);
  sys.ctx.putObject(viommu);
  const encode = (a: {
    depth: number;
    type?: number;
    flags?: number;
    reserved?: number;
    id?: number;
  }) =>
    iommu_veventq_alloc.encode({
      size: iommu_veventq_alloc.size,
      flags: a.flags ?? 0,
      viommu_id: a.id ?? viommuId,
      type: a.type ?? TYPE,
      veventq_depth: a.depth,
      __reserved: a.reserved ?? 0,
    });
  const alloc = (a: Parameters<typeof encode>[0], arg?: bigint) =>
    rawIoctl(sys, IOMMU_VEVENTQ_ALLOC, encode(a), arg);
  /** The event `n`: 4 bytes holding n. */
  const report = (n: number) => {
    const data = new Uint8Array(4);
    new DataView(data.buffer).setUint32(0, n, true);
    iommufdViommuReportEvent(viommu, TYPE, data);
  };
  return { sys, viommu, viommuId, s2, encode, alloc, report };
}

/** The records of `bytes`: [flags, sequence, payload word or undefined]. */
function records(bytes: Uint8Array): Array<[number, number, number | undefined]> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out: Array<[number, number, number | undefined]> = [];
  for (let off = 0; off < bytes.length; ) {
    const flags = v.getUint32(off, true);
    const seq = v.getUint32(off + 4, true);
    if (flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) {
      out.push([flags, seq, undefined]);
      off += 8;
    } else {
      out.push([flags, seq, v.getUint32(off + 8, true)]);
      off += 12;
    }
  }
  return out;
}

function readAll(sys: ReturnType<typeof setup>["sys"], fd: number, count = 4096): Uint8Array {
  const buf = new Uint8Array(count);
  const n = sys.libc.read(fd, buf);
  expect(n).toBeGreaterThanOrEqual(0);
  return buf.subarray(0, n);
}

describe("IOMMU_VEVENTQ_ALLOC", () => {
  it("flags, __reserved and type 0 are EOPNOTSUPP, then the depth, before the vIOMMU lookup", () => {
    const t = setup();
    const before = snapshot(t.sys);
    const none = 1 << 30;
    const errnoOfAlloc = (a: Parameters<typeof t.alloc>[0]) => t.alloc(a).errno;
    expect(errnoOfAlloc({ depth: 0, flags: 1, id: none })).toBe(EOPNOTSUPP);
    expect(errnoOfAlloc({ depth: 0, reserved: 1, id: none })).toBe(EOPNOTSUPP);
    expect(errnoOfAlloc({ depth: 0, type: 0, id: none })).toBe(EOPNOTSUPP);
    expect(errnoOfAlloc({ depth: 0, id: none })).toBe(EINVAL);
    expect(errnoOfAlloc({ depth: IOMMU_VEVENTQ_MAX_DEPTH + 1, id: none })).toBe(EINVAL);
    expect(IOMMU_VEVENTQ_MAX_DEPTH).toBe(1 << 19);
    expect(errnoOfAlloc({ depth: IOMMU_VEVENTQ_MAX_DEPTH, id: none })).toBe(ENOENT);
    expect(errnoOfAlloc({ depth: 1, id: t.s2 })).toBe(ENOENT);
    expect(snapshot(t.sys)).toBe(before);
  });

  it("one vEVENTQ per type: a second is EEXIST and leaves nothing", () => {
    const t = setup();
    const first = t.alloc({ depth: 4 });
    expect(first.ret).toBe(0);
    const before = snapshot(t.sys);
    expect(t.alloc({ depth: 4 }).errno).toBe(EEXIST);
    expect(snapshot(t.sys)).toBe(before);
    // Another type is its own queue.
    expect(t.alloc({ depth: 4, type: TYPE + 1 }).ret).toBe(0);
  });

  it("returns the object and an O_CLOEXEC fd; the open file holds the queue and the vIOMMU", () => {
    const t = setup();
    const r = t.alloc({ depth: 4 });
    const out = iommu_veventq_alloc.decode(r.buf);
    expect(t.sys.libc.fcntl(out.out_veventq_fd, F_GETFD)).toBe(FD_CLOEXEC);
    expect(errnoOf(() => t.sys.fd.destroy(t.viommuId))).toBe(EBUSY);
    expect(errnoOf(() => t.sys.fd.destroy(out.out_veventq_id))).toBe(EBUSY);
    expect(t.sys.libc.close(out.out_veventq_fd)).toBe(0);
    t.sys.fd.destroy(out.out_veventq_id);
    // The type is free again, and the vIOMMU has no user left.
    expect(errnoOf(() => iommufdViommuReportEvent(t.viommu, TYPE, new Uint8Array(4)))).toBe(
      EOPNOTSUPP,
    );
    t.sys.fd.destroy(t.viommuId);
  });
  it("no free descriptor (EMFILE) or a struct that cannot be written back (EFAULT): nothing left", () => {
    const t = setup();
    const { libc } = t.sys;
    const before = snapshot(t.sys);
    const files = libc.process.files;
    const max = files.maxFds;
    const next = libc.dup(t.sys.fd.fd);
    libc.close(next);
    files.maxFds = next;
    expect(t.alloc({ depth: 4 }).errno).toBe(EMFILE);
    files.maxFds = max;
    expect(snapshot(t.sys)).toBe(before);
    const arg = readOnly(libc, t.encode({ depth: 4 }));
    const ro = snapshot(t.sys);
    const ctxRefs = t.sys.ctx.file.refcount;
    expect(t.alloc({ depth: 4 }, arg).errno).toBe(EFAULT);
    expect(snapshot(t.sys)).toBe(ro);
    // The file made for the queue went with the references it took on the context, and no
    // descriptor was installed; the type is free again.
    expect(t.sys.ctx.file.refcount).toBe(ctxRefs);
    const probe = libc.dup(t.sys.fd.fd);
    expect(probe).toBe(next);
    libc.close(probe);
    expect(t.alloc({ depth: 4 }).ret).toBe(0);
    expect(t.sys.ctx.file.refcount).toBe(ctxRefs + 1);
  });
});

describe("vEVENTQ records", () => {
  it("header {flags, sequence} and payload, sequence counting up; poll readable while queued", () => {
    const t = setup();
    const { fd } = t.sys.fd.veventqAlloc({ viommuId: t.viommuId, type: TYPE, depth: 4 });
    const p = [{ fd, events: POLLIN | POLLOUT, revents: 0 }];
    expect(t.sys.libc.poll(p, 0)).toBe(0);
    t.report(10);
    t.report(11);
    expect(t.sys.libc.poll(p, 0)).toBe(1);
    expect(p[0]!.revents & POLLIN).toBe(POLLIN);
    expect(p[0]!.revents & POLLOUT).toBe(0);
    expect(records(readAll(t.sys, fd))).toEqual([
      [0, 0, 10],
      [0, 1, 11],
    ]);
    expect(readAll(t.sys, fd)).toHaveLength(0);
    expect(t.sys.libc.poll(p, 0)).toBe(0);
  });

  it("a full queue ends in one LOST_EVENTS record; a later event takes its place", () => {
    const t = setup();
    const { fd } = t.sys.fd.veventqAlloc({ viommuId: t.viommuId, type: TYPE, depth: 2 });
    for (let n = 0; n < 5; n++) t.report(n);
    // Two events, then the LOST_EVENTS header with the sequence of the last one lost.
    expect(records(readAll(t.sys, fd))).toEqual([
      [0, 0, 0],
      [0, 1, 1],
      [IOMMU_VEVENTQ_FLAG_LOST_EVENTS, 4, undefined],
    ]);
    for (let n = 5; n < 8; n++) t.report(n);
    // Room for two again: the third is lost, then reading one frees a slot for the next.
    expect(records(readAll(t.sys, fd, 12))).toEqual([[0, 5, 5]]);
    t.report(8);
    expect(records(readAll(t.sys, fd))).toEqual([
      [0, 6, 6],
      [0, 8, 8],
    ]);
  });

  it("read hands out whole records: EINVAL below a header or when the first does not fit", () => {
    const t = setup();
    const { fd } = t.sys.fd.veventqAlloc({ viommuId: t.viommuId, type: TYPE, depth: 1 });
    const { libc } = t.sys;
    expect(libc.read(fd, new Uint8Array(7))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    // An empty queue reads nothing.
    expect(libc.read(fd, new Uint8Array(8))).toBe(0);
    t.report(1);
    t.report(2);
    // 11 bytes: not the 12 of the event.
    expect(libc.read(fd, new Uint8Array(11))).toBe(-1);
    expect(libc.errno).toBe(EINVAL);
    // 12 bytes: the event, not the LOST_EVENTS record behind it.
    expect(records(readAll(t.sys, fd, 12))).toEqual([[0, 0, 1]]);
    // The LOST_EVENTS record alone fits in 8.
    expect(records(readAll(t.sys, fd, 8))).toEqual([
      [IOMMU_VEVENTQ_FLAG_LOST_EVENTS, 1, undefined],
    ]);
    t.report(3);
    expect(records(readAll(t.sys, fd))).toEqual([[0, 2, 3]]);
  });

  it("sequence numbers wrap at 2^31", () => {
    const t = setup();
    const { fd, id } = t.sys.fd.veventqAlloc({ viommuId: t.viommuId, type: TYPE, depth: 4 });
    const q = t.viommu.veventqs.find((v) => v.id === id)!;
    (q as unknown as { sequence: number }).sequence = 0x7fff_ffff;
    t.report(1);
    t.report(2);
    expect(records(readAll(t.sys, fd))).toEqual([
      [0, 0x7fff_ffff, 1],
      [0, 0, 2],
    ]);
  });

  it("IOMMU_DESTROY after close drops the events queued; a vIOMMU without the type is EOPNOTSUPP", () => {
    const t = setup();
    expect(errnoOf(() => t.report(1))).toBe(EOPNOTSUPP);
    const { fd, id } = t.sys.fd.veventqAlloc({ viommuId: t.viommuId, type: TYPE, depth: 4 });
    t.report(1);
    const q = t.viommu.veventqs[0]!;
    expect(q.numEvents).toBe(1);
    t.sys.libc.close(fd);
    t.sys.fd.destroy(id);
    expect(q.numEvents).toBe(0);
    expect(t.viommu.veventqs).toHaveLength(0);
  });
  it("the payload is copied when queued; an event of another type does not reach the queue", () => {
    const t = setup();
    const { fd } = t.sys.fd.veventqAlloc({ viommuId: t.viommuId, type: TYPE, depth: 4 });
    const data = new Uint8Array([1, 0, 0, 0]);
    iommufdViommuReportEvent(t.viommu, TYPE, data);
    data[0] = 9;
    expect(errnoOf(() => iommufdViommuReportEvent(t.viommu, TYPE + 1, data))).toBe(EOPNOTSUPP);
    expect(records(readAll(t.sys, fd))).toEqual([[0, 0, 1]]);
  });
});
