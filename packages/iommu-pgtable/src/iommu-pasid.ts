/**
 * Attaching domains to PASIDs of a device (the PASID half of drivers/iommu/iommu.c). A
 * device's PASIDs other than IOMMU_NO_PASID each point at a domain through the driver's
 * `setDevPasid`; `dev.pasidArray` records which (the group's pasid_array; every device is
 * alone in its group here). IOMMU_NO_PASID is the device's own attachment
 * (`iommuAttachDevice`).
 */
import { EBUSY, EINVAL, EOPNOTSUPP, fail } from "@x/kernel";
import type { IommuDomain } from "./iommu.js";
import type { IommuDevice } from "./iommu-driver.js";

/** The PASID of DMA without a PASID prefix (the RID attachment). */
export const IOMMU_NO_PASID = 0;

function setDevPasidOp(dev: IommuDevice) {
  const op = dev.iommu.setDevPasid;
  if (!op) return fail(EOPNOTSUPP, `${dev.iommu.name} cannot attach a PASID`);
  return op.bind(dev.iommu);
}

/**
 * Attach `domain` to a PASID nothing is attached to: EOPNOTSUPP without driver support,
 * EINVAL for IOMMU_NO_PASID or a PASID the device cannot issue (a device with no PASID
 * support is not checked), EBUSY when the PASID is taken; the driver's error leaves nothing.
 * @see iommu_attach_device_pasid
 */
export function iommuAttachDevicePasid(domain: IommuDomain, dev: IommuDevice, pasid: number): void {
  const setDevPasid = setDevPasidOp(dev);
  if (pasid === IOMMU_NO_PASID) fail(EINVAL, "IOMMU_NO_PASID is not a PASID attach");
  if (dev.maxPasids > 0 && pasid >= dev.maxPasids) fail(EINVAL, `pasid ${pasid} out of range`);
  if (dev.pasidArray.has(pasid)) fail(EBUSY, `pasid ${pasid} already attached`);
  setDevPasid(domain, dev, pasid, undefined);
  dev.pasidArray.set(pasid, domain);
}

/**
 * Switch an attached PASID to `domain` in one step: EINVAL when nothing is attached; the
 * driver's error leaves the old domain attached.
 * @see iommu_replace_device_pasid
 */
export function iommuReplaceDevicePasid(
  domain: IommuDomain,
  dev: IommuDevice,
  pasid: number,
): void {
  const setDevPasid = setDevPasidOp(dev);
  if (pasid === IOMMU_NO_PASID) fail(EINVAL, "IOMMU_NO_PASID is not a PASID replace");
  const curr = dev.pasidArray.get(pasid);
  if (!curr) fail(EINVAL, `pasid ${pasid} not attached`);
  if (curr === domain) return;
  setDevPasid(domain, dev, pasid, curr);
  dev.pasidArray.set(pasid, domain);
}

/** Block DMA with `pasid` again. @see iommu_detach_device_pasid */
export function iommuDetachDevicePasid(domain: IommuDomain, dev: IommuDevice, pasid: number): void {
  setDevPasidOp(dev)(undefined, dev, pasid, domain);
  dev.pasidArray.delete(pasid);
}

/** The domain attached to `pasid`, if any. @see iommu_attach_handle_get */
export function iommuPasidDomain(dev: IommuDevice, pasid: number): IommuDomain | undefined {
  return pasid === IOMMU_NO_PASID ? dev.domain : dev.pasidArray.get(pasid);
}
