/**
 * @x/dmabuf/testing: switches a test flips and a product never does, like the kernel's test
 * Kconfig options. CONFIG_DMABUF_MOVE_NOTIFY (drivers/dma-buf/Kconfig) decides whether a map
 * through a dynamic attachment also pins; the model builds it off, as the Kconfig default is.
 */
export { dmaBufMoveNotifyEnabled, dmaBufSetMoveNotify } from "./dma-buf.js";
