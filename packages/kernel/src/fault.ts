/**
 * Fault injection, modelled on /proc/self/task/<tid>/fail-nth: arming N makes the N-th
 * injectable point the task reaches fail (1-based), once. Reading back gives 0 once it fired,
 * so a sweep knows when a run went past every point. Every allocation-equivalent in the model
 * calls `shouldFail(site)`; the sites reached while armed (from `arm` to `disarm`) are
 * recorded for reports. Decision: nothing is recorded while disarmed, so a long unarmed run
 * (millions of page faults) does not grow a log. While armed, KernelErrors carry no JS stack:
 * a sweep raises an expected errno on every run.
 */
import { setErrorStacksQuiet } from "./error.js";

export class FaultInjector {
  /** Remaining count before the armed failure; 0 = disarmed or already fired. */
  private nth = 0;
  /** Points reached since the last `arm`, in order. */
  readonly sitesHit: string[] = [];
  /** Whether points are being recorded (from `arm` until `disarm`). */
  recording = false;
  /** The site that was made to fail, if any, since the last `arm`. */
  failedSite: string | undefined;

  arm(nth: number): void {
    // Stryker disable next-line StringLiteral: the RangeError's text only
    if (!Number.isInteger(nth) || nth < 0) throw new RangeError(`fail-nth: bad value ${nth}`);
    this.nth = nth;
    this.recording = true;
    this.sitesHit.length = 0;
    this.failedSite = undefined;
    setErrorStacksQuiet(this, true);
  }

  /** Like reading fail-nth: 0 once the armed failure was consumed (or nothing is armed). */
  read(): number {
    return this.nth;
  }

  disarm(): void {
    this.nth = 0;
    this.recording = false;
    setErrorStacksQuiet(this, false);
  }

  shouldFail(site: string): boolean {
    if (this.recording) this.sitesHit.push(site);
    if (this.nth === 0) return false;
    this.nth--;
    if (this.nth !== 0) return false;
    this.failedSite = site;
    return true;
  }
}
