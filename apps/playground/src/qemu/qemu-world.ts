/** A VmWorld whose VMM is driven by the QEMU model (src/qemu/machine.ts). */
import { VmWorld, type VmWorldSpec } from "../world.js";
import { QemuMachine, type QemuVfioDevice } from "./machine.js";

export class QemuWorld extends VmWorld {
  readonly qemu: QemuMachine;

  constructor(spec: VmWorldSpec) {
    super(spec);
    this.qemu = new QemuMachine(this.vmm, (t, k) => this.vmm.options.log(t, k));
  }

  /** The realized device `name`. */
  dev(name: string): QemuVfioDevice {
    const d = this.qemu.devices.find((x) => x.name === name);
    if (!d) throw new Error(`${name} is not realized`);
    return d;
  }
}
