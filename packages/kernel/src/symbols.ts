import { KernelWarning } from "./error.js";

/**
 * The module symbol table: `EXPORT_SYMBOL` / `symbol_get` / `symbol_put`. A module that looks a
 * symbol up by name takes a reference on its owner, which then cannot be unloaded; this is how
 * iommufd reaches vfio-pci without importing it.
 *
 * The kernel ties both sides to one C prototype through the header that declares the symbol
 * (`symbol_get(x)` is typed as `typeof(&x)`). Here a `SymbolKey<T>` carries that prototype: it is
 * declared once, next to the contract, and the exporter's value and the user's result are both
 * checked against `T` by the compiler. The table itself is keyed by the name, as the kernel's is.
 */
export interface SymbolKey<T> {
  readonly name: string;
  /** Never set: makes `T` part of the key's type, invariant in both directions. */
  readonly __prototype?: (value: T) => T;
}

/** Declare a symbol's name together with the type of what is exported under it. */
export function defineSymbol<T>(name: string): SymbolKey<T> {
  return { name };
}

interface SymbolEntry {
  readonly owner: string;
  readonly value: unknown;
  refs: number;
}

export class SymbolTable {
  private readonly table = new Map<string, SymbolEntry>();

  exportSymbol<T>(key: SymbolKey<T>, value: T, owner = "kernel"): void {
    if (this.table.has(key.name)) throw new KernelWarning(`symbol ${key.name} exported twice`);
    this.table.set(key.name, { owner, value, refs: 0 });
  }

  /** Remove a symbol when its module unloads; refused while someone holds it. */
  unexportSymbol<T>(key: SymbolKey<T>): void {
    const e = this.table.get(key.name);
    if (!e) throw new KernelWarning(`symbol ${key.name} was not exported`);
    if (e.refs !== 0) throw new KernelWarning(`symbol ${key.name} still has ${e.refs} users`);
    this.table.delete(key.name);
  }

  /** `symbol_get`: the value with a reference taken, or undefined when no module provides it. */
  symbolGet<T>(key: SymbolKey<T>): T | undefined {
    const e = this.table.get(key.name);
    if (!e) return undefined;
    e.refs++;
    // exportSymbol stored a T under this name through a key of the same type.
    return e.value as T;
  }

  symbolPut<T>(key: SymbolKey<T>): void {
    const e = this.table.get(key.name);
    if (!e || e.refs === 0) throw new KernelWarning(`symbol_put(${key.name}) without symbol_get`);
    e.refs--;
  }

  refs<T>(key: SymbolKey<T>): number {
    return this.table.get(key.name)?.refs ?? 0;
  }

  has<T>(key: SymbolKey<T>): boolean {
    return this.table.has(key.name);
  }
}
