import { PciDev } from "./pci.js";

/**
 * struct p2pdma_provider: what a peer needs to reach one memory BAR. `busOffset` is the PCI bus
 * address minus the CPU physical address; a peer behind the same switch uses the bus address,
 * traffic through the host bridge uses the CPU physical address.
 * @see pcim_p2pdma_provider
 */
export class P2pdmaProvider {
  constructor(
    readonly owner: PciDev,
    readonly busOffset: bigint,
  ) {}
}

/** enum pci_p2pdma_map_type */
export const PCI_P2PDMA_MAP_UNKNOWN = 0;
export const PCI_P2PDMA_MAP_NOT_SUPPORTED = 1;
export const PCI_P2PDMA_MAP_BUS_ADDR = 2;
export const PCI_P2PDMA_MAP_THRU_HOST_BRIDGE = 3;

/**
 * How `client` reaches the provider's BAR. Decision (the model has no switch topology): a PCI
 * function on the same bus goes peer to peer below the bridge (bus address); a PCI function on
 * another bus goes through the host bridge, which the model treats as P2P capable; anything
 * that is not a PCI function cannot do P2P.
 * @see pci_p2pdma_map_type
 */
export function pciP2pdmaMapType(provider: P2pdmaProvider, client: object): number {
  if (!(client instanceof PciDev)) return PCI_P2PDMA_MAP_NOT_SUPPORTED;
  return client.bus === provider.owner.bus
    ? PCI_P2PDMA_MAP_BUS_ADDR
    : PCI_P2PDMA_MAP_THRU_HOST_BRIDGE;
}
