import { Kernel, Mutex, type Task } from "@x/kernel";
import type { RaceMachine, RacePath } from "../src/race-explorer.js";

/**
 * The race explorers' toy machine: two locks L -> M, a counter that must end at `expected`
 * (what every serial order gives) and a second counter under M. Shared by the nesting and the
 * interleaving explorer tests; under the latter this module is loaded with generator twins.
 */
export class Toy implements RaceMachine {
  /** Every machine made, in order (the schedule tests look at the machines they ran on). */
  static made: Toy[] = [];
  readonly kernel = new Kernel({ ramBytes: 1n << 24n, lockOrder: null });
  readonly L = new Mutex(this.kernel.lockdep, "L");
  readonly M = new Mutex(this.kernel.lockdep, "M");
  value = 0;
  other = 0;
  expected = 0;
  /** Sections in the order they ran: "<path><section>". */
  readonly trace: string[] = [];
  constructor() {
    Toy.made.push(this);
  }
  newTask(): Task {
    return this.kernel.newTask(this.kernel.current.process);
  }
  check(tasks: readonly Task[]): void {
    for (const t of tasks)
      if (this.kernel.lockdep.heldBy(t).length) throw new Error(`task ${t.tid} holds a lock`);
    if (this.value !== this.expected) throw new Error(`value ${this.value}, want ${this.expected}`);
  }
  fingerprint(): string {
    return String(this.value);
  }
}

export type ToyPath = RacePath<Toy>;

/** A path that adds `add` to what the counter must end at and runs `body`. */
export const toy = (name: string, add: number, body: (m: Toy) => void): ToyPath => ({
  name,
  prepare: (m) => {
    m.expected += add;
    return () => body(m);
  },
});
