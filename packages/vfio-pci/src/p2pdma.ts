import { PciDev } from "./pci.js";
import {
  PCI_P2PDMA_MAP_BUS_ADDR,
  PCI_P2PDMA_MAP_NOT_SUPPORTED,
  PCI_P2PDMA_MAP_THRU_HOST_BRIDGE,
  type P2pdmaProvider,
} from "./pci-p2pdma.js";

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
