/** The table configurations every per-format suite runs on (the kunit *_kunit_fmt_cfgs). */
import {
  type IommuDomain,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  PT_FEAT_DYNAMIC_TOP,
  PT_FEAT_FLUSH_RANGE,
  PT_FEAT_SIGN_EXTEND,
  type PtIommuCfg,
  amdv1Format,
  iommuptDomainAlloc,
  mockIommuptDomainAlloc,
  vtdssFormat,
  x86_64Format,
} from "../src/index.js";

export interface TestCfg {
  readonly name: string;
  /** A fresh domain; `shouldFail` is wired into table allocation. */
  make(shouldFail?: (site: string) => boolean): IommuDomain;
}

function pt(name: string, cfg: Omit<PtIommuCfg, "shouldFail">): TestCfg {
  return {
    name,
    make: (shouldFail) => iommuptDomainAlloc(shouldFail ? { ...cfg, shouldFail } : cfg),
  };
}

function mock(name: string, type: number): TestCfg {
  return {
    name,
    make: (shouldFail) =>
      mockIommuptDomainAlloc(type, shouldFail ? { faults: { shouldFail } } : {}),
  };
}

export const IOMMUPT_CFGS: readonly TestCfg[] = [
  pt("amdv1 dynamic", {
    format: amdv1Format,
    features: (1 << PT_FEAT_DYNAMIC_TOP) | (1 << PT_FEAT_FLUSH_RANGE),
    startingLevel: 2,
  }),
  pt("amdv1 level2", { format: amdv1Format, features: 0, startingLevel: 2 }),
  pt("amdv1 level2 va32", { format: amdv1Format, features: 0, startingLevel: 2, hwMaxVaLg2: 32 }),
  mock("mock default", MOCK_IOMMUPT_DEFAULT),
  mock("mock huge", MOCK_IOMMUPT_HUGE),
  pt("x86_64 48 sign-extend", {
    format: x86_64Format,
    features: 1 << PT_FEAT_SIGN_EXTEND,
    hwMaxVaLg2: 48,
  }),
  pt("x86_64 57 sign-extend", {
    format: x86_64Format,
    features: 1 << PT_FEAT_SIGN_EXTEND,
    hwMaxVaLg2: 57,
  }),
  pt("x86_64 47", { format: x86_64Format, features: 0, hwMaxVaLg2: 47 }),
  pt("vtdss 39", { format: vtdssFormat, features: 0, hwMaxVaLg2: 39 }),
  pt("vtdss 48", { format: vtdssFormat, features: 1 << PT_FEAT_FLUSH_RANGE, hwMaxVaLg2: 48 }),
  pt("vtdss 57", { format: vtdssFormat, features: 0, hwMaxVaLg2: 57 }),
];

/** Sizes (lg2 bytes) in a pgsize bitmap, ascending. */
export function sizesOf(bitmap: bigint): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64; b++) if (bitmap & (1n << BigInt(b))) out.push(b);
  return out;
}

/** Leaf counts by size lg2 over all levels. */
export function leafCounts(domain: IommuDomain): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of domain.pt!.occupancy()) {
    for (const [k, v] of Object.entries(o.leavesBySizeLg2)) out[k] = (out[k] ?? 0) + v;
  }
  return out;
}
