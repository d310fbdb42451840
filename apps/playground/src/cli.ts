/** Entry point of `pnpm demo`: see demo.ts. */
import { main } from "./demo.js";

process.exitCode = main(process.argv.slice(2));
