export * from "./dma-buf.js";
export * from "./dma-buf-interconnect.js";
export * from "./dma-direction.js";
export * from "./dma-resv.js";
export * from "./scatterlist.js";
