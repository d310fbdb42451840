/**
 * vEVENTQs (IOMMU_VEVENTQ_ALLOC): a vIOMMU's queue of events of one type, read by user space
 * from its own file descriptor.
 *
 * Each record is an 8-byte header `{u32 flags; u32 sequence}` and, for a real event, the
 * driver's payload. Sequence numbers count up modulo 2^31, one per record queued. When the
 * queue holds `veventq_depth` events, a new one is replaced by the single LOST_EVENTS record
 * (header only) at the tail; a real event queued behind it takes its place again, the gap in
 * sequence numbers showing what was lost. read() hands out whole records only.
 *
 * The open file holds a reference on the vEVENTQ (IOMMU_DESTROY is EBUSY until it is closed)
 * and on the iommufd context.
 *
 * @see drivers/iommu/iommufd/eventq.c, drivers/iommu/iommufd/driver.c (report_event)
 */
import {
  EEXIST,
  EINVAL,
  EOPNOTSUPP,
  type File,
  type FileOperations,
  O_CLOEXEC,
  O_RDWR,
  POLLIN,
  fail,
} from "@x/kernel";
import {
  IOMMUFD_OBJ_VEVENTQ,
  IOMMUFD_OBJ_VIOMMU,
  type IommufdCtx,
  IommufdObject,
  type IommufdUcmd,
  ucmdRespond,
} from "./main.js";
import type { iommu_veventq_alloc } from "./uapi.js";
import type { IommufdViommu } from "./viommu.js";

const IOMMU_VEVENTQ_TYPE_DEFAULT = 0;
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 << 0;
/** The deepest queue VEVENTQ_ALLOC accepts (the selftest's VEVENTQ_MAX_DEPTH). */
export const IOMMU_VEVENTQ_MAX_DEPTH = 1 << 19;
/** sizeof(struct iommufd_vevent_header). */
const VEVENT_HEADER_SIZE = 8;
const POLLRDNORM = 0x40;
const INT_MAX = 0x7fff_ffff;

/** One queued record: a real event with its payload, or the LOST_EVENTS record. */
interface Vevent {
  sequence: number;
  readonly data: Uint8Array | undefined;
}

export class IommufdVeventq extends IommufdObject {
  readonly type = IOMMUFD_OBJ_VEVENTQ;
  /** Records in delivery order. */
  private readonly deliver: Vevent[] = [];
  /** The one LOST_EVENTS record (lost_events_header). */
  private readonly lost: Vevent = { sequence: 0, data: undefined };
  /** Real events queued (the LOST_EVENTS record does not count). */
  numEvents = 0;
  private sequence = 0;

  constructor(
    readonly viommu: IommufdViommu,
    readonly eventType: number,
    readonly depth: number,
  ) {
    super();
  }

  /** iommufd_veventq_destroy: queued events are dropped, the vIOMMU reference goes. */
  destroy(): void {
    this.deliver.length = 0;
    this.numEvents = 0;
    const list = this.viommu.veventqs;
    list.splice(list.indexOf(this), 1);
    this.viommu.users--;
  }

  /** Queue one event, or the LOST_EVENTS record when the queue is full. @see iommufd_vevent_handler */
  report(data: Uint8Array): void {
    let node: Vevent;
    if (this.numEvents === this.depth) {
      node = this.lost;
    } else {
      node = { sequence: 0, data: data.slice() };
      this.numEvents++;
    }
    if (this.deliver.at(-1) === this.lost) this.deliver.pop();
    node.sequence = this.sequence;
    this.sequence = (this.sequence + 1) & INT_MAX;
    this.deliver.push(node);
  }

  get ctx(): IommufdCtx {
    return this.viommu.ctx;
  }

  get pending(): boolean {
    return this.deliver.length !== 0;
  }

  /**
   * iommufd_veventq_fops_read: as many whole records as fit in `count` bytes. Decision: a count
   * below one header, or a queue whose first record does not fit, is EINVAL (what the selftest
   * at the targeted kernel expects); an empty queue reads 0 bytes.
   */
  read(count: number): Uint8Array {
    if (count < VEVENT_HEADER_SIZE) fail(EINVAL, "read count below a header");
    const out: number[] = [];
    while (this.deliver.length) {
      const node = this.deliver[0]!;
      const size = VEVENT_HEADER_SIZE + (node.data?.length ?? 0);
      if (count - out.length < size) break;
      const rec = new Uint8Array(size);
      const dv = new DataView(rec.buffer);
      dv.setUint32(0, node === this.lost ? IOMMU_VEVENTQ_FLAG_LOST_EVENTS : 0, true);
      dv.setUint32(4, node.sequence, true);
      if (node.data) rec.set(node.data, VEVENT_HEADER_SIZE);
      out.push(...rec);
      this.deliver.shift();
      if (node !== this.lost) this.numEvents--;
    }
    if (!out.length && this.deliver.length) fail(EINVAL, "first record does not fit");
    return Uint8Array.from(out);
  }
}

const veventqFops: FileOperations = {
  name: "[iommufd-viommu-event]",
  read: (file, len) => (file as File<IommufdVeventq>).priv.read(len),
  poll: (file) => ((file as File<IommufdVeventq>).priv.pending ? POLLIN | POLLRDNORM : 0),
  release: (file) => {
    const veventq = (file as File<IommufdVeventq>).priv;
    veventq.users--;
    veventq.ctx.file.put();
  },
};

/** iommufd_veventq_alloc */
export function iommufdVeventqAlloc(
  ucmd: IommufdUcmd<(typeof iommu_veventq_alloc)["fields"]>,
): number {
  const { ctx, cmd } = ucmd;
  if (cmd.flags || cmd.__reserved || cmd.type === IOMMU_VEVENTQ_TYPE_DEFAULT)
    fail(EOPNOTSUPP, "flags/__reserved/type");
  if (!cmd.veventq_depth || cmd.veventq_depth > IOMMU_VEVENTQ_MAX_DEPTH)
    fail(EINVAL, "veventq_depth");
  return ctx.withObjectOrErrno<IommufdViommu>(cmd.viommu_id, IOMMUFD_OBJ_VIOMMU, (viommu) => {
    if (viommu.veventqs.some((q) => q.eventType === cmd.type)) fail(EEXIST, "vEVENTQ of this type");
    const veventq = ctx.objectAlloc(new IommufdVeventq(viommu, cmd.type, cmd.veventq_depth));
    viommu.users++;
    viommu.veventqs.push(veventq);
    const files = ctx.kernel.current.process.files;
    let file: File<IommufdVeventq> | undefined;
    try {
      const fd = files.peekUnused();
      file = ctx.kernel.anonFile(veventqFops, veventq, O_RDWR);
      veventq.users++;
      ctx.file.get();
      cmd.out_veventq_id = veventq.id;
      cmd.out_veventq_fd = fd;
      ucmdRespond(ucmd);
    } catch (e) {
      if (file) file.put();
      ctx.objectAbortAndDestroy(veventq);
      throw e;
    }
    ctx.objectFinalize(veventq);
    files.install(file, O_CLOEXEC);
    return 0;
  });
}

/**
 * iommufd_viommu_report_event: queue `data` on the vIOMMU's vEVENTQ of `type` (EOPNOTSUPP when
 * it has none).
 */
export function iommufdViommuReportEvent(
  viommu: IommufdViommu,
  type: number,
  data: Uint8Array,
): void {
  const veventq = viommu.veventqs.find((q) => q.eventType === type);
  if (!veventq) fail(EOPNOTSUPP, "no vEVENTQ of this type");
  veventq.report(data);
}
