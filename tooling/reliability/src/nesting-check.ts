/**
 * The checker's `nesting` rule: a device attached to a nested domain reaches memory only
 * through that domain's stage-2 parent, so the parent must be a live domain of one of the
 * machine's IOASes (whose IOPTEs the `iopte` and `translation` rules vouch for), and the nested
 * domain must not have been freed under the device.
 */
import type { IoPagetable } from "@x/iommufd";
import { IOMMU_DOMAIN_NESTED } from "@x/iommu-pgtable";
import type { VfioPciCoreDevice } from "@x/vfio-pci";

/** What is wrong with `vdev`'s nested attachment, if anything. */
export function nestingProblem(
  vdev: VfioPciCoreDevice,
  iopts: readonly IoPagetable[],
): string | undefined {
  const domain = vdev.pdev.iommuDev?.domain;
  if (domain?.type !== IOMMU_DOMAIN_NESTED) return undefined;
  if (domain.freed) return `${vdev.name}: attached to freed nested domain ${domain.id}`;
  const parent = domain.parent;
  if (!parent || parent.freed)
    return `${vdev.name}: nested domain ${domain.id} has no live stage-2 parent`;
  if (!iopts.some((iopt) => iopt.domainList.includes(parent)))
    return `${vdev.name}: stage-2 parent ${parent.id} of nested domain ${domain.id} is in no IOAS`;
  return undefined;
}
