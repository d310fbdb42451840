import { Kernel } from "@x/kernel";
import { vi } from "vitest";
import {
  type DmaBuf,
  type DmaBufAttachOps,
  type DmaBufAttachment,
  type DmaBufExportInfo,
  type DmaBufOps,
  SgTable,
  dmaBufExport,
} from "../src/index.js";

/** A test exporter: every op is a spy; `mapDmaBuf` returns a one-entry table. */
export function exporterOps<X extends Partial<DmaBufOps> = object>(overrides?: X) {
  return {
    attach: vi.fn((_d: DmaBuf, _a: DmaBufAttachment) => {}),
    detach: vi.fn((_d: DmaBuf, _a: DmaBufAttachment) => {}),
    mapDmaBuf: vi.fn((_a: DmaBufAttachment, _dir: number): SgTable | null => {
      const sgt = new SgTable(1);
      sgt.dmaAddress[0] = 0x1000_0000n;
      sgt.dmaLength[0] = 0x1000;
      return sgt;
    }),
    unmapDmaBuf: vi.fn((_a: DmaBufAttachment, _s: SgTable, _dir: number) => {}),
    release: vi.fn((_d: DmaBuf) => {}),
    ...(overrides as X),
  };
}

export function pinOps() {
  return {
    pin: vi.fn((_a: DmaBufAttachment) => {}),
    unpin: vi.fn((_a: DmaBufAttachment) => {}),
  };
}

export function setup<O extends DmaBufOps = ReturnType<typeof exporterOps>>(
  ops: O = exporterOps() as DmaBufOps as O,
  info: Partial<DmaBufExportInfo> = {},
  kernel = new Kernel(),
) {
  const dmabuf = dmaBufExport(kernel, {
    expName: "test",
    ops,
    size: 0x10000n,
    priv: { tag: "priv" },
    ...info,
  });
  return { kernel, dmabuf, ops };
}

export function importerOps(allowPeer2peer = true): DmaBufAttachOps & {
  moveNotify: ReturnType<typeof vi.fn>;
} {
  return { allowPeer2peer, moveNotify: vi.fn((_a: DmaBufAttachment) => {}) };
}

/** A device identity for attachments. */
export const dev = { name: "importer-dev" };
