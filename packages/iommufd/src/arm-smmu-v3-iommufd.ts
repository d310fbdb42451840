/**
 * The iommufd half of the ARM SMMUv3 driver: its vIOMMU (struct arm_vsmmu) over a nest-parent
 * stage-2 domain, nested domains made from a guest's STE, the guest's invalidation commands
 * forwarded to the SMMU's command queue, and the guest's events delivered to its vEVENTQ.
 *
 * The vIOMMU takes the VMID of its stage-2 parent. A nested domain is the guest STE's words 0
 * and 1 after validation: only the fields of STRTAB_STE_{0,1}_NESTING_ALLOWED, Config abort,
 * bypass or stage-1 translate, EATS abort or translate — anything else is EIO, the errno the
 * driver keeps for bad STE data (a non-valid STE is accepted and installed as abort).
 * Commands are converted one by one: the VMID is forced to the vIOMMU's, a guest StreamID
 * (the vDEVICE's virt_id) becomes the device's physical one, any other opcode is EIO; they go
 * to the command queue in batches, and the count written back is the commands converted.
 *
 * @see drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c
 */
import {
  ArmSmmuNestedDomain,
  ArmSmmuV3Driver,
  CMDQ_0_OP,
  CMDQ_BATCH_ENTRIES,
  CMDQ_CFGI_0_SID,
  CMDQ_OP_ATC_INV,
  CMDQ_OP_CFGI_CD,
  CMDQ_OP_CFGI_CD_ALL,
  CMDQ_OP_TLBI_NH_ALL,
  CMDQ_OP_TLBI_NH_ASID,
  CMDQ_OP_TLBI_NH_VA,
  CMDQ_OP_TLBI_NH_VAA,
  CMDQ_OP_TLBI_NSNH_ALL,
  CMDQ_TLBI_0_VMID,
  EVTQ_0_SID,
  type IommuDevice,
  type IommuDomain,
  type IortRmr,
  STRTAB_STE_0_CFG_ABORT,
  STRTAB_STE_0_CFG_BYPASS,
  STRTAB_STE_0_CFG_S1_TRANS,
  STRTAB_STE_0_NESTING_ALLOWED,
  STRTAB_STE_0_V,
  STRTAB_STE_1_EATS,
  STRTAB_STE_1_EATS_ABT,
  STRTAB_STE_1_EATS_TRANS,
  STRTAB_STE_1_NESTING_ALLOWED,
} from "@x/iommu-pgtable";
import {
  EBUSY,
  EINVAL,
  EIO,
  ENOMEM,
  EOPNOTSUPP,
  type Kernel,
  copyFromUser,
  copyStructFromUser,
  fail,
  isKernelError,
} from "@x/kernel";
import { iommufdViommuReportEvent } from "./eventq.js";
import {
  type IommuUserData,
  type IommuUserDataArray,
  iommuCopyStructFromUser,
} from "./iommu-priv.js";
import {
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  iommu_hwpt_arm_smmuv3,
  iommu_vevent_arm_smmuv3,
  iommu_viommu_arm_smmuv3_invalidate,
} from "./uapi.js";
import {
  type IommufdViommu,
  type IommufdViommuDriver,
  type IommufdViommuOps,
  iommufdViommuFindDev,
  iommufdViommuGetVdevId,
} from "./viommu.js";

const CMD_SIZE = iommu_viommu_arm_smmuv3_invalidate.size;

/** struct arm_vsmmu: a vIOMMU of this SMMU over the stage-2 domain `s2` (VMID `vmid`). */
class ArmVsmmu implements IommufdViommuOps {
  constructor(
    readonly smmu: ArmSmmuV3IommufdDriver,
    readonly core: IommufdViommu,
    readonly s2: IommuDomain,
    readonly vmid: number,
  ) {}

  /**
   * A nested domain from the guest's STE: no flags (EOPNOTSUPP), the data copied (EINVAL,
   * EFAULT), then validated (EIO). @see arm_vsmmu_alloc_domain_nested
   */
  allocDomainNested(flags: number, data: IommuUserData): IommuDomain {
    if (flags) fail(EOPNOTSUPP, "arm-smmu-v3: nested domain flags");
    const arg = iommu_hwpt_arm_smmuv3.decode(
      iommuCopyStructFromUser(
        this.smmu.kernel,
        data,
        IOMMU_HWPT_DATA_ARM_SMMUV3,
        iommu_hwpt_arm_smmuv3.size,
        iommu_hwpt_arm_smmuv3.endOf("ste1"),
      ),
    );
    const { ste, enableAts } = armSmmuValidateVste(arg.ste0, arg.ste1);
    if (this.smmu.kernel.shouldFail("arm_vsmmu_alloc_domain_nested")) fail(ENOMEM, "nested domain");
    return new ArmSmmuNestedDomain(this.smmu.nest!, this.s2, this.vmid, ste, enableAts, this)
      .domain;
  }

  /**
   * The guest's commands: all copied first (EINVAL for another type or none, EFAULT, E2BIG),
   * then converted and issued in batches; a command that does not convert (EIO) stops the
   * walk, and the commands converted since the last batch are not issued.
   * @see arm_vsmmu_cache_invalidate
   */
  cacheInvalidate(array: IommuUserDataArray): void {
    let cur = 0;
    try {
      // The command buffer is allocated before anything is looked at.
      if (this.smmu.kernel.shouldFail("arm_vsmmu_cache_invalidate")) fail(ENOMEM, "commands");
      const cmds = this.copyCmds(array);
      const end = cmds.length;
      let last = 0;
      while (cur !== end) {
        cmds[cur] = this.convertUserCmd(cmds[cur]!);
        cur++;
        if (cur !== end && cur - last !== CMDQ_BATCH_ENTRIES - 1) continue;
        for (let i = last; i < cur; i++) this.smmu.nest!.issueCmd(...cmds[i]!);
        last = cur;
      }
    } finally {
      array.entryNum = cur;
    }
  }

  /** @see iommu_copy_struct_from_full_user_array */
  private copyCmds(array: IommuUserDataArray): (readonly [bigint, bigint])[] {
    const kernel = this.smmu.kernel;
    if (array.type !== IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) fail(EINVAL, "invalidation type");
    if (!array.entryNum) fail(EINVAL, "no invalidation entries");
    if (array.entryLen === CMD_SIZE) copyFromUser(kernel, array.uptr, array.entryNum * CMD_SIZE);
    const cmds: (readonly [bigint, bigint])[] = [];
    for (let i = 0; i < array.entryNum; i++) {
      const uptr = array.uptr + BigInt(array.entryLen) * BigInt(i);
      const c = iommu_viommu_arm_smmuv3_invalidate.decode(
        copyStructFromUser(kernel, CMD_SIZE, uptr, array.entryLen),
      );
      cmds.push([c.cmd0, c.cmd1]);
    }
    return cmds;
  }

  /** The host form of one guest command, or EIO. @see arm_vsmmu_convert_user_cmd */
  private convertUserCmd([cmd0, cmd1]: readonly [bigint, bigint]): readonly [bigint, bigint] {
    const vmid = BigInt(this.vmid) << 32n;
    switch (cmd0 & CMDQ_0_OP) {
      case CMDQ_OP_TLBI_NSNH_ALL:
        return [CMDQ_OP_TLBI_NH_ALL | vmid, 0n];
      case CMDQ_OP_TLBI_NH_VA:
      case CMDQ_OP_TLBI_NH_VAA:
      case CMDQ_OP_TLBI_NH_ALL:
      case CMDQ_OP_TLBI_NH_ASID:
        return [(cmd0 & ~CMDQ_TLBI_0_VMID) | vmid, cmd1];
      case CMDQ_OP_ATC_INV:
      case CMDQ_OP_CFGI_CD:
      case CMDQ_OP_CFGI_CD_ALL: {
        const idev = iommufdViommuFindDev(this.core, (cmd0 & CMDQ_CFGI_0_SID) >> 32n);
        if (!idev) fail(EIO, "no vDEVICE with that vSID");
        const sid = BigInt(this.smmu.nest!.master(idev.dev).sid);
        return [(cmd0 & ~CMDQ_CFGI_0_SID) | (sid << 32n), cmd1];
      }
      default:
        return fail(EIO, `command 0x${(cmd0 & CMDQ_0_OP).toString(16)} not for a guest`);
    }
  }
}

/**
 * The checks of a guest STE: words 0 and 1 to install (EATS cleared) and whether the guest
 * runs ATS. @see arm_smmu_validate_vste
 */
export function armSmmuValidateVste(
  ste0: bigint,
  ste1: bigint,
): { ste: readonly [bigint, bigint]; enableAts: boolean } {
  if (!(ste0 & STRTAB_STE_0_V)) return { ste: [0n, 0n], enableAts: false };
  if (ste0 & ~STRTAB_STE_0_NESTING_ALLOWED || ste1 & ~STRTAB_STE_1_NESTING_ALLOWED)
    fail(EIO, "STE bits a guest may not set");
  const cfg = Number((ste0 >> 1n) & 7n);
  if (
    cfg !== STRTAB_STE_0_CFG_ABORT &&
    cfg !== STRTAB_STE_0_CFG_BYPASS &&
    cfg !== STRTAB_STE_0_CFG_S1_TRANS
  )
    fail(EIO, `STE Config ${cfg}`);
  const eats = Number((ste1 & STRTAB_STE_1_EATS) >> 28n);
  if (eats !== STRTAB_STE_1_EATS_ABT && eats !== STRTAB_STE_1_EATS_TRANS)
    fail(EIO, `STE EATS ${eats}`);
  return {
    ste: [ste0, ste1 & ~STRTAB_STE_1_EATS],
    enableAts: cfg === STRTAB_STE_0_CFG_S1_TRANS && eats === STRTAB_STE_1_EATS_TRANS,
  };
}

/** An SMMUv3 whose driver offers vIOMMUs (CONFIG_ARM_SMMU_V3_IOMMUFD). */
export class ArmSmmuV3IommufdDriver extends ArmSmmuV3Driver implements IommufdViommuDriver {
  constructor(
    readonly kernel: Kernel,
    opts: { granuleLg2?: 12 | 14 | 16; rmrs?: readonly IortRmr[]; nesting?: boolean } = {},
  ) {
    super(opts.granuleLg2 ?? 12, kernel, opts.rmrs ?? [], {
      mem: kernel.mem,
      ...(opts.nesting === undefined ? {} : { nesting: opts.nesting }),
    });
  }

  /** Only IOMMU_VIOMMU_TYPE_ARM_SMMUV3, on an SMMU that nests. @see arm_smmu_get_viommu_size */
  getViommuSize(_dev: IommuDevice, type: number): number {
    return this.nest && type === IOMMU_VIOMMU_TYPE_ARM_SMMUV3 ? 1 : 0;
  }

  /** The parent must be this SMMU's (EINVAL); user data is not read. @see arm_vsmmu_init */
  viommuInit(viommu: IommufdViommu, parent: IommuDomain, _data: IommuUserData | undefined): void {
    if (parent.priv !== this) fail(EINVAL, "stage-2 parent of another SMMU");
    const vsmmu = new ArmVsmmu(this, viommu, parent, this.nest!.vmidOf(parent));
    viommu.priv = vsmmu;
    // arm_vsmmu_ops, called on the vsmmu that embeds the vIOMMU.
    viommu.ops = vsmmu;
  }

  /**
   * A nested domain: of this SMMU (EINVAL), no PASIDs in use (EBUSY), and for a translating
   * STE the device's vDEVICE on the vIOMMU (ENOENT), whose virt_id its events then carry.
   * @see arm_smmu_attach_dev_nested, arm_smmu_attach_prepare_vmaster
   */
  override attachDev(domain: IommuDomain, dev: IommuDevice): void {
    const nested = ArmSmmuNestedDomain.of(domain);
    if (!nested) {
      super.attachDev(domain, dev);
      return;
    }
    if (nested.smmu !== this.nest) fail(EINVAL, "nested domain of another SMMU");
    if (dev.pasidArray.size) fail(EBUSY, "PASIDs in use");
    const vsmmu = nested.owner as ArmVsmmu;
    let vsid: bigint | undefined;
    try {
      vsid = iommufdViommuGetVdevId(vsmmu.core, dev);
    } catch (e) {
      const cfg = nested.cfg;
      const untranslated = cfg === STRTAB_STE_0_CFG_ABORT || cfg === STRTAB_STE_0_CFG_BYPASS;
      if (!isKernelError(e) || !untranslated) throw e;
    }
    const master = this.nest.master(dev);
    master.vmaster =
      vsid === undefined
        ? undefined
        : {
            vsid,
            report(evt) {
              armVmasterReportEvent(vsmmu.core, vsid, evt);
            },
          };
    this.nest.steChanged(master);
  }
}

/** The event with the vSID in place of the StreamID, to the vEVENTQ. @see arm_vmaster_report_event */
function armVmasterReportEvent(viommu: IommufdViommu, vsid: bigint, evt: readonly bigint[]): void {
  const data = iommu_vevent_arm_smmuv3.encode({
    evt0: (evt[0]! & ~EVTQ_0_SID) | ((vsid << 32n) & EVTQ_0_SID),
    evt1: evt[1]!,
    evt2: evt[2]!,
    evt3: evt[3]!,
  });
  iommufdViommuReportEvent(viommu, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, data);
}
