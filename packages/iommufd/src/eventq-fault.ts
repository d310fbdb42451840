/**
 * Fault queues (the IOPF half of drivers/iommu/iommufd/eventq.c): IOMMU_FAULT_QUEUE_ALLOC makes
 * a FAULT object and its file. A HWPT allocated with IOMMU_HWPT_FAULT_ID_VALID sends the page
 * requests of the devices attached to it there; user space reads them as struct
 * iommu_hwpt_pgfault records (one group at a time, each group under one cookie) and answers
 * with struct iommu_hwpt_page_response. Groups still unanswered when their device leaves the
 * HWPT (detach, replace) or when the FAULT object goes are answered IOMMUFD_PAGE_RESP_INVALID.
 *
 * Decision: the model's devices do not wait for page responses, so answering a group only
 * retires it; a page request always arrives as one complete group (the selftest's requests
 * carry LAST_PAGE).
 */
import {
  EINVAL,
  EOPNOTSUPP,
  ESPIPE,
  type FileOperations,
  O_CLOEXEC,
  O_RDWR,
  POLLIN,
  POLLOUT,
  WARN_ON,
  fail,
} from "@x/kernel";
import { IOMMU_NO_PASID } from "@x/iommu-pgtable";
import type { IommufdDevice } from "./device.js";
import type { IommufdHwpt } from "./hw-pagetable-nested.js";
import { driverOf } from "./iommu-priv.js";
import {
  IOMMUFD_OBJ_FAULT,
  IOMMUFD_OBJ_HWPT_NESTED,
  type IommufdCtx,
  IommufdObject,
  type IommufdUcmd,
  ucmdRespond,
} from "./main.js";
import type { iommu_fault_alloc } from "./uapi.js";

export const IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0;
export const IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1;
export const IOMMUFD_PAGE_RESP_SUCCESS = 0;
export const IOMMUFD_PAGE_RESP_INVALID = 1;
/** sizeof(struct iommu_hwpt_pgfault) */
export const IOMMU_HWPT_PGFAULT_SIZE = 48;
/** sizeof(struct iommu_hwpt_page_response) */
export const IOMMU_HWPT_PAGE_RESPONSE_SIZE = 8;

/** One page request (struct iommu_fault_page_request). */
export interface IopfFault {
  readonly flags: number;
  readonly pasid: number;
  readonly grpid: number;
  readonly perm: number;
  readonly addr: bigint;
}

/** struct iopf_group: the requests of one device and PASID, answered together. */
interface IopfGroup {
  readonly idev: IommufdDevice;
  /** The attachment the group came through (IOMMU_NO_PASID for the RID). */
  readonly attachPasid: number;
  readonly faults: readonly IopfFault[];
  /** What the device was told, once answered. */
  code?: number;
}

/** struct iommufd_fault */
export class IommufdFault extends IommufdObject {
  readonly type = IOMMUFD_OBJ_FAULT;
  /** Groups not read yet, oldest first. */
  readonly deliver: IopfGroup[] = [];
  /** Groups read and awaiting a response, by cookie. */
  readonly response = new Map<number, IopfGroup>();

  constructor(readonly ctx: IommufdCtx) {
    super();
  }

  /** iommufd_fault_destroy: every group left is answered INVALID. */
  destroy(): void {
    for (const g of [...this.deliver, ...this.response.values()])
      respond(g, IOMMUFD_PAGE_RESP_INVALID);
    this.deliver.length = 0;
    this.response.clear();
  }

  /** xa_alloc with XA_FLAGS_ALLOC1: the lowest free cookie from 1. */
  private allocCookie(): number {
    let cookie = 1;
    while (this.response.has(cookie)) cookie++;
    return cookie;
  }

  /** @see iommufd_fault_fops_read */
  read(len: number, pos: bigint): Uint8Array {
    if (pos || len % IOMMU_HWPT_PGFAULT_SIZE) fail(ESPIPE, "fault read offset or size");
    const out = new Uint8Array(len);
    const view = new DataView(out.buffer);
    let done = 0;
    while (this.deliver.length) {
      const group = this.deliver[0]!;
      if (done + group.faults.length * IOMMU_HWPT_PGFAULT_SIZE > len) break;
      this.deliver.shift();
      const cookie = this.allocCookie();
      this.response.set(cookie, group);
      for (const f of group.faults) {
        view.setUint32(done, f.flags, true);
        view.setUint32(done + 4, group.idev.id, true);
        view.setUint32(done + 8, f.pasid, true);
        view.setUint32(done + 12, f.grpid, true);
        view.setUint32(done + 16, f.perm, true);
        view.setBigUint64(done + 24, f.addr, true);
        view.setUint32(done + 36, cookie, true);
        done += IOMMU_HWPT_PGFAULT_SIZE;
      }
    }
    return out.subarray(0, done);
  }

  /**
   * @see iommufd_fault_fops_write: responses in order; a bad code or an unknown cookie is
   * EINVAL unless earlier responses were consumed, whose bytes are then returned.
   */
  write(data: Uint8Array, pos: bigint): number {
    if (pos || data.length % IOMMU_HWPT_PAGE_RESPONSE_SIZE)
      fail(ESPIPE, "fault write offset or size");
    const view = new DataView(data.buffer, data.byteOffset, data.length);
    let done = 0;
    while (done < data.length) {
      const cookie = view.getUint32(done, true);
      const code = view.getUint32(done + 4, true);
      const group = this.response.get(cookie);
      if ((code !== IOMMUFD_PAGE_RESP_SUCCESS && code !== IOMMUFD_PAGE_RESP_INVALID) || !group) {
        if (done) break;
        fail(EINVAL, `response cookie ${cookie} code ${code}`);
      }
      this.response.delete(cookie);
      respond(group, code);
      done += IOMMU_HWPT_PAGE_RESPONSE_SIZE;
    }
    return done;
  }

  /**
   * iommufd_auto_response_faults: the groups of `idev`'s attachment at `pasid`, read or not,
   * answered INVALID.
   */
  autoResponse(idev: IommufdDevice, pasid: number): void {
    const mine = (g: IopfGroup) => g.idev === idev && g.attachPasid === pasid;
    for (let i = this.deliver.length - 1; i >= 0; i--) {
      const g = this.deliver[i]!;
      if (!mine(g)) continue;
      this.deliver.splice(i, 1);
      respond(g, IOMMUFD_PAGE_RESP_INVALID);
    }
    for (const [cookie, g] of [...this.response]) {
      if (!mine(g)) continue;
      this.response.delete(cookie);
      respond(g, IOMMUFD_PAGE_RESP_INVALID);
    }
  }
}

/** iopf_group_response: the answer goes to the device, which in the model waits for none. */
function respond(group: IopfGroup, code: number): void {
  WARN_ON(group.code !== undefined, "page request group answered twice");
  group.code = code;
}

const faultFops: FileOperations = {
  name: "[iommufd-pgfault]",
  keepsPos: true,
  read: (file, len, pos) => (file.priv as IommufdFault).read(len, pos),
  write: (file, data, pos) => (file.priv as IommufdFault).write(data, pos),
  /** @see iommufd_fault_fops_poll: always writable, readable with a group queued. */
  poll: (file) => POLLOUT | ((file.priv as IommufdFault).deliver.length ? POLLIN : 0),
  /** @see iommufd_fault_fops_release */
  release(file) {
    const fault = file.priv as IommufdFault;
    fault.users--;
    fault.ctx.file.put();
  },
};

/** iommufd_fault_alloc (IOMMU_FAULT_QUEUE_ALLOC): EOPNOTSUPP for any flag; an O_CLOEXEC fd. */
export function iommufdFaultAlloc(ucmd: IommufdUcmd<(typeof iommu_fault_alloc)["fields"]>): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags) fail(EOPNOTSUPP, "fault queue flags");
  const fault = ctx.objectAlloc(new IommufdFault(ctx));
  try {
    const files = ctx.kernel.current.process.files;
    const fdno = files.peekUnused();
    const file = ctx.kernel.anonFile(faultFops, fault, O_RDWR);
    fault.users++;
    ctx.file.get();
    try {
      cmd.out_fault_id = fault.id;
      cmd.out_fault_fd = fdno;
      ucmdRespond(ucmd);
    } catch (e) {
      file.put();
      throw e;
    }
    files.install(file, O_CLOEXEC);
  } catch (e) {
    ctx.objectAbortAndDestroy(fault);
    throw e;
  }
  ctx.objectFinalize(fault);
  return 0;
}

/**
 * A page request from `idev` reaches the FAULT object of the HWPT attached at the request's
 * PASID (the RID without PASID_VALID); without one it is dropped, unless the driver lets the
 * guest own the PASID table: then the nested HWPT of the RID takes it.
 * @see iommu_report_device_fault, iommufd_fault_iopf_handler
 */
export function iommufdReportDeviceFault(idev: IommufdDevice, fault: IopfFault): void {
  let pasid = fault.flags & IOMMU_PGFAULT_FLAGS_PASID_VALID ? fault.pasid : IOMMU_NO_PASID;
  let hwpt: IommufdHwpt | undefined = idev.pasidAttach.get(pasid);
  if (!hwpt && pasid !== IOMMU_NO_PASID && driverOf(idev.dev).userPasidTable) {
    const rid = idev.pasidAttach.get(IOMMU_NO_PASID);
    if (rid?.type === IOMMUFD_OBJ_HWPT_NESTED) {
      hwpt = rid;
      pasid = IOMMU_NO_PASID;
    }
  }
  hwpt?.fault?.deliver.push({ idev, attachPasid: pasid, faults: [fault] });
}
