export * from "./uapi.js";
