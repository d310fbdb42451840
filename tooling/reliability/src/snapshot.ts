/**
 * A comparable image of everything a failed call must leave unchanged: iommufd objects and
 * their users, each IOAS (areas with revoked marks, allowed and reserved ranges, alignment,
 * large-page mode, domains and the IOPTE frames each maps), pins, accounting, descriptors,
 * dma-bufs, and each VFIO device (open count, registration references, attached HWPT, exporter
 * states, memory decode, runtime PM, interrupt mode, contexts and vectors). Memory faulted into the user's address space is left
 * out: a failed pin in the kernel does not undo the page faults it took either.
 */
import { dmaBufList } from "@x/dmabuf";
import { type CheckScope, gatherIommufd } from "./checker.js";
import { forEachIopte } from "./iommu.js";

export function snapshot(scope: CheckScope): string {
  const { kernel, tasks, devices } = scope;
  const out: string[] = [];
  const g = gatherIommufd(scope);
  for (const ctx of g.ctxs) {
    out.push(`ctx ${ctx.accountMode} compat=${ctx.vfioIoas?.id ?? 0}`);
    for (const obj of ctx.objectsInOrder()) out.push(`obj ${obj.id}:${obj.type}:${obj.users}`);
  }
  for (const iopt of g.iopts) {
    const areas = iopt
      .areas()
      .map((a) => `${a.iova}+${a.length}${a.pages?.dmabuf?.phys.len === 0n ? "R" : ""}`);
    const allowed = iopt.allowedRanges().map((r) => `${r.start}-${r.last}`);
    const reserved = iopt.reservedRanges().map((r) => `${r.start}-${r.last}`);
    out.push(
      `iopt a=${areas} al=${allowed} rs=${reserved} align=${iopt.iovaAlignment} lp=${iopt.largePagesDisabled}`,
    );
    for (const d of iopt.domainList) {
      let frames = 0;
      forEachIopte(d, (_i, _p, n) => {
        frames += n;
      });
      out.push(`domain ${d.id} ${frames}`);
    }
  }
  out.push(`pinned ${kernel.mem.totalPinned()}`);
  for (const t of tasks) {
    const { mm, cred, files } = t.process;
    out.push(`acct ${cred.user.lockedVm} ${mm.lockedVm} ${mm.pinnedVm}`);
    out.push(`fds ${[...files.entries()].map(([fd]) => fd)}`);
  }
  out.push(`dmabufs ${dmaBufList(kernel).length}`);
  for (const vdev of devices) {
    const bufs = [...vdev.dmabufs].map((b) => b.state);
    out.push(
      `dev ${vdev.name} open=${vdev.openCount} reg=${vdev.registrationRefs} hwpt=${vdev.binding?.hwpt?.id ?? 0} ` +
        `bufs=${bufs} mem=${vdev.vconfig ? vdev.memoryEnabled() : "-"} pm=${vdev.pmRuntimeEngaged}`,
    );
    const ctxs = [...vdev.irqCtx].map(
      ([nr, c]) => `${nr}${c.trigger ? "t" : ""}${c.unmask ? "u" : ""}`,
    );
    out.push(
      `irq ${vdev.name} type=${vdev.irqType} ctx=${ctxs} err=${!!vdev.errTrigger} req=${!!vdev.reqTrigger} ` +
        `vectors=${vdev.pdev.hostIrq.vectors.filter((v) => v !== undefined).length}`,
    );
  }
  return out.join("\n");
}

/** The lines that differ between two snapshots, for failure reports. */
export function snapshotDiff(a: string, b: string): string {
  const al = a.split("\n");
  const bl = b.split("\n");
  const out: string[] = [];
  for (let i = 0; i < Math.max(al.length, bl.length); i++) {
    if (al[i] !== bl[i]) out.push(`- ${al[i] ?? ""}\n+ ${bl[i] ?? ""}`);
  }
  return out.join("\n");
}
