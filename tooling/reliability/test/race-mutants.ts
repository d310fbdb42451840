/**
 * Locking mutants for the race explorers' tests, made by wrapping a race path: while the path's
 * task runs, a lock is neither taken nor asserted, as if the kernel code had lost its
 * mutex_lock / down_write and the lockdep assertions under it. Serially nothing shows; only an
 * interleaving can.
 */
import type { RwSem, Task } from "@x/kernel";
import type { RacePath } from "../src/race-explorer.js";
import { type RaceMachineImpl, revokePath } from "../src/race-paths.js";

/**
 * The COMMAND.MEMORY revoke without memory_lock: vfio_basic_config_write moves the dma-bufs
 * and clears decode without down_write(&vdev->memory_lock), so an export in between
 * (vfio_pci_core_feature_dma_buf reads memory decode under that lock) makes a live dma-buf
 * over a BAR whose decode is then turned off.
 */
export const revokeWithoutMemoryLock: RacePath<RaceMachineImpl> = {
  name: "revoke",
  prepare(m: RaceMachineImpl, task: Task) {
    const lock = m.machine.devices[0]?.memoryLock as RwSem;
    const mine = () => m.kernel.current === task;
    const down = lock.downWrite.bind(lock);
    const up = lock.upWrite.bind(lock);
    const held = lock.assertHeldWrite.bind(lock);
    lock.downWrite = () => (mine() ? undefined : down());
    lock.upWrite = () => (mine() ? undefined : up());
    lock.assertHeldWrite = () => (mine() ? undefined : held());
    return revokePath.prepare(m, task);
  },
};
