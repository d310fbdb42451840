/**
 * The typed user API: a /dev/iommu file descriptor of one user process (a `Libc`), with one
 * method per ioctl. Each method encodes its arguments into the uAPI structure's bytes, calls
 * `libc.ioctl` exactly as a C program would, and decodes the answer; so the typed layer and the
 * byte layer run the same kernel code on the same bytes. A failed call throws `KernelError`
 * with the errno the C call would have left in `errno`: the one the kernel threw (`libc.lastError`).
 *
 *   const fd = IommufdClient.open(libc);
 *   const ioasId = fd.ioasAlloc();
 *   const iova = fd.ioasMapFile({ ioasId, fd: memfd, start: 0n, length: 1n << 21n });
 */
import { EMSGSIZE, type KernelError, KernelWarning, type Libc, O_RDWR, U64_MAX } from "@x/kernel";
import {
  type Decoded,
  type FieldSpec,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  IOMMU_VIOMMU_ALLOC,
  type Struct,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_invalidate,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_change_process,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  iommu_iova_range,
  iommu_option,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_vfio_ioas,
  iommu_viommu_alloc,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  vfio_info_cap_header,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_dma_avail,
  vfio_iova_range,
} from "./uapi.js";

export interface IovaRange {
  readonly start: bigint;
  /** Inclusive. */
  readonly last: bigint;
}

/** The error of `libc`'s call that just failed: the kernel's own, with its reason. */
function failure(libc: Libc): KernelError {
  const e = libc.lastError;
  if (!e) throw new KernelWarning("a failed call left no KernelError");
  return e;
}

/** Access flags of MAP / MAP_FILE / COPY; FIXED_IOVA is added when an `iova` is given. */
export type MapAccess = number;
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

function placement(iova: bigint | undefined, flags: MapAccess): { flags: number; iova: bigint } {
  return iova === undefined
    ? { flags, iova: 0n }
    : { flags: flags | IOMMU_IOAS_MAP_FIXED_IOVA, iova };
}

export class IommufdClient {
  constructor(
    readonly libc: Libc,
    readonly fd: number,
  ) {}

  /** open("/dev/iommu", O_RDWR). */
  static open(libc: Libc, path = "/dev/iommu"): IommufdClient {
    const fd = libc.open(path, O_RDWR);
    if (fd < 0) throw failure(libc);
    return new IommufdClient(libc, fd);
  }

  close(): void {
    if (this.libc.close(this.fd) < 0) throw failure(this.libc);
  }

  /**
   * Issue `request` with `values` encoded as `struct` (its `size` defaulting to sizeof) and
   * return the decoded answer and the ioctl's return value.
   */
  call<S extends FieldSpec>(
    request: number,
    struct: Struct<S>,
    values: Partial<Decoded<S>>,
  ): { out: Decoded<S>; ret: number } {
    const buf = struct.encode(values);
    // `size` is sizeof unless given, as if `{ size: sizeof, ...values }` were encoded.
    if (!Object.hasOwn(values, "size") && "size" in struct.fields)
      struct.set(buf, "size" as keyof S & string, struct.size as never);
    const ret = this.libc.ioctl(this.fd, request, buf);
    if (ret < 0) throw failure(this.libc);
    return { out: struct.decode(buf), ret };
  }

  destroy(id: number): void {
    this.call(IOMMU_DESTROY, iommu_destroy, { id });
  }

  ioasAlloc(): number {
    return this.call(IOMMU_IOAS_ALLOC, iommu_ioas_alloc, {}).out.out_ioas_id;
  }

  /** IOAS_IOVA_RANGES: the usable ranges and the IOVA alignment (asks twice when needed). */
  ioasIovaRanges(ioasId: number): { ranges: IovaRange[]; alignment: bigint } {
    let capacity = 4;
    for (;;) {
      const arr = this.libc.malloc(capacity * iommu_iova_range.size);
      const buf = iommu_ioas_iova_ranges.encode({
        size: iommu_ioas_iova_ranges.size,
        ioas_id: ioasId,
        num_iovas: capacity,
        allowed_iovas: arr,
      });
      const ret = this.libc.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, buf);
      const out = iommu_ioas_iova_ranges.decode(buf);
      const raw = ret < 0 ? undefined : this.libc.peek(arr, out.num_iovas * iommu_iova_range.size);
      this.libc.free(arr);
      if (!raw) {
        if (this.libc.errno === EMSGSIZE && out.num_iovas > capacity) {
          capacity = out.num_iovas;
          continue;
        }
        throw failure(this.libc);
      }
      const ranges: IovaRange[] = [];
      for (let i = 0; i < out.num_iovas; i++) {
        const at = i * iommu_iova_range.size;
        ranges.push(iommu_iova_range.decode(raw.subarray(at, at + iommu_iova_range.size)));
      }
      return { ranges, alignment: out.out_iova_alignment };
    }
  }

  ioasAllowIovas(ioasId: number, ranges: readonly IovaRange[]): void {
    const arr = this.libc.malloc(Math.max(1, ranges.length) * iommu_iova_range.size);
    ranges.forEach((r, i) => {
      this.libc.poke(arr + BigInt(i * iommu_iova_range.size), iommu_iova_range.encode(r));
    });
    try {
      this.call(IOMMU_IOAS_ALLOW_IOVAS, iommu_ioas_allow_iovas, {
        ioas_id: ioasId,
        num_iovas: ranges.length,
        allowed_iovas: arr,
      });
    } finally {
      this.libc.free(arr);
    }
  }

  /** IOAS_MAP of user memory; returns the IOVA used. */
  ioasMap(a: {
    ioasId: number;
    userVa: bigint;
    length: bigint;
    iova?: bigint;
    flags?: MapAccess;
  }): bigint {
    const p = placement(a.iova, a.flags ?? RW);
    return this.call(IOMMU_IOAS_MAP, iommu_ioas_map, {
      flags: p.flags,
      ioas_id: a.ioasId,
      user_va: a.userVa,
      length: a.length,
      iova: p.iova,
    }).out.iova;
  }

  /** IOAS_MAP_FILE of a memfd or a dma-buf fd; returns the IOVA used. */
  ioasMapFile(a: {
    ioasId: number;
    fd: number;
    start: bigint;
    length: bigint;
    iova?: bigint;
    flags?: MapAccess;
  }): bigint {
    const p = placement(a.iova, a.flags ?? RW);
    return this.call(IOMMU_IOAS_MAP_FILE, iommu_ioas_map_file, {
      flags: p.flags,
      ioas_id: a.ioasId,
      fd: a.fd,
      start: a.start,
      length: a.length,
      iova: p.iova,
    }).out.iova;
  }

  /** IOAS_COPY; returns the destination IOVA. */
  ioasCopy(a: {
    dstIoasId: number;
    srcIoasId: number;
    srcIova: bigint;
    length: bigint;
    dstIova?: bigint;
    flags?: MapAccess;
  }): bigint {
    const p = placement(a.dstIova, a.flags ?? RW);
    return this.call(IOMMU_IOAS_COPY, iommu_ioas_copy, {
      flags: p.flags,
      dst_ioas_id: a.dstIoasId,
      src_ioas_id: a.srcIoasId,
      length: a.length,
      dst_iova: p.iova,
      src_iova: a.srcIova,
    }).out.dst_iova;
  }

  /** IOAS_UNMAP; returns the bytes unmapped. `unmapAll` is iova 0, length UINT64_MAX. */
  ioasUnmap(a: { ioasId: number; iova: bigint; length: bigint }): bigint {
    return this.call(IOMMU_IOAS_UNMAP, iommu_ioas_unmap, {
      ioas_id: a.ioasId,
      iova: a.iova,
      length: a.length,
    }).out.length;
  }

  unmapAll(ioasId: number): bigint {
    return this.ioasUnmap({ ioasId, iova: 0n, length: U64_MAX });
  }

  option(a: { optionId: number; op: number; objectId?: number; val64?: bigint }): bigint {
    return this.call(IOMMU_OPTION, iommu_option, {
      option_id: a.optionId,
      op: a.op,
      object_id: a.objectId ?? 0,
      val64: a.val64 ?? 0n,
    }).out.val64;
  }

  /** RLIMIT_MODE: false = per-user accounting, true = mm (VFIO-compatible) accounting. */
  getRlimitModeMm(): boolean {
    return this.option({ optionId: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET }) === 1n;
  }

  setRlimitModeMm(mm: boolean): void {
    this.option({
      optionId: IOMMU_OPTION_RLIMIT_MODE,
      op: IOMMU_OPTION_OP_SET,
      val64: mm ? 1n : 0n,
    });
  }

  getHugePages(ioasId: number): boolean {
    return (
      this.option({
        optionId: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_GET,
        objectId: ioasId,
      }) === 1n
    );
  }

  setHugePages(ioasId: number, enabled: boolean): void {
    this.option({
      optionId: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_SET,
      objectId: ioasId,
      val64: enabled ? 1n : 0n,
    });
  }

  /** IOMMU_VFIO_IOAS GET: the compat IOAS id (ENODEV when none). */
  vfioIoasGet(): number {
    return this.call(IOMMU_VFIO_IOAS, iommu_vfio_ioas, { op: IOMMU_VFIO_IOAS_GET }).out.ioas_id;
  }

  vfioIoasSet(ioasId: number): void {
    this.call(IOMMU_VFIO_IOAS, iommu_vfio_ioas, { op: IOMMU_VFIO_IOAS_SET, ioas_id: ioasId });
  }

  vfioIoasClear(): void {
    this.call(IOMMU_VFIO_IOAS, iommu_vfio_ioas, { op: IOMMU_VFIO_IOAS_CLEAR });
  }

  /** HWPT_ALLOC of a paging HWPT on an IOAS; returns the HWPT id. */
  hwptAlloc(a: {
    devId: number;
    ptId: number;
    flags?: number;
    dataType?: number;
    data?: Uint8Array;
  }): number {
    let data_uptr = 0n;
    if (a.data) {
      data_uptr = this.libc.malloc(a.data.length);
      this.libc.poke(data_uptr, a.data);
    }
    try {
      return this.call(IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, {
        flags: a.flags ?? 0,
        dev_id: a.devId,
        pt_id: a.ptId,
        data_type: a.dataType ?? IOMMU_HWPT_DATA_NONE,
        data_len: a.data?.length ?? 0,
        data_uptr,
      }).out.out_hwpt_id;
    } finally {
      this.libc.free(data_uptr);
    }
  }

  /** VIOMMU_ALLOC of a vIOMMU of `type` for the device over the nest parent `hwptId`. */
  viommuAlloc(a: { devId: number; hwptId: number; type: number }): number {
    return this.call(IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, {
      type: a.type,
      dev_id: a.devId,
      hwpt_id: a.hwptId,
    }).out.out_viommu_id;
  }

  /** VDEVICE_ALLOC: the device as `virtId` on the vIOMMU; returns the vDEVICE id. */
  vdeviceAlloc(a: { viommuId: number; devId: number; virtId: bigint }): number {
    return this.call(IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, {
      viommu_id: a.viommuId,
      dev_id: a.devId,
      virt_id: a.virtId,
    }).out.out_vdevice_id;
  }

  /** VEVENTQ_ALLOC: the queue's id and its file descriptor. */
  veventqAlloc(a: { viommuId: number; type: number; depth: number }): { id: number; fd: number } {
    const { out } = this.call(IOMMU_VEVENTQ_ALLOC, iommu_veventq_alloc, {
      viommu_id: a.viommuId,
      type: a.type,
      veventq_depth: a.depth,
    });
    return { id: out.out_veventq_id, fd: out.out_veventq_fd };
  }

  /**
   * HWPT_INVALIDATE of `entries` (each `entryLen` bytes, default their own length) on a nested
   * HWPT or vIOMMU. It does not throw: the kernel writes `entry_num` back on failure too, so
   * the answer is the errno (0 on success) and the count of entries handled.
   */
  hwptInvalidate(a: {
    hwptId: number;
    dataType: number;
    entries: readonly Uint8Array[];
    entryLen?: number;
  }): { errno: number; entryNum: number } {
    const entryLen = a.entryLen ?? a.entries[0]?.length ?? 0;
    const uptr = a.entries.length ? this.libc.malloc(entryLen * a.entries.length) : 0n;
    for (const [i, e] of a.entries.entries()) this.libc.poke(uptr + BigInt(i * entryLen), e);
    const buf = iommu_hwpt_invalidate.encode({
      size: iommu_hwpt_invalidate.size,
      hwpt_id: a.hwptId,
      data_uptr: uptr,
      data_type: a.dataType,
      entry_len: entryLen,
      entry_num: a.entries.length,
    });
    const ret = this.libc.ioctl(this.fd, IOMMU_HWPT_INVALIDATE, buf);
    this.libc.free(uptr);
    return {
      errno: ret < 0 ? this.libc.errno : 0,
      entryNum: iommu_hwpt_invalidate.get(buf, "entry_num"),
    };
  }

  /** GET_HW_INFO with a `dataLen`-byte buffer; returns the decoded struct and the data bytes. */
  getHwInfo(a: { devId: number; dataLen?: number; inType?: number }): {
    info: Decoded<(typeof iommu_hw_info)["fields"]>;
    data: Uint8Array;
  } {
    const len = a.dataLen ?? 0;
    const uptr = len ? this.libc.malloc(len) : 0n;
    try {
      const { out } = this.call(IOMMU_GET_HW_INFO, iommu_hw_info, {
        flags: a.inType === undefined ? 0 : IOMMU_HW_INFO_FLAG_INPUT_TYPE,
        dev_id: a.devId,
        data_len: len,
        data_uptr: uptr,
        data_type: a.inType ?? 0,
      });
      return { info: out, data: len ? this.libc.peek(uptr, len) : new Uint8Array(0) };
    } finally {
      this.libc.free(uptr);
    }
  }

  /** HWPT_SET_DIRTY_TRACKING: start (clearing stale dirty bits first) or stop tracking. */
  hwptSetDirtyTracking(hwptId: number, enable: boolean): void {
    this.call(IOMMU_HWPT_SET_DIRTY_TRACKING, iommu_hwpt_set_dirty_tracking, {
      flags: enable ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
      hwpt_id: hwptId,
    });
  }

  /**
   * HWPT_GET_DIRTY_BITMAP: OR the dirty bits of [iova, iova + length) into the user bitmap at
   * `data` (bit i = `iova + i * pageSize`); `flags` IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR keeps
   * the bits in the IOPTEs.
   */
  hwptGetDirtyBitmap(a: {
    hwptId: number;
    iova: bigint;
    length: bigint;
    pageSize: bigint;
    data: bigint;
    flags?: number;
  }): void {
    this.call(IOMMU_HWPT_GET_DIRTY_BITMAP, iommu_hwpt_get_dirty_bitmap, {
      hwpt_id: a.hwptId,
      flags: a.flags ?? 0,
      iova: a.iova,
      length: a.length,
      page_size: a.pageSize,
      data: a.data,
    });
  }

  ioasChangeProcess(): void {
    this.call(IOMMU_IOAS_CHANGE_PROCESS, iommu_ioas_change_process, {});
  }

  // --- VFIO type1 container ioctls on the same fd (vfio_compat) ----------------------------

  private value(request: number, arg: number): number {
    const ret = this.libc.ioctl(this.fd, request, arg);
    if (ret < 0) throw failure(this.libc);
    return ret;
  }

  vfioGetApiVersion(): number {
    return this.value(VFIO_GET_API_VERSION, 0);
  }

  vfioCheckExtension(ext: number): number {
    return this.value(VFIO_CHECK_EXTENSION, ext);
  }

  vfioSetIommu(type: number): void {
    this.value(VFIO_SET_IOMMU, type);
  }

  /** VFIO_IOMMU_MAP_DMA (READ|WRITE by default) at a fixed IOVA of the compat IOAS. */
  vfioMapDma(a: { vaddr: bigint; iova: bigint; size: bigint; flags?: number }): void {
    this.vfioCall(VFIO_IOMMU_MAP_DMA, vfio_iommu_type1_dma_map, {
      argsz: vfio_iommu_type1_dma_map.size,
      flags: a.flags ?? VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
      vaddr: a.vaddr,
      iova: a.iova,
      size: a.size,
    });
  }

  /** VFIO_IOMMU_UNMAP_DMA; returns the bytes unmapped. `all` is VFIO_DMA_UNMAP_FLAG_ALL. */
  vfioUnmapDma(a: { iova: bigint; size: bigint; all?: boolean }): bigint {
    return this.vfioCall(VFIO_IOMMU_UNMAP_DMA, vfio_iommu_type1_dma_unmap, {
      argsz: vfio_iommu_type1_dma_unmap.size,
      flags: a.all ? VFIO_DMA_UNMAP_FLAG_ALL : 0,
      iova: a.iova,
      size: a.size,
    }).size;
  }

  /** VFIO_IOMMU_GET_INFO: page sizes and the usable IOVA ranges of the compat IOAS. */
  vfioIommuGetInfo(): { iovaPgsizes: bigint; ranges: IovaRange[]; dmaAvail: number } {
    const head = vfio_iommu_type1_info;
    const probe = this.vfioCall(VFIO_IOMMU_GET_INFO, head, { argsz: head.size });
    const buf = new Uint8Array(probe.argsz);
    buf.set(head.encode({ argsz: probe.argsz }));
    if (this.libc.ioctl(this.fd, VFIO_IOMMU_GET_INFO, buf) < 0) throw failure(this.libc);
    const info = head.decode(buf);
    const ranges: IovaRange[] = [];
    let dmaAvail = 0;
    for (let at = info.cap_offset; at; ) {
      const cap = vfio_info_cap_header.decode(buf.subarray(at, at + vfio_info_cap_header.size));
      if (cap.id === VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
        dmaAvail = vfio_iommu_type1_info_dma_avail.decode(buf.subarray(at)).avail;
      } else if (cap.id === VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
        const c = vfio_iommu_type1_info_cap_iova_range.decode(buf.subarray(at));
        for (let i = 0; i < c.nr_iovas; i++) {
          const off = at + vfio_iommu_type1_info_cap_iova_range.size + i * vfio_iova_range.size;
          const r = vfio_iova_range.decode(buf.subarray(off, off + vfio_iova_range.size));
          ranges.push({ start: r.start, last: r.end });
        }
      }
      at = cap.next;
    }
    return { iovaPgsizes: info.iova_pgsizes, ranges, dmaAvail };
  }

  private vfioCall<S extends FieldSpec>(
    request: number,
    struct: Struct<S>,
    values: Partial<Decoded<S>>,
  ): Decoded<S> {
    const buf = struct.encode(values);
    if (this.libc.ioctl(this.fd, request, buf) < 0) throw failure(this.libc);
    return struct.decode(buf);
  }
}
