/**
 * A typed trace-event bus. Packages add their events to `TraceEvents` by declaration merging:
 *
 *   declare module "@x/kernel" { interface TraceEvents { "iommufd:revoke": { pages: number } } }
 *
 * and emit them with `kernel.trace.emit("iommufd:revoke", {...})`. The playground and tests
 * subscribe; emitting with no subscriber costs one branch.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled in by declaration merging
export interface TraceEvents {}

export type TraceName = keyof TraceEvents & string;

export interface TraceRecord<K extends TraceName = TraceName> {
  readonly seq: number;
  readonly name: K;
  readonly data: TraceEvents[K];
}

type TraceListener = (record: TraceRecord) => void;

export class TraceBus {
  private readonly listeners = new Set<TraceListener>();
  private seq = 0;

  get active(): boolean {
    return this.listeners.size !== 0;
  }

  emit<K extends TraceName>(name: K, data: TraceEvents[K]): void {
    if (this.listeners.size === 0) return;
    const record = { seq: ++this.seq, name, data } as TraceRecord;
    for (const l of this.listeners) l(record);
  }

  /** Subscribe; returns the unsubscribe function. */
  on(listener: TraceListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Collect every record emitted while `fn` runs. */
  record<T>(fn: () => T): { result: T; records: TraceRecord[] } {
    const records: TraceRecord[] = [];
    const off = this.on((r) => records.push(r));
    try {
      return { result: fn(), records };
    } finally {
      off();
    }
  }
}
