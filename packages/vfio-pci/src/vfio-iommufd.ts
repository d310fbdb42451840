import type { IommuDevice } from "@x/iommu-pgtable";
import {
  type IommufdCtx,
  type IommufdDevice,
  iommufdCtxFromFile,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from "@x/iommufd";
import { ENODEV, type File, fail } from "@x/kernel";
import type { PciDev } from "./pci.js";

/**
 * A VFIO device bound to an iommufd context (drivers/vfio/iommufd.c, the physical-device
 * flavour): the DEVICE object, and attach / replace / detach of its page table.
 */
export class VfioIommufdBinding {
  private attached = false;
  /** vdev->pasids: the PASIDs attached through this binding. */
  private readonly pasids = new Set<number>();

  constructor(
    readonly ctx: IommufdCtx,
    readonly idev: IommufdDevice,
  ) {}

  /** The DEVICE object id reported to user space as out_devid. */
  get devid(): number {
    return this.idev.id;
  }

  /** The HWPT the device is attached to, if any. */
  get hwpt(): IommufdDevice["hwpt"] {
    return this.idev.hwpt;
  }

  /** Attach, or replace when attached already; the HWPT id used. @see vfio_iommufd_physical_attach_ioas */
  attach(ptId: number): number {
    const out = this.attached
      ? iommufdDeviceReplace(this.idev, ptId)
      : iommufdDeviceAttach(this.idev, ptId);
    this.attached = true;
    return out;
  }

  /** @see vfio_iommufd_physical_detach_ioas */
  detach(): void {
    if (!this.attached) return;
    iommufdDeviceDetach(this.idev);
    this.attached = false;
  }

  /**
   * Attach `pasid`, or replace when this binding attached it already; the HWPT id used.
   * @see vfio_iommufd_physical_pasid_attach_ioas
   */
  pasidAttach(pasid: number, ptId: number): number {
    if (this.pasids.has(pasid)) return iommufdDeviceReplace(this.idev, ptId, pasid);
    const out = iommufdDeviceAttach(this.idev, ptId, pasid);
    this.pasids.add(pasid);
    return out;
  }

  /** Nothing when this binding did not attach `pasid`. @see vfio_iommufd_physical_pasid_detach_ioas */
  pasidDetach(pasid: number): void {
    if (!this.pasids.delete(pasid)) return;
    iommufdDeviceDetach(this.idev, pasid);
  }

  /**
   * Decision: PASIDs still attached are detached with the RID, so the DEVICE object is never
   * destroyed with an attachment. @see vfio_iommufd_physical_unbind
   */
  unbind(): void {
    for (const pasid of [...this.pasids]) this.pasidDetach(pasid);
    this.detach();
    iommufdDeviceUnbind(this.idev);
  }
}

/** The function as iommufd sees it; ENODEV without an IOMMU in front of it. */
function pciIommuDevice(pdev: PciDev): IommuDevice {
  if (!pdev.iommuDev) fail(ENODEV, `${pdev.name} has no IOMMU`);
  return pdev.iommuDev;
}

/**
 * BIND_IOMMUFD's bind step: the fd must be an iommufd (EBADFD), then the DEVICE object.
 * @see vfio_iommufd_physical_bind
 */
export function vfioIommufdBind(pdev: PciDev, file: File): VfioIommufdBinding {
  const ctx = iommufdCtxFromFile(pdev.kernel, file);
  return new VfioIommufdBinding(ctx, iommufdDeviceBind(ctx, pciIommuDevice(pdev)));
}
