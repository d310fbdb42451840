/**
 * Where page requests go and who answers them (drivers/iommu/iommufd/eventq.c:
 * iommufd_fault_iopf_handler, iommufd_fault_fops_read, iommufd_auto_response_faults,
 * iommufd_fault_destroy; drivers/iommu/io-pgfault.c for the PASID lookup), with a driver that
 * attaches PASIDs and nests: per-device and per-PASID answers, whole groups per read, the
 * guest-owned PASID table, and the FAULT_QUEUE_ALLOC failure paths.
 */
import { EFAULT, EMFILE, type Libc, MAP_SHARED, PAGE_SIZE, PROT_READ } from "@x/kernel";
import {
  IOMMU_DOMAIN_NESTED,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IommuDevice,
  IommuDomain,
  MOCK_IOMMUPT_DEFAULT,
  mockIommuptDomainAlloc,
} from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_FLAGS_PASID_VALID,
  type IommufdDevice,
  iommu_fault_alloc,
  iommu_hwpt_alloc,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdReportDeviceFault,
} from "../src/index.js";
import type { IommufdFault } from "../src/eventq-fault.js";
import { IOMMUFD_OBJ_FAULT } from "../src/main.js";
import { TestIommu, createSystem, rawIoctl, snapshot } from "./ioctl-helpers.js";

const DATA = 0x77;

/** A driver that attaches PASIDs and nests; `userPasidTable` as given. */
class PasidIommu extends TestIommu {
  constructor(
    kernel: ConstructorParameters<typeof TestIommu>[0],
    readonly userPasidTable: boolean,
  ) {
    super(kernel, "pasid-iommu");
  }

  override domainAllocPaging(_dev: IommuDevice, _flags: number): IommuDomain {
    const d = mockIommuptDomainAlloc(MOCK_IOMMUPT_DEFAULT, { faults: this.kernel, priv: this });
    this.domains.push(d);
    return d;
  }

  domainAllocNested(_dev: IommuDevice, parent: IommuDomain): IommuDomain {
    return new IommuDomain({
      type: IOMMU_DOMAIN_NESTED,
      parent,
      geometry: { ...parent.geometry },
      pgsizeBitmap: 0n,
      ops: {},
      priv: this,
    });
  }

  setDevPasid(): void {}
}

const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);

const response = (cookie: number, code: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, cookie, true);
  new DataView(b.buffer).setUint32(4, code, true);
  return b;
};

function request(grpid: number, pasid?: number) {
  return {
    flags:
      IOMMU_PGFAULT_FLAGS_LAST_PAGE | (pasid === undefined ? 0 : IOMMU_PGFAULT_FLAGS_PASID_VALID),
    pasid: pasid ?? 0,
    grpid,
    perm: 1,
    addr: 0x1000n * BigInt(grpid),
  };
}

function setup(userPasidTable = false) {
  const sys = createSystem();
  const iommu = new PasidIommu(sys.kernel, userPasidTable);
  const ioas = sys.fd.ioasAlloc();
  const r = rawIoctl(sys, IOMMU_FAULT_QUEUE_ALLOC, iommu_fault_alloc.encode({ size: 16 }));
  const { out_fault_id: faultId, out_fault_fd: faultFd } = iommu_fault_alloc.decode(r.buf);
  const fault = sys.ctx.getObject<IommufdFault>(faultId, IOMMUFD_OBJ_FAULT);
  sys.ctx.putObject(fault);
  const device = (name: string) => {
    const dev = new IommuDevice(name, iommu);
    dev.maxPasids = 1 << 20;
    return iommufdDeviceBind(sys.ctx, dev);
  };
  /** A paging HWPT (by default with PASID support) reporting to the queue. */
  const faultHwpt = (idev: IommufdDevice, flags = IOMMU_HWPT_ALLOC_PASID) =>
    hwptAllocWithFault(sys, idev.id, ioas, flags, faultId);
  /** Groups read back: [device id, pasid, grpid, cookie]. */
  const read = (len: number) => {
    const buf = new Uint8Array(len);
    const n = sys.libc.read(faultFd, buf);
    const v = new DataView(buf.buffer);
    const out: number[][] = [];
    for (let off = 0; off < n; off += 48)
      out.push([
        v.getUint32(off + 4, true),
        v.getUint32(off + 8, true),
        v.getUint32(off + 12, true),
        v.getUint32(off + 36, true),
      ]);
    return out;
  };
  const write = (cookie: number) =>
    sys.libc.write(faultFd, response(cookie, IOMMUFD_PAGE_RESP_SUCCESS));
  return { sys, iommu, ioas, faultId, faultFd, fault, device, faultHwpt, read, write };
}

function hwptAllocWithFault(
  sys: ReturnType<typeof createSystem>,
  devId: number,
  ptId: number,
  flags: number,
  faultId: number,
  data?: Uint8Array,
): number {
  const uptr = data ? sys.libc.malloc(data.length) : 0n;
  if (data) sys.libc.poke(uptr, data);
  return sys.fd.call(IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, {
    flags: flags | IOMMU_HWPT_FAULT_ID_VALID,
    dev_id: devId,
    pt_id: ptId,
    fault_id: faultId,
    data_type: data ? DATA : 0,
    data_len: data?.length ?? 0,
    data_uptr: uptr,
  }).out.out_hwpt_id;
}

describe("page requests and their answers", () => {
  it("a read takes whole groups only: what does not fit stays queued", () => {
    const t = setup();
    const d = t.device("d");
    iommufdDeviceAttach(d, t.faultHwpt(d));
    iommufdReportDeviceFault(d, request(1));
    iommufdReportDeviceFault(d, request(2));
    expect(t.read(48).map((g) => g[2])).toEqual([1]);
    expect(t.read(96).map((g) => g[2])).toEqual([2]);
  });

  it("a PASID's requests carry the PASID and go to the HWPT attached at it; detaching it answers only those", () => {
    const t = setup();
    const d = t.device("d");
    const h = t.faultHwpt(d);
    iommufdDeviceAttach(d, h);
    iommufdDeviceAttach(d, h, 5);
    iommufdReportDeviceFault(d, request(1, 5));
    iommufdReportDeviceFault(d, request(2));
    // A PASID with nothing attached: the request is dropped.
    iommufdReportDeviceFault(d, request(3, 6));
    expect(t.read(480)).toEqual([
      [d.id, 5, 1, 1],
      [d.id, 0, 2, 2],
    ]);
    iommufdReportDeviceFault(d, request(4, 5));
    iommufdReportDeviceFault(d, request(5));
    iommufdDeviceDetach(d, 5);
    // The PASID's groups, read (cookie 1) or not (grpid 4), were answered; the RID's were not.
    expect(t.write(1)).toBe(-1);
    expect(t.write(2)).toBe(8);
    expect(t.read(480).map((g) => g[2])).toEqual([5]);
  });

  it("detaching one device answers its groups only, read or not", () => {
    const t = setup();
    const a = t.device("a");
    const b = t.device("b");
    const h = t.faultHwpt(a);
    iommufdDeviceAttach(a, h);
    iommufdDeviceAttach(b, h);
    iommufdReportDeviceFault(a, request(1));
    iommufdReportDeviceFault(b, request(2));
    expect(t.read(96).map((g) => [g[0], g[3]])).toEqual([
      [a.id, 1],
      [b.id, 2],
    ]);
    iommufdReportDeviceFault(b, request(3));
    iommufdReportDeviceFault(a, request(4));
    iommufdDeviceDetach(a);
    expect(t.write(1)).toBe(-1);
    expect(t.write(2)).toBe(8);
    expect(t.read(480).map((g) => [g[0], g[2]])).toEqual([[b.id, 3]]);
  });

  it("destroying the FAULT object answers every group still on it INVALID", () => {
    const t = setup();
    const d = t.device("d");
    const h = t.faultHwpt(d);
    const other = t.sys.fd.hwptAlloc({ devId: d.id, ptId: t.ioas });
    iommufdDeviceAttach(d, h);
    iommufdReportDeviceFault(d, request(1));
    expect(t.read(48)).toHaveLength(1);
    iommufdReportDeviceFault(d, request(2));
    const groups = [t.fault.response.get(1)!, t.fault.deliver[0]!];
    // A replace answers from the new HWPT's queue (it has none), so both stay on this one.
    iommufdDeviceReplace(d, other);
    expect(groups.map((g) => g.code)).toEqual([undefined, undefined]);
    t.sys.fd.destroy(h);
    expect(t.sys.libc.close(t.faultFd)).toBe(0);
    t.sys.fd.destroy(t.faultId);
    expect(groups.map((g) => g.code)).toEqual([
      IOMMUFD_PAGE_RESP_INVALID,
      IOMMUFD_PAGE_RESP_INVALID,
    ]);
  });
});

describe("a guest-owned PASID table (ops->user_pasid_table)", () => {
  function nestedRid(t: ReturnType<typeof setup>, d: IommufdDevice) {
    const parent = t.sys.fd.hwptAlloc({
      devId: d.id,
      ptId: t.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    return hwptAllocWithFault(t.sys, d.id, parent, 0, t.faultId, u32(1));
  }

  it("a PASID with no attachment of its own reports to the nested HWPT of the RID", () => {
    const t = setup(true);
    const d = t.device("d");
    iommufdDeviceAttach(d, nestedRid(t, d));
    iommufdReportDeviceFault(d, request(1, 7));
    // The record keeps the request's PASID; the group belongs to the RID's attachment.
    expect(t.read(48)).toEqual([[d.id, 7, 1, 1]]);
    iommufdReportDeviceFault(d, request(2, 7));
    iommufdDeviceDetach(d);
    expect(t.write(1)).toBe(-1);
    expect(t.read(48)).toEqual([]);
  });

  it("a PASID attached on its own keeps its requests; with nothing attached they are dropped", () => {
    const t = setup(true);
    const d = t.device("d");
    iommufdReportDeviceFault(d, request(1, 7));
    expect(t.read(48)).toEqual([]);
    const parent = t.sys.fd.hwptAlloc({
      devId: d.id,
      ptId: t.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    iommufdDeviceAttach(
      d,
      hwptAllocWithFault(t.sys, d.id, parent, IOMMU_HWPT_ALLOC_PASID, t.faultId, u32(1)),
    );
    iommufdDeviceAttach(d, t.faultHwpt(d), 7);
    iommufdReportDeviceFault(d, request(2, 7));
    iommufdReportDeviceFault(d, request(3, 8));
    // PASID 7's own HWPT takes its request; PASID 8 falls back to the RID's nested HWPT.
    iommufdDeviceDetach(d, 7);
    expect(t.read(480)).toEqual([[d.id, 8, 3, 1]]);
  });

  it("not without the driver's user_pasid_table, nor when the RID's HWPT is a paging one", () => {
    const t = setup(false);
    const d = t.device("d");
    iommufdDeviceAttach(d, nestedRid(t, d));
    iommufdReportDeviceFault(d, request(1, 7));
    expect(t.read(48)).toEqual([]);
    const u = setup(true);
    const e = u.device("e");
    iommufdDeviceAttach(e, u.faultHwpt(e, 0));
    iommufdReportDeviceFault(e, request(1, 7));
    expect(u.read(48)).toEqual([]);
    // The RID's own requests still arrive.
    iommufdReportDeviceFault(e, request(2));
    expect(u.read(48).map((g) => g[2])).toEqual([2]);
  });
});

describe("IOMMU_FAULT_QUEUE_ALLOC failures", () => {
  /** `bytes` in a read-only shared mapping of a memfd: copy_from_user works, copy_to_user faults. */
  function readOnly(libc: Libc, bytes: Uint8Array): bigint {
    const mfd = libc.memfdCreate("ro-struct", 0);
    expect(libc.ftruncate(mfd, PAGE_SIZE)).toBe(0);
    expect(libc.pwrite(mfd, bytes, 0)).toBe(bytes.length);
    const at = libc.mmap(0n, PAGE_SIZE, PROT_READ, MAP_SHARED, mfd, 0);
    libc.close(mfd);
    return at;
  }

  it("no free descriptor (EMFILE) or a struct that cannot be written back (EFAULT): nothing left", () => {
    const sys = createSystem();
    const { libc } = sys;
    const before = snapshot(sys);
    const next = libc.dup(sys.fd.fd);
    libc.close(next);
    const files = libc.process.files;
    const max = files.maxFds;
    files.maxFds = next;
    const arg = iommu_fault_alloc.encode({ size: 16 });
    expect(rawIoctl(sys, IOMMU_FAULT_QUEUE_ALLOC, arg).errno).toBe(EMFILE);
    files.maxFds = max;
    expect(snapshot(sys)).toBe(before);
    const ro = readOnly(libc, arg);
    const refs = sys.ctx.file.refcount;
    const mid = snapshot(sys);
    expect(rawIoctl(sys, IOMMU_FAULT_QUEUE_ALLOC, arg, ro).errno).toBe(EFAULT);
    expect(snapshot(sys)).toBe(mid);
    expect(sys.ctx.file.refcount).toBe(refs);
    const probe = libc.dup(sys.fd.fd);
    expect(probe).toBe(next);
    libc.close(probe);
  });
});
