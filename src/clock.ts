/**
 * Time, injected. Every deadline and interval in the sidecar is computed from
 * `monotonic()`, which never jumps with NTP or an operator's `date -s`; wall
 * time (`now()`) only labels logs and records other processes will read.
 */

export interface Clock {
  /** Wall time in ms since the epoch; for logs and published records only. */
  now(): number;
  /** Monotonic ms from an arbitrary origin; use for TTLs, deadlines and intervals. */
  monotonic(): number;
  /** Resolves after `ms`; rejects with `signal.reason` when aborted first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /**
   * Calls `fn` once after `ms` unless cancelled. Unlike `sleep`, the callback
   * runs even while the caller is stuck awaiting something else, which is what
   * the fencing timer needs.
   */
  timer(ms: number, fn: () => void): { cancel(): void };
}

export const realClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const t = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, Math.max(0, ms));
      const onAbort = () => {
        clearTimeout(t);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
  timer(ms, fn) {
    const t = setTimeout(fn, Math.max(0, ms));
    return { cancel: () => clearTimeout(t) };
  },
};
