import { KernelWarning } from "./error.js";

/**
 * The module symbol table: `EXPORT_SYMBOL` / `symbol_get` / `symbol_put`. A module that looks a
 * symbol up by name takes a reference on its owner, which then cannot be unloaded; this is how
 * iommufd reaches vfio-pci without importing it.
 */
interface SymbolEntry {
  readonly owner: string;
  readonly value: unknown;
  refs: number;
}

export class SymbolTable {
  private readonly table = new Map<string, SymbolEntry>();

  exportSymbol(name: string, value: unknown, owner = "kernel"): void {
    if (this.table.has(name)) throw new KernelWarning(`symbol ${name} exported twice`);
    this.table.set(name, { owner, value, refs: 0 });
  }

  /** Remove a symbol when its module unloads; refused while someone holds it. */
  unexportSymbol(name: string): void {
    const e = this.table.get(name);
    if (!e) throw new KernelWarning(`symbol ${name} was not exported`);
    if (e.refs !== 0) throw new KernelWarning(`symbol ${name} still has ${e.refs} users`);
    this.table.delete(name);
  }

  /** `symbol_get`: the value with a reference taken, or undefined when no module provides it. */
  symbolGet<T>(name: string): T | undefined {
    const e = this.table.get(name);
    if (!e) return undefined;
    e.refs++;
    return e.value as T;
  }

  symbolPut(name: string): void {
    const e = this.table.get(name);
    if (!e || e.refs === 0) throw new KernelWarning(`symbol_put(${name}) without symbol_get`);
    e.refs--;
  }

  refs(name: string): number {
    return this.table.get(name)?.refs ?? 0;
  }

  has(name: string): boolean {
    return this.table.has(name);
  }
}
