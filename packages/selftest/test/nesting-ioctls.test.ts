/**
 * The nesting and vIOMMU ioctls, errno by errno in the kernel's check order
 * (drivers/iommu/iommufd/hw_pagetable.c, viommu.c, eventq.c), against the mock driver: every
 * failure leaves the machine as it was — objects and their references, mock devices and
 * domains, pinned pages, the file descriptor table.
 */
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  IommufdModule,
  type FieldSpec,
  type Struct,
  iommu_hw_queue_alloc,
  iommu_hwpt_alloc,
  iommu_hwpt_invalidate,
  iommu_ioas_alloc,
  iommu_ioas_map,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_viommu_alloc,
} from "@x/iommufd";
import {
  EEXIST,
  EFAULT,
  EINVAL,
  EIO,
  ENOENT,
  EOPNOTSUPP,
  EOVERFLOW,
  O_RDWR,
  PAGE_SIZE,
} from "@x/kernel";
import { IOMMU_DOMAIN_NESTED, IOMMU_READ, IommuFault, iommuDeviceDma } from "@x/iommu-pgtable";
import { describe, expect, it } from "vitest";
import {
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_TEST_CMD,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  iommu_hwpt_selftest,
  iommu_test_cmd,
} from "../src/iommufd-test.js";
import { MockIommu } from "../src/mock-iommu.js";
import { createSelftestEnv } from "../src/test-system.js";
import { ustruct } from "../src/ustruct.js";

type Ids = ReturnType<typeof world>["ids"];
type Init = Record<string, number | bigint>;

/**
 * A context with an IOAS (one page mapped), a mock device, a nest parent, a plain paging HWPT,
 * a vIOMMU, a nested HWPT on the parent and one on the vIOMMU.
 */
function world() {
  const env = createSelftestEnv({ bufferSize: 16 * 4096, hugeAligned: true });
  const { libc } = env;
  const fd = libc.open("/dev/iommu", O_RDWR);
  function call<S extends FieldSpec>(cmd: number, layout: Struct<S>, init: Init) {
    const c = ustruct(layout, { size: layout.size, ...init } as never);
    const rc = libc.ioctl(fd, cmd, c.$);
    return { errno: rc ? libc.errno : 0, out: c as unknown as Record<string, number | bigint> };
  }
  function ok<S extends FieldSpec>(cmd: number, layout: Struct<S>, init: Init, out: string) {
    const r = call(cmd, layout, init);
    if (r.errno) throw new Error(`setup ${layout.name}: errno ${r.errno}`);
    return Number(r.out[out]);
  }
  const data = libc.malloc(16);
  const bytes = new Uint8Array(16);
  iommu_hwpt_selftest.set(bytes, "iotlb", IOMMU_TEST_IOTLB_DEFAULT);
  libc.poke(data, bytes);
  const ioas = ok(IOMMU_IOAS_ALLOC, iommu_ioas_alloc, {}, "out_ioas_id");
  const mock = ustruct(iommu_test_cmd.mock_domain, {
    size: iommu_test_cmd.mock_domain.size,
    op: IOMMU_TEST_OP_MOCK_DOMAIN,
    id: ioas,
  });
  if (libc.ioctl(fd, IOMMU_TEST_CMD, mock.$)) throw new Error("mock domain");
  const dev = mock.out_idev_id;
  const iova = BigInt(
    ok(
      IOMMU_IOAS_MAP,
      iommu_ioas_map,
      {
        flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va: env.buffer,
        length: PAGE_SIZE,
      },
      "iova",
    ),
  );
  const hwpt = (pt: number, flags: number, withData: boolean) =>
    ok(
      IOMMU_HWPT_ALLOC,
      iommu_hwpt_alloc,
      {
        dev_id: dev,
        pt_id: pt,
        flags,
        ...(withData ? { data_type: IOMMU_HWPT_DATA_SELFTEST, data_len: 8, data_uptr: data } : {}),
      },
      "out_hwpt_id",
    );
  const parent = hwpt(ioas, IOMMU_HWPT_ALLOC_NEST_PARENT, false);
  const plain = hwpt(ioas, 0, false);
  const viommu = ok(
    IOMMU_VIOMMU_ALLOC,
    iommu_viommu_alloc,
    { dev_id: dev, hwpt_id: parent, type: IOMMU_VIOMMU_TYPE_SELFTEST },
    "out_viommu_id",
  );
  const nested = hwpt(parent, 0, true);
  const vnested = hwpt(viommu, 0, true);
  const ids = {
    ioas,
    dev,
    stdev: mock.out_stdev_id,
    parent,
    plain,
    viommu,
    nested,
    vnested,
    data,
    iova,
  };
  const kernel = libc.kernel;
  const ctx = [...IommufdModule.of(kernel)!.contexts()][0]!;
  const registry = MockIommu.of(kernel);
  /** What a failed ioctl must not change. */
  const snapshot = () =>
    JSON.stringify([
      [...ctx.objectsInOrder()].map((o) => [o.id, o.type, o.users]),
      ctx.objectCount,
      registry.devices.size,
      registry.domains.size,
      kernel.mem.totalPinned(),
      libc.process.files.peekUnused(),
    ]);
  return { call, ids, snapshot, env, fd, registry };
}

type Row = readonly [string, number, (ids: Ids) => Init];

function table<S extends FieldSpec>(title: string, cmd: number, layout: Struct<S>, rows: Row[]) {
  describe(title, () => {
    it.each(rows)("%s: %s", (_name, errno, init) => {
      const w = world();
      const before = w.snapshot();
      expect(w.call(cmd, layout, init(w.ids)).errno).toBe(errno);
      expect(w.snapshot()).toBe(before);
    });
  });
}

const selftestData = (ids: Ids) => ({
  data_type: IOMMU_HWPT_DATA_SELFTEST,
  data_len: 8,
  data_uptr: ids.data,
});

table("IOMMU_HWPT_ALLOC (nested)", IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, [
  ["__reserved first", EOPNOTSUPP, () => ({ __reserved: 1, dev_id: 0 })],
  ["NONE with data", EINVAL, () => ({ dev_id: 0, data_type: IOMMU_HWPT_DATA_NONE, data_len: 8 })],
  ["type without data", EINVAL, () => ({ dev_id: 0, data_type: IOMMU_HWPT_DATA_SELFTEST })],
  ["device lookup", ENOENT, (i) => ({ dev_id: i.ioas, pt_id: i.parent, ...selftestData(i) })],
  ["pt_id lookup is EINVAL", EINVAL, (i) => ({ dev_id: i.dev, pt_id: 999, ...selftestData(i) })],
  ["pt_id a device", EINVAL, (i) => ({ dev_id: i.dev, pt_id: i.dev, ...selftestData(i) })],
  ["pt_id a nested HWPT", EINVAL, (i) => ({ dev_id: i.dev, pt_id: i.nested, ...selftestData(i) })],
  [
    "nested: NEST_PARENT flag",
    EOPNOTSUPP,
    (i) => ({
      dev_id: i.dev,
      pt_id: i.parent,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      ...selftestData(i),
    }),
  ],
  ["nested: no data", EOPNOTSUPP, (i) => ({ dev_id: i.dev, pt_id: i.parent })],
  [
    "nested: parent not a nest parent",
    EINVAL,
    (i) => ({ dev_id: i.dev, pt_id: i.plain, ...selftestData(i) }),
  ],
  [
    "nested: unknown data type (mock)",
    EOPNOTSUPP,
    (i) => ({
      dev_id: i.dev,
      pt_id: i.parent,
      ...selftestData(i),
      data_type: IOMMU_HWPT_DATA_SELFTEST + 1,
    }),
  ],
  [
    "nested: data below iotlb",
    EINVAL,
    (i) => ({ dev_id: i.dev, pt_id: i.parent, ...selftestData(i), data_len: 3 }),
  ],
  [
    "nested: data past the struct",
    EINVAL,
    (i) => ({ dev_id: i.dev, pt_id: i.parent, ...selftestData(i), data_len: 9 }),
  ],
  [
    "nested: data fault",
    EFAULT,
    (i) => ({ dev_id: i.dev, pt_id: i.parent, ...selftestData(i), data_uptr: 0n }),
  ],
  [
    "nested: fault id names nothing",
    ENOENT,
    (i) => ({
      dev_id: i.dev,
      pt_id: i.parent,
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      fault_id: 77,
      ...selftestData(i),
    }),
  ],
  [
    "vIOMMU: flags",
    EOPNOTSUPP,
    (i) => ({
      dev_id: i.dev,
      pt_id: i.viommu,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      ...selftestData(i),
    }),
  ],
  ["vIOMMU: no data", EOPNOTSUPP, (i) => ({ dev_id: i.dev, pt_id: i.viommu })],
]);

const invalidate = (hwpt: number, type: number, len: number, num: number, uptr: bigint) => ({
  hwpt_id: hwpt,
  data_type: type,
  entry_len: len,
  entry_num: num,
  data_uptr: uptr,
});

table("IOMMU_HWPT_INVALIDATE", IOMMU_HWPT_INVALIDATE, iommu_hwpt_invalidate, [
  ["__reserved", EOPNOTSUPP, (i) => ({ ...invalidate(i.nested, 0, 8, 1, i.data), __reserved: 1 })],
  [
    "entry_num above 1 << 19",
    EINVAL,
    (i) => invalidate(i.nested, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 8, (1 << 19) + 1, i.data),
  ],
  [
    "entries without a pointer",
    EINVAL,
    (i) => invalidate(i.nested, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 8, 1, 0n),
  ],
  [
    "entries of length 0",
    EINVAL,
    (i) => invalidate(i.nested, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 0, 1, i.data),
  ],
  ["unknown id", ENOENT, (i) => invalidate(999, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 8, 1, i.data)],
  [
    "a paging HWPT",
    EINVAL,
    (i) => invalidate(i.parent, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 8, 1, i.data),
  ],
  ["an IOAS", EINVAL, (i) => invalidate(i.ioas, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 8, 1, i.data)],
  ["nested: wrong type", EINVAL, (i) => invalidate(i.nested, 1, 8, 0, 0n)],
  [
    "nested: entry shorter than iotlb_id",
    EINVAL,
    (i) => invalidate(i.nested, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 7, 1, i.data),
  ],
  [
    "nested: entry past the struct",
    EINVAL,
    (i) => invalidate(i.nested, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, 9, 1, i.data),
  ],
  ["vIOMMU: wrong type", EINVAL, (i) => invalidate(i.viommu, 1, 12, 1, i.data)],
  [
    "vIOMMU: entry past the struct",
    EINVAL,
    (i) => invalidate(i.viommu, IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST, 13, 1, i.data),
  ],
]);

table("IOMMU_VIOMMU_ALLOC", IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, [
  ["flags", EOPNOTSUPP, () => ({ flags: 1, type: IOMMU_VIOMMU_TYPE_SELFTEST })],
  ["type DEFAULT", EOPNOTSUPP, (i) => ({ dev_id: i.dev, hwpt_id: i.parent, type: 0 })],
  [
    "device lookup",
    ENOENT,
    (i) => ({ dev_id: i.ioas, hwpt_id: i.parent, type: IOMMU_VIOMMU_TYPE_SELFTEST }),
  ],
  [
    "type unknown to the driver",
    EOPNOTSUPP,
    (i) => ({ dev_id: i.dev, hwpt_id: 999, type: 0xdead }),
  ],
  [
    "hwpt lookup",
    ENOENT,
    (i) => ({ dev_id: i.dev, hwpt_id: 999, type: IOMMU_VIOMMU_TYPE_SELFTEST }),
  ],
  [
    "a nested HWPT is not paging",
    ENOENT,
    (i) => ({ dev_id: i.dev, hwpt_id: i.nested, type: IOMMU_VIOMMU_TYPE_SELFTEST }),
  ],
  [
    "not a nest parent",
    EINVAL,
    (i) => ({ dev_id: i.dev, hwpt_id: i.plain, type: IOMMU_VIOMMU_TYPE_SELFTEST }),
  ],
  [
    "data below out_data (mock)",
    EINVAL,
    (i) => ({
      dev_id: i.dev,
      hwpt_id: i.parent,
      type: IOMMU_VIOMMU_TYPE_SELFTEST,
      data_len: 4,
      data_uptr: i.data,
    }),
  ],
]);

table("IOMMU_VDEVICE_ALLOC", IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, [
  ["vIOMMU lookup", ENOENT, (i) => ({ viommu_id: i.parent, dev_id: i.dev, virt_id: 1n })],
  ["device lookup", ENOENT, (i) => ({ viommu_id: i.viommu, dev_id: i.ioas, virt_id: 1n })],
]);

table("IOMMU_VEVENTQ_ALLOC", IOMMU_VEVENTQ_ALLOC, iommu_veventq_alloc, [
  [
    "flags",
    EOPNOTSUPP,
    (i) => ({ flags: 1, viommu_id: i.viommu, type: IOMMU_VEVENTQ_TYPE_SELFTEST, veventq_depth: 2 }),
  ],
  [
    "__reserved",
    EOPNOTSUPP,
    (i) => ({
      __reserved: 1,
      viommu_id: i.viommu,
      type: IOMMU_VEVENTQ_TYPE_SELFTEST,
      veventq_depth: 2,
    }),
  ],
  ["type DEFAULT", EOPNOTSUPP, (i) => ({ viommu_id: i.viommu, type: 0, veventq_depth: 2 })],
  [
    "depth 0",
    EINVAL,
    () => ({ viommu_id: 999, type: IOMMU_VEVENTQ_TYPE_SELFTEST, veventq_depth: 0 }),
  ],
  [
    "depth above 1 << 19",
    EINVAL,
    () => ({ viommu_id: 999, type: IOMMU_VEVENTQ_TYPE_SELFTEST, veventq_depth: (1 << 19) + 1 }),
  ],
  [
    "vIOMMU lookup",
    ENOENT,
    (i) => ({ viommu_id: i.parent, type: IOMMU_VEVENTQ_TYPE_SELFTEST, veventq_depth: 2 }),
  ],
]);

const queue = (i: Ids, init: Init) => ({
  viommu_id: i.viommu,
  type: IOMMU_HW_QUEUE_TYPE_SELFTEST,
  nesting_parent_iova: i.iova,
  length: BigInt(PAGE_SIZE),
  ...init,
});

table("IOMMU_HW_QUEUE_ALLOC", IOMMU_HW_QUEUE_ALLOC, iommu_hw_queue_alloc, [
  ["flags", EOPNOTSUPP, (i) => queue(i, { flags: 1, length: 0n })],
  ["type DEFAULT", EOPNOTSUPP, (i) => queue(i, { type: 0, length: 0n })],
  ["length 0", EINVAL, (i) => queue(i, { length: 0n, viommu_id: 999 })],
  [
    "range wraps",
    EOVERFLOW,
    (i) => queue(i, { nesting_parent_iova: (1n << 64n) - 1n, viommu_id: 999 }),
  ],
  ["vIOMMU lookup", ENOENT, (i) => queue(i, { viommu_id: i.parent })],
  ["type unknown to the vIOMMU", EOPNOTSUPP, (i) => queue(i, { type: 7 })],
  [
    "IOVA not mapped",
    ENOENT,
    (i) => queue(i, { nesting_parent_iova: i.iova + 1024n * BigInt(PAGE_SIZE) }),
  ],
  ["index past the mock's slots", EINVAL, (i) => queue(i, { index: 2 })],
  ["index 1 before 0", EIO, (i) => queue(i, { index: 1 })],
]);

describe("nested HWPT lifetimes", () => {
  it("a vDEVICE's virt_id is unique in its vIOMMU and a device has one vDEVICE", () => {
    const w = world();
    const { ids } = w;
    expect(
      w.call(IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, {
        viommu_id: ids.viommu,
        dev_id: ids.dev,
        virt_id: 5n,
      }).errno,
    ).toBe(0);
    const before = w.snapshot();
    expect(
      w.call(IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, {
        viommu_id: ids.viommu,
        dev_id: ids.dev,
        virt_id: 6n,
      }).errno,
    ).toBe(EEXIST);
    expect(w.snapshot()).toBe(before);
  });
});

describe("DMA through a nested domain", () => {
  it("is the nest parent's stage-2 translation, faulting where stage 2 does", () => {
    const w = world();
    const { ids, env } = w;
    const { libc } = env;
    const [mdev] = [...w.registry.devices];
    const replace = (pt: number) => {
      const c = ustruct(iommu_test_cmd.mock_domain_replace, {
        size: iommu_test_cmd.mock_domain_replace.size,
        op: IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
        id: ids.stdev,
        pt_id: pt,
      });
      expect(libc.ioctl(w.fd, IOMMU_TEST_CMD, c.$)).toBe(0);
    };
    const unmapped = ids.iova + 64n * BigInt(PAGE_SIZE);
    replace(ids.parent);
    const viaParent = iommuDeviceDma(mdev!, ids.iova, BigInt(PAGE_SIZE), IOMMU_READ);
    replace(ids.nested);
    expect(mdev!.domain?.type).toBe(IOMMU_DOMAIN_NESTED);
    expect(iommuDeviceDma(mdev!, ids.iova, BigInt(PAGE_SIZE), IOMMU_READ)).toEqual(viaParent);
    expect(() => iommuDeviceDma(mdev!, unmapped, 8n, IOMMU_READ)).toThrow(IommuFault);
    replace(ids.ioas);
  });
});
