/**
 * A campaign's worker thread: it starts as the CLIs do, the TypeScript sources through tsx with
 * the @x/source export condition (the parent's execArgv does not carry tsx's loader into a
 * worker), registers the extra module hooks it is given (Node 20 lets a worker thread register
 * its own), then imports `moduleUrl`, whose top level reads `workerData` and posts one result.
 */
import { Worker } from "node:worker_threads";

function boot(moduleUrl: string, hooks: string | undefined): string {
  const register = hooks ? `(await import("node:module")).register(${JSON.stringify(hooks)});` : "";
  return `import("tsx/esm/api").then(async (tsx) => { tsx.register(); ${register} return import(${JSON.stringify(moduleUrl)}); });`;
}

/** Run `moduleUrl` on a new worker thread with `data`; resolves with the one message it posts. */
export function runInWorker<T>(moduleUrl: string, data: unknown, hooks?: string): Promise<T> {
  const worker = new Worker(boot(moduleUrl, hooks), {
    eval: true,
    execArgv: ["--conditions=@x/source"],
    workerData: data,
  });
  return new Promise((resolve, reject) => {
    worker.once("message", (r: T) => resolve(r));
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`campaign worker exited with ${code}`)));
  });
}
