/**
 * The arguments a package script was given: `pnpm <script> -- <args>` hands the script the `--`
 * that ends pnpm's own options, which node:util parseArgs would read as the end of the
 * script's options too.
 */
export function scriptArgs(): string[] {
  const argv = process.argv.slice(2);
  return argv[0] === "--" ? argv.slice(1) : argv;
}
